"""The musetalk backend on CUDA: fp16 on the GPU gives the faces fp32 on the CPU gives, and its memory goes back
to the device when the models are let go. Marked `gpu`: skipped on machines without a CUDA device (this one, and
CI, have none), and said so in the skip reason."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the musetalk backend needs the `gpu` extra (torch)")
pytest.importorskip("diffusers", reason="the musetalk backend needs the `gpu` extra (diffusers)")

from tests.musetalk_helpers import make_tiny_release  # noqa: E402
from workers.renderers.musetalk.batcher import FrameBatcher  # noqa: E402
from workers.renderers.musetalk.net import MuseTalkNet  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: this machine has none (CI never has one)")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("musetalk-gpu") / "models")


def test_musetalk_on_cuda_runs_fp16_and_matches_the_cpu(tiny):
    gpu, cpu = MuseTalkNet.load(tiny, "cuda"), MuseTalkNet.load(tiny, "cpu")
    assert gpu.dtype == torch.float16 and cpu.dtype == torch.float32
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (4, 256, 256, 3), dtype=np.uint8)
    lat_gpu, lat_cpu = gpu.encode_faces(faces), cpu.encode_faces(faces)
    assert np.abs(lat_gpu.astype(np.float32) - lat_cpu.astype(np.float32)).max() < 0.05
    audio = rng.normal(0, 0.1, 16000).astype(np.float32)
    out_gpu = gpu.generate(torch.from_numpy(lat_cpu), gpu.audio_tokens(audio, 4, 25))
    out_cpu = cpu.generate(torch.from_numpy(lat_cpu), cpu.audio_tokens(audio, 4, 25))
    assert np.abs(out_gpu.astype(int) - out_cpu.astype(int)).mean() < 3


def test_musetalk_gpu_memory_returns_when_idle(tiny):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    batcher = FrameBatcher(lambda: MuseTalkNet.load(tiny, "cuda"), batch_frames=8, unload_after=0.5)
    batcher.generate(torch.zeros(4, 8, 32, 32), torch.zeros(4, 20, 32))
    assert torch.cuda.memory_allocated() > before
    deadline = time.monotonic() + 10
    while batcher.net is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    assert batcher.net is None and torch.cuda.memory_allocated() <= before + 2**20
