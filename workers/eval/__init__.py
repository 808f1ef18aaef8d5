"""Quality measurements: `studio eval lipsync` (lipsync) and the metrics it reports (metrics)."""
