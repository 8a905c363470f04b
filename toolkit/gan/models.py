"""GAN generators and discriminators: a DCGAN baseline and a residual, spectrally normalised small-data GAN, each
optionally conditioned on an OpenPose map (pix2pix-style: the map's features enter the generator at every scale,
and the map is concatenated to the discriminator's input).

Both networks are diffusers models (`ModelMixin`, `ConfigMixin`) built from a `GANArch`'s fields, so
`Generator.from_pretrained(folder)` rebuilds a saved generator from its safetensors weights and `config.json` alone,
and diffusers' `EMAModel` keeps its moving average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from toolkit.config import ConfigError

MAP_CHANNELS = 3  # an OpenPose map is an RGB image


@dataclass(frozen=True)
class GANArch:
    """What a GAN's networks look like: the kind, output resolution (3, 4 or 5 times a power of two, from 16: 32,
    48, 64, 96...), latent size, base width, and whether the networks see a pose map."""

    kind: Literal["dcgan", "resnet"] = "resnet"
    resolution: int = 64
    z_dim: int = 128
    channels: int = 64  # the widest layer has 8x this (4x for resnet), halving per 2x resolution
    pose: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("dcgan", "resnet"):
            raise ConfigError(f"gan_arch: kind must be dcgan or resnet, got {self.kind!r}")
        if self.resolution < 16 or self.resolution % (1 << self.levels):
            raise ConfigError("resolution must be 3, 4 or 5 times a power of two, >= 16, for a GAN (e.g. 32, 48, "
                              f"64, 96), got {self.resolution}")
        if self.z_dim < 1 or self.channels < 1:
            raise ConfigError(f"z_dim and channels must be >= 1, got {self.z_dim} and {self.channels}")

    @property
    def levels(self) -> int:
        """Doublings from the `base` x `base` start to the output resolution."""
        return int(math.log2(self.resolution / 3))

    @property
    def base(self) -> int:
        """The side of the first feature map: 4 for powers of two, 3 for 48 or 96, 5 for 80."""
        return self.resolution >> self.levels

    def width(self, level: int) -> int:
        """Channels at `level` (0: base x base), from the widest down to `channels`."""
        top = 8 if self.kind == "dcgan" else 4
        return self.channels * max(1, top >> level)

    def to_json(self) -> dict:
        return asdict(self)


class PoseEncoder(nn.Module):
    """Features of a pose map (B, 3, R, R) at every generator scale: a strided conv pyramid, finest first."""

    def __init__(self, arch: GANArch) -> None:
        super().__init__()
        widths = [arch.width(level) // 2 for level in range(arch.levels + 1)]  # level 0 (base) ... levels (R)
        self.stem = nn.Conv2d(MAP_CHANNELS, widths[-1], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(widths[level + 1], widths[level], 4, stride=2, padding=1))
            for level in reversed(range(arch.levels)))
        self.widths = widths

    def forward(self, pose_map: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(pose_map)]  # (B, w, R, R)
        for block in self.down:
            feats.append(block(feats[-1]))  # halves the size each time, down to (B, w0, base, base)
        return feats[::-1]  # coarsest (base x base) first, like the generator's levels


def _up_block(arch: GANArch, c_in: int, c_out: int) -> nn.Module:
    if arch.kind == "dcgan":
        return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU())
    return ResUp(c_in, c_out)


class ResUp(nn.Module):
    """A residual generator block: BN, ReLU, 2x nearest upsampling, two 3x3 convolutions, a 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Upsample(scale_factor=2),
                                  nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class Generator(ModelMixin, ConfigMixin):
    """z (B, z_dim), and with `pose` a map (B, 3, R, R) in [-1, 1], to images (B, 3, R, R) in [-1, 1]."""

    @register_to_config
    def __init__(self, kind: str = "resnet", resolution: int = 64, z_dim: int = 128, channels: int = 64,
                 pose: bool = False) -> None:
        super().__init__()
        self.arch = arch = GANArch(kind, resolution, z_dim, channels, pose)
        self.encoder = PoseEncoder(arch) if arch.pose else None
        extra = self.encoder.widths if self.encoder else [0] * (arch.levels + 1)
        self.project = nn.Linear(arch.z_dim, arch.width(0) * arch.base ** 2)
        self.blocks = nn.ModuleList(_up_block(arch, arch.width(level) + extra[level], arch.width(level + 1))
                                    for level in range(arch.levels))
        last = arch.width(arch.levels) + extra[-1]
        self.to_rgb = nn.Sequential(nn.BatchNorm2d(last), nn.ReLU(), nn.Conv2d(last, 3, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, pose_map: torch.Tensor | None = None) -> torch.Tensor:
        if (pose_map is None) == self.arch.pose:
            raise ValueError("a pose-conditioned generator needs pose maps, an unconditional one takes none")
        base = self.arch.base
        x = self.project(z).view(z.shape[0], -1, base, base)  # (B, w0, base, base)
        feats = self.encoder(pose_map) if self.encoder else None
        for level, block in enumerate(self.blocks):
            x = block(torch.cat([x, feats[level]], 1) if feats else x)  # doubles the size
        return self.to_rgb(torch.cat([x, feats[-1]], 1) if feats else x)  # (B, 3, R, R)


class ResDown(nn.Module):
    """A residual discriminator block with spectral norm: leaky ReLU, two 3x3 convolutions, 2x average pooling.
    Leaky, not SNGAN's ReLU: with ReLU the 64 px face runs' discriminators died within minutes (every feature zero,
    the same logit for real and fake, hinge loss stuck at 2)."""

    def __init__(self, c_in: int, c_out: int, *, first: bool = False) -> None:
        super().__init__()
        layers = [] if first else [nn.LeakyReLU(0.2)]  # no activation on the raw image
        self.main = nn.Sequential(*layers, spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1)), nn.LeakyReLU(0.2),
                                  spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1)), nn.AvgPool2d(2))
        self.skip = nn.Sequential(spectral_norm(nn.Conv2d(c_in, c_out, 1)), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class Discriminator(ModelMixin, ConfigMixin):
    """Images (B, 3, R, R), with `pose` their maps concatenated (pix2pix), to one logit per image (B,)."""

    @register_to_config
    def __init__(self, kind: str = "resnet", resolution: int = 64, z_dim: int = 128, channels: int = 64,
                 pose: bool = False) -> None:
        super().__init__()
        self.arch = arch = GANArch(kind, resolution, z_dim, channels, pose)
        c_in = 3 + (MAP_CHANNELS if arch.pose else 0)
        widths = [arch.width(level) for level in reversed(range(arch.levels + 1))]  # finest (R) ... base x base
        if arch.kind == "dcgan":
            layers = [nn.Conv2d(c_in, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            self.features = nn.Sequential(*layers)  # (B, w0, base, base); no batch norm: R1 and GP are per image
            self.head = nn.Linear(widths[-1] * arch.base ** 2, 1)
        else:
            blocks = [ResDown(c_in, widths[0], first=True)]
            blocks += [ResDown(a, b) for a, b in zip(widths[:-2], widths[1:-1], strict=True)]
            self.features = nn.Sequential(*blocks, nn.LeakyReLU(0.2))  # (B, w1, base, base)
            self.head = spectral_norm(nn.Linear(widths[-2], 1))

    def forward(self, images: torch.Tensor, pose_map: torch.Tensor | None = None) -> torch.Tensor:
        if (pose_map is None) == self.arch.pose:
            raise ValueError("a pose-conditioned discriminator needs pose maps, an unconditional one takes none")
        x = self.features(torch.cat([images, pose_map], 1) if pose_map is not None else images)
        if self.arch.kind == "dcgan":
            return self.head(x.flatten(1)).squeeze(1)
        return self.head(x.sum(dim=(2, 3))).squeeze(1)  # global sum pooling (SNGAN)

