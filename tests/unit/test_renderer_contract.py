"""The renderer contract (workers/renderers/base.py) and its registry: a backend registered by its own file is
usable through make_renderer, the queue routing and the config with no other edit; `renderer.type` names a
registered backend or the config is refused, naming the value and the known backends."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from studio.config import DEFAULT_CONFIG, ConfigError, IngestLimits, MediaProfile, load_settings
from tests.renderer_helpers import TINY_VERSION, TinyRenderer, registered, tiny_backend
from workers.media.probe import FootageError, MediaInfo
from workers.queue_policy import QueueError, render_queue, renderers_for
from workers.renderers import backend, backend_names, bundle_usable, make_renderer, register
from workers.renderers.base import Analysis, Backend, BundleError, BundleSource
from workers.tts.base import Speech

PROFILE = MediaProfile(width=64, height=96, fps=25)


def tiny_bundle(tmp_path: Path, profile: MediaProfile = PROFILE) -> Path:
    """A bundle built by the tiny backend's own build_bundle."""
    out = tmp_path / "bundle"
    out.mkdir()
    info = MediaInfo(width=640, height=960, fps=25.0, duration=32.0, has_audio=True, video_codec="h264")
    analysis = Analysis(frames=800, poses=[], faces_per_sample=[], face_heights=[], rms=np.zeros(0),
                        audio=np.zeros(0), scale=1.0)
    src = BundleSource(footage=tmp_path / "f.mp4", info=info, analysis=analysis, profile=profile,
                       limits=IngestLimits(), progress=lambda stage, done, total: None)
    built = backend("tiny").build_bundle(src, out)
    assert built.version == TINY_VERSION and built.manifest["fps"] == profile.fps
    return out


def speech(seconds: float, rate: int = 16000) -> Speech:
    return Speech(samples=np.zeros(int(round(seconds * rate)), np.float32), sample_rate=rate)


def config_with_renderer(tmp_path: Path, kind: str) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["renderer"]["type"] = kind
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_registered_backend_renders_through_make_renderer_and_is_routed_by_its_queue_kind(tmp_path, monkeypatch):
    assert "tiny" not in backend_names()
    registered(monkeypatch, tiny_backend("tiny", "gpu"))
    assert backend_names() == ["footage", "musetalk", "tiny"]
    bundle = tiny_bundle(tmp_path)

    renderer = make_renderer("tiny", bundle, PROFILE)
    assert isinstance(renderer, TinyRenderer)
    for seconds, frames in ((1.0, 25), (1.01, 26), (0.039, 1), (2.4, 60)):  # one frame per 1/fps, rounded up
        out = list(renderer.render(speech(seconds)))
        assert len(out) == renderer.frame_count(speech(seconds)) == frames
        assert out[0].shape == (96, 64, 3) and out[0].dtype == np.uint8
    assert len(list(renderer.idle(7))) == 7

    assert bundle_usable("tiny", bundle, PROFILE)
    assert not bundle_usable("tiny", bundle, MediaProfile(width=64, height=96, fps=30))  # built for another profile
    assert not bundle_usable("tiny", tmp_path, PROFILE)  # no bundle there
    assert not bundle_usable("nosuch", bundle, PROFILE)

    assert render_queue(SimpleNamespace(renderer="tiny")) == "render.gpu"
    assert render_queue(SimpleNamespace(renderer="footage")) == "render.cpu"
    assert renderers_for(["render.gpu"]) == ["musetalk", "tiny"]
    assert renderers_for(["render.cpu", "render.gpu"]) == ["footage", "musetalk", "tiny"]
    assert load_settings(config_with_renderer(tmp_path, "tiny"), env={}, renderers=backend_names()).renderer.type \
        == "tiny"

    monkeypatch.undo()  # the test's backend goes with the test
    assert backend_names() == ["footage", "musetalk"]
    with pytest.raises(QueueError, match="unknown renderer backend 'tiny'; known: footage, musetalk"):
        render_queue(SimpleNamespace(renderer="tiny"))
    with pytest.raises(BundleError, match="unknown renderer type 'tiny'; known: footage"):
        make_renderer("tiny", bundle, PROFILE)


def test_an_unknown_renderer_type_is_refused_at_config_load_naming_the_value_and_the_known_backends(tmp_path):
    path = config_with_renderer(tmp_path, "musetalk2")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={}, renderers=backend_names())
    assert info.value.problems == [("renderer.type",
                                    "unknown renderer backend 'musetalk2'; known backends: footage, musetalk")]
    # From the environment too: the same check, whichever layer set the value.
    with pytest.raises(ConfigError, match="renderer.type: unknown renderer backend 'gpu'"):
        load_settings(DEFAULT_CONFIG, env={"STUDIO_RENDERER__TYPE": "gpu"}, renderers=backend_names())
    assert load_settings(path, env={}).renderer.type == "musetalk2"  # the domain alone cannot know the backends


def test_studio_config_check_reports_an_unknown_renderer_type(tmp_path):
    from api.cli import app

    res = CliRunner().invoke(app, ["config", "check", str(config_with_renderer(tmp_path, "musetalk2"))])
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "renderer.type: unknown renderer backend 'musetalk2'; known backends: footage, musetalk" in text
    res = CliRunner().invoke(app, ["config", "check", str(config_with_renderer(tmp_path, "footage"))])
    assert res.exit_code == 0 and "renderer footage" in res.output


def test_ingest_refuses_a_backend_that_is_not_registered_before_reading_the_footage(tmp_path):
    from workers.ingest.footage import ingest_direct

    with pytest.raises(FootageError, match="cannot build avatar 'Ava': unknown renderer type 'nosuch'; known: footage"):
        ingest_direct(engine=None, data=None, profile=PROFILE, limits=IngestLimits(), creator_id="c", name="Ava",
                      footage=tmp_path / "missing.mp4", renderer="nosuch")


def test_backends_are_described_completely_and_named_once(monkeypatch):
    footage = backend("footage")
    assert (footage.name, footage.queue_kind, footage.queue) == ("footage", "cpu", "render.cpu")
    with pytest.raises(ValueError, match="queue_kind 'tpu' must be 'cpu' or 'gpu'"):
        tiny_backend("tiny", "tpu")
    with pytest.raises(ValueError, match="backend name 'Tiny Backend' must be lower-case"):
        tiny_backend("Tiny Backend")
    registered(monkeypatch, tiny_backend("tiny"))
    with pytest.raises(ValueError, match="renderer backend 'tiny' is registered twice"):
        register(tiny_backend("tiny"))
    assert isinstance(backend("tiny"), Backend)


def test_bundle_error_is_one_class_wherever_it_is_imported_from(tmp_path):
    from workers.renderers.footage import BundleError as FootageBundleError

    assert FootageBundleError is BundleError
    with pytest.raises(BundleError, match="is unreadable"):
        make_renderer("footage", tmp_path, PROFILE)
    assert not bundle_usable("footage", tmp_path, PROFILE)
