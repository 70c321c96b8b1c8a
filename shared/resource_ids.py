"""ARM resource ids as a request may name them (contract section 3): checked before one goes into a path."""

from __future__ import annotations

import re

MAX_RESOURCE_URI = 1024

# The noncharacters: U+FDD0-U+FDEF and the last two code points of each plane (a regex class fragment).
NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane | 0xFFFE) + chr(plane | 0xFFFF) for plane in range(0, 0x110000, 0x10000)
)
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
# also lone surrogates and noncharacters, which a queue message or an event cannot carry
_FORBIDDEN_IN_URI = re.compile(r"[?#%\\\s\x00-\x1f\x7f-\x9f\ud800-\udfff" + NONCHARACTERS + "]")


def resource_uri_problem(value) -> str | None:
    """Why `value` is not an ARM resource id usable in the operation's path, or None when it is."""
    if not isinstance(value, str):
        return "resourceUri must be a string"
    if len(value) > MAX_RESOURCE_URI:
        return f"resourceUri is {len(value)} characters; at most {MAX_RESOURCE_URI} are accepted"
    if _FORBIDDEN_IN_URI.search(value):
        return "resourceUri must not contain '?', '#', '%', '\\', whitespace, control characters or noncharacters"
    if not value.startswith("/"):
        return "resourceUri must start with '/subscriptions/'"
    segments = value[1:].split("/")
    if any(s == "" for s in segments):
        return "resourceUri must not contain empty segments (// or a trailing /)"
    if any(s in (".", "..") for s in segments):
        return "resourceUri must not contain '.' or '..' segments"
    expected = "/subscriptions/{id}/resourceGroups/{name}/providers/{namespace}/{type}/{name}[/{type}/{name}]..."
    if (
        len(segments) < 8
        or len(segments) % 2
        or segments[0].lower() != "subscriptions"
        or segments[2].lower() != "resourcegroups"
        or segments[4].lower() != "providers"
    ):
        return f"resourceUri is not an ARM resource id of the form {expected}"
    if not _GUID.fullmatch(segments[1]):
        return "resourceUri's subscription id must be a GUID"
    return None
