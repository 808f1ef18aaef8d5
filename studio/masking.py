"""Secrets never shown: stream keys in RTMP URLs and passwords in any URL are masked before they reach a log, an
exception, the API or a page. Pure string functions, imported by the API and the workers alike.
"""

from __future__ import annotations

import re

from studio.models import Destination
from studio.secrets import is_sealed

MASK = "****"

# rtmp, rtmps, rtmpt, rtmpe, rtmpte URLs; stop at whitespace, quotes, brackets and the tee separator '|'.
_URL = re.compile(r"\b(rtmp[a-z]{0,2})://([^\s/'\"<>|\[\]]+)((?:/[^\s/'\"<>|\[\]]*)*)", re.IGNORECASE)
_TRAILING_PUNCT = re.compile(r"[.,;:)]+$")


def _scrub_match(m: re.Match[str]) -> str:
    scheme, authority, path = m.group(1), m.group(2), m.group(3)
    path, trail = _split_trailing(path) if path else ("", "")
    if not path:
        authority, trail = _split_trailing(authority)
    if "@" in authority:  # user:password@host
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    parts = path.split("/")  # ['', 'app', 'key', ...]
    filled = [i for i, part in enumerate(parts) if part]
    if len(filled) >= 2:  # app + key (a trailing '/' does not hide the key)
        parts[filled[-1]] = MASK
    elif len(parts) == 2 and "?" in parts[1]:  # rtmp://host/app?token=...
        parts[1] = parts[1].split("?", 1)[0] + "?" + MASK
    return f"{scheme}://{authority}{'/'.join(parts)}{trail}"


def _split_trailing(text: str) -> tuple[str, str]:
    m = _TRAILING_PUNCT.search(text)
    return (text[: m.start()], text[m.start():]) if m else (text, "")


def scrub_url_keys(text: str) -> str:
    """Mask the stream key in every rtmp/rtmps URL in `text`: rtmp://host/app/KEY -> rtmp://host/app/****.

    The last path component of an RTMP URL is the key (query strings and user:password are masked with
    it); trailing punctuation such as the ':' ffmpeg puts after a URL is kept. Other text is unchanged.
    """
    return _URL.sub(_scrub_match, text)


# user:password@ in any URL (redis://:pw@host, postgresql://user:pw@host): the password goes.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@", re.IGNORECASE)


def scrub_secrets(text: str) -> str:
    """Everything that must not reach a log from a child's stderr or argument list: stream keys in RTMP URLs
    and passwords in any URL."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", scrub_url_keys(text))


def shown_url(stored: str, masked: str | None) -> str:
    """The displayable form of a stored destination URL: its masked copy, or a legacy plain URL masked now."""
    if masked:
        return masked
    return "(sealed destination)" if is_sealed(stored) else scrub_url_keys(stored)


def mask_url(url: str) -> str:
    """A destination URL as the API shows it: its stream key masked."""
    return scrub_url_keys(url)


def mask_destination(row: Destination) -> str:
    """What the API shows for a destination row: its masked URL (the stored one is sealed)."""
    return shown_url(row.url, row.url_masked)
