"""Pose-LoRA training examples: image, pose map, keypoints and caption, resized and cropped alike.

Sources: a prepare_poses / toolkit.figures folder (metadata.jsonl with file_name, conditioning_image_file_name, text;
keypoints/<stem>.json) or a `datasets` dataset with image, conditioning_image and text columns. The crop of each
example is fixed (centre, or one random box per image from the seed), so cached latents and the pose map agree.
When keypoints exist, the pose map is drawn from them after the crop (`toolkit.pose.conditioning`, as everywhere
else), and a flipped example mirrors the image and draws the map from the mirrored keypoints, left and right
swapped (a mirrored person's left is the image's right; not for a toolkit.figures folder, whose rows say
`flip_swaps_sides: false` because its sides are hues a mirror keeps). Examples without keypoints use their map image
and are never flipped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from toolkit.data.dataset import to_tensor
from toolkit.data.folders import read_pose_folder
from toolkit.data.sources import load_train_dataset
from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS, apply_crop, load_rgb, plan_crop, to_rgb
from toolkit.lora.config import PoseLoraConfig
from toolkit.pose.conditioning import crop_pose, draw_map, resize_pose
from toolkit.pose.draw import DEFAULT_THRESHOLD
from toolkit.pose.keypoints import Pose, flip_pose, load_pose
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
    threshold: float = DEFAULT_THRESHOLD  # joints are drawn above this confidence
    flip_swaps_sides: bool = True  # a flip relabels left and right (photos); False for the figures' hues


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
    return [Row(str(r.image), lambda p=r.image: load_rgb(p), lambda p=r.conditioning: load_rgb(p), r.text,
                load_pose(r.keypoints) if r.keypoints is not None else None, r.threshold, r.flip_swaps_sides)
            for r in read_pose_folder(root)]


def dataset_rows(dataset, image_column: str, conditioning_column: str, caption_column: str) -> list[Row]:
    """Rows of a `datasets.Dataset`; columns are checked up front and named when missing."""
    missing = [c for c in (image_column, conditioning_column) if c not in dataset.column_names]
    if missing:
        raise UserError(f"dataset has no column {', '.join(missing)} (columns: {', '.join(dataset.column_names)})")
    captions = dataset[caption_column] if caption_column in dataset.column_names else [""] * len(dataset)
    return [Row(f"{image_column}[{i}]", lambda i=i: to_rgb(dataset[i][image_column]),
                lambda i=i: to_rgb(dataset[i][conditioning_column]), str(captions[i])) for i in range(len(dataset))]


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
        crop = plan_crop(image.size, self.resolution, center=self.center_crop,
                         rng=random.Random(self.seed * 1_000_003 + index))
        image_u8 = to_tensor(apply_crop(image, crop))
        if row.keypoints is None:  # only the given map: resized and cropped as the image
            return Example(image_u8, to_tensor(apply_crop(pose_map.resize(image.size), crop)), None,
                           self.caption(index))
        pose = crop_pose(resize_pose(row.keypoints, image.size), crop)
        flipped = to_tensor(draw_map(flip_pose(pose, swap_sides=row.flip_swaps_sides), threshold=row.threshold)) \
            if self.flips else None
        return Example(image_u8, to_tensor(draw_map(pose, threshold=row.threshold)), flipped, self.caption(index))


def open_data(cfg: PoseLoraConfig) -> PoseData:
    """The examples of --train_data_dir or --dataset_name, optionally the first --max_train_samples."""
    if cfg.train_data_dir:
        rows = folder_rows(cfg.train_data_dir)
    else:
        rows = dataset_rows(load_train_dataset(cfg.dataset_name, cfg.dataset_config_name), cfg.image_column,
                            cfg.conditioning_image_column, cfg.caption_column)
    if cfg.max_train_samples:
        rows = rows[: cfg.max_train_samples]
    if not rows:
        raise UserError(f"{cfg.train_data_dir or cfg.dataset_name}: the dataset has no examples")
    captions = CaptionConfig(cfg.caption_template, cfg.proportion_empty_prompts, cfg.shuffle_tags, cfg.keep_tags)
    return PoseData(rows, cfg.resolution, cfg.center_crop, captions, cfg.seed, cfg.random_flip)
