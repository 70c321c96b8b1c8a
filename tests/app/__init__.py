"""Tests of the app: shared/ and function_app.py."""
