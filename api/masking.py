"""Stream keys never leave the API unmasked."""

from __future__ import annotations

from studio.models import Destination
from workers.media.proc import scrub_url_keys
from workers.streamer.relay import shown_url


def mask_url(url: str) -> str:
    return scrub_url_keys(url)


def mask_destination(row: Destination) -> str:
    """What the API shows for a destination row: its masked URL (the stored one is sealed)."""
    return shown_url(row.url, row.url_masked)
