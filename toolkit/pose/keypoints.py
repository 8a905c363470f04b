"""OpenPose keypoints: the body-18 layout, people with optional hands and face, OpenPose JSON, and left/right flips.

Body-18 (left and right are the person's): 0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left
shoulder/elbow/wrist, 8-10 right hip/knee/ankle, 11-13 left hip/knee/ankle, 14/15 right/left eye, 16/17 right/left
ear. Coordinates are pixels of the image; a confidence of 0 means the point is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import UserError

BODY_18 = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
           "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear"]
# The 17 limbs in OpenPose drawing order (0-based joint indices); limb i has palette colour i.
LIMBS_18 = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
            (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
# Index of the mirrored joint: a horizontal flip turns the person's right side into their left.
FLIP_18 = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]
HAND_POINTS, FACE_POINTS = 21, 68
# Face-68 (iBUG) mirror map: jaw, brows, nose, eyes, mouth reversed left/right.
FLIP_FACE_68 = ([16 - i for i in range(17)] + [26 - i for i in range(10)] + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
                + [64, 63, 62, 61, 60, 67, 66, 65])


def _points(values, count: int, key: str) -> np.ndarray | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size != count * 3:
        raise ValueError(f"{key}: expected {count * 3} numbers ([x, y, c] * {count}), got {arr.size}")
    arr = arr.reshape(count, 3)
    arr[~np.isfinite(arr).all(axis=1)] = 0.0  # a NaN or inf coordinate: the point is missing
    return arr


@dataclass
class Person:
    """One person: body (18, 3) and optional hands (21, 3) and face (68, 3) as x, y, confidence in pixels."""

    body: np.ndarray
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None

    def to_openpose(self) -> dict:
        """This person as an OpenPose JSON `people[]` entry."""
        flat = lambda a: [] if a is None else [round(float(v), 3) for v in a.reshape(-1)]  # noqa: E731
        return {"pose_keypoints_2d": flat(self.body), "hand_left_keypoints_2d": flat(self.left_hand),
                "hand_right_keypoints_2d": flat(self.right_hand), "face_keypoints_2d": flat(self.face)}

    @classmethod
    def from_openpose(cls, entry: dict) -> Person:
        """Parse an OpenPose JSON `people[]` entry (body-18; hands and face optional)."""
        body = _points(entry.get("pose_keypoints_2d"), 18, "pose_keypoints_2d")
        if body is None:
            raise ValueError("pose_keypoints_2d: missing")
        return cls(body, _points(entry.get("hand_left_keypoints_2d"), HAND_POINTS, "hand_left_keypoints_2d"),
                   _points(entry.get("hand_right_keypoints_2d"), HAND_POINTS, "hand_right_keypoints_2d"),
                   _points(entry.get("face_keypoints_2d"), FACE_POINTS, "face_keypoints_2d"))


@dataclass
class Pose:
    """All people found in one image of `width` x `height` pixels, and (when counted) how many the image shows."""

    width: int
    height: int
    people: list[Person] = field(default_factory=list)
    counted: int | None = None  # an independent count of the people (toolkit.pose.people); None = not counted

    def to_json(self) -> dict:
        """OpenPose JSON (version 1.3 layout, with the canvas size as controlnet_aux writes it); the count, when
        known, as an extra `people_counted` key that OpenPose readers ignore."""
        data = {"version": 1.3, "people": [p.to_openpose() for p in self.people],
                "canvas_width": self.width, "canvas_height": self.height}
        return data if self.counted is None else data | {"people_counted": self.counted}

    @classmethod
    def from_json(cls, data: dict, width: int | None = None, height: int | None = None) -> Pose:
        """Parse OpenPose JSON; the canvas size comes from the file or the arguments."""
        width, height = data.get("canvas_width", width), data.get("canvas_height", height)
        if width is None or height is None:
            raise ValueError("the image size is unknown: no canvas_width/canvas_height and none given")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"canvas size must be positive, got {width} x {height}")
        people = data.get("people", [])
        if not isinstance(people, list):
            raise ValueError(f"people: expected a list, got {type(people).__name__}")
        counted = data.get("people_counted")
        if counted is not None and (type(counted) is not int or counted < 0):
            raise ValueError(f"people_counted: expected a count (an integer >= 0), got {counted!r}")
        return cls(int(width), int(height), [Person.from_openpose(p) for p in people], counted)


def save_pose(pose: Pose, path: str | Path) -> None:
    """Write OpenPose JSON."""
    Path(path).write_text(json.dumps(pose.to_json()))


class PoseFileError(UserError, ValueError):
    """An OpenPose JSON file that cannot be read or is not OpenPose JSON; the message names the file."""


def load_pose(path: str | Path, width: int | None = None, height: int | None = None) -> Pose:
    """Read OpenPose JSON (NaN or inf points count as missing); raises PoseFileError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object with people[], got {type(data).__name__}")
        return Pose.from_json(data, width, height)
    except OSError as e:
        raise PoseFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise PoseFileError(f"{path}: not OpenPose JSON ({e})") from None


def _mirror(points: np.ndarray | None, width: int, order: list[int] | None) -> np.ndarray | None:
    if points is None:
        return None
    out = points.copy()
    found = out[:, 2] > 0
    out[found, 0] = width - 1 - out[found, 0]  # pixel centres: x -> W - 1 - x
    return out[order] if order is not None else out


def flip_person(person: Person, width: int, *, swap_sides: bool = True) -> Person:
    """Mirror a person horizontally: x is mirrored and, with `swap_sides`, left and right joints (and hands) are
    swapped, as a detector would label the mirrored person. Without it each joint keeps its side: for images whose
    sides are told apart by something a mirror keeps (the synthetic figures' per-segment hues)."""
    if not swap_sides:
        return Person(*(_mirror(a, width, None) for a in (person.body, person.left_hand, person.right_hand,
                                                          person.face)))
    return Person(_mirror(person.body, width, FLIP_18), _mirror(person.right_hand, width, None),
                  _mirror(person.left_hand, width, None), _mirror(person.face, width, FLIP_FACE_68))


def flip_pose(pose: Pose, *, swap_sides: bool = True) -> Pose:
    """Mirror every person of a pose (`flip_person`); the pose map must then be re-rendered, never pixel-flipped."""
    return Pose(pose.width, pose.height, [flip_person(p, pose.width, swap_sides=swap_sides) for p in pose.people],
                pose.counted)
