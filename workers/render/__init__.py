"""Rendering a segment (segment): speech (workers.tts or a recorded voice-over), lips (workers.renderers), then
the policy middleware (policy_middleware): label, captions, watermark, AIGC metadata and C2PA, failing closed
(faults injects failures to prove it)."""
