"""Training images: an in-memory uint8 cache of a source's images (and pose maps), and batches that depend only on
(seed, step), so that a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from toolkit.data.augment import AugmentSettings, Draw, apply, draw, settings_of
from toolkit.data.folders import is_pose_folder
from toolkit.data.sources import FiguresSource, ImageSource, open_source
from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS, Crop, apply_crop, plan_crop
from toolkit.pose.conditioning import crop_pose, draw_map, resize_pose
from toolkit.pose.keypoints import Pose
from toolkit.training.config import ScratchImageConfig
from toolkit.training.loop import StepBatch

C = TypeVar("C", bound=ScratchImageConfig)

CACHE_LIMIT_BYTES = 4 * 1024**3


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An RGB image as uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


@dataclass
class Item:
    """A decoded training item: uint8 (3, H, W), or (6, H, W) with its pose map, and the keypoints the map was drawn
    from (on the item's canvas, for augmentation to move and redraw) with their joint threshold."""

    pixels: torch.Tensor
    pose: Pose | None = None
    threshold: float = 0.0
    swap_sides: bool = True  # a flip swaps the keypoints' left and right (ImageSource.flip_swaps_sides)


@dataclass
class MicroBatch:
    """What the trainers get per micro-batch: pixels float (B, 3 or 6, R, R) in [-1, 1] and the augmentation labels
    (B, NUM_LABELS), zeros for samples left as they were."""

    pixels: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> MicroBatch:
        """Both tensors on `device`."""
        return MicroBatch(self.pixels.to(device), self.labels.to(device))


@dataclass
class TrainImages:
    """Decoded training images at one resolution; `skipped` lists files that could not be read."""

    source: ImageSource
    resolution: int
    center_crop: bool
    with_conditioning: bool = False  # items are then (6, H, W): the image and its pose map, cropped alike
    cached: list[Item] | None = None  # per good image, when kept in memory
    good: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.good)

    def decode(self, index: int) -> Item:
        """uint8 (3, H, W), or (6, H, W) with the pose map, short side at `resolution`, and the keypoints on that
        canvas when the source has them; raises DECODE_ERRORS."""
        image = self.source.load(index)
        crop = plan_crop(image.size, self.resolution, square=self.center_crop)
        tensor = to_tensor(apply_crop(image, crop))
        if not self.with_conditioning:
            return Item(tensor)
        pose = self.source.keypoints(index)
        if pose is not None:  # sticks as thick as at the training resolution, also on a wider random-crop canvas
            pose, threshold = crop_pose(resize_pose(pose, image.size), crop), self.source.joint_threshold(index)
            drawn = draw_map(pose, resolution=self.resolution, threshold=threshold)
            return Item(torch.cat([tensor, to_tensor(drawn)]), pose, threshold,  # (6, H, W)
                        self.source.flip_swaps_sides(index))
        given = self.source.load_conditioning(index)
        if given.size != image.size:
            given = given.resize(image.size, Image.Resampling.BILINEAR)
        return Item(torch.cat([tensor, to_tensor(apply_crop(given, crop))]))

    def item(self, i: int) -> Item:
        """The i-th good item."""
        return self.cached[i] if self.cached is not None else self.decode(self.good[i])

    def get(self, i: int) -> torch.Tensor:
        """The i-th good image as uint8 (3, H, W), or (6, H, W) with its pose map."""
        return self.item(i).pixels


def _decode_or_none(images: TrainImages, index: int) -> Item | None:
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
    decoded: list[Item] = []
    with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding and resizing
        results = pool.map(lambda i: _decode_or_none(images, i), range(count))
        for index, item in enumerate(tqdm(results, total=count, desc=f"decoding images at {resolution}px",
                                          leave=False)):
            if item is None:
                images.skipped.append(source.name(index))
                continue
            images.good.append(index)
            if keep:
                decoded.append(item)
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


def augment_item(item: Item, resolution: int, settings: AugmentSettings,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random R x R crop of a decoded item, then its augmentation (see toolkit.data.augment): uint8 (C, R, R) and
    its labels (NUM_LABELS,)."""
    pixels, (h, w) = item.pixels, item.pixels.shape[1:]
    top = int(torch.randint(0, h - resolution + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - resolution + 1, (1,), generator=generator))
    pixels = pixels[:, top:top + resolution, left:left + resolution]
    d = draw(settings, generator)
    if d == Draw():
        return pixels, d.labels()
    pose = crop_pose(item.pose, Crop(1.0, (w, h), left, top, (resolution, resolution))) \
        if item.pose is not None else None
    maps = pixels[3:] if len(pixels) == 6 else None
    image, moved, d = apply(pixels[:3], d, pose=pose, pose_map=maps, threshold=item.threshold, resolution=resolution,
                            swap_sides=item.swap_sides)
    return (torch.cat([image, moved]) if moved is not None else image), d.labels()


class MicroBatches(torch.utils.data.Dataset):
    """Item k is micro-batch k: a pure function of (seed, k), so batches can be produced by workers and resumed."""

    def __init__(self, images: TrainImages, batch_size: int, *, seed: int, settings: AugmentSettings, shard=(0, 1)):
        self.images, self.batch_size, self.seed, self.settings = images, batch_size, seed, settings
        self.rank, self.world = shard

    def __len__(self) -> int:
        return 2**62  # endless: the training loop decides how many to draw

    def __getitem__(self, k: int) -> tuple[MicroBatch, list[str]]:
        indices = batch_indices(len(self.images), self.batch_size * self.world, self.seed, k)
        indices = indices[self.rank::self.world]  # this process's share of the global batch
        items, failed = [], []
        for i in indices:
            try:
                items.append(self.images.item(i))
            except DECODE_ERRORS:  # only possible when not cached: substitute the first image
                failed.append(self.images.source.name(self.images.good[i]))
                items.append(self.images.item(0))
        generator = torch.Generator().manual_seed(self.seed * 7_919 + k)
        out = [augment_item(item, self.images.resolution, self.settings, generator) for item in items]
        pixels = torch.stack([p for p, _ in out]).float().div(127.5).sub(1.0)  # (B, C, R, R) in [-1, 1]
        return MicroBatch(pixels, torch.stack([labels for _, labels in out])), failed


def resolve_conditioning(cfg: C) -> C:
    """`cfg` with `conditioning: auto` decided by its data: pose for the built-in figures and for a pose dataset
    folder, none for any other folder and for a `datasets` dataset (name its pose column with --conditioning pose)."""
    if cfg.conditioning != "auto":
        return cfg
    posed = not cfg.dataset_name and (not cfg.train_data_dir or is_pose_folder(cfg.train_data_dir))
    return replace(cfg, conditioning="pose" if posed else "none")


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
    `skipped`."""
    accum, world = cfg.gradient_accumulation_steps, accelerator.num_processes
    micro = MicroBatches(images, batch_size, seed=seed, settings=settings_of(cfg),
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
