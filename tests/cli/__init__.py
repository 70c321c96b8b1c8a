"""Tests of checkpointctl."""
