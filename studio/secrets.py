"""Destination URLs sealed at rest: the stream key inside an RTMP(S) URL is a credential.

`Destination.url` holds `sealed:v1:<base64url(nonce | ciphertext | tag)>`: AES-256-GCM under the data dir's
stream key (`studio.keys.init_stream_key`), with the channel id as associated data, so a sealed value copied
onto another channel's row does not open. Rows written before sealing hold the plain URL; `open_url` still
returns it, and the next write seals it. Only the code that hands a URL to the network opens it; everything
that shows a destination uses `Destination.url_masked`.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
_CONTEXT = b"studio destination url v1\x00"


class SealError(ValueError):
    """A sealed URL that cannot be opened: wrong key, another channel's value, or altered bytes."""


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


def _aead(key: bytes) -> AESGCM:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"the stream key must be {KEY_BYTES} bytes, got "
                         f"{len(key) if isinstance(key, bytes) else type(key).__name__}")
    return AESGCM(key)


def _aad(channel_id: str) -> bytes:
    if not channel_id:
        raise ValueError("channel_id is required: a sealed URL is bound to its channel")
    return _CONTEXT + channel_id.encode()


def seal_url(key: bytes, url: str, *, channel_id: str) -> str:
    """The value to store in `Destination.url` for `url` on channel `channel_id`."""
    if not url or is_sealed(url):
        raise ValueError("seal_url needs a plain, non-empty URL")
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aead(key).encrypt(nonce, url.encode(), _aad(channel_id))
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def open_url(key: bytes | None, stored: str, *, channel_id: str) -> str:
    """The plain URL of a stored `Destination.url`; a legacy plain value is returned as it is.

    `key` may be None when the caller has no stream key: then only legacy values open. SealError says what
    is wrong without showing any of the value."""
    if not is_sealed(stored):
        return stored
    if key is None:
        raise SealError("the destination URL is sealed and no stream key was given")
    body = stored[len(SEALED_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SealError("the sealed destination URL is not valid base64 (altered in the database?)") from None
    if len(raw) <= NONCE_BYTES + 16:
        raise SealError("the sealed destination URL is too short (truncated in the database?)")
    try:
        plain = _aead(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(channel_id))
    except InvalidTag:
        raise SealError("the sealed destination URL does not open with this data dir's stream key: it was sealed "
                        "under another key or for another channel, or altered; enter the destination again") from None
    return plain.decode()
