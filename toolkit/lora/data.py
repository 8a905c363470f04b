"""Pose-LoRA training examples: image, pose map, keypoints and caption, resized and cropped alike.

Sources: a prepare_poses / toolkit.figures folder (metadata.jsonl with file_name, conditioning_image_file_name, text;
keypoints/<stem>.json) or a `datasets` dataset with image, conditioning_image and text columns. The crop of each
example is fixed (centre, or one random box per image from the seed), so cached latents and the pose map agree.
When keypoints exist, the pose map is drawn from them after the crop (`draw_map`, the same drawing validation and
sampling use), and a flipped example mirrors the image and draws the map from the mirrored keypoints (left and
right swap colours in OpenPose maps). Examples without keypoints use their map image and are never flipped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.data.dataset import load_train_dataset
from toolkit.data.images import DECODE_ERRORS, load_rgb, safe_join, to_rgb
from toolkit.errors import UserError
from toolkit.pose.draw import render_pose
from toolkit.pose.keypoints import Person, Pose, flip_pose, load_pose
from toolkit.prompts.captions import CaptionConfig, render
from toolkit.prompts.pose_text import pose_phrase


@dataclass
class Row:
    """One example before decoding: loaders for the image and pose map, its caption and keypoints (or None)."""

    name: str
    load_image: Callable[[], Image.Image]
    load_map: Callable[[], Image.Image]
    caption: str
    keypoints: Pose | None = None


@dataclass
class Example:
    """A decoded example at the training resolution: uint8 (3, R, R) tensors, the flipped pose map when the
    keypoints allow a flip and flips are on, and the training caption (template applied; dropout and shuffling come later)."""

    image: torch.Tensor
    pose_map: torch.Tensor
    flipped_map: torch.Tensor | None
    caption: str


def folder_rows(root: str | Path) -> list[Row]:
    """Rows of a prepare_poses / toolkit.figures folder; paths may not leave the folder."""
    root = Path(root)
    metadata = root / "metadata.jsonl"
    if not metadata.is_file():
        raise UserError(f"train_data_dir: {root} has no metadata.jsonl (write one with python -m toolkit.prepare_poses "
                        "or python -m toolkit.figures)")
    rows = []
    for line_no, line in enumerate(metadata.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            image, pose_map = entry["file_name"], entry["conditioning_image_file_name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{metadata}:{line_no}: expected a JSON object with file_name and "
                            "conditioning_image_file_name") from None
        image_path, map_path = safe_join(root, image), safe_join(root, pose_map)
        keypoints = safe_join(root, f"keypoints/{Path(pose_map).stem}.json")
        pose = load_pose(keypoints) if keypoints.is_file() else None
        rows.append(Row(str(image_path), lambda p=image_path: load_rgb(p), lambda p=map_path: load_rgb(p),
                        str(entry.get("text", "")), pose))
    if not rows:
        raise UserError(f"{metadata} lists no examples")
    return rows


def dataset_rows(dataset, image_column: str, conditioning_column: str, caption_column: str) -> list[Row]:
    """Rows of a `datasets.Dataset`; columns are checked up front and named when missing."""
    missing = [c for c in (image_column, conditioning_column) if c not in dataset.column_names]
    if missing:
        raise UserError(f"dataset has no column {', '.join(missing)} (columns: {', '.join(dataset.column_names)})")
    captions = dataset[caption_column] if caption_column in dataset.column_names else [""] * len(dataset)
    return [Row(f"{image_column}[{i}]", lambda i=i: to_rgb(dataset[i][image_column]),
                lambda i=i: to_rgb(dataset[i][conditioning_column]), str(captions[i])) for i in range(len(dataset))]


def _crop_box(size: tuple[int, int], resolution: int, center: bool, rng: random.Random) -> tuple[float, int, int]:
    """(scale, left, top): resize so the short side is `resolution`, then this crop."""
    w, h = size
    scale = resolution / min(w, h)
    extra_w, extra_h = max(0, round(w * scale) - resolution), max(0, round(h * scale) - resolution)
    if center:
        return scale, extra_w // 2, extra_h // 2
    return scale, rng.randint(0, extra_w), rng.randint(0, extra_h)


def _resize_crop(image: Image.Image, scale: float, left: int, top: int, resolution: int) -> torch.Tensor:
    w, h = image.size
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    image = image.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


@dataclass
class PoseData:
    """Decodes rows into Examples at `resolution`; unreadable files are skipped and listed in `skipped`."""

    rows: list[Row]
    resolution: int
    center_crop: bool
    captions: CaptionConfig
    seed: int = 0
    flips: bool = False  # draw the mirrored map too (--random_flip); otherwise no example is ever flipped
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def can_flip(self, index: int) -> bool:
        return self.flips and self.rows[index].keypoints is not None

    def pose_text(self, index: int) -> str:
        pose = self.rows[index].keypoints
        return pose_phrase([p.body for p in pose.people]) if pose is not None else ""

    def caption(self, index: int) -> str:
        """The template applied to the row's caption and its pose phrase."""
        return render(self.captions.template, self.rows[index].caption, self.pose_text(index))

    def example(self, index: int) -> Example | None:
        """The decoded, cropped example; None (and the file listed in `skipped`) when it cannot be read."""
        row = self.rows[index]
        try:
            image = row.load_image()
            pose_map = row.load_map() if row.keypoints is None else None  # with keypoints the map is drawn
        except DECODE_ERRORS as e:
            if row.name not in self.skipped:
                self.skipped.append(row.name)
                print(f"skipping unreadable example {row.name}: {e}")
            return None
        rng = random.Random(self.seed * 1_000_003 + index)
        scale, left, top = _crop_box(image.size, self.resolution, self.center_crop, rng)
        r = self.resolution
        image_u8 = _resize_crop(image, scale, left, top, r)
        if row.keypoints is None:  # only the given map: resized and cropped as the image
            return Example(image_u8, _resize_crop(pose_map.resize(image.size), scale, left, top, r), None,
                           self.caption(index))
        pose = crop_pose(_fit(row.keypoints, image.size), scale, left, top, r)
        as_tensor = lambda m: torch.from_numpy(m).permute(2, 0, 1)  # noqa: E731
        flipped = as_tensor(draw_map(flip_pose(pose))) if self.flips else None
        return Example(image_u8, as_tensor(draw_map(pose)), flipped, self.caption(index))


def draw_map(pose: Pose) -> np.ndarray:
    """The OpenPose map of a pose on its canvas, sticks as thick relative to the canvas as on a 512 px map (the
    look ControlNet-OpenPose was trained on), uint8 (H, W, 3). Training, validation and sampling all draw this way."""
    return render_pose(pose, scale=max(max(pose.width, pose.height) / 512, 0.25))


def crop_pose(pose: Pose, scale: float, left: float, top: float, resolution: int) -> Pose:
    """The pose after resizing by `scale` and cropping a `resolution` square at (left, top)."""
    people = []
    for p in pose.people:
        moved = [None if a is None else np.concatenate([a[:, :2] * scale - (left, top), a[:, 2:]], 1)
                 for a in (p.body, p.left_hand, p.right_hand, p.face)]
        people.append(Person(*moved))
    return Pose(resolution, resolution, people)


def _fit(pose: Pose, size: tuple[int, int]) -> Pose:
    """The pose in the pixels of an image of `size` (keypoint files may come from a resized copy)."""
    if (pose.width, pose.height) == tuple(size):
        return pose
    factor = np.array([size[0] / pose.width, size[1] / pose.height, 1.0])
    scaled = lambda a: None if a is None else a * factor  # noqa: E731
    people = [Person(scaled(p.body), scaled(p.left_hand), scaled(p.right_hand), scaled(p.face)) for p in pose.people]
    return Pose(size[0], size[1], people)


def open_data(cfg) -> PoseData:
    """The examples of --train_data_dir or --dataset_name, optionally the first --max_train_samples."""
    if cfg.train_data_dir:
        rows = folder_rows(cfg.train_data_dir)
    else:
        rows = dataset_rows(load_train_dataset(cfg.dataset_name), cfg.image_column, cfg.conditioning_image_column,
                            cfg.caption_column)
    if cfg.max_train_samples:
        rows = rows[: cfg.max_train_samples]
    captions = CaptionConfig(cfg.caption_template, cfg.proportion_empty_prompts, cfg.shuffle_tags, cfg.keep_tags)
    return PoseData(rows, cfg.resolution, cfg.center_crop, captions, cfg.seed, cfg.random_flip)
