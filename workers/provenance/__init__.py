"""Provenance after air: the signed archive of aired segments and shows' recordings (archive), audit-log
checkpoints (audit_checkpoint), and `studio verify`, which reads every mark a clip carries (verify)."""
