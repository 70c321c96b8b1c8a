"""Helpers shared by several test files (the fixtures are in the conftest.py files)."""
