"""Consent (POLICY C1-C7): code phrases and grants (grant), the consent video's checks (video), the review queue
(review), and revocation (revocation), which takes a clone off air and purges every host's cache (cache_purge)."""
