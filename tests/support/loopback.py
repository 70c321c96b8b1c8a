"""The suite's guard, installed by tests/conftest.py: no test sends traffic anywhere but the loopback."""

from __future__ import annotations

import ipaddress
import socket


def _is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "localhost") or not isinstance(host, str):
        return True  # None: a bind to any address; non-str: not an internet address
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost


def loopback_only(event: str, args) -> None:
    """No test sends traffic anywhere but the loopback: refuse other addresses and name lookups."""
    if event == "socket.connect" and isinstance(args[1], tuple) and not _is_loopback(args[1][0]):
        raise ConnectionRefusedError(f"tests may only connect to the loopback, not {args[1]!r}")
    if event == "socket.getaddrinfo" and not _is_loopback(args[0]):
        raise socket.gaierror(f"tests may only look up loopback names, not {args[0]!r}")
