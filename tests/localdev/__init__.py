"""Tests of the local stand-ins (localdev/)."""
