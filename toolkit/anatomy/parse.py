"""Find a figure's limb segments and keypoints in an image of the figures world, and judge its anatomy.

Analytic, no learned weights: pixels are classed by hue (each limb segment wears its own hue, skin sits near 30
degrees, torso and background are low in saturation), each class is split into connected parts, and each part is
summarised by its principal axis. From those:

- missing: a segment with no part of useful size;
- extra: a segment with two or more sizeable parts (a second arm or leg drawn with the same colours);
- broken: the two segments of a limb do not meet at the elbow or knee (a dislocated joint);
- wrong_length: a segment much longer than its left/right twin or than the torso allows.

Thresholds are in units of the figure's own limb width. Measured on labelled renders from 32 to 128 px
(docs/figures.md, from benchmarks/bench_figures.py), they meet their targets from 48 px up; at 32 px a sixth of
clean figures is flagged, which is why `toolkit.evaluate` warns below 48 px (`report.MIN_RESOLUTION`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from toolkit.figures.prior import (
    L_EAR,
    L_EYE,
    LIMBS,
    NECK,
    NOSE,
    R_EAR,
    R_EYE,
    SEGMENTS,
)
from toolkit.figures.render import SEGMENT_HUES

SKIN = len(SEGMENTS)  # class index of skin (head and hands)
HUE_TOLERANCE = 18.0  # degrees from a segment hue; hues are 40 degrees apart
MIN_SATURATION, MIN_VALUE = 0.4, 0.25
SECOND_PART = 0.3  # a second part counts (extra limb) when at least this fraction of the largest part's area
GAP_WIDTHS = 0.2  # a joint is broken when its two segments are farther apart than this many limb widths
TWIN_RATIO = 1.5  # wrong length: longer than its left/right twin by this factor...
TORSO_RATIO = {"upper_arm": 1.0, "forearm": 0.8, "thigh": 1.35, "shin": 1.4}  # ...or than these x torso length


@dataclass
class Part:
    """One connected region of a class: pixel count, centroid, unit principal axis, the two ends of its extent
    along that axis (x, y), and its width."""

    area: int
    centroid: np.ndarray
    axis: np.ndarray
    ends: np.ndarray
    width: float
    mask: np.ndarray = field(repr=False)


def classify(image: np.ndarray) -> np.ndarray:
    """Class per pixel of an RGB uint8 image (H, W, 3): 0-7 the SEGMENTS in order, 8 skin, -1 anything else."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue, sat, val = hsv[..., 0] * (360 / 256), hsv[..., 1] / 255, hsv[..., 2] / 255
    labels = np.full(image.shape[:2], -1, dtype=np.int8)
    hues = np.array(list(SEGMENT_HUES.values()), dtype=np.float32)
    diff = np.abs((hue[..., None] - hues + 180) % 360 - 180)  # (H, W, 8) circular distance
    nearest, dist = diff.argmin(-1), diff.min(-1)
    coloured = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    labels[coloured & (dist <= HUE_TOLERANCE)] = nearest[coloured & (dist <= HUE_TOLERANCE)]
    skin = (hue >= 10) & (hue <= 48) & (sat >= 0.2) & (sat <= 0.85) & (val >= 0.3)
    labels[skin] = SKIN
    return labels


def _part(mask: np.ndarray) -> Part:
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64) + 0.5  # pixel centres
    centroid = pts.mean(0)
    centred = pts - centroid
    cov = centred.T @ centred / max(len(pts) - 1, 1) + np.eye(2) * 1e-6
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, 1]
    along = centred @ axis
    width = max(1.0, float(np.sqrt(12 * evals[0])))  # a uniform strip of width w has variance w^2 / 12 across
    ends = np.stack([centroid + along.min() * axis, centroid + along.max() * axis])
    return Part(len(pts), centroid, axis, ends, width, mask)


def find_parts(labels: np.ndarray, min_area: int) -> dict[int, list[Part]]:
    """Connected parts of each class with at least `min_area` pixels, largest first."""
    out: dict[int, list[Part]] = {}
    for cls in range(SKIN + 1):
        count, comp, stats, _ = cv2.connectedComponentsWithStats((labels == cls).astype(np.uint8), connectivity=8)
        order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
        out[cls] = [_part(comp == i) for i in order if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return out


def _gap(a: Part, b: Part) -> float:
    """Smallest distance in pixels between two parts (0 when they touch)."""
    dist = cv2.distanceTransform((~a.mask).astype(np.uint8), cv2.DIST_L2, 3)
    return float(dist[b.mask].min()) - 1.0 if b.mask.any() else float("inf")


def _inner(end: np.ndarray, part: Part) -> np.ndarray:
    """A joint centre from an end of a capsule: half a width back toward the middle."""
    inward = part.centroid - end
    return end + inward / (np.linalg.norm(inward) + 1e-9) * min(part.width / 2, np.linalg.norm(inward))


@dataclass
class Parsed:
    """What was found in one image: keypoints (18, 3) (confidence 0 where not found) and the anatomy verdict."""

    keypoints: np.ndarray
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    wrong_length: list[str] = field(default_factory=list)

    @property
    def distorted(self) -> bool:
        return bool(self.missing or self.extra or self.broken or self.wrong_length)

    def to_json(self) -> dict:
        return {"distorted": self.distorted, "missing": self.missing, "extra": self.extra, "broken": self.broken,
                "wrong_length": self.wrong_length}


def _outer(end: np.ndarray, part: Part) -> np.ndarray:
    """A hand or foot covers the tip of its segment by about half a width: the joint is that far beyond the end."""
    outward = end - part.centroid
    return end + outward / (np.linalg.norm(outward) + 1e-9) * part.width / 2


def _limb_points(upper: Part | None, lower: Part | None, anchor: np.ndarray) -> tuple:
    """(root, joint, tip) of one limb from its two segments' largest parts, None where absent.

    The root is the upper segment's end away from the lower segment (or, without one, the end nearer `anchor`:
    the head for arms, the body centre for legs). The lower segment is drawn over the joint, so its near end
    locates the joint; the upper segment's far end does so only when the lower one is absent.
    """
    root = joint = tip = None
    if upper is not None:
        target = lower.centroid if lower is not None else anchor
        far = int(np.argmax(np.linalg.norm(upper.ends - target, axis=1)))
        if lower is None:
            far = 1 - far  # the end nearer the anchor
        root, joint = _inner(upper.ends[far], upper), _inner(upper.ends[1 - far], upper)
    if lower is not None:
        near_to = joint if joint is not None else anchor
        near = int(np.argmin(np.linalg.norm(lower.ends - near_to, axis=1)))
        joint, tip = _inner(lower.ends[near], lower), _outer(lower.ends[1 - near], lower)
    return root, joint, tip


def _judge_lengths(result: Parsed, lengths: dict[str, float], torso: float | None) -> None:
    """Flag segments much longer than their left/right twin or than the torso allows."""
    for name, length in lengths.items():
        kind = name.split("_", 1)[1]
        twin = lengths.get(("left_" if name.startswith("right") else "right_") + kind)
        too_long = twin is not None and length > TWIN_RATIO * twin
        too_long |= torso is not None and length > TORSO_RATIO[kind] * torso
        if too_long:
            result.wrong_length.append(name)


def _head_points(kp: np.ndarray, skin: list[Part]) -> None:
    """Nose, eyes and ears from the largest skin part (the head; hands are much smaller)."""
    if not skin:
        return
    head = skin[0]
    r = np.sqrt(head.area / 3.6)  # the head ellipse is r wide and 1.15 r tall on each side of its centre
    c = head.centroid
    for index, offset in ((NOSE, (0, 0.1)), (R_EYE, (-0.42, -0.25)), (L_EYE, (0.42, -0.25)),
                          (R_EAR, (-1, 0)), (L_EAR, (1, 0))):
        kp[index] = (*(c + np.array(offset) * r), 1.0)


def parse_figure(image: np.ndarray) -> Parsed:
    """Keypoints and anatomy of the figure in an RGB uint8 image (H, W, 3) of the figures world."""
    h, w = image.shape[:2]
    parts = find_parts(classify(image), min_area=max(3, round(0.0015 * h * w)))
    seg = {name: parts[i] for i, name in enumerate(SEGMENTS)}
    result = Parsed(np.zeros((18, 3)))
    for name, found in seg.items():
        if not found:
            result.missing.append(name)
        elif len(found) > 1 and found[1].area >= SECOND_PART * found[0].area:
            result.extra.append(name)
    widths = [found[0].width for found in seg.values() if found]
    limb_width = float(np.median(widths)) if widths else 1.0
    roots = [seg[n][0].centroid for n in ("right_upper_arm", "left_upper_arm", "right_thigh", "left_thigh") if seg[n]]
    centre = np.mean(roots, 0) if roots else np.array([w / 2, h / 2])
    head = parts[SKIN][0].centroid if parts[SKIN] else centre
    lengths: dict[str, float] = {}
    for limb, (upper, lower) in LIMBS.items():
        up, low = (seg[upper] or [None])[0], (seg[lower] or [None])[0]
        root, joint, tip = _limb_points(up, low, head if limb.endswith("arm") else centre)
        broken = up is not None and low is not None and _gap(up, low) > GAP_WIDTHS * limb_width
        if broken:
            result.broken.append(limb)
        for index, point in zip(SEGMENTS[upper] + SEGMENTS[lower][1:], (root, joint, tip), strict=True):
            if point is not None:
                result.keypoints[index] = (*point, 1.0)
        if not broken and limb not in {n.rsplit("_", 1)[0] for n in result.extra}:
            if root is not None and joint is not None and up is not None:
                lengths[upper] = float(np.linalg.norm(joint - root))
            if joint is not None and tip is not None and low is not None:
                lengths[lower] = float(np.linalg.norm(tip - joint))
    kp = result.keypoints
    shoulders, hips = [kp[i, :2] for i in (2, 5) if kp[i, 2]], [kp[i, :2] for i in (8, 11) if kp[i, 2]]
    if shoulders:
        kp[NECK] = (*np.mean(shoulders, 0), 1.0)
    torso = float(np.linalg.norm(np.mean(shoulders, 0) - np.mean(hips, 0))) if shoulders and hips else None
    _judge_lengths(result, lengths, torso)
    _head_points(kp, parts[SKIN])
    return result
