"""The musetalk backend's network (workers/renderers/musetalk): MuseTalk 1.5's published architecture built at full
size without weights (meta device) and checked against the published weights' names and shapes; tiny random
models of the same layout, saved in the release's directory layout and loaded through the real loading code; the
refusals; the GPU thread that batches several segments' frames. CPU only: nothing here needs a GPU."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the musetalk backend needs the `gpu` extra (torch)")
pytest.importorskip("diffusers", reason="the musetalk backend needs the `gpu` extra (diffusers)")

from tests.musetalk_helpers import (  # noqa: E402
    MUSETALK_UNET,
    SD_VAE_FT_MSE,
    TINY_UNET,
    WHISPER_FEATURES,
    WHISPER_TINY,
    make_tiny_release,
    published_vae_keys,
)
from workers.renderers.musetalk import net  # noqa: E402
from workers.renderers.musetalk.batcher import FrameBatcher  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("musetalk") / "models")


@pytest.fixture(scope="module")
def tiny_net(tiny) -> net.MuseTalkNet:
    return net.MuseTalkNet.load(tiny, "cpu")


def _meta(make, config):
    return net._build(make, config, Path("config.json"))


def _shapes(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- the published architecture, at full size --------------------------------------------------------------------
def test_musetalk_unet_at_full_size_takes_unet_pth_as_published():
    unet = _meta(net.unet_from_config, MUSETALK_UNET)
    shapes = _shapes(unet)
    assert sum(p.numel() for p in unet.parameters()) == 849_947_844
    assert shapes["conv_in.weight"] == (320, 8, 3, 3)  # masked + reference face latents
    assert shapes["conv_out.weight"] == (4, 320, 3, 3)
    assert shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (320, 384)  # whisper
    assert net.compare(unet, shapes, Path("unet.pth")) == []
    dropped = {k: v for k, v in shapes.items() if not k.startswith("mid_block.")}
    assert "weights the config needs are missing" in net.compare(unet, dropped, Path("unet.pth"))[0]


def test_musetalk_vae_at_full_size_takes_sd_vae_ft_mse_with_its_old_attention_names():
    vae = _meta(net.vae_from_config, SD_VAE_FT_MSE)
    published = published_vae_keys(_shapes(vae))
    assert "encoder.mid_block.attentions.0.query.weight" in published  # as the 2022 file names it
    assert abs(sum(p.numel() for p in vae.parameters()) - 83_653_863) == 0
    assert net.compare(vae, net.vae_keys(published), Path("diffusion_pytorch_model.bin")) == []
    assert net.compare(vae, published, Path("x"))  # unmapped, the old names would not load


def test_musetalk_whisper_tiny_encoder_takes_the_encoder_half_of_openai_whisper_tiny():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    encoder = _meta(net.whisper_encoder_from_config, WHISPER_TINY)
    with torch.device("meta"):
        whole = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in WHISPER_TINY.items()
                                                                 if not k.startswith("_")}))
    published = _shapes(whole)  # model.encoder.*, model.decoder.*, proj_out.*
    assert any(k.startswith("model.decoder.") for k in published)
    assert net.compare(encoder, net.whisper_encoder_keys(published), Path("pytorch_model.bin")) == []
    assert sum(p.numel() for p in encoder.parameters()) == 8_208_384


def test_musetalk_published_configs_fit_each_other():
    release = net.Release(*(Path(n) for n in ("m", "u.json", "u.pth", "v.json", "v.bin", "w.json", "w.bin", "f.json")))
    ok = net.Configs(unet=MUSETALK_UNET, vae=SD_VAE_FT_MSE, whisper=WHISPER_TINY, features=WHISPER_FEATURES)
    assert net.fit_problems(ok, release) == []
    wrong = net.Configs(unet={**MUSETALK_UNET, "cross_attention_dim": 768}, vae=SD_VAE_FT_MSE,
                        whisper=WHISPER_TINY, features=WHISPER_FEATURES)
    assert any("cross_attention_dim 768 must be the Whisper encoder's d_model (384)" in p
               for p in net.fit_problems(wrong, release))


# --- refusals, each naming what is wrong --------------------------------------------------------------------------
def test_musetalk_refuses_a_missing_directory_a_hub_id_and_an_unset_path(tmp_path):
    assert net.release_problems(tmp_path / "nope") == [f"renderer.weights_path {tmp_path / 'nope'} does not exist"]
    (hub,) = net.release_problems("TMElyralab/MuseTalk")
    assert "looks like a Hugging Face hub id" in hub and "local models directory" in hub
    assert "is not set" in net.release_problems(None)[0]


def test_musetalk_refuses_a_wrong_layout_naming_every_missing_file(tiny, tmp_path):
    import shutil

    broken = shutil.copytree(tiny, tmp_path / "models")
    (broken / "sd-vae" / "diffusion_pytorch_model.bin").unlink()
    (broken / "whisper" / "preprocessor_config.json").unlink()
    (problem,) = net.release_problems(broken)
    assert "is not MuseTalk 1.5's models layout" in problem
    assert "sd-vae/diffusion_pytorch_model.bin" in problem and "whisper/preprocessor_config.json" in problem


def test_musetalk_refuses_a_config_whose_shapes_do_not_match_the_weights(tmp_path):
    models = make_tiny_release(tmp_path / "models", unet={**TINY_UNET, "block_out_channels": [32, 48]})
    problems = net.release_problems(models)
    assert problems and all("unet.pth" in p for p in problems)
    assert any("other shapes than the config gives" in p for p in problems)
    with pytest.raises(net.ModelError, match="unet.pth"):
        net.MuseTalkNet.load(models, "cpu")


def test_musetalk_refuses_weights_that_are_not_a_state_dict(tiny, tmp_path):
    import shutil

    broken = shutil.copytree(tiny, tmp_path / "models")
    (broken / "musetalkV15" / "unet.pth").write_bytes(b"not a checkpoint")
    (problem,) = net.release_problems(broken)
    assert "unet.pth cannot be read as weights" in problem


def test_musetalk_sets_the_offline_flags_before_any_hub_library_loads():
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


# --- the tiny release through the real loading code ---------------------------------------------------------------
def test_musetalk_tiny_release_loads_and_paints_faces(tiny, tiny_net):
    assert net.release_problems(tiny) == []
    faces = np.random.default_rng(0).integers(0, 255, (3, net.FACE, net.FACE, 3), dtype=np.uint8)
    latents = tiny_net.encode_faces(faces)
    assert latents.shape == (3, 8, 32, 32) and latents.dtype == np.float16
    # The masked half changes the first four channels only: the reference latents are the whole face's.
    whole_again = tiny_net.encode_faces(faces[:1])
    assert np.allclose(whole_again[0, 4:], latents[0, 4:], atol=1e-3)
    tokens = tiny_net.audio_tokens(np.zeros(16000, np.float32), 25, 25)
    layers = json.loads((tiny / "whisper" / "config.json").read_text())["encoder_layers"] + 1
    assert tokens.shape == (25, 10 * layers, 32)
    out = tiny_net.generate(torch.from_numpy(latents), tokens[:3])
    assert out.shape == (3, net.FACE, net.FACE, 3) and out.dtype == np.uint8


def test_musetalk_audio_window_follows_the_frame(tiny_net):
    """Frame i reads Whisper frames 2i-4 .. 2i+5 (50 Hz audio, 25 fps video, two video frames each side): the
    first frames see the left padding, a later frame's window is its neighbour's moved by two audio frames."""
    rng = np.random.default_rng(1)
    tokens = tiny_net.audio_tokens(rng.normal(0, 0.1, 32000).astype(np.float32), 50, 25)
    layers = tokens.shape[1] // 10
    per = tokens.reshape(50, 10, layers, -1)
    assert torch.all(per[0, :4] == 0) and not torch.all(per[0, 4] == 0)
    assert torch.allclose(per[10, 2:], per[11, :8])


# --- one GPU thread, many segments --------------------------------------------------------------------------------
def _inputs(tiny_net, n: int, seed: int):
    rng = np.random.default_rng(seed)
    latents = torch.from_numpy(rng.normal(0, 1, (n, 8, 32, 32)).astype(np.float32))
    tokens = tiny_net.audio_tokens(rng.normal(0, 0.1, 16000).astype(np.float32), n, 25)
    return latents, tokens


def test_musetalk_batcher_shares_passes_between_segments_and_gives_each_its_own_faces(tiny_net):
    batcher = FrameBatcher(lambda: tiny_net, batch_frames=8, unload_after=60)
    work = {seed: _inputs(tiny_net, 12, seed) for seed in (1, 2, 3)}
    alone = {seed: tiny_net.generate(*work[seed]) for seed in work}
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(work))

    def segment(seed: int) -> None:
        start.wait()
        got[seed] = batcher.generate(*work[seed])

    threads = [threading.Thread(target=segment, args=(s,)) for s in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for seed in work:  # batched with others, each segment still gets exactly the faces of its own frames
        assert got[seed].shape == alone[seed].shape
        assert np.abs(got[seed].astype(int) - alone[seed].astype(int)).max() <= 1, seed
    s = batcher.stats
    assert s.frames == 36 and s.largest <= 8
    assert s.passes < 36 / 4 + 3  # 36 frames in pieces of at most 8: passes shared, not one per piece per segment
    assert s.shared_passes >= 1, s


def test_musetalk_batcher_returns_memory_when_idle_and_loads_again(tiny_net):
    loads = []

    def load():
        loads.append(time.monotonic())
        return tiny_net

    batcher = FrameBatcher(load, batch_frames=4, unload_after=0.3)
    latents, tokens = _inputs(tiny_net, 3, 4)
    batcher.generate(latents, tokens)
    deadline = time.monotonic() + 5
    while batcher.net is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.net is None and batcher.stats.unloads == 1
    batcher.generate(latents, tokens)
    assert len(loads) == 2 and batcher.stats.loads == 2


def test_musetalk_batcher_hands_a_failed_pass_to_every_segment_in_it():
    class Broken:
        def generate(self, latents, tokens):
            raise RuntimeError("CUDA out of memory (test)")

    batcher = FrameBatcher(Broken, batch_frames=4, unload_after=60)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.generate(torch.zeros(6, 8, 4, 4), torch.zeros(6, 2, 2))
    with pytest.raises(ValueError, match="batch_frames must be at least 1, got 0"):
        FrameBatcher(Broken, batch_frames=0, unload_after=1)


def test_musetalk_random_weights_take_the_configs_shapes_for_the_benchmark(tiny_net):
    from tests.musetalk_helpers import TINY_VAE, TINY_WHISPER

    made = net.MuseTalkNet.random(TINY_UNET, TINY_VAE, TINY_WHISPER, WHISPER_FEATURES)
    assert made.tokens == tiny_net.tokens and made.latent_size == tiny_net.latent_size
    assert _shapes(made.unet) == _shapes(tiny_net.unet)
    latents = torch.zeros(2, 8, made.latent_size, made.latent_size)
    assert made.generate(latents, torch.zeros(2, made.tokens, 32)).shape == (2, net.FACE, net.FACE, 3)


def test_musetalk_chosen_at_an_avatars_creation_needs_its_weights_here(tiny):
    from studio.config import RendererConfig
    from workers.renderers import BundleError, chosen_renderer

    config = RendererConfig(weights_path=str(tiny), batch_frames=8)
    assert chosen_renderer(config, None) is config and chosen_renderer(config, "footage") is config
    chosen = chosen_renderer(config, "musetalk")
    assert (chosen.type, chosen.weights_path, chosen.batch_frames) == ("musetalk", str(tiny), 8)
    with pytest.raises(BundleError, match="unknown renderer type 'nosuch'; known: footage, musetalk"):
        chosen_renderer(config, "nosuch")
    with pytest.raises(ValueError, match="renderer 'musetalk' cannot build avatars on this deployment: "
                                         "renderer.weights_path is not set"):
        chosen_renderer(RendererConfig(), "musetalk")
