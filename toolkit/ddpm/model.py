"""UNet2DModel size presets and construction from a preset or a config JSON."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import UNet2DModel

from toolkit.errors import UserError

_D, _AD, _U, _AU = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"

PRESETS: dict[str, dict] = {
    # ~0.2 M parameters: for tests.
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=(_D, _AD), up_block_types=(_AU, _U), attention_head_dim=8),
    # ~2.6 M: the CPU default; attention only at 1/4 resolution keeps 32-64 px fast.
    "small": dict(block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16,
                  down_block_types=(_D, _AD, _D), up_block_types=(_U, _AU, _U)),
    # ~25 M: attention at the third level; a serious CPU model at 64 px.
    "medium": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                   down_block_types=(_D, _D, _AD, _D), up_block_types=(_U, _AU, _U, _U)),
    # ~114 M: the diffusers train_unconditional.py default.
    "ddpm": dict(block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                 down_block_types=(_D, _D, _D, _D, _AD, _D), up_block_types=(_U, _AU, _U, _U, _U, _U)),
}


def _read_config(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(f"model_config_name_or_path: no config JSON at {name_or_path}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON: {e}") from None
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_unet(preset: str, resolution: int, *, dropout: float = 0.0, config_path: str | None = None,
               in_channels: int = 3) -> UNet2DModel:
    """A freshly initialised UNet2DModel from a preset (or a config JSON), checked against `resolution`."""
    config = _read_config(config_path) if config_path else dict(PRESETS[preset])
    config.update(sample_size=resolution, in_channels=in_channels, out_channels=3)
    if dropout:
        config["dropout"] = dropout
    try:
        unet = UNet2DModel(**config)
    except (TypeError, ValueError) as e:
        raise UserError(f"cannot build UNet2DModel from {config_path or preset}: {e}") from None
    check_resolution(unet, resolution)
    return unet


def check_resolution(unet: UNet2DModel, resolution: int) -> None:
    """Raise a UserError unless `resolution` survives the UNet's downsampling exactly."""
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution % factor:
        raise UserError(f"resolution {resolution} must be a multiple of {factor} for this UNet "
                        f"({len(unet.config.block_out_channels)} levels)")
