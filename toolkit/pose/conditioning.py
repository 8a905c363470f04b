"""Pose conditioning maps: keypoints fitted to an image's crop and drawn as an OpenPose map, one way everywhere.

Both trainers, validation, sampling, the figures and prepare_poses draw maps with `draw_map`, so a pose looks the
same wherever it is drawn. The one thickness rule: sticks are as thick relative to the map's size as
controlnet_aux draws them on its 512 px maps (4 px), and never thinner than 1 px. The size is the training
resolution when one is given (a map drawn on a larger canvas and cropped later keeps the training thickness),
else the canvas's short side (controlnet_aux too scales a photo's short side to 512 px before drawing).
"""

from __future__ import annotations

import numpy as np

from toolkit.images import Crop, plan_crop
from toolkit.pose.draw import DEFAULT_THRESHOLD, render_pose
from toolkit.pose.keypoints import Person, Pose

REFERENCE_SIZE = 512  # controlnet_aux draws its 4 px sticks on maps of this size


def stick_scale(size: int) -> float:
    """The drawing scale (see `draw_body`) of a map whose side is `size` pixels."""
    return size / REFERENCE_SIZE


def draw_map(pose: Pose, *, resolution: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The OpenPose map of `pose` on its canvas, uint8 (H, W, 3), sticks scaled for `resolution` (default: the
    canvas's short side, so that the map, resized with its image to a training resolution, keeps the rule)."""
    return render_pose(pose, threshold, scale=stick_scale(resolution or min(pose.width, pose.height)))


def _transform(pose: Pose, factor: np.ndarray, shift: np.ndarray, width: int, height: int) -> Pose:
    """Every point (x, y, c) of every person to (x * fx - sx, y * fy - sy, c), on a `width` x `height` canvas."""
    moved = lambda a: None if a is None else np.concatenate([a[:, :2] * factor - shift, a[:, 2:]], 1)  # noqa: E731
    people = [Person(moved(p.body), moved(p.left_hand), moved(p.right_hand), moved(p.face)) for p in pose.people]
    return Pose(width, height, people)


def crop_pose(pose: Pose, crop: Crop) -> Pose:
    """The pose after its image was resized and cropped by `crop` (see `toolkit.images.plan_crop`)."""
    return _transform(pose, np.array([crop.scale, crop.scale]), np.array([crop.left, crop.top]), *crop.size)


def resize_pose(pose: Pose, size: tuple[int, int]) -> Pose:
    """The pose in the pixels of an image of `size` (w, h): keypoint files may come from a resized copy."""
    if (pose.width, pose.height) == tuple(size):
        return pose
    factor = np.array([size[0] / pose.width, size[1] / pose.height])
    return _transform(pose, factor, np.zeros(2), *size)


def fit_pose(pose: Pose, resolution: int) -> Pose:
    """The pose resized so that its short side is `resolution` and centre-cropped to a square, as images are."""
    return crop_pose(pose, plan_crop((pose.width, pose.height), resolution))


def pose_map(pose: Pose, resolution: int) -> np.ndarray:
    """The map a model of `resolution` px is conditioned on for `pose`: fitted, centre-cropped and drawn."""
    return draw_map(fit_pose(pose, resolution), resolution=resolution)
