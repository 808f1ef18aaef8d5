"""MuseTalk 1.5's published configs as data, and tiny random models of the same layout saved in the release's
directory layout, for tests that load them through the real loading code (nothing is downloaded).

Sources of the published configs (values copied as data; no weights):
- UNet: TMElyralab/MuseTalk on Hugging Face, musetalkV15/musetalk.json (MuseTalk 1.5, MIT).
- VAE: stabilityai/sd-vae-ft-mse, config.json (diffusers 0.4.2 era; its .bin names VAE attention query/key/value/
  proj_attn).
- Whisper: openai/whisper-tiny, config.json (WhisperForConditionalGeneration) and preprocessor_config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

MUSETALK_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD_VAE_FT_MSE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
}
WHISPER_TINY = {
    "_name_or_path": "openai/whisper-tiny", "activation_dropout": 0.0, "activation_function": "gelu",
    "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0, "bos_token_id": 50257,
    "d_model": 384, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "decoder_layerdrop": 0.0,
    "decoder_layers": 4, "decoder_start_token_id": 50258, "dropout": 0.0, "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536, "encoder_layerdrop": 0.0, "encoder_layers": 4, "eos_token_id": 50257,
    "init_std": 0.02, "is_encoder_decoder": True, "max_length": 448, "max_source_positions": 1500,
    "max_target_positions": 448, "model_type": "whisper", "num_hidden_layers": 4, "num_mel_bins": 80,
    "pad_token_id": 50257, "scale_embedding": False, "torch_dtype": "float32", "use_cache": True,
    "vocab_size": 51865,
}
WHISPER_FEATURES = {
    "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "hop_length": 160,
    "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
    "processor_class": "WhisperProcessor", "return_attention_mask": False, "sampling_rate": 16000,
}

# Tiny components of the same layout: the same block types and joins, a few channels each.
TINY_UNET = {**MUSETALK_UNET, "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
             "attention_head_dim": 4, "cross_attention_dim": 32, "sample_size": 32,
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
TINY_VAE = {**SD_VAE_FT_MSE, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}
TINY_WHISPER = {**WHISPER_TINY, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
                "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
                "decoder_ffn_dim": 64, "num_hidden_layers": 1, "vocab_size": 64, "max_target_positions": 32,
                "max_length": 32, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
                "decoder_start_token_id": 3}

OLD_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def published_vae_keys(state: dict) -> dict:
    """A VAE state dict with the attention names sd-vae-ft-mse's published .bin has (query/key/value/proj_attn)."""
    out = {}
    for key, value in state.items():
        if ".attentions." in key:
            for new, old in OLD_ATTENTION.items():
                key = key.replace(f".{new}.", f".{old}.")
        out[key] = value
    return out


def make_tiny_release(root: Path, *, seed: int = 0, unet: dict | None = None) -> Path:
    """Random tiny models saved as MuseTalk's release lays them out under `root` (the `models` directory)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    unet_config = unet or TINY_UNET
    for sub in ("musetalkV15", "sd-vae", "whisper"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "musetalkV15" / "musetalk.json").write_text(json.dumps(unet_config))
    model = UNet2DConditionModel.from_config({k: v for k, v in TINY_UNET.items() if not k.startswith("_")})
    torch.save(model.state_dict(), root / "musetalkV15" / "unet.pth")
    (root / "sd-vae" / "config.json").write_text(json.dumps(TINY_VAE))
    vae = AutoencoderKL.from_config({k: v for k, v in TINY_VAE.items() if not k.startswith("_")})
    torch.save(published_vae_keys(vae.state_dict()), root / "sd-vae" / "diffusion_pytorch_model.bin")
    (root / "whisper" / "config.json").write_text(json.dumps(TINY_WHISPER))
    (root / "whisper" / "preprocessor_config.json").write_text(json.dumps(WHISPER_FEATURES))
    whisper = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in TINY_WHISPER.items()
                                                               if not k.startswith("_")}))
    torch.save(whisper.state_dict(), root / "whisper" / "pytorch_model.bin")
    return root
