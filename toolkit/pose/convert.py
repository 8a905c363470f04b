"""Converters from other keypoint layouts to OpenPose body-18, and back where the layout allows.

Each converter takes an (N, 3) array of x, y, confidence in pixels (confidence 0 = missing) and returns (18, 3).
Derived and missing points:
- COCO-17: neck = midpoint of the shoulders (only when both are labelled); everything else maps one to one.
- MediaPipe-33: neck = midpoint of the shoulders; eyes are MediaPipe's eye centres (2, 5), ears 7, 8; the
  confidence is MediaPipe's visibility. Heels, foot tips, mouth, eye corners and the hand points are dropped.
- LSP-14: neck is LSP's neck (12); nose, eyes and ears are missing (the head top, 13, has no body-18 point).
- MPII-16: neck = MPII's thorax (7), the point between the shoulders; nose, eyes and ears are missing (upper neck,
  head top and pelvis have no body-18 point).
"""

from __future__ import annotations

import numpy as np

# body-18 index -> source index (None = not in the source)
COCO_17_TO_18 = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
MEDIAPIPE_33_TO_18 = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
LSP_14_TO_18 = [None, 12, 8, 7, 6, 9, 10, 11, 2, 1, 0, 3, 4, 5, None, None, None, None]
MPII_16_TO_18 = [None, 7, 12, 11, 10, 13, 14, 15, 2, 1, 0, 3, 4, 5, None, None, None, None]
_SHOULDERS = {"coco": (5, 6), "mediapipe": (11, 12)}


def _remap(points: np.ndarray, table: list[int | None], expected: int, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (expected, 3):
        raise ValueError(f"{name}: expected ({expected}, 3) keypoints, got {points.shape}")
    out = np.zeros((18, 3))
    for target, source in enumerate(table):
        if source is not None and points[source, 2] > 0:
            out[target] = points[source]
    return out


def _neck_from_shoulders(out: np.ndarray, points: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    a, b = points[pair[0]], points[pair[1]]
    if a[2] > 0 and b[2] > 0:
        out[1] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2])]
    return out


def coco17_to_openpose18(points: np.ndarray) -> np.ndarray:
    """COCO-17 (x, y, v) with v in {0, 1, 2} -> body-18; labelled points (v > 0) get confidence 1."""
    points = np.asarray(points, dtype=np.float64).copy()
    if points.shape == (17, 3):
        points[:, 2] = (points[:, 2] > 0).astype(np.float64)
    return _neck_from_shoulders(_remap(points, COCO_17_TO_18, 17, "COCO-17"), points, _SHOULDERS["coco"])


def mediapipe33_to_openpose18(points: np.ndarray) -> np.ndarray:
    """MediaPipe Pose landmarks (33, 3) as x, y in pixels and visibility -> body-18."""
    out = _remap(points, MEDIAPIPE_33_TO_18, 33, "MediaPipe-33")
    return _neck_from_shoulders(out, np.asarray(points, dtype=np.float64), _SHOULDERS["mediapipe"])


def lsp14_to_openpose18(points: np.ndarray) -> np.ndarray:
    """LSP-14 (x, y, flag with 1 = annotated) -> body-18 (no face points)."""
    return _remap(points, LSP_14_TO_18, 14, "LSP-14")


def mpii16_to_openpose18(points: np.ndarray) -> np.ndarray:
    """MPII-16 (x, y, visible) -> body-18 (no face points; neck = thorax)."""
    return _remap(points, MPII_16_TO_18, 16, "MPII-16")


def _invert(body: np.ndarray, table: list[int | None], size: int) -> np.ndarray:
    out = np.zeros((size, 3))
    for target, source in enumerate(table):
        if source is not None:
            out[source] = body[target]
    return out


def openpose18_to_coco17(body: np.ndarray) -> np.ndarray:
    """Body-18 -> COCO-17 (the neck is dropped); confidence carried over."""
    return _invert(body, COCO_17_TO_18, 17)


def openpose18_to_lsp14(body: np.ndarray) -> np.ndarray:
    """Body-18 -> the 13 LSP-14 joints body-18 has (the head top, 13, stays missing)."""
    return _invert(body, LSP_14_TO_18, 14)
