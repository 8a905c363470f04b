"""Differentiable augmentation for small data (DiffAugment, Zhao et al. 2020): the same random colour, translation
and cutout on every image the discriminator sees, real and generated, so that it cannot memorise a small set and
the generator still gets gradients. A pose map moves with its image under translation and keeps its colours."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation and contrast per image, on images (B, 3, H, W) in [-1, 1]."""
    b = x.shape[0]

    def rand(low: float, high: float) -> torch.Tensor:
        return (torch.rand(b, 1, 1, 1, generator=generator) * (high - low) + low).to(x.device, x.dtype)

    x = x + rand(-0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * rand(0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * rand(0.5, 1.5) + mean


def _translate(tensors: list[torch.Tensor], fills: list[float], generator: torch.Generator,
               ratio: float = 0.125) -> list[torch.Tensor]:
    """Shift each image by up to `ratio` of its size (the same shift for an image and its map), padding with `fills`."""
    size = tensors[0].shape[-1]
    pad = max(1, int(size * ratio + 0.5))
    shifts = torch.randint(-pad, pad + 1, (tensors[0].shape[0], 2), generator=generator).tolist()
    out = []
    for x, fill in zip(tensors, fills, strict=True):
        padded = F.pad(x, (pad, pad, pad, pad), value=fill)  # (B, C, H + 2p, W + 2p)
        out.append(torch.stack([padded[i, :, pad + dy:pad + dy + size, pad + dx:pad + dx + size]
                                for i, (dy, dx) in enumerate(shifts)]))
    return out


def _cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Set a random square of `ratio` x the size to 0 (mid grey) in each image."""
    size = x.shape[-1]
    side = int(size * ratio + 0.5)
    corners = torch.randint(-(side // 2), size - side // 2 + 1, (x.shape[0], 2), generator=generator)
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    top, left = corners[:, 0].view(-1, 1, 1), corners[:, 1].view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)


def diff_augment(images: torch.Tensor, policy: tuple[str, ...], *, generator: torch.Generator,
                 pose_map: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, 3, R, R) in [-1, 1] (and their pose maps) augmented by `policy`, differentiably in the images.

    Draws from `generator` in a fixed order, so a seeded step is reproducible. Real and generated images go through
    the same policy with their own draws."""
    unknown = set(policy) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown augmentation {sorted(unknown)}; choose from {POLICIES}")
    if "color" in policy:
        images = _color(images, generator)
    if "translation" in policy:
        if pose_map is None:
            (images,) = _translate([images], [0.0], generator)
        else:
            images, pose_map = _translate([images, pose_map], [0.0, -1.0], generator)  # a map's background is black
    if "cutout" in policy:
        images = _cutout(images, generator)
    return images, pose_map
