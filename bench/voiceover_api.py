"""The API while it checks a voice-over upload: how long its other requests wait, against the same API checking the
upload in one of its own threads (as it did before workers.ingest.voiceover_apart), measured in the same run.

pocketsphinx holds Python's interpreter lock while it decodes, so a check in the API's thread stops every other
request of that API process for each of the aligner's three passes. A poller asks `/livez` every 10 ms while a
recording of the demo's whole script (about 40 s, espeak-ng en-gb+f3 at 150 words a minute) is uploaded and
checked; the figures are the longest a request waited and how many were answered per second, and what the separate
process costs the upload itself. In process (FastAPI's TestClient; no Redis, so the progress board is the
process's own table).

`python -m bench voiceover_api` (part of `make bench`)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import Figure, report
from workers.stack.demo import PRODUCTS

SCRIPT = " ".join(text for *_, text in PRODUCTS)


def _world(tmp: Path):
    from sqlmodel import Session

    from studio.accounts import create_account, issue_api_key
    from studio.config import MediaProfile, Settings
    from studio.db import session_scope, upgrade
    from studio.keys import init_all_keys
    from studio.models import Agency, Product, Script
    from studio.runtime import build_runtime

    settings = Settings(data_dir=str(tmp / "data"), media=MediaProfile(width=360, height=640))
    init_all_keys(settings)
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    with session_scope(rt.engine) as s:
        agency = Agency(name="Bench Agency")
        s.add(agency)
        s.flush()
        product = Product(name="Serum", brand="Lumen", category="beauty", agency_id=agency.id)
        s.add(product)
        s.flush()
        script = Script(product_id=product.id, text=SCRIPT)
        s.add(script)
        s.flush()
        script_id, agency_id = script.id, agency.id
    with Session(rt.engine) as s:
        account = create_account(s, email="bench@agency.local", name="bench", role="agency", agency_id=agency_id)
        s.flush()
        _, key = issue_api_key(s, account_id=account.id, name="bench")
        s.commit()
    return rt, script_id, key


def _upload_while_polling(client, script_id: str, key: str, wav: Path) -> dict:
    waits: list[float] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/livez").status_code == 200
            waits.append(time.perf_counter() - started)
            stop.wait(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    try:
        with open(wav, "rb") as f:
            res = client.post(f"/api/scripts/{script_id}/voiceover", headers={"Authorization": f"Bearer {key}"},
                              data={"speaker": "actor", "actor_name": "Bench Reader"},
                              files={"file": (wav.name, f, "audio/wav")})
        took = time.perf_counter() - started
    finally:
        stop.set()
        poller.join()
    if res.status_code != 201:
        raise RuntimeError(f"the upload was refused: {res.status_code} {res.text[:300]}")
    return {"seconds": took, "longest_ms": 1000 * max(waits), "p95_ms": 1000 * float(np.percentile(waits, 95)),
            "per_second": len(waits) / took, "audio_s": res.json()["duration_s"]}


def main() -> None:
    import subprocess

    from fastapi.testclient import TestClient

    import workers.ingest.voiceover_apart as apart
    from api.app import create_app
    from workers.ingest.voiceover import check_voiceover

    with tempfile.TemporaryDirectory(prefix="bench-vo-api-") as td:
        tmp = Path(td)
        wav = tmp / "script.wav"
        subprocess.run(["espeak-ng", "-v", "en-gb+f3", "-s", "150", "-w", str(wav), SCRIPT], check=True,
                       capture_output=True)
        rt, script_id, key = _world(tmp)
        with TestClient(create_app(rt)) as client:
            _upload_while_polling(client, script_id, key, wav)  # warm: the forkserver starts, models load
            ours = _upload_while_polling(client, script_id, key, wav)
            in_thread = apart.check_voiceover_apart
            apart.check_voiceover_apart = check_voiceover  # the check as the API ran it before: in its thread
            try:
                _upload_while_polling(client, script_id, key, wav)
                peer = _upload_while_polling(client, script_id, key, wav)
            finally:
                apart.check_voiceover_apart = in_thread
    label = "check in the API's own thread"
    report("voiceover_api", [
        Figure("longest wait of a request while a recording is checked", ours["longest_ms"], "ms", label,
               peer["longest_ms"]),
        Figure("95th percentile wait of a request meanwhile", ours["p95_ms"], "ms", label, peer["p95_ms"]),
        Figure("requests answered per second meanwhile", ours["per_second"], "1/s", label, peer["per_second"]),
        Figure("upload answered in", ours["seconds"], "s", label, peer["seconds"]),
    ], notes=f"a {ours['audio_s']:.1f} s recording of the demo's script (espeak-ng en-gb+f3), checked through "
             f"POST /api/scripts/{{id}}/voiceover while GET /livez is asked every 10 ms; second of two runs each")


if __name__ == "__main__":
    main()
