"""MuseTalk 1.5's inference network, in our own code: the published release's files, loaded from a local directory.

The architecture (Zhang et al., "MuseTalk: Real-Time High Quality Lip Synchronization with Latent Space
Inpainting", MIT code): a 256x256 face crop is encoded by the Stable Diffusion VAE (sd-vae-ft-mse) twice, once
with its lower half blanked and once whole (the reference); the two 4-channel latents, stacked to 8 channels,
go through a UNet2DConditionModel at timestep 0 whose cross-attention reads Whisper-tiny encoder features of the
audio around the frame (every encoder layer's output, 10 audio frames = 200 ms, with a sinusoidal position
encoding); the UNet's 4-channel output is decoded by the VAE into the face with the mouth for that audio.

Weights come only from the directory the operator sets (`renderer.weights_path`), in the layout MuseTalk's own
release uses (its download_weights.sh), so the published files load unchanged:

    models/musetalkV15/musetalk.json, unet.pth
    models/sd-vae/config.json, diffusion_pytorch_model.bin (or .safetensors)
    models/whisper/config.json, pytorch_model.bin (or model.safetensors), preprocessor_config.json

Nothing is fetched: the Hugging Face offline flags are set before diffusers or transformers is imported, and a
value that looks like a hub id is refused with a message that says to give a local path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# Set before any Hugging Face library is imported, here or anywhere in this process: never a download.
for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_flag] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

FACE = 256  # the face crop the published model was trained on
AUDIO_FPS = 50  # Whisper encoder frames per second (30 s -> 1500)
AUDIO_LEFT = AUDIO_RIGHT = 2  # video frames of audio context each side (MuseTalk's audio_padding_length)
SAMPLE_RATE = 16000


class ModelError(ValueError):
    """The weights directory is missing, not in the release layout, a hub id, or its files do not fit together."""


@dataclass(frozen=True)
class Release:
    """The files of one MuseTalk 1.5 release directory."""

    root: Path
    unet_config: Path
    unet_weights: Path
    vae_config: Path
    vae_weights: Path
    whisper_config: Path
    whisper_weights: Path
    whisper_features: Path

    def fingerprint(self) -> str:
        """Identifies the VAE a bundle's latents were made with (its config and its weights' size and ends), cheaply."""
        h = hashlib.sha256(self.vae_config.read_bytes())
        size = self.vae_weights.stat().st_size
        h.update(str(size).encode())
        with self.vae_weights.open("rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
        return h.hexdigest()[:16]


_LAYOUT: dict[str, tuple[str, ...]] = {
    "unet_config": ("musetalkV15/musetalk.json",),
    "unet_weights": ("musetalkV15/unet.pth",),
    "vae_config": ("sd-vae/config.json",),
    "vae_weights": ("sd-vae/diffusion_pytorch_model.safetensors", "sd-vae/diffusion_pytorch_model.bin"),
    "whisper_config": ("whisper/config.json",),
    "whisper_weights": ("whisper/model.safetensors", "whisper/pytorch_model.bin"),
    "whisper_features": ("whisper/preprocessor_config.json",),
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def locate(weights_path: str | os.PathLike | None) -> Release:
    """The release files under `weights_path`; ModelError naming the path and what is wrong."""
    if weights_path is None or str(weights_path).strip() == "":
        raise ModelError("renderer.weights_path is not set: the musetalk backend needs the local directory of "
                         "MuseTalk 1.5's released models (musetalkV15/, sd-vae/, whisper/)")
    text = str(weights_path)
    root = Path(text).expanduser()
    if not root.exists():
        if _HUB_ID.fullmatch(text) and not text.startswith((".", "/", "~")):
            raise ModelError(f"renderer.weights_path {text!r} looks like a Hugging Face hub id; weights are never "
                             "downloaded here: download the release once and give its local models directory")
        raise ModelError(f"renderer.weights_path {text} does not exist")
    if not root.is_dir():
        raise ModelError(f"renderer.weights_path {text} is not a directory")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, names in _LAYOUT.items():
        hit = next((root / n for n in names if (root / n).is_file()), None)
        if hit is None:
            missing.append(" or ".join(names))
        else:
            found[role] = hit
    if missing:
        raise ModelError(f"renderer.weights_path {text} is not MuseTalk 1.5's models layout: missing "
                         f"{', '.join(missing)}")
    return Release(root=root, **found)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def _config(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


# --- the modules, from their configs -------------------------------------------------------------------------------
def unet_from_config(config: dict[str, Any]):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(_config(config))


def vae_from_config(config: dict[str, Any]):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(_config(config))


def whisper_encoder_from_config(config: dict[str, Any]):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(WhisperConfig(**_config(config)))


def _build(make, config: dict[str, Any], what: Path, device: str = "meta"):
    import torch

    try:
        with torch.device(device):
            return make(config)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise ModelError(f"{what}: the model cannot be built from this config: {exc}") from None


# --- state dicts as the published files write them -----------------------------------------------------------------
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_keys(state: dict[str, Any]) -> dict[str, Any]:
    """sd-vae-ft-mse was saved by diffusers before 0.14, whose VAE attention was named query/key/value/proj_attn;
    today's AutoencoderKL names them to_q/to_k/to_v/to_out.0. Both load."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in _OLD_ATTENTION:
            key = ".".join([*parts[:-2], _OLD_ATTENTION[parts[-2]], parts[-1]])
        out[key] = value
    return out


def whisper_encoder_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The encoder's part of a Whisper checkpoint: openai/whisper-tiny's file holds the whole
    WhisperForConditionalGeneration (`model.encoder.*`, `model.decoder.*`, `proj_out.*`); a WhisperModel holds
    `encoder.*`. The decoder is not used."""
    out = {}
    for key, value in state.items():
        for prefix in ("model.encoder.", "encoder."):
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
                break
    return out


def read_state(path: Path, *, shapes_only: bool = False) -> dict[str, Any]:
    """Tensors of a .safetensors, .bin or .pth file, memory-mapped (nothing read until used); with `shapes_only`,
    their shapes as tuples."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if shapes_only:
                    return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
                return {k: f.get_tensor(k) for k in f.keys()}
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in the legacy (non-zip) format cannot be mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way, naming it
        raise ModelError(f"{path} cannot be read as weights: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds {type(state).__name__}, not a state dict")
    return {k: tuple(v.shape) for k, v in state.items()} if shapes_only else state


def compare(model, given: dict[str, tuple], what: Path) -> list[str]:
    """What keeps `given` (key -> shape) from loading into `model` exactly: missing, unexpected, other shapes."""
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    other = sorted(k for k in set(wanted) & set(given) if wanted[k] != tuple(given[k]))
    problems = []

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    if missing:
        problems.append(f"{what}: {len(missing)} weights the config needs are missing ({few(missing)})")
    if unexpected:
        problems.append(f"{what}: {len(unexpected)} weights the config has no place for ({few(unexpected)})")
    if other:
        problems.append(f"{what}: {len(other)} weights have other shapes than the config gives ("
                        + ", ".join(f"{k} {tuple(given[k])} vs {wanted[k]}" for k in other[:3]) + ")")
    return problems


@dataclass
class Configs:
    unet: dict[str, Any]
    vae: dict[str, Any]
    whisper: dict[str, Any]
    features: dict[str, Any]


def read_configs(release: Release) -> Configs:
    return Configs(unet=_json(release.unet_config), vae=_json(release.vae_config),
                   whisper=_json(release.whisper_config), features=_json(release.whisper_features))


def fit_problems(c: Configs, release: Release) -> list[str]:
    """The three models must fit each other as MuseTalk joins them."""
    latent = int(c.vae.get("latent_channels", 4))
    problems = []
    if int(c.unet.get("in_channels", 0)) != 2 * latent:
        problems.append(f"{release.unet_config}: in_channels {c.unet.get('in_channels')} must be twice the VAE's "
                        f"latent_channels ({latent}): the masked and the reference face latents")
    if int(c.unet.get("out_channels", 0)) != latent:
        problems.append(f"{release.unet_config}: out_channels {c.unet.get('out_channels')} must be the VAE's "
                        f"latent_channels ({latent})")
    if c.unet.get("cross_attention_dim") != c.whisper.get("d_model"):
        problems.append(f"{release.unet_config}: cross_attention_dim {c.unet.get('cross_attention_dim')} must be "
                        f"the Whisper encoder's d_model ({c.whisper.get('d_model')})")
    if int(c.features.get("sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
        problems.append(f"{release.whisper_features}: sampling_rate {c.features.get('sampling_rate')} must be "
                        f"{SAMPLE_RATE}")
    if int(c.features.get("feature_size", -1)) != int(c.whisper.get("num_mel_bins", -2)):
        problems.append(f"{release.whisper_features}: feature_size {c.features.get('feature_size')} must be the "
                        f"encoder's num_mel_bins ({c.whisper.get('num_mel_bins')})")
    return problems


def release_problems(weights_path: str | os.PathLike | None) -> list[str]:
    """Everything that would stop the backend loading `weights_path`, found without loading a weight: the layout,
    the configs, and every weight's name and shape against the modules the configs build (on the meta device)."""
    try:
        release = locate(weights_path)
        c = read_configs(release)
    except ModelError as exc:
        return [str(exc)]
    problems = fit_problems(c, release)
    for make, config, cfg_path, weights, keys in (
            (unet_from_config, c.unet, release.unet_config, release.unet_weights, dict),
            (vae_from_config, c.vae, release.vae_config, release.vae_weights, vae_keys),
            (whisper_encoder_from_config, c.whisper, release.whisper_config, release.whisper_weights,
             whisper_encoder_keys)):
        try:
            model = _build(make, config, cfg_path)
            problems += compare(model, keys(read_state(weights, shapes_only=True)), weights)
        except ModelError as exc:
            problems.append(str(exc))
    return problems


# --- loaded, for inference -----------------------------------------------------------------------------------------
def _load(make, config, weights: Path, keys, cfg_path: Path, device, dtype):
    state = keys(read_state(weights))
    model = _build(make, config, cfg_path)
    problems = compare(model, {k: tuple(v.shape) for k, v in state.items()}, weights)
    if problems:
        raise ModelError("; ".join(problems))
    model.load_state_dict(state, assign=True, strict=True)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a buffer the file does not hold (none in the published modules): build it for real
        model = _build(make, config, cfg_path, device="cpu")
        model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def position_encoding(length: int, d_model: int):
    """MuseTalk's sinusoidal encoding of the audio tokens' order (sin on even, cos on odd channels)."""
    import torch

    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class MuseTalkNet:
    """The three models on one device, in fp16 on CUDA (fp32 on a CPU), for inference only."""

    def __init__(self, unet, vae, whisper, *, vae_config: dict[str, Any], whisper_config: dict[str, Any],
                 features: dict[str, Any] | None = None, release: Release | None = None):
        import torch
        from transformers import WhisperFeatureExtractor

        self.unet, self.vae, self.whisper, self.release = unet, vae, whisper, release
        first = next(unet.parameters())
        self.device, self.dtype = first.device, first.dtype
        kept = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "padding_value")
        self.features = WhisperFeatureExtractor(**{k: v for k, v in _config(features or {}).items() if k in kept})
        self.scaling = float(vae_config.get("scaling_factor", 0.18215))
        self.latent_size = FACE // 2 ** (len(vae_config.get("block_out_channels", [0, 0, 0, 0])) - 1)
        d_model = int(whisper_config["d_model"])
        self.tokens = 2 * (AUDIO_LEFT + AUDIO_RIGHT + 1) * (int(whisper_config["encoder_layers"]) + 1)
        self.pe = position_encoding(self.tokens, d_model).to(self.device, self.dtype)
        mask = torch.ones(1, 1, FACE, FACE)
        mask[..., FACE // 2:, :] = 0  # the lower half blanked: the mouth the UNet paints in
        self.upper = mask.to(self.device, self.dtype)

    @classmethod
    def load(cls, weights_path: str | os.PathLike, device: str = "auto") -> MuseTalkNet:
        """The release under `weights_path`, checked and loaded onto `device` (auto: CUDA when torch sees it)."""
        import torch

        release = locate(weights_path)
        c = read_configs(release)
        problems = fit_problems(c, release)
        if problems:
            raise ModelError("; ".join(problems))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
        unet = _load(unet_from_config, c.unet, release.unet_weights, dict, release.unet_config, dev, dtype)
        vae = _load(vae_from_config, c.vae, release.vae_weights, vae_keys, release.vae_config, dev, dtype)
        whisper = _load(whisper_encoder_from_config, c.whisper, release.whisper_weights, whisper_encoder_keys,
                        release.whisper_config, dev, dtype)
        return cls(unet, vae, whisper, vae_config=c.vae, whisper_config=c.whisper, features=c.features,
                   release=release)

    @classmethod
    def random(cls, unet_config: dict, vae_config: dict, whisper_config: dict, features: dict, *,
               device: str = "cpu", seed: int = 0) -> MuseTalkNet:
        """Random weights of the configs' shapes (the same arithmetic as real weights), for benchmarks."""
        import torch

        torch.manual_seed(seed)
        dev = torch.device(device)
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
        made = []
        for make, config in ((unet_from_config, unet_config), (vae_from_config, vae_config),
                             (whisper_encoder_from_config, whisper_config)):
            made.append(_build(make, config, Path("config.json"), device=device).to(dtype).eval()
                        .requires_grad_(False))
        return cls(*made, vae_config=vae_config, whisper_config=whisper_config, features=features)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for m in (self.unet, self.vae, self.whisper)
                   for t in (*m.parameters(), *m.buffers()))

    def audio_tokens(self, samples: np.ndarray, frames: int, fps: int) -> torch.Tensor:
        """Per video frame, the Whisper tokens around it: (frames, tokens, d_model), as MuseTalk's
        get_whisper_chunk makes them (every encoder layer's output, 2 video frames of context each side)."""
        import torch

        samples = np.asarray(samples, np.float32)
        chunk = int(self.features.chunk_length * SAMPLE_RATE)
        feats = []
        with torch.inference_mode():
            for at in range(0, max(len(samples), 1), chunk):
                mel = self.features(samples[at:at + chunk], sampling_rate=SAMPLE_RATE,
                                    return_tensors="pt").input_features
                hidden = self.whisper(mel.to(self.device, self.dtype), output_hidden_states=True).hidden_states
                feats.append(torch.stack(hidden, dim=2)[0])  # (1500, layers + 1, d_model)
            whole = torch.cat(feats, 0)[: math.floor(len(samples) / SAMPLE_RATE * AUDIO_FPS)]
            step = AUDIO_FPS / fps
            per_frame = 2 * (AUDIO_LEFT + AUDIO_RIGHT + 1)
            left = math.ceil(step) * AUDIO_LEFT
            need = math.floor((frames - 1) * step) + per_frame  # last window's end, after the left padding
            right = max(0, need - left - len(whole))
            pad = whole.new_zeros((left, *whole.shape[1:])), whole.new_zeros((right, *whole.shape[1:]))
            padded = torch.cat([pad[0], whole, pad[1]], 0)
            index = torch.tensor([math.floor(i * step) for i in range(frames)], device=self.device)
            windows = padded[index[:, None] + torch.arange(per_frame, device=self.device)[None, :]]
            return windows.reshape(frames, -1, whole.shape[-1])  # (frames, 10 * (layers + 1), d_model)

    def encode_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) RGB uint8 -> (N, 8, h, w) float16: the masked face's latents, then the whole face's."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(faces)).to(self.device).permute(0, 3, 1, 2)
            x = x.to(self.dtype) / 255.0
            masked = self.vae.encode((x * self.upper - 0.5) / 0.5).latent_dist.mode() * self.scaling
            whole = self.vae.encode((x - 0.5) / 0.5).latent_dist.mode() * self.scaling
            return torch.cat([masked, whole], 1).to(torch.float16).cpu().numpy()

    def generate(self, latents: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
        """One forward pass: (B, 8, h, w) face latents and (B, tokens, d_model) audio -> (B, 256, 256, 3) RGB uint8."""
        import torch

        with torch.inference_mode():
            audio = tokens.to(self.device, self.dtype) + self.pe[None]
            out = self.unet(latents.to(self.device, self.dtype), 0, encoder_hidden_states=audio).sample
            image = self.vae.decode(out / self.scaling).sample
            image = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            return image.permute(0, 2, 3, 1).cpu().numpy()
