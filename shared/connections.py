"""HTTP sessions whose environment settings are read once, when the client is built.

A `requests.Session` that trusts the environment (`trust_env`, its default) looks up proxies,
NO_PROXY, netrc and the CA bundle in the environment on every call: about an eighth of the app's
CPU per deletion. The app's sessions do not trust it; they take what it says for their one
endpoint here, once: `REQUESTS_CA_BUNDLE` (or `CURL_CA_BUNDLE`) as the trust store, and the
proxy the standard variables name for that endpoint (none when NO_PROXY covers it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import requests
from requests.adapters import HTTPAdapter


def ca_bundle(environ: Mapping[str, str] | None = None) -> str | bool:
    """The trust store `requests` would use: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else its own (True)."""
    environ = os.environ if environ is None else environ
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or True


def endpoint_session(endpoint: str, pool_size: int, max_retries: int = 0) -> requests.Session:
    """A session for calls to `endpoint`, with a pool of `pool_size` connections and the
    environment's CA bundle and proxies for that endpoint fixed now."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle()
    session.proxies = requests.utils.get_environ_proxies(endpoint)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=max_retries)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
