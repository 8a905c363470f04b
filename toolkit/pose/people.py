"""How many people a photo shows, independently of the pose detector, so that a map never silently leaves one out.

Two cheap MediaPipe models that ship in the wheel give two counts the pose detector does not depend on:
- faces: the full-range face detector (people up to about 5 m), each face with a score of at least `min_face_score`;
- other regions: connected regions of the selfie-segmentation person mask that cover at least `min_region` of the
  image and lie mostly outside padded boxes around the people the pose detector found: people it missed.
Both run on a copy whose long side is at most `work_size` pixels (their networks see 256 px or less anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from toolkit.pose.mediapipe_models import import_mediapipe


@dataclass
class PeopleCount:
    """The people the pose detector found, the faces found, and person-shaped regions outside the found people."""

    detected: int
    faces: int
    other_regions: int

    @property
    def count(self) -> int:
        """The best estimate of how many people the photo shows."""
        return max(self.detected, self.faces, self.detected + self.other_regions)


def person_boxes(bodies: list[np.ndarray], *, pad: float = 0.15, min_conf: float = 0.3) -> list[tuple]:
    """(x0, y0, x1, y1) around each body-18 (18, 3), padded by `pad` of its size (and its head room above)."""
    boxes = []
    for body in bodies:
        points = body[body[:, 2] > min_conf, :2]
        if len(points) < 2:
            continue
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        w, h = x1 - x0, y1 - y0
        boxes.append((x0 - pad * w, y0 - (pad + 0.1) * h, x1 + pad * w, y1 + pad * h))
    return boxes


def other_regions(mask: np.ndarray, boxes: list[tuple], *, min_region: float, max_inside: float = 0.7) -> int:
    """Connected regions of a boolean person mask (H, W) that cover >= `min_region` of it and lie mostly outside
    `boxes` (less than `max_inside` of their pixels inside): people the pose detector did not find. A region joined
    to a found person (an arm beyond its box, a held object) is mostly inside that person's box and not counted."""
    import cv2

    inside = np.zeros(mask.shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[max(0, int(y0)):max(0, int(np.ceil(y1))), max(0, int(x0)):max(0, int(np.ceil(x1)))] = True
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)  # 0: background
    count = 0
    for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_region * mask.size) + 1:
        region = labels == i
        count += (region & inside).sum() < max_inside * region.sum()
    return int(count)


class PeopleCounter:
    """Counts people with MediaPipe's full-range face detector and selfie segmentation (both bundled)."""

    def __init__(self, *, min_face_score: float = 0.5, min_region: float = 0.01, work_size: int = 256):
        mp = import_mediapipe()
        self._faces = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                min_detection_confidence=min_face_score)
        self._segment = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self.min_region, self.work_size = min_region, work_size

    def __call__(self, image: np.ndarray, bodies: list[np.ndarray]) -> PeopleCount:
        """Count the people in an RGB uint8 image (H, W, 3), given the body-18 arrays found in its pixels."""
        h, w = image.shape[:2]
        scale = min(1.0, self.work_size / max(h, w))
        small = image
        if scale < 1.0:
            small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                             Image.Resampling.BILINEAR))
        small = np.ascontiguousarray(small)
        faces = len(self._faces.process(small).detections or [])
        mask = self._segment.process(small).segmentation_mask > 0.5  # (h', w') person probability
        scaled = [np.concatenate([b[:, :2] * scale, b[:, 2:]], axis=1) for b in bodies]
        regions = other_regions(mask, person_boxes(scaled), min_region=self.min_region)
        return PeopleCount(detected=len(bodies), faces=faces, other_regions=regions)

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        self._faces.close()
        self._segment.close()
