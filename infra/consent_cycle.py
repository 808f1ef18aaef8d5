"""The consent lifecycle from the command line, end to end: grant -> review -> schedule -> air -> revoke
(`make cycle`).

Every step is a `studio` command, printed before it runs, against a stack that `studio up` starts on free
loopback ports in a fresh data directory. The creator is synthetic (rendered face, espeak-ng voice). At the
end it prints the time from the revoke command to the clone being off air, checks that the bundle, the
consent video and the segments are gone from disk, and that the audit log verifies.

    .venv/bin/python infra/consent_cycle.py [--data DIR] [--air SECONDS] [--full-size]

Exit 0 when the clone was off air within 2 s and every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

STUDIO = str(Path(sys.executable).with_name("studio"))
STATEMENT = ("I, Ava Cycle, consent to a digital clone of my face and voice, used in live-commerce promotions "
             "within the scope and term recorded with this statement, until I revoke it.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cycle:
    def __init__(self, data: Path, *, full_size: bool):
        self.data = data
        self.config = data / "cycle.yaml"
        self.ports = {"api": free_port(), "redis": free_port(), "rtmp": free_port(), "http": free_port()}
        size = "" if full_size else "media:\n  width: 360\n  height: 640\n"
        data.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"data_dir: {data / 'data'}\n{size}services:\n  host: 127.0.0.1\n"
            f"  api_port: {self.ports['api']}\n  redis_port: {self.ports['redis']}\n"
            f"  rtmp_port: {self.ports['rtmp']}\n  http_port: {self.ports['http']}\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}

    def studio(self, *args: str, as_json: bool = True) -> dict | str:
        cmd = [STUDIO, *args, "-c", str(self.config)] + (["--json"] if as_json else [])
        print(f"$ studio {' '.join(shlex.quote(a) for a in args)}{' --json' if as_json else ''}", flush=True)
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise SystemExit(f"`studio {args[0]} {args[1] if len(args) > 1 else ''}` failed "
                             f"(exit {res.returncode}):\n{res.stderr}{res.stdout}")
        out = res.stdout.strip()
        print(f"  {out.splitlines()[-1] if out else ''}", flush=True)
        return json.loads(out.splitlines()[-1]) if as_json else out

    def api(self, path: str) -> dict:
        # As the machine's operator: `studio up` writes an admin API key beside the policy key.
        key = (self.data / "data" / "keys" / "operator-api.key").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['api']}{path}",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def wait(self, what: str, check, timeout: float) -> None:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (OSError, IndexError) as exc:
                last = exc
            time.sleep(0.5)
        raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last: {last})" if last else ""))


def run(data: Path, *, air: float, full_size: bool) -> int:
    c = Cycle(data, full_size=full_size)
    footage, video = data / "footage.mp4", data / "consent.mp4"
    c.studio("synth", "footage", str(footage), "--seconds", "32", *([] if full_size else ["--width", "360",
             "--height", "640"]), as_json=False)
    print("$ studio up   (in the background)", flush=True)
    up = subprocess.Popen([STUDIO, "up", "-c", str(c.config)], env=c.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        c.wait("the stack", lambda: c.api("/healthz")["status"] == "ok", 120)
        creator = c.studio("creator", "add", "Ava Cycle")["id"]
        avatar = c.studio("avatar", "create", "--name", "Ava", "--creator", "Ava Cycle",
                          "--footage", str(footage))["avatar_id"]
        phrase = c.studio("consent", "phrase", avatar)
        c.studio("synth", "consent-video", str(video), "--text", phrase["text"], as_json=False)
        granted = c.studio("consent", "grant", "--avatar", avatar, "--phrase", phrase["id"], "--video", str(video),
                           "--signed-name", "Ava Cycle", "--statement", STATEMENT, "--categories", "beauty",
                           "--platforms", "custom", "--territories", "US", "--languages", "en",
                           "--max-hours", "8", "--days", "30")
        consent = granted["consent_id"]
        if granted["status"] == "pending_review":  # consent.review: required, the default: the operator reviews it
            c.studio("consent", "review", "approve", consent)
        product = c.studio("product", "add", "Glow Serum", "--brand", "Lumen Labs", "--category", "beauty")["id"]
        script = c.studio("script", "add", "--product", product, "--text",
                          "Paid partnership with Lumen Labs. Meet the Glow Serum: a light vitamin C serum for "
                          "everyday skin care. Tap the cart below to see today's bundle.")["id"]
        channel = c.studio("channel", "add", "cycle", "--territories", "US")["id"]
        show = c.studio("show", "create", "--channel", channel, "--avatar", avatar, "--consent", consent,
                        "--script", script, "--name", "Cycle show")["id"]
        c.wait("the show on air", lambda: c.api(f"/api/channels/{channel}/status").get("show_id") == show
               and c.api(f"/api/channels/{channel}/segments")[0]["state"] == "aired", 240)
        print(f"on air; letting it air {air:.0f} s more", flush=True)
        time.sleep(air)
        before = sorted(p for p in (data / "data").rglob("*") if p.is_file())
        rev = c.studio("consent", "revoke", consent)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
    # The clone's files: its bundle, its consent video, and the channel's segments and idle slate (the plain
    # card the channel airs instead, slate-card.mp4, shows no one and stays).
    left = [p for p in before if p.exists() and (avatar in str(p) or consent in str(p) or (
        p.suffix == ".mp4" and f"/segments/{channel}/" in str(p) and p.name != "slate-card.mp4"))]
    audit = c.studio("audit", "verify")
    off = rev["off_air_seconds"]
    print("\n--- consent cycle ---")
    print(f"creator {creator}, avatar {avatar}, consent {consent}, show {show} on channel {channel}")
    print(f"off air {off:.2f} s after `studio consent revoke` (limit 2 s)" if off is not None else
          "off air: no stream reported the cut")
    print(f"deleted {rev['deleted_files']} files ({rev['deleted_bytes'] / 1e6:.1f} MB), cancelled "
          f"{rev['cancelled_segments']} segments; certificate {rev['certificate']}")
    print(f"files of the clone left on disk: {len(left)}" + "".join(f"\n  {p}" for p in left))
    print(f"audit log: {'intact' if audit['ok'] else 'PROBLEMS'} ({audit['events']} events)")
    ok = off is not None and off <= 2.0 and not left and audit["ok"]
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="Working directory (default: a new temporary one).")
    ap.add_argument("--air", type=float, default=8.0, help="Seconds to stay on air before revoking.")
    ap.add_argument("--full-size", action="store_true", help="720x1280 instead of 360x640 (slower).")
    args = ap.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="studio-cycle-"))
    sys.exit(run(data.resolve(), air=args.air, full_size=args.full_size))


if __name__ == "__main__":
    main()
