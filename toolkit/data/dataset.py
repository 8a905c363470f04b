"""Training images: sources (folder, `datasets`, synthetic figures), an in-memory uint8 cache, and batches that
depend only on (seed, step) so that a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from toolkit.data.images import DECODE_ERRORS, list_conditioning_files, list_image_files, load_rgb, to_rgb
from toolkit.errors import UserError

CACHE_LIMIT_BYTES = 4 * 1024**3


class ImageSource(Protocol):
    """Anything with a length, a name per item and a loader that returns a PIL image (or raises DECODE_ERRORS);
    `load_conditioning` returns the item's pose map (raises UserError for sources without one)."""

    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def load(self, index: int) -> Image.Image: ...
    def load_conditioning(self, index: int) -> Image.Image: ...


def resize_short_side(image: Image.Image, resolution: int, center_crop: bool) -> torch.Tensor:
    """Resize so the short side is `resolution` (then center crop to a square if asked); uint8 (3, H, W)."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if center_crop:
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)



@dataclass
class FolderSource:
    """Image files on disk, and their pose maps when the folder has them."""

    files: list[Path]
    conditioning: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.files[index])

    def load_conditioning(self, index: int) -> Image.Image:
        if self.conditioning is None:
            raise UserError("this dataset has no pose maps")
        return load_rgb(self.conditioning[index])


@dataclass
class HubDatasetSource:
    """A `datasets.Dataset` with an image column (decoded lazily by `datasets`) and maybe a pose-map column."""

    dataset: object
    column: str
    conditioning_column: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return f"{self.column}[{index}]"

    def load(self, index: int) -> Image.Image:
        return to_rgb(self.dataset[index][self.column])

    def load_conditioning(self, index: int) -> Image.Image:
        if self.conditioning_column is None:
            raise UserError("this dataset has no pose maps")
        return to_rgb(self.dataset[index][self.conditioning_column])


@dataclass
class FiguresSource:
    """The built-in synthetic human figures (toolkit.figures), rendered on demand."""

    count: int
    resolution: int
    seed: int = 0

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"figure-{index}"

    def load(self, index: int) -> Image.Image:
        return self._figure(index).image

    def load_conditioning(self, index: int) -> Image.Image:
        return self._figure(index).conditioning()

    def _figure(self, index: int):
        return _render_figure(self.seed * 1_000_003 + index, self.resolution)


@functools.lru_cache(maxsize=64)  # decode() asks for the image, then the pose map, of the same figure
def _render_figure(seed: int, resolution: int):
    from toolkit.figures import render_figure

    return render_figure(seed, resolution)


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
        tensor = resize_short_side(image, self.resolution, self.center_crop)
        if not self.with_conditioning:
            return tensor
        pose = self.source.load_conditioning(index)
        if pose.size != image.size:
            pose = pose.resize(image.size, Image.Resampling.BILINEAR)
        return torch.cat([tensor, resize_short_side(pose, self.resolution, self.center_crop)])  # (6, H, W)

    def get(self, i: int) -> torch.Tensor:
        """The i-th good image as uint8 (3, H, W), or (6, H, W) with its pose map."""
        return self.cached[i] if self.cached is not None else self.decode(self.good[i])


def _decode_or_none(images: TrainImages, index: int) -> torch.Tensor | None:
    try:
        return images.decode(index)
    except DECODE_ERRORS:
        return None


def build_train_images(source: ImageSource, resolution: int, center_crop: bool, cache: str,
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

    def __init__(self, images: TrainImages, batch_size: int, seed: int, random_flip: bool, shard=(0, 1)):
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


def epochs_to_steps(num_epochs: int, num_images: int, images_per_step: int) -> int:
    """Optimiser steps that cover `num_epochs` passes over `num_images`."""
    return max(1, math.ceil(num_epochs * num_images / images_per_step))


def open_source(train_data_dir: str | None, dataset_name: str | None, dataset_config_name: str | None,
                image_column: str, num_figures: int, resolution: int, seed: int,
                conditioning_column: str | None = None) -> tuple[ImageSource, str]:
    """The image source a run asked for, and a short description of it for logs and the model card.

    `conditioning_column` (for --dataset_name) or any value (for folders) asks for pose maps too.
    """
    if train_data_dir:
        files = list_image_files(train_data_dir)
        if not files:
            raise UserError(f"no image files found in {train_data_dir}")
        maps = list_conditioning_files(train_data_dir) if conditioning_column else None
        return FolderSource(files, maps), str(train_data_dir)
    if dataset_name:
        return _open_hub_dataset(dataset_name, dataset_config_name, image_column, conditioning_column), dataset_name
    return FiguresSource(num_figures, resolution, seed), f"synthetic figures ({num_figures}, seed {seed})"


def load_train_dataset(name: str, config_name: str | None = None):
    """The train split of a `datasets` name or of a folder written by save_to_disk; failures are one-line errors."""
    import datasets

    try:
        if (Path(name) / "state.json").is_file() or (Path(name) / "dataset_dict.json").is_file():
            dataset = datasets.load_from_disk(name)  # written by save_to_disk
            return dataset["train"] if isinstance(dataset, datasets.DatasetDict) else dataset
        return datasets.load_dataset(name, config_name, split="train")
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"could not load dataset {name!r}: {e}") from None


def _open_hub_dataset(name: str, config_name: str | None, column: str,
                      conditioning_column: str | None = None) -> HubDatasetSource:
    dataset = load_train_dataset(name, config_name)
    for wanted in (column, conditioning_column):
        if wanted is not None and wanted not in dataset.column_names:
            raise UserError(f"dataset {name!r} has no column {wanted!r}; columns: {dataset.column_names}")
    return HubDatasetSource(dataset, column, conditioning_column)
