"""Training images: an in-memory uint8 cache of a source's images (and pose maps), and batches that depend only on
(seed, step), so that a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from toolkit.data.sources import FiguresSource, ImageSource, open_source
from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS, Crop, apply_crop, plan_crop
from toolkit.pose.conditioning import crop_pose, draw_map, resize_pose
from toolkit.training.config import ScratchImageConfig
from toolkit.training.loop import StepBatch

CACHE_LIMIT_BYTES = 4 * 1024**3


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB image as uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


@dataclass
class TrainImages:
    """Decoded training images at one resolution; `skipped` lists files that could not be read."""

    source: ImageSource
    resolution: int
    center_crop: bool
    with_conditioning: bool = False  # items are then (6, H, W): the image and its pose map, cropped alike
    cached: list[torch.Tensor] | None = None  # uint8 (3 or 6, H, W) per good image, when kept in memory
    good: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.good)

    def decode(self, index: int) -> torch.Tensor:
        """uint8 (3, H, W), or (6, H, W) with the pose map, short side at `resolution`; raises DECODE_ERRORS."""
        image = self.source.load(index)
        crop = plan_crop(image.size, self.resolution, square=self.center_crop)
        tensor = to_tensor(apply_crop(image, crop))
        if not self.with_conditioning:
            return tensor
        return torch.cat([tensor, to_tensor(self._pose_map(index, image.size, crop))])  # (6, H, W)

    def _pose_map(self, index: int, size: tuple[int, int], crop: Crop) -> np.ndarray | Image.Image:
        """The item's pose map under `crop`: drawn from its keypoints when it has them, else its map image."""
        pose = self.source.keypoints(index)
        if pose is not None:  # sticks as thick as at the training resolution, also on a wider random-crop canvas
            return draw_map(crop_pose(resize_pose(pose, size), crop), resolution=self.resolution,
                            threshold=self.source.joint_threshold(index))
        given = self.source.load_conditioning(index)
        if given.size != size:
            given = given.resize(size, Image.Resampling.BILINEAR)
        return apply_crop(given, crop)

    def get(self, i: int) -> torch.Tensor:
        """The i-th good image as uint8 (3, H, W), or (6, H, W) with its pose map."""
        return self.cached[i] if self.cached is not None else self.decode(self.good[i])


def _decode_or_none(images: TrainImages, index: int) -> torch.Tensor | None:
    try:
        return images.decode(index)
    except DECODE_ERRORS:
        return None


def build_train_images(source: ImageSource, resolution: int, *, center_crop: bool, cache: str,
                       max_items: int | None = None, with_conditioning: bool = False) -> TrainImages:
    """Decode every image (and pose map) once, kept as uint8 when `cache` allows; unreadable ones are skipped and
    listed."""
    count = min(len(source), max_items or len(source))
    if count == 0:
        raise UserError("the dataset is empty: no images found")
    images = TrainImages(source, resolution, center_crop, with_conditioning)
    fits = count * (6 if with_conditioning else 3) * resolution * resolution * 1.5 < CACHE_LIMIT_BYTES
    keep = cache == "always" or (cache == "auto" and fits)
    if isinstance(source, FiguresSource) and not keep:  # rendered on the fly, and never unreadable: an endless set
        images.good = list(range(count))
        return images
    decoded: list[torch.Tensor] = []
    with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding and resizing
        results = pool.map(lambda i: _decode_or_none(images, i), range(count))
        for index, tensor in enumerate(tqdm(results, total=count, desc=f"decoding images at {resolution}px",
                                            leave=False)):
            if tensor is None:
                images.skipped.append(source.name(index))
                continue
            images.good.append(index)
            if keep:
                decoded.append(tensor)
    if not images.good:
        raise UserError(f"none of the {count} images could be read (first: {images.skipped[0]})")
    images.cached = decoded if keep else None
    return images


@functools.lru_cache(maxsize=2)  # the current epoch and the next: drawn once per epoch, not once per batch
def _epoch_permutation(num_items: int, seed: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))


def batch_indices(num_items: int, batch_size: int, seed: int, batch_number: int) -> list[int]:
    """Indices of micro-batch `batch_number` in an endless stream of seeded per-epoch permutations."""
    start = batch_number * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_items)
        perm = _epoch_permutation(num_items, seed * 100_003 + epoch)
        take = min(batch_size - len(out), num_items - offset)
        out.extend(perm[offset:offset + take].tolist())
    return out


def augment(images: list[torch.Tensor], resolution: int, random_flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random-crop each uint8 (C, H, W) to `resolution`, flip, and scale to [-1, 1]: float (B, C, R, R).

    With C = 6 (image and pose map) both get the same crop; callers turn flips off then, because a mirrored
    OpenPose map would swap the colours of left and right.
    """
    out = []
    for img in images:
        h, w = img.shape[1:]
        top = int(torch.randint(0, h - resolution + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - resolution + 1, (1,), generator=generator))
        img = img[:, top:top + resolution, left:left + resolution]
        if random_flip and torch.rand((), generator=generator) < 0.5:
            img = img.flip(-1)
        out.append(img)
    return torch.stack(out).float().div(127.5).sub(1.0)


class MicroBatches(torch.utils.data.Dataset):
    """Item k is micro-batch k: a pure function of (seed, k), so batches can be produced by workers and resumed."""

    def __init__(self, images: TrainImages, batch_size: int, *, seed: int, random_flip: bool, shard=(0, 1)):
        self.images, self.batch_size, self.seed, self.random_flip = images, batch_size, seed, random_flip
        self.rank, self.world = shard

    def __len__(self) -> int:
        return 2**62  # endless: the training loop decides how many to draw

    def __getitem__(self, k: int) -> tuple[torch.Tensor, list[str]]:
        indices = batch_indices(len(self.images), self.batch_size * self.world, self.seed, k)
        indices = indices[self.rank::self.world]  # this process's share of the global batch
        tensors, failed = [], []
        for i in indices:
            try:
                tensors.append(self.images.get(i))
            except DECODE_ERRORS:  # only possible when not cached: substitute the first image
                failed.append(self.images.source.name(self.images.good[i]))
                tensors.append(self.images.get(0))
        generator = torch.Generator().manual_seed(self.seed * 7_919 + k)
        return augment(tensors, self.images.resolution, self.random_flip, generator), failed


def load_images(cfg: ScratchImageConfig, resolution: int) -> tuple[TrainImages, str]:
    """Decode the training images at `resolution` (skipping unreadable files)."""
    maps = cfg.conditioning_image_column if cfg.uses_pose_maps else None
    source, name = open_source(train_data_dir=cfg.train_data_dir, dataset_name=cfg.dataset_name,
                               dataset_config_name=cfg.dataset_config_name, image_column=cfg.image_column,
                               conditioning_column=maps, num_figures=cfg.num_figures, resolution=resolution,
                               seed=cfg.seed)
    images = build_train_images(source, resolution, center_crop=cfg.center_crop, cache=cfg.cache_images,
                                max_items=cfg.max_train_samples, with_conditioning=cfg.uses_pose_maps)
    return images, name


def centre(item: torch.Tensor, resolution: int) -> torch.Tensor:
    """The centre R x R of a decoded training item (C, H, W) with its short side at R."""
    top, left = (item.shape[1] - resolution) // 2, (item.shape[2] - resolution) // 2
    return item[:, top:top + resolution, left:left + resolution]


def validation_maps(images: TrainImages, count: int) -> torch.Tensor | None:
    """The pose maps of the first `count` training images (cycled if there are fewer), centre-cropped:
    (N, 3, R, R) in [-1, 1]."""
    if not images.with_conditioning:
        return None
    maps = [centre(images.get(i % len(images))[3:], images.resolution) for i in range(count)]
    return torch.stack(maps).float().div(127.5).sub(1.0)


def step_batches(images: TrainImages, cfg: ScratchImageConfig, accelerator, *, batch_size: int, seed: int,
                 steps: range, skipped: list[str], logs: dict | None = None) -> Iterator[StepBatch]:
    """The micro-batches of optimiser steps `steps` (a range within a stream of `batch_size` batches seeded by
    `seed`), decoded ahead by DataLoader workers when not cached, grouped per step; unreadable files go to
    `skipped`. Random flips are off with pose maps: a mirrored OpenPose map swaps left and right."""
    accum, world = cfg.gradient_accumulation_steps, accelerator.num_processes
    micro = MicroBatches(images, batch_size, seed=seed, random_flip=cfg.random_flip and not cfg.uses_pose_maps,
                         shard=(accelerator.process_index, world))
    workers = cfg.dataloader_num_workers if images.cached is None else 0
    loader = torch.utils.data.DataLoader(micro, batch_size=None, num_workers=workers,
                                         sampler=range(steps.start * accum, steps.stop * accum))
    pending = []
    for batch, failed in loader:
        skipped.extend(failed)
        pending.append(batch)
        if len(pending) == accum:
            yield StepBatch(pending, batch_size * accum * world, dict(logs or {}))
            pending = []
