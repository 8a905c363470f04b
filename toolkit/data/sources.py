"""Where training images come from: a folder, a pose dataset folder, a `datasets` dataset, or the built-in figures.

A source is a length, a name per item, the item's image and, for pose conditioning, its pose map or keypoints. The
trainers never look behind this interface, so every source gets the same decoding, caching and batching.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from toolkit.data.folders import read_pose_folder
from toolkit.errors import UserError
from toolkit.images import list_image_files, load_rgb, to_rgb
from toolkit.pose.draw import DEFAULT_THRESHOLD
from toolkit.pose.keypoints import Pose, load_pose


class ImageSource(Protocol):
    """Anything with a length, a name per item and a loader that returns a PIL image (or raises DECODE_ERRORS).

    `keypoints` returns the item's pose when it has one (the map is then drawn from it, showing joints above
    `joint_threshold`); otherwise `load_conditioning` returns its pose-map image (UserError for sources without
    pose maps). `flip_swaps_sides` says whether a flipped item's joints swap left and right (photos) or keep their
    side (the synthetic figures, whose sides are hues a mirror keeps).
    """

    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def load(self, index: int) -> Image.Image: ...
    def keypoints(self, index: int) -> Pose | None: ...
    def joint_threshold(self, index: int) -> float: ...
    def load_conditioning(self, index: int) -> Image.Image: ...
    def flip_swaps_sides(self, index: int) -> bool: ...


NO_POSE_MAPS = "this dataset has no pose maps"


@dataclass
class FolderSource:
    """Image files on disk, and their pose maps and keypoint files when the folder has them."""

    files: list[Path]
    conditioning: list[Path] | None = None
    keypoint_files: list[Path | None] | None = None
    thresholds: list[float] | None = None
    swaps: list[bool] | None = None  # per file: flip_swaps_sides (True when not given)

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.files[index])

    def keypoints(self, index: int) -> Pose | None:
        path = self.keypoint_files[index] if self.keypoint_files else None
        return load_pose(path) if path is not None else None

    def joint_threshold(self, index: int) -> float:
        return self.thresholds[index] if self.thresholds else DEFAULT_THRESHOLD

    def flip_swaps_sides(self, index: int) -> bool:
        return self.swaps[index] if self.swaps else True

    def load_conditioning(self, index: int) -> Image.Image:
        if self.conditioning is None:
            raise UserError(NO_POSE_MAPS)
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

    def keypoints(self, index: int) -> Pose | None:
        return None

    def joint_threshold(self, index: int) -> float:
        return DEFAULT_THRESHOLD

    def flip_swaps_sides(self, index: int) -> bool:
        return True  # no keypoints: a map image is never flipped

    def load_conditioning(self, index: int) -> Image.Image:
        if self.conditioning_column is None:
            raise UserError(NO_POSE_MAPS)
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

    def keypoints(self, index: int) -> Pose:
        return self._figure(index).pose

    def joint_threshold(self, index: int) -> float:
        return DEFAULT_THRESHOLD

    def flip_swaps_sides(self, index: int) -> bool:
        return False  # each segment has its own hue: a mirrored left arm is still the left arm's colour

    def load_conditioning(self, index: int) -> Image.Image:
        return self._figure(index).conditioning()

    def _figure(self, index: int):
        return _render_figure(self.seed * 1_000_003 + index, self.resolution)


@functools.lru_cache(maxsize=64)  # decoding asks for the image, then the pose, of the same figure
def _render_figure(seed: int, resolution: int):
    from toolkit.figures import render_figure

    return render_figure(seed, resolution)


def open_source(*, train_data_dir: str | None, dataset_name: str | None, dataset_config_name: str | None = None,
                image_column: str = "image", conditioning_column: str | None = None, num_figures: int = 0,
                resolution: int = 32, seed: int = 0) -> tuple[ImageSource, str]:
    """The image source a run asked for, and a short description of it for logs and the model card.

    `conditioning_column` asks for pose maps: the column of that name in a `datasets` dataset, or the maps and
    keypoints of a pose dataset folder. Without a folder or a dataset, `num_figures` synthetic figures.
    """
    if train_data_dir:
        if conditioning_column:
            records = read_pose_folder(train_data_dir)
            return FolderSource([r.image for r in records], [r.conditioning for r in records],
                                [r.keypoints for r in records], [r.threshold for r in records],
                                [r.flip_swaps_sides for r in records]), str(train_data_dir)
        files = list_image_files(train_data_dir)
        if not files:
            raise UserError(f"no image files found in {train_data_dir}")
        return FolderSource(files), str(train_data_dir)
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
