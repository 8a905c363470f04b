"""Pose dataset folders, as `prepare_poses` and `toolkit.figures` write them, read the same way by both trainers.

    DIR/metadata.jsonl   {"file_name", "conditioning_image_file_name", "text", "joint_threshold", ...} per example
    DIR/keypoints/<stem of the map>.json   OpenPose JSON of the example (optional)

With keypoints, trainers draw the map from them (`toolkit.pose.conditioning`) at their own crop and resolution,
showing the joints above the row's `joint_threshold` (prepare_poses writes the one it drew its maps with). A
flipped example's keypoints swap left and right, as a detector would label a mirrored person, unless the row says
`"flip_swaps_sides": false` (toolkit.figures: its figures tell sides apart by hue, which a mirror keeps).

Every path is joined with `safe_join`, so a row cannot point outside DIR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS, IMAGE_EXTENSIONS, load_rgb, read_metadata, safe_join
from toolkit.pose import load_pose, pose_map
from toolkit.pose.draw import DEFAULT_THRESHOLD

WRITERS = "python -m toolkit.prepare_poses or python -m toolkit.figures"


@dataclass(frozen=True)
class PoseRecord:
    """One example of a pose folder: its image, its pose map, its caption, its keypoint file (or None) and the
    confidence above which its joints are drawn."""

    image: Path
    conditioning: Path
    text: str
    keypoints: Path | None
    threshold: float = DEFAULT_THRESHOLD
    flip_swaps_sides: bool = True  # a flip relabels left and right joints (photos); False for the figures world


def is_pose_folder(root: str | Path) -> bool:
    """Whether `root` looks like a pose dataset folder: the first row of its metadata.jsonl names a pose map (a quick
    look for `--conditioning auto`; read_pose_folder checks every row)."""
    metadata = Path(root) / "metadata.jsonl"
    if not metadata.is_file():
        return False
    with metadata.open() as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and isinstance(row.get("conditioning_image_file_name"), str)


def read_pose_folder(root: str | Path) -> list[PoseRecord]:
    """The examples listed in `root/metadata.jsonl`, in file order; errors name the folder or the line."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"train_data_dir not found or not a folder: {root}")
    metadata = root / "metadata.jsonl"
    if not metadata.is_file():
        raise UserError(f"{root} is not a pose dataset folder: it has no metadata.jsonl (write one with {WRITERS})")
    records = []
    for row in read_metadata(metadata, "file_name", "conditioning_image_file_name"):
        conditioning = safe_join(root, row["conditioning_image_file_name"])
        keypoints = safe_join(root, f"keypoints/{conditioning.stem}.json")
        threshold = row.get("joint_threshold", DEFAULT_THRESHOLD)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise UserError(f"{metadata}: joint_threshold must be a number in [0, 1], got {threshold!r}")
        swaps = row.get("flip_swaps_sides", True)
        if not isinstance(swaps, bool):
            raise UserError(f"{metadata}: flip_swaps_sides must be true or false, got {swaps!r}")
        records.append(PoseRecord(safe_join(root, row["file_name"]), conditioning, str(row.get("text", "")),
                                  keypoints if keypoints.is_file() else None, float(threshold), swaps))
    if not records:
        raise UserError(f"{metadata} lists no examples")
    return records


def pose_tensor(maps: list[Image.Image] | np.ndarray, resolution: int) -> torch.Tensor:
    """OpenPose maps (PIL images or uint8 (N, H, W, 3)) as float (N, 3, R, R) in [-1, 1], resized to `resolution`."""
    arrays = []
    for m in maps:
        image = m if isinstance(m, Image.Image) else Image.fromarray(m)
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def read_poses(folder: str, resolution: int, limit: int) -> tuple[list[str], torch.Tensor]:
    """(names, maps (N, 3, R, R) in [-1, 1]) from OpenPose JSON (fitted and drawn at `resolution`, as in
    training) or pose-map images."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"poses folder not found: {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | {".json"})[:limit]
    if not files:
        raise UserError(f"no OpenPose JSON or pose-map images in {folder}")
    maps = []
    for f in files:
        try:
            maps.append(pose_map(load_pose(f), resolution) if f.suffix.lower() == ".json" else np.asarray(load_rgb(f)))
        except DECODE_ERRORS as e:  # a pose file that is not one (ValueError from JSON too): say which
            raise UserError(f"{f}: not an OpenPose JSON or pose-map image ({str(e).removeprefix(f'{f}: ')})") from None
    return [f.stem for f in files], pose_tensor(maps, resolution)
