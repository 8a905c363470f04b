"""Procedural human figures with exact OpenPose-18 keypoints: the built-in dataset and the testbed's renderer.

A pose from the kinematic prior (`prior.py`) is placed on the canvas (scale, position, small in-plane rotation) and
drawn as a body: shaded capsules for the limb segments, a torso, a head with a face, hands and shoes, over a gradient
or textured background. Drawing happens at 2x and is downsampled for anti-aliasing. Everything depends on the seed.

The figures wear a colour-coded suit: each of the eight limb segments has its own hue (SEGMENT_HUES), the torso is
neutral, skin is skin-toned and the background is low in saturation. Shades vary per image, hues do not, which is
what lets `toolkit.anatomy.parse` find the parts of a generated figure without a learned model.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from toolkit.figures.attributes import sample_labelled_pose
from toolkit.figures.prior import (
    L_EAR,
    L_EYE,
    L_HIP,
    L_SHO,
    NECK,
    NOSE,
    R_EAR,
    R_EYE,
    R_HIP,
    R_SHO,
    SEGMENTS,
    plant,
    sample_pose,
    strokes_of,
)
from toolkit.pose.conditioning import draw_map
from toolkit.pose.keypoints import Person, Pose

SEGMENT_HUES = dict(zip(SEGMENTS, (70, 110, 150, 190, 230, 270, 310, 350), strict=True))  # degrees; skin sits near 30
SEGMENT_WIDTHS = {"upper_arm": 0.07, "forearm": 0.062, "thigh": 0.085, "shin": 0.075}  # body units
SKIN_TONES = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 33)]
HAND_RADIUS, HEAD_RADIUS, SHOE, HAIR = 0.032, 0.06, (35, 35, 35), (60, 40, 25)


@dataclass
class Figure:
    """A rendered figure: the RGB image, its intended keypoints (18, 3) as x, y, confidence in pixels, its labels
    (posture, arms, legs, action) and the planted distortion ({"kind": "none"} for a clean figure)."""

    image: Image.Image
    keypoints: np.ndarray
    labels: dict
    distortion: dict = field(default_factory=lambda: {"kind": "none"})

    @property
    def posture(self) -> str:
        return self.labels["action"]

    @property
    def pose(self) -> Pose:
        """The intended pose as OpenPose keypoints on the image's canvas."""
        width, height = self.image.size
        return Pose(width, height, [Person(self.keypoints)])

    def conditioning(self) -> Image.Image:
        """The OpenPose map of the intended pose at the image's size (`toolkit.pose.conditioning.draw_map`)."""
        return Image.fromarray(draw_map(self.pose))


def segment_width(name: str) -> float:
    """Drawn width of a limb segment in body units."""
    return SEGMENT_WIDTHS[name.split("_", 1)[1]]


def _placement(points: np.ndarray, rng: np.random.Generator, resolution: int):
    """A function mapping body units to canvas pixels: small rotation, random scale and position, all of
    `points` (plus a margin for the head, hands and feet) inside the canvas."""
    angle = math.radians(rng.uniform(-8, 8))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = points @ rot.T
    lo, hi = pts.min(0) - 0.08, pts.max(0) + 0.08
    scale = rng.uniform(0.75, 0.95) * resolution / (hi - lo).max()
    offset = rng.uniform(0, 1, 2) * (resolution - (hi - lo) * scale)
    return lambda p: (np.asarray(p) @ rot.T - lo) * scale + offset, scale


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, float]:
    """A low-saturation vertical gradient, textured half the time; returns it and its mean lightness (0-1)."""
    ends = [np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.15), rng.uniform(0.25, 0.95))) * 255
            for _ in range(2)]
    t = np.linspace(0, 1, size)[:, None, None]
    img = np.broadcast_to(ends[0] * (1 - t) + ends[1] * t, (size, size, 3)).copy()  # (size, size, 3)
    if rng.random() < 0.5:
        cells = rng.integers(4, 12)
        noise = np.asarray(Image.fromarray(rng.integers(0, 255, (cells, cells), dtype=np.uint8)).resize(
            (size, size), Image.Resampling.BILINEAR), dtype=float)
        img += (noise[..., None] - 127.5) * rng.uniform(0.05, 0.15)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)), float(np.mean(ends)) / 255


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, color) -> None:
    """A shaded capsule: a darker rim, then the full colour in the core, with round ends."""
    for w, c in ((width, tuple(int(v * 0.7) for v in color)), (width * 0.6, color)):
        draw.line([tuple(a), tuple(b)], fill=c, width=max(1, round(w)))
        for p in (a, b):
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=c)


def _suit(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """This figure's segment colours: fixed hues (jittered a little), per-image saturation and brightness."""
    sat, val = rng.uniform(0.65, 0.95), rng.uniform(0.72, 0.97)
    return {name: tuple(int(255 * c) for c in colorsys.hsv_to_rgb((hue + rng.uniform(-4, 4)) / 360 % 1, sat, val))
            for name, hue in SEGMENT_HUES.items()}


def _draw_head(draw: ImageDraw.ImageDraw, px: np.ndarray, skin, unit: float, visible: np.ndarray) -> None:
    """Head and neck; eyes and mouth only where the face points are visible (hair from behind)."""
    centre, r = (px[R_EAR] + px[L_EAR]) / 2, HEAD_RADIUS * unit
    _capsule(draw, px[NECK], centre, 0.05 * unit, skin)
    box = [centre[0] - r, centre[1] - 1.2 * r, centre[0] + r, centre[1] + 1.1 * r]
    draw.ellipse(box, fill=skin if visible[NOSE] else HAIR)
    for eye in (px[i] for i in (R_EYE, L_EYE) if visible[i]):
        e = max(1.0, 0.12 * r)
        draw.ellipse([eye[0] - e, eye[1] - e, eye[0] + e, eye[1] + e], fill=(30, 30, 30))
    if not visible[NOSE]:
        return
    mouth = px[NOSE] + (0, 0.35 * r)
    draw.line([tuple(mouth - (0.25 * r, 0)), tuple(mouth + (0.25 * r, 0))], fill=(150, 60, 60),
              width=max(1, round(r * 0.1)))


def draw_figure(px: np.ndarray, strokes: list, rng: np.random.Generator, canvas: Image.Image, *, unit: float,
                background_lightness: float, visible: np.ndarray | None = None) -> None:
    """Draw the body: torso, legs and shoes, arms and hands, head. `px` are the keypoints and `strokes` the limb
    segments in canvas pixels; `unit` is pixels per body unit; `visible` (18,) hides face points (default: all)."""
    draw = ImageDraw.Draw(canvas)
    suit, skin = _suit(rng), SKIN_TONES[rng.integers(len(SKIN_TONES))]
    grey = rng.uniform(0.12, 0.35) if background_lightness > 0.55 else rng.uniform(0.65, 0.9)  # torso stands out
    torso_colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.1), grey))
    legs = [s for s in strokes if s.segment.endswith(("thigh", "shin"))]
    arms = [s for s in strokes if s.segment.endswith("arm")]
    torso = [px[R_SHO], px[L_SHO], px[L_HIP] + (0.025 * unit, 0), px[R_HIP] - (0.025 * unit, 0)]
    if np.linalg.norm(px[L_SHO] - px[R_SHO]) < 0.12 * unit:  # seen from the side: the torso has depth
        _capsule(draw, px[NECK], (px[R_HIP] + px[L_HIP]) / 2, 0.14 * unit, torso_colour)
    draw.polygon([tuple(p) for p in torso], fill=torso_colour, outline=(20, 20, 20))
    for s in legs:  # over the torso's lower edge, so that the hip ends of the thighs show
        _capsule(draw, s.start, s.end, segment_width(s.segment) * unit, suit[s.segment])
        if s.segment.endswith("shin"):
            _capsule(draw, s.end, s.end + (0, 0.025 * unit), 0.07 * unit, SHOE)
    for s in arms:
        _capsule(draw, s.start, s.end, segment_width(s.segment) * unit, suit[s.segment])
        if s.segment.endswith("forearm"):
            r = HAND_RADIUS * unit
            draw.ellipse([s.end[0] - r, s.end[1] - r, s.end[0] + r, s.end[1] + r], fill=skin)
    _draw_head(draw, px, skin, unit, np.ones(18, dtype=bool) if visible is None else visible)


def render_figure(seed: int, resolution: int, *, posture: str | None = None, distortion: str = "none",
                  supersample: int = 2) -> Figure:
    """Render one figure, deterministic in `seed`, at `resolution` pixels, optionally with a planted distortion."""
    rng = np.random.default_rng(seed)
    kp, labels = sample_pose(rng, posture)
    strokes, planted = plant(distortion, strokes_of(kp), np.random.default_rng([seed, 1]))
    ends = np.concatenate([kp] + [np.stack([s.start, s.end]) for s in strokes])
    big = resolution * supersample
    to_px, unit = _placement(ends, rng, big)
    for s in strokes:
        s.start, s.end = to_px(s.start), to_px(s.end)
    px = to_px(kp)
    canvas, lightness = _background(rng, big)
    draw_figure(px, strokes, rng, canvas, unit=unit, background_lightness=lightness)
    image = canvas.resize((resolution, resolution), Image.Resampling.LANCZOS) if supersample > 1 else canvas
    keypoints = np.concatenate([px / supersample, np.ones((18, 1))], axis=1)
    return Figure(image=image, keypoints=keypoints, labels=labels, distortion=planted)


def _crop_placement(points: np.ndarray, bottom: float, resolution: int):
    """Map body units to pixels so that `points` above `bottom` fill the canvas and `bottom` is its lower edge."""
    above = points[points[:, 1] <= bottom]
    top = above[:, 1].min() - 0.1  # room for the top of the head
    half_width = max(np.abs(above[:, 0] - above[:, 0].mean()).max() + 0.08, (bottom - top) / 2)
    scale = resolution / max(bottom - top, 2 * half_width)
    offset = np.array([resolution / 2 - above[:, 0].mean() * scale, resolution - bottom * scale])
    return lambda p: np.asarray(p) * scale + offset, scale


def render_labelled(seed: int, resolution: int, *, supersample: int = 2, **fixed: str) -> Figure:
    """Render a figure from the labelled sampler (`attributes.py`): any view, framing, posture, arms and legs, with
    labels for pose-to-text. Keypoints hidden from the view or cut off by the framing get confidence 0."""
    rng = np.random.default_rng(seed)
    pose = sample_labelled_pose(rng, **fixed)
    kp, strokes = pose.keypoints, strokes_of(pose.keypoints)
    big = resolution * supersample
    if pose.crop_bottom is None:
        to_px, unit = _placement(np.concatenate([kp] + [np.stack([s.start, s.end]) for s in strokes]), rng, big)
    else:
        to_px, unit = _crop_placement(kp, pose.crop_bottom, big)
    for s in strokes:
        s.start, s.end = to_px(s.start), to_px(s.end)
    px = to_px(kp)
    canvas, lightness = _background(rng, big)
    draw_figure(px, strokes, rng, canvas, unit=unit, background_lightness=lightness, visible=pose.visible)
    image = canvas.resize((resolution, resolution), Image.Resampling.LANCZOS) if supersample > 1 else canvas
    inside = ((px >= 0) & (px < big)).all(1)
    keypoints = np.concatenate([px / supersample, (pose.visible & inside)[:, None].astype(float)], axis=1)
    return Figure(image=image, keypoints=keypoints, labels=pose.labels)
