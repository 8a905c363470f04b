"""The figures' kinematic prior and planted distortions, in body units (figure height about 1, y down).

A pose is a set of joint angles within human limits plus proportions within adult ranges; its OpenPose-18 keypoints
follow by forward kinematics. The drawing works from strokes (one per limb segment), so that a distortion can add,
remove, move or stretch strokes while the keypoints keep the intended pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# OpenPose body-18 indices (left/right are the person's; a front-facing person's right is the viewer's left).
NOSE, NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI = range(8)
R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK, R_EYE, L_EYE, R_EAR, L_EAR = range(8, 18)

SEGMENTS = {  # limb segment: (proximal joint, distal joint)
    "right_upper_arm": (R_SHO, R_ELB), "right_forearm": (R_ELB, R_WRI),
    "left_upper_arm": (L_SHO, L_ELB), "left_forearm": (L_ELB, L_WRI),
    "right_thigh": (R_HIP, R_KNE), "right_shin": (R_KNE, R_ANK),
    "left_thigh": (L_HIP, L_KNE), "left_shin": (L_KNE, L_ANK),
}
LIMBS = {"right_arm": ("right_upper_arm", "right_forearm"), "left_arm": ("left_upper_arm", "left_forearm"),
         "right_leg": ("right_thigh", "right_shin"), "left_leg": ("left_thigh", "left_shin")}
DISTORTIONS = ("none", "extra_limb", "missing_limb", "broken_limb", "stretched_limb", "mixed")
POSTURES = ("standing", "walking", "sitting", "arms_raised", "arms_out", "reaching")

# Per posture: shoulder angle and elbow bend ranges (degrees from hanging down, outward positive), and the leg
# description. `reaching` raises one arm only.
_ARMS = {"standing": ((5, 25), (0, 30)), "walking": ((5, 30), (10, 40)), "sitting": ((5, 25), (10, 50)),
         "arms_raised": ((140, 175), (0, 30)), "arms_out": ((75, 105), (0, 20)), "reaching": ((5, 30), (0, 30))}
_ARM_LABEL = {"standing": "down", "walking": "down", "sitting": "down", "arms_raised": "raised",
              "arms_out": "outstretched", "reaching": "reaching"}


@dataclass
class Stroke:
    """One drawn limb segment from `start` to `end` (body units); `segment` names its colour class."""

    segment: str
    start: np.ndarray
    end: np.ndarray


def _limb(origin: np.ndarray, length: float, angle_deg: float, side: int) -> np.ndarray:
    """End point of a segment `length` long, `angle_deg` from straight down, turning outward for `side` (-1 right)."""
    a = math.radians(angle_deg)
    return origin + length * np.array([side * math.sin(a), math.cos(a)])


def _legs(kp: np.ndarray, rng: np.random.Generator, posture: str, thigh: float, shin: float) -> str:
    """Place knees and ankles; returns the legs label (together, apart, stride, bent)."""
    if posture == "sitting":  # seen from the front: thighs point at the camera, so they look short
        foreshorten, spread = rng.uniform(0.35, 0.5), rng.uniform(25, 50)
        for side, hip, kne, ank in ((-1, R_HIP, R_KNE, R_ANK), (1, L_HIP, L_KNE, L_ANK)):
            kp[kne] = _limb(kp[hip], thigh * foreshorten, spread + rng.uniform(-4, 4), side)
            kp[ank] = _limb(kp[kne], shin, rng.uniform(-5, 12), side)
        return "bent"
    stride = rng.uniform(15, 30) if posture == "walking" else rng.uniform(0, 10)
    for side, hip, kne, ank in ((-1, R_HIP, R_KNE, R_ANK), (1, L_HIP, L_KNE, L_ANK)):
        a = stride + rng.uniform(-3, 3)
        kp[kne] = _limb(kp[hip], thigh, a, side)
        kp[ank] = _limb(kp[kne], shin, a - rng.uniform(0, 10), side)
    return "stride" if posture == "walking" else ("apart" if stride > 5 else "together")


def sample_pose(rng: np.random.Generator, posture: str | None = None) -> tuple[np.ndarray, dict]:
    """OpenPose-18 keypoints (18, 2) in body units, hips centre at the origin; and labels (posture, arms, legs)."""
    posture = posture or POSTURES[rng.integers(len(POSTURES))]
    if posture not in POSTURES:
        raise ValueError(f"unknown posture {posture!r}; choose from {POSTURES}")
    kp = np.zeros((18, 2))
    torso, shoulder, hip = rng.uniform(0.28, 0.33), rng.uniform(0.09, 0.12), rng.uniform(0.06, 0.08)
    upper_arm, forearm = rng.uniform(0.15, 0.18), rng.uniform(0.13, 0.16)
    thigh, shin = rng.uniform(0.22, 0.26), rng.uniform(0.21, 0.25)
    kp[NECK] = (0.0, -torso)
    kp[R_SHO], kp[L_SHO] = kp[NECK] + (-shoulder, 0.02), kp[NECK] + (shoulder, 0.02)
    kp[R_HIP], kp[L_HIP] = (-hip, 0.0), (hip, 0.0)
    shoulder_range, bend_range = _ARMS[posture]
    for side, sho, elb, wri in ((-1, R_SHO, R_ELB, R_WRI), (1, L_SHO, L_ELB, L_WRI)):
        a = rng.uniform(100, 150) if posture == "reaching" and side == 1 else rng.uniform(*shoulder_range)
        kp[elb] = _limb(kp[sho], upper_arm, a, side)
        kp[wri] = _limb(kp[elb], forearm, a + rng.uniform(*bend_range), side)
    legs = _legs(kp, rng, posture, thigh, shin)
    head = kp[NECK] + (0.0, -0.1)
    kp[NOSE] = head + (0.0, 0.01)
    kp[R_EYE], kp[L_EYE] = head + (-0.025, -0.015), head + (0.025, -0.015)
    kp[R_EAR], kp[L_EAR] = head + (-0.06, 0.0), head + (0.06, 0.0)
    labels = {"posture": "sitting" if posture == "sitting" else "standing", "arms": _ARM_LABEL[posture],
              "legs": legs, "action": posture}
    return kp, labels


def strokes_of(kp: np.ndarray) -> list[Stroke]:
    """The eight limb strokes of a pose, legs first (drawing order)."""
    order = ["right_thigh", "right_shin", "left_thigh", "left_shin",
             "right_upper_arm", "right_forearm", "left_upper_arm", "left_forearm"]
    return [Stroke(name, kp[SEGMENTS[name][0]].copy(), kp[SEGMENTS[name][1]].copy()) for name in order]


def _rotate(p: np.ndarray, centre: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return centre + rot @ (p - centre)


def _head_points(strokes: list[Stroke]) -> np.ndarray:
    """Points standing in for the head and neck: above the shoulders' midpoint (body units), shape (3, 2)."""
    shoulders = [s.start for s in strokes if s.segment.endswith("upper_arm")]
    top = np.mean(shoulders, 0) if shoulders else np.zeros(2)
    return np.stack([top + (0, -0.05), top + (0, -0.12), top + (0, -0.18)])


def plant(kind: str, strokes: list[Stroke], rng: np.random.Generator) -> tuple[list[Stroke], dict]:
    """Apply distortion `kind` to the strokes; returns the new strokes and what was done (for metadata.jsonl)."""
    if kind == "mixed":
        kind = DISTORTIONS[1 + rng.integers(4)]
    if kind == "none":
        return strokes, {"kind": "none"}
    limb = list(LIMBS)[rng.integers(4)]
    upper, lower = LIMBS[limb]
    by_name = {s.segment: s for s in strokes}
    if kind == "missing_limb":
        return [s for s in strokes if s.segment not in (upper, lower)], {"kind": kind, "limb": limb}
    if kind == "extra_limb":  # a second copy of the limb from the same shoulder or hip, swung 50-90 degrees away
        magnitude, root = rng.uniform(50, 90), by_name[upper].start
        copies = [[Stroke(s.segment, _rotate(s.start, root, sign * magnitude), _rotate(s.end, root, sign * magnitude))
                   for s in (by_name[upper], by_name[lower])] for sign in (-1, 1)]
        body = np.concatenate([np.linspace(s.start, s.end, 5) for s in strokes] + [_head_points(strokes)])
        clearance = [min(np.linalg.norm(body - c[1].end, axis=1).min(), np.linalg.norm(body - c[0].end, axis=1).min())
                     for c in copies]
        best = int(np.argmax(clearance))  # the side where the copy lies in free space, so that it shows
        return strokes + copies[best], {"kind": kind, "limb": limb, "angle": round(float((2 * best - 1) * magnitude), 1)}
    if kind == "broken_limb":  # the distal segment dislocated sideways at the elbow or knee, clear of the upper one
        up, seg = by_name[upper], by_name[lower]
        along = (up.end - up.start) / (np.linalg.norm(up.end - up.start) + 1e-9)
        normal = np.array([-along[1], along[0]])
        normal = normal if normal @ (seg.end - seg.start) >= 0 else -normal  # the side the lower segment points to
        shift = normal * rng.uniform(0.13, 0.18)
        seg.start, seg.end = seg.start + shift, seg.end + shift
        return strokes, {"kind": kind, "limb": limb}
    if kind == "stretched_limb":  # one segment 1.8-2.2x its length; the segment below moves with its end
        name = (upper, lower)[rng.integers(2)]
        seg, factor = by_name[name], rng.uniform(1.8, 2.2)
        delta = (seg.end - seg.start) * (factor - 1)
        seg.end = seg.end + delta
        if name == upper:
            by_name[lower].start, by_name[lower].end = by_name[lower].start + delta, by_name[lower].end + delta
        return strokes, {"kind": kind, "limb": limb, "segment": name, "factor": round(float(factor), 2)}
    raise ValueError(f"unknown distortion {kind!r}; choose from {DISTORTIONS}")
