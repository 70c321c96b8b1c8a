"""Reading a VM instance from ARM with the caller's own Azure credentials (`checkpointctl checkpoints`).

One GET, `{ARM endpoint}{resourceUri}/providers/Microsoft.ScVmm/virtualMachineInstances/default`, with a
bearer token from azure-identity, through a `requests.Session` (so `REQUESTS_CA_BUNDLE` and the proxy
variables apply as requests reads them). Every call has a time limit, redirects are never followed (the
token goes to the ARM endpoint only) and the token is never printed. What goes wrong is an ArmReadError,
whose text is what the user sees.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import ClientAuthenticationError

from shared.arm_answers import arm_error
from shared.arm_client import INSTANCE_PATH, arm_scope

from .connection import UsageError
from .events import printable

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_API_VERSION = "2024-06-01"
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 30  # seconds, for ARM and for the identity's token endpoints
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # more of an answer is not read
CREDENTIALS = ("default", "managed-identity", "cli")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?")
_HINTS = {
    401: "ARM did not accept the token (is the identity signed in to the tenant of this subscription?)",
    403: "the identity needs read access to the machine: a role with "
    "Microsoft.ScVmm/virtualMachineInstances/read on it, such as Reader",
    404: "no such VM instance: check the resourceUri (it names the Arc machine; its SCVMM virtual machine "
    "instance is its virtualMachineInstances/default)",
}


class ArmReadError(Exception):
    """The VM instance could not be read: the reason, ready to print (exit 1)."""


def arm_endpoint(value: str | None) -> str:
    """The ARM base URL from --arm-endpoint, else env ARM_ENDPOINT, else the public cloud's; https only."""
    value = value or os.environ.get("ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"ARM endpoint {value!r} must be an absolute https URL (a token is sent to it)")
    if parts.query or parts.fragment or parts.username or parts.password or parts.path not in ("", "/"):
        raise UsageError(f"ARM endpoint {value!r} must be a base URL: no path, query, fragment or credentials")
    return value.rstrip("/")


def api_version(value: str) -> str:
    if not _API_VERSION.fullmatch(value):
        raise UsageError(f"--api-version {value!r} is not an ARM api-version (YYYY-MM-DD or YYYY-MM-DD-preview)")
    return value


def scope_for(endpoint: str, scope: str | None) -> str:
    """The token's scope: --scope, else the app's rule (the public cloud's, a sovereign cloud's own)."""
    return scope or arm_scope(endpoint)


def credential(kind: str):
    """The azure-identity credential of --credential, its token requests bounded in time."""
    timeouts = {"connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    if kind == "managed-identity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None, **timeouts)
    if kind == "cli":
        from azure.identity import AzureCliCredential

        return AzureCliCredential(process_timeout=READ_TIMEOUT)
    from azure.identity import DefaultAzureCredential  # slow to import: only when used

    try:
        return DefaultAzureCredential(**timeouts)
    except ValueError as exc:  # AZURE_TOKEN_CREDENTIALS names no credential it knows
        raise UsageError(f"DefaultAzureCredential: {exc}") from None


def read_instance(endpoint: str, resource_uri: str, version: str, token_credential, scope: str) -> list:
    """The VM instance's `properties.infrastructureProfile.checkpoints`, as listed ([] when it has none)."""
    try:
        token = token_credential.get_token(scope).token
    except ClientAuthenticationError as exc:  # CredentialUnavailableError too: the text lists what was tried
        raise ArmReadError(f"could not get a Microsoft Entra token for {scope} (try `az login`): {exc}") from None
    url = f"{endpoint}{resource_uri}{INSTANCE_PATH}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with requests.Session() as session:
        try:
            response = session.get(
                url,
                params={"api-version": version},
                headers=headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
                stream=True,
            )
            with response:
                body = _read_bounded(response)
        except requests.exceptions.SSLError as exc:
            raise ArmReadError(
                f"could not reach ARM at {endpoint}: TLS failed ({_reason(exc)}); for a local CA set REQUESTS_CA_BUNDLE"
            ) from None
        except requests.exceptions.Timeout:
            raise ArmReadError(
                f"ARM at {endpoint} did not answer in time ({CONNECT_TIMEOUT} s to connect, {READ_TIMEOUT} s to answer)"
            ) from None
        except requests.RequestException as exc:
            raise ArmReadError(f"could not reach ARM at {endpoint}: {_reason(exc)}") from None
    if response.status_code != 200:
        raise ArmReadError(_refusal(response, body))
    return _checkpoints(body, resource_uri)


def _read_bounded(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise ArmReadError(f"ARM's answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB; not read")
    return bytes(body)


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, on one line (never a header: none carries the token)."""
    while exc.__context__ is not None and isinstance(exc.__context__, Exception):
        exc = exc.__context__
    return printable(str(exc).strip() or type(exc).__name__)


def _json(body: bytes):
    try:
        return json.loads(body.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError too
        return None


def _refusal(response: requests.Response, body: bytes) -> str:
    status = response.status_code
    if 300 <= status < 400:
        location = printable(response.headers.get("Location") or "-")
        return f"ARM answered a redirect (HTTP {status}, Location {location}); not followed: a token goes to ARM only"
    error = arm_error(_json(body))
    said = (
        f": {printable(error['code'] or '-')}: {printable(error['message'] or '')}" if error else " with no ARM error"
    )
    text = f"ARM answered HTTP {status}{said}"
    correlation = response.headers.get("x-ms-correlation-request-id")
    if correlation:
        text += f" (x-ms-correlation-request-id {printable(correlation)})"
    if status in _HINTS:
        text += f"; {_HINTS[status]}"
    elif status == 429 or status >= 500:
        retry_after = response.headers.get("Retry-After")
        text += "; a transient failure: try again" + (f" after {printable(retry_after)} s" if retry_after else "")
    return text


def _checkpoints(body: bytes, resource_uri: str) -> list:
    document = _json(body)
    if document is None:
        raise ArmReadError(f"ARM's answer (HTTP 200, {len(body)} bytes) is not JSON")
    properties = document.get("properties") if isinstance(document, dict) else None
    profile = properties.get("infrastructureProfile") if isinstance(properties, dict) else None
    if not isinstance(profile, dict):
        raise ArmReadError(
            f"ARM's answer has no properties.infrastructureProfile: is {resource_uri} an SCVMM virtual machine?"
        )
    checkpoints = profile.get("checkpoints")
    if checkpoints is None:
        return []
    if not isinstance(checkpoints, list):
        raise ArmReadError("ARM's answer has a properties.infrastructureProfile.checkpoints that is not a list")
    return checkpoints
