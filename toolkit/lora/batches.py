"""Training batches: VAE latents, pose maps and caption embeddings, from caches or computed on the fly, identically.

With `--cache_latents` each image (and its flip) is encoded once and the latent distribution's mean and std are
kept; with `--cache_text_embeddings` each distinct caption (and the empty one) is encoded once. Either way a step
draws the same random numbers in the same order (flip, dropout, then the latent sample), so the cached and the
uncached path give the same batch. Pose maps are kept as PNG bytes (mostly black: a few KB each).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from toolkit.errors import UserError
from toolkit.lora.data import Example, PoseData
from toolkit.prompts.captions import shuffle_tags


@torch.no_grad()
def latent_stats(vae, pixels: torch.Tensor, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (B, 4, h, w), fp32 on the CPU, of the VAE posterior of uint8 images (B, 3, R, R)."""
    x = pixels.to(device=device, dtype=dtype) / 127.5 - 1.0
    dist = vae.encode(x).latent_dist
    return dist.mean.float().cpu(), dist.std.float().cpu()


@torch.no_grad()
def encode_captions(tokenizer, text_encoder, captions: list[str], device) -> torch.Tensor:
    """Text-encoder hidden states (B, 77, D), fp32 on the CPU, as the SD pipelines encode a prompt."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0].float().cpu()


def _png(map_u8: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(map_u8.permute(1, 2, 0).numpy()).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _unpng(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


@dataclass
class Caches:
    """Per (example, flipped): latent mean and std and the pose map (PNG); per caption: its embedding."""

    latents: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor, bytes]] | None = None
    texts: dict[str, torch.Tensor] | None = None
    skipped: list[int] = field(default_factory=list)


def build_caches(data: PoseData, models, *, latents: bool, texts: bool, device, dtype) -> Caches:
    """Encode every image (and flip) and every caption once, as far as `latents` and `texts` ask."""
    caches = Caches()
    if latents:
        caches.latents = {}
        for i in tqdm(range(len(data)), desc="caching latents"):
            example = data.example(i)
            if example is None:
                caches.skipped.append(i)
                continue
            for flipped in (False, True) if example.flipped_map is not None else (False,):
                image, pose_map = _view(example, flipped)
                mean, std = latent_stats(models.vae, image[None], device, dtype)
                caches.latents[(i, flipped)] = (mean[0], std[0], _png(pose_map))
        if not caches.latents:
            raise UserError(f"none of the {len(data)} training examples can be read (first: {data.skipped[0]})")
    if texts:
        captions = sorted({data.caption(i) for i in range(len(data))} | {""})
        caches.texts = {}
        for start in tqdm(range(0, len(captions), 32), desc="caching text embeddings"):
            chunk = captions[start:start + 32]
            for caption, embedding in zip(chunk, encode_captions(models.tokenizer, models.text_encoder, chunk, device),
                                          strict=True):
                caches.texts[caption] = embedding
    return caches


def _view(example: Example, flipped: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, pose map) uint8 (3, R, R): as is, or mirrored with the re-drawn map."""
    if not flipped:
        return example.image, example.pose_map
    return example.image.flip(-1), example.flipped_map


@dataclass
class Batch:
    """One micro-batch: scaled latents (B, 4, h, w), pose maps (B, 3, R, R) in [0, 1], embeddings (B, 77, D)."""

    latents: torch.Tensor
    pose_maps: torch.Tensor
    embeddings: torch.Tensor


def make_batch(data: PoseData, models, caches: Caches, indices: list[int], generator: torch.Generator, *, device,
               dtype) -> Batch:
    """The micro-batch of `indices`. An unreadable example is replaced by the next readable one, so that a batch is
    never empty (every process takes part in every all-reduce) and stays a pure function of the step."""
    slots = []
    for i in indices:  # draws in a fixed order: flip, then dropout
        coin = bool(torch.rand((), generator=generator) < 0.5)
        slots.append((i, coin, bool(torch.rand((), generator=generator) < data.captions.dropout)))
    stats, maps, captions, pixels = [], [], [], []
    for i, coin, drop in slots:
        j, example = _readable(data, caches, i)
        flip = coin and data.can_flip(j)
        if caches.latents is not None:
            mean, std, png = caches.latents[(j, flip)]
            stats.append((mean, std))
            maps.append(_unpng(png))
        else:
            image, pose_map = _view(example, flip)
            pixels.append(image)
            maps.append(pose_map)
        captions.append("" if drop else _caption(data, j, generator))
    if caches.latents is None:
        mean, std = latent_stats(models.vae, torch.stack(pixels), device, dtype)
        stats = list(zip(mean, std, strict=True))
    sample = torch.stack([m + s * torch.randn(m.shape, generator=generator) for m, s in stats])  # (B, 4, h, w)
    latents = _scale(sample, models.vae.config)
    if caches.texts is not None:
        embeddings = torch.stack([caches.texts[c] for c in captions])
    else:
        embeddings = encode_captions(models.tokenizer, models.text_encoder, captions, device)
    pose_maps = torch.stack(maps).float() / 255.0  # (B, 3, R, R) in [0, 1], as ControlNets are trained
    return Batch(latents.to(device), pose_maps.to(device), embeddings.to(device))


def _readable(data: PoseData, caches: Caches, index: int) -> tuple[int, Example | None]:
    """`index`, or the next example after it (cyclically) that can be read, with its decoded Example when latents
    are not cached; unreadable ones are listed in `data.skipped`."""
    for offset in range(len(data)):
        j = (index + offset) % len(data)
        if caches.latents is not None:
            if (j, False) in caches.latents:
                return j, None
        elif (example := data.example(j)) is not None:
            return j, example
    raise UserError(f"none of the {len(data)} training examples can be read (first: {data.skipped[0]})")


def _caption(data: PoseData, index: int, generator: torch.Generator) -> str:
    if not data.captions.shuffle_tags:
        return data.caption(index)
    rng = random.Random(int(torch.randint(0, 2**31, (), generator=generator)))
    return shuffle_tags(data.caption(index), data.captions.keep_tags, rng)


def _scale(latents: torch.Tensor, vae_config) -> torch.Tensor:
    """Latents as the UNet sees them: (z - shift) * scaling_factor."""
    shift = getattr(vae_config, "shift_factor", None) or 0.0
    return (latents - shift) * vae_config.scaling_factor
