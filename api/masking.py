"""Stream keys never leave the API unmasked."""

from __future__ import annotations

from workers.media.proc import scrub_url_keys


def mask_url(url: str) -> str:
    return scrub_url_keys(url)
