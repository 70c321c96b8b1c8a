"""Fixtures of the contract tests."""

import logging

import pytest


@pytest.fixture
def quiet_app_logs(caplog):
    """The app logs every invalid traceparent, request and event; thousands of records only slow the run down."""
    caplog.set_level(logging.CRITICAL, logger="shared")
