"""Procedural human figures with exact OpenPose-18 keypoints: the built-in dataset and the testbed's renderer.

A pose is sampled in body units (figure height about 1), placed on the canvas, and drawn as a body: shaded capsules
for limbs, a torso, a head with a face, hands and feet, over a gradient background. Drawing happens at 2x and is
downsampled for anti-aliasing. Everything depends only on the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# OpenPose body-18 indices (left/right are the person's; a front-facing person's right is the viewer's left).
NOSE, NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI = range(8)
R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK, R_EYE, L_EYE, R_EAR, L_EAR = range(8, 18)
POSTURES = ("standing", "walking", "arms_raised", "arms_out", "reaching")
SKIN_TONES = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 33)]


@dataclass
class Figure:
    """A rendered figure: the RGB image and its keypoints (18, 3) as x, y, confidence in image pixels."""

    image: Image.Image
    keypoints: np.ndarray
    posture: str


def _limb(origin: np.ndarray, length: float, angle_deg: float, side: int) -> np.ndarray:
    """End point of a segment `length` long, `angle_deg` from straight down, turning outward for `side` (-1 right)."""
    a = math.radians(angle_deg)
    return origin + length * np.array([side * math.sin(a), math.cos(a)])


def sample_pose(rng: np.random.Generator, posture: str | None = None) -> tuple[np.ndarray, str]:
    """OpenPose-18 keypoints (18, 2) in body units, y down, hips centre at the origin; and the posture name."""
    posture = posture or POSTURES[rng.integers(len(POSTURES))]
    kp = np.zeros((18, 2))
    torso, shoulder, hip = rng.uniform(0.28, 0.33), rng.uniform(0.09, 0.12), rng.uniform(0.06, 0.08)
    upper_arm, forearm = rng.uniform(0.15, 0.18), rng.uniform(0.13, 0.16)
    thigh, shin = rng.uniform(0.22, 0.26), rng.uniform(0.21, 0.25)
    kp[NECK] = (0.0, -torso)
    kp[R_SHO], kp[L_SHO] = kp[NECK] + (-shoulder, 0.02), kp[NECK] + (shoulder, 0.02)
    kp[R_HIP], kp[L_HIP] = (-hip, 0.0), (hip, 0.0)
    arm = {  # (shoulder angle, elbow bend) ranges per posture, in degrees from hanging down
        "standing": ((5, 25), (0, 30)), "walking": ((5, 30), (10, 40)), "arms_raised": ((140, 175), (0, 30)),
        "arms_out": ((75, 105), (0, 20)), "reaching": ((5, 30), (0, 30)),
    }[posture]
    for side, sho, elb, wri in ((-1, R_SHO, R_ELB, R_WRI), (1, L_SHO, L_ELB, L_WRI)):
        a = rng.uniform(*arm[0])
        if posture == "reaching" and side == 1:
            a = rng.uniform(100, 150)
        kp[elb] = _limb(kp[sho], upper_arm, a, side)
        kp[wri] = _limb(kp[elb], forearm, a + rng.uniform(*arm[1]), side)
    stride = rng.uniform(15, 30) if posture == "walking" else rng.uniform(0, 8)
    for side, hip_i, kne, ank in ((-1, R_HIP, R_KNE, R_ANK), (1, L_HIP, L_KNE, L_ANK)):
        a = stride + rng.uniform(-3, 3)
        kp[kne] = _limb(kp[hip_i], thigh, a, side)
        kp[ank] = _limb(kp[kne], shin, a - rng.uniform(0, 10), side)
    head = kp[NECK] + (0.0, -0.1)
    kp[NOSE] = head + (0.0, 0.01)
    kp[R_EYE], kp[L_EYE] = head + (-0.025, -0.015), head + (0.025, -0.015)
    kp[R_EAR], kp[L_EAR] = head + (-0.06, 0.0), head + (0.06, 0.0)
    return kp, posture


def place(kp: np.ndarray, rng: np.random.Generator, resolution: int) -> np.ndarray:
    """Scale, rotate slightly and position body-unit keypoints inside a `resolution` canvas (pixels)."""
    angle = math.radians(rng.uniform(-8, 8))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = kp @ rot.T
    lo, hi = pts.min(0) - 0.08, pts.max(0) + 0.08  # margin for the head radius, hands and feet
    scale = rng.uniform(0.75, 0.95) * resolution / (hi - lo).max()
    size = (hi - lo) * scale
    offset = rng.uniform(0, 1, 2) * (resolution - size)
    return (pts - lo) * scale + offset


def _gradient(rng: np.random.Generator, size: int) -> Image.Image:
    top, bottom = rng.integers(30, 230, 3), rng.integers(30, 230, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    rows = (top * (1 - t) + bottom * t).astype(np.uint8)  # (size, 1, 3)
    return Image.fromarray(np.broadcast_to(rows, (size, size, 3)).copy())


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, color) -> None:
    """A shaded capsule: a dark rim, then a lighter core, with round ends."""
    for w, c in ((width, tuple(int(v * 0.7) for v in color)), (width * 0.6, color)):
        draw.line([tuple(a), tuple(b)], fill=c, width=max(1, round(w)))
        for p in (a, b):
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=c)


def draw_figure(px: np.ndarray, rng: np.random.Generator, canvas: Image.Image, unit: float) -> None:
    """Draw the body given keypoints in canvas pixels; `unit` is pixels per body unit."""
    draw = ImageDraw.Draw(canvas)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    shirt, pants = tuple(rng.integers(0, 256, 3).tolist()), tuple(rng.integers(0, 256, 3).tolist())
    limb_w = 0.055 * unit
    for hip_i, kne, ank in ((R_HIP, R_KNE, R_ANK), (L_HIP, L_KNE, L_ANK)):
        _capsule(draw, px[hip_i], px[kne], limb_w * 1.2, pants)
        _capsule(draw, px[kne], px[ank], limb_w, pants)
        _capsule(draw, px[ank], px[ank] + (0, 0.02 * unit), limb_w * 0.9, (40, 40, 40))  # shoe
    torso = [px[R_SHO], px[L_SHO], px[L_HIP] + (0.02 * unit, 0), px[R_HIP] - (0.02 * unit, 0)]
    draw.polygon([tuple(p) for p in torso], fill=shirt)
    _capsule(draw, px[R_SHO], px[L_SHO], limb_w, shirt)
    for sho, elb, wri in ((R_SHO, R_ELB, R_WRI), (L_SHO, L_ELB, L_WRI)):
        _capsule(draw, px[sho], px[elb], limb_w, shirt)
        _capsule(draw, px[elb], px[wri], limb_w * 0.85, skin)
        r = 0.025 * unit
        draw.ellipse([px[wri][0] - r, px[wri][1] - r, px[wri][0] + r, px[wri][1] + r], fill=skin)  # hand
    _capsule(draw, px[NECK], (px[R_EAR] + px[L_EAR]) / 2, limb_w * 0.8, skin)
    centre, r = (px[R_EAR] + px[L_EAR]) / 2, np.linalg.norm(px[L_EAR] - px[R_EAR]) / 2
    draw.ellipse([centre[0] - r, centre[1] - 1.2 * r, centre[0] + r, centre[1] + 1.1 * r], fill=skin)
    for eye in (px[R_EYE], px[L_EYE]):
        e = max(1.0, 0.12 * r)
        draw.ellipse([eye[0] - e, eye[1] - e, eye[0] + e, eye[1] + e], fill=(30, 30, 30))
    mouth = px[NOSE] + (0, 0.35 * r)
    draw.line([tuple(mouth - (0.25 * r, 0)), tuple(mouth + (0.25 * r, 0))], fill=(150, 60, 60), width=max(1, round(r * 0.1)))


def render_figure(seed: int, resolution: int, posture: str | None = None, supersample: int = 2) -> Figure:
    """Render one figure, deterministic in `seed`, at `resolution` pixels with its OpenPose-18 keypoints."""
    rng = np.random.default_rng(seed)
    kp, posture = sample_pose(rng, posture)
    big = resolution * supersample
    px = place(kp, rng, big)
    unit = np.linalg.norm(px[NECK] - (px[R_HIP] + px[L_HIP]) / 2) / np.linalg.norm(kp[NECK] - (kp[R_HIP] + kp[L_HIP]) / 2)
    canvas = _gradient(rng, big)
    draw_figure(px, rng, canvas, unit)
    image = canvas.resize((resolution, resolution), Image.Resampling.LANCZOS) if supersample > 1 else canvas
    keypoints = np.concatenate([px / supersample, np.ones((18, 1))], axis=1)
    return Figure(image=image, keypoints=keypoints, posture=posture)
