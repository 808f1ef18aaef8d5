"""What the rules refuse, said once for every caller.

The service layer (api.service) and the admission rules (studio.admission) raise `Refused`; the API answers it as
a problem document with its status (api.problems), the CLI prints its reasons and exits 2. Neither entry point
words a refusal of its own, so both refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """A request the rules refuse. `status` is what HTTP would call it (403 not allowed, 404 no such row or another
    tenant's, 409 exists already, 413 too large, 422 breaks a rule, 429 too many); `detail` is one sentence, or a
    dict with `message` and extension members (`findings`, `problems`)."""

    def __init__(self, status: int, detail: str | dict[str, Any], *, headers: dict[str, str] | None = None):
        super().__init__(detail if isinstance(detail, str) else detail.get("message", "refused"))
        self.status_code, self.detail, self.headers = status, detail, headers

    def lines(self) -> list[str]:
        """The refusal as lines: the message, then each problem or finding (rule, words, where, fix)."""
        detail = self.detail
        if isinstance(detail, str):
            return [detail]
        lines = [str(detail.get("message", "refused"))]
        lines += [f"  {p}" for p in detail.get("problems", [])]
        for f in detail.get("findings", []):
            where = f" in script {f['script_id']}" if f.get("script_id") else ""
            words = f" {f['words']!r}" if f.get("words") else ""
            lines.append(f"  {f.get('rule', '?')}{words}{where}: {f.get('message', '')}"
                         + (f" Fix: {f['fix']}" if f.get("fix") else ""))
        return lines
