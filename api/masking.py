"""Stream keys never leave the API unmasked (the functions live in studio.masking, shared with the workers)."""

from studio.masking import mask_destination, mask_url  # noqa: F401  (re-exported)
