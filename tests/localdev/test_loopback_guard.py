"""The suite's guard (tests/support/loopback.py, installed by conftest): a test may reach the
loopback only. Checked on the hook itself, so that no packet is ever sent elsewhere to prove it."""

import socket

import pytest

from tests.support.loopback import loopback_only


@pytest.mark.parametrize("address", [("192.0.2.1", 443), ("169.254.169.254", 80), ("2001:db8::1", 443, 0, 0)])
def test_connections_off_the_loopback_are_refused(address):
    with pytest.raises(ConnectionRefusedError):
        loopback_only("socket.connect", (None, address))


@pytest.mark.parametrize("name", ["management.azure.com", "login.microsoftonline.com", b"example.com"])
def test_name_lookups_off_the_loopback_are_refused(name):
    with pytest.raises(socket.gaierror):
        loopback_only("socket.getaddrinfo", (name, 443, 0, 0, 0, 0))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.5.5", "::1", "localhost"])
def test_the_loopback_is_allowed(host):
    loopback_only("socket.connect", (None, (host, 443)))
    loopback_only("socket.getaddrinfo", (host, 443, 0, 0, 0, 0))
