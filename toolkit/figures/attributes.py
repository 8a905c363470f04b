"""Labelled poses for pose-to-text: a 3-D body seen from a chosen view and framed as a full, upper-body or portrait shot.

The testbed's default prior (`prior.py`) draws front-facing figures in the image plane. Describing a pose in words
needs more: a view (front, side, back), a framing, and postures and arm positions that only make sense in depth
(sitting thighs point at the camera, kneeling shins point away, crossed forearms lie in front of the chest). So this
sampler builds the joints in 3-D body units (x = the person's left, y down, z = the person's front), turns the body
about the vertical axis by the view's yaw, projects orthographically, and marks face points hidden when they face
away. The labels are the 3-D truth; what a 2-D keypoint set can show of them is for `toolkit.prompts.pose_text` to
work out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from toolkit.figures.prior import (
    L_ANK,
    L_EAR,
    L_ELB,
    L_EYE,
    L_HIP,
    L_KNE,
    L_SHO,
    L_WRI,
    NECK,
    NOSE,
    R_ANK,
    R_EAR,
    R_ELB,
    R_EYE,
    R_HIP,
    R_KNE,
    R_SHO,
    R_WRI,
)

VIEWS = ("front", "side", "back")
FRAMINGS = ("full_body", "upper_body", "portrait")
POSTURES = ("standing", "sitting", "kneeling", "lying")
ARMS = ("down", "raised", "one_raised", "outstretched", "crossed", "on_hips")
LEGS = ("together", "apart", "stride", "bent")
_YAW = {"front": (-25, 25), "side": (70, 110), "back": (155, 205)}  # degrees; side is mirrored half the time
_LYING_ARMS = ("down", "raised", "outstretched")
_HEAD = {NOSE: (0, 0.01, 0.09), R_EYE: (-0.025, -0.015, 0.07), L_EYE: (0.025, -0.015, 0.07),
         R_EAR: (-0.06, 0, 0), L_EAR: (0.06, 0, 0)}  # offsets from the head centre
_FACE_MIN_DEPTH = {NOSE: -0.04, R_EYE: 0.0, L_EYE: 0.0, R_EAR: -0.03, L_EAR: -0.03}  # visible above this depth


@dataclass
class LabelledPose:
    """Projected OpenPose-18 keypoints (18, 2) in body units, which of them are visible (18,), the labels (view,
    framing, posture, arms, legs) and, for cropped framings, the lowest y (body units) inside the picture."""

    keypoints: np.ndarray
    visible: np.ndarray
    labels: dict
    crop_bottom: float | None = None


def _direction(abduct: float, flex: float, side: int) -> np.ndarray:
    """Unit vector from hanging straight down: `abduct` degrees out to the side, `flex` degrees forward."""
    a, f = math.radians(abduct), math.radians(flex)
    return np.array([side * math.sin(a) * math.cos(f), math.cos(a) * math.cos(f), math.sin(f)])


def _toward(origin: np.ndarray, target: np.ndarray, length: float) -> np.ndarray:
    return origin + length * (target - origin) / (np.linalg.norm(target - origin) + 1e-9)


def _arm(j: np.ndarray, rng: np.random.Generator, kind: str, side: int, lengths: tuple[float, float]) -> None:
    """Place one arm's elbow and wrist for arm position `kind`."""
    sho, elb, wri = (R_SHO, R_ELB, R_WRI) if side < 0 else (L_SHO, L_ELB, L_WRI)
    upper, fore = lengths
    u = rng.uniform
    if kind == "crossed":  # elbows a little forward, forearms across the chest to the other side
        j[elb] = j[sho] + upper * _direction(u(5, 20), u(20, 40), side)
        target = np.array([-side * u(0.06, 0.1), j[NECK][1] + u(0.12, 0.18), u(0.1, 0.14)])
        j[wri] = _toward(j[elb], target, fore)
        return
    if kind == "on_hips":  # elbows out, hands on the hips
        j[elb] = j[sho] + upper * _direction(u(35, 55), u(-10, 5), side)
        hip = j[R_HIP] if side < 0 else j[L_HIP]
        j[wri] = _toward(j[elb], hip + np.array([side * 0.03, -0.02, 0.0]), fore)
        return
    abduct, bend, flex = {"down": ((5, 20), (0, 25), (-5, 10)), "raised": ((145, 175), (0, 20), (-10, 10)),
                          "outstretched": ((75, 100), (-10, 10), (-15, 15))}[kind]
    a, f = u(*abduct), u(*flex)
    j[elb] = j[sho] + upper * _direction(a, f, side)
    j[wri] = j[elb] + fore * _direction(a + u(*bend), f + (u(0, 25) if kind == "down" else 0), side)


def _leg(j: np.ndarray, rng: np.random.Generator, posture: str, legs: str, side: int, forward: bool,
         lengths: tuple[float, float]) -> None:
    """Place one leg's knee and ankle; `forward` picks the leading leg of a stride."""
    hip, kne, ank = (R_HIP, R_KNE, R_ANK) if side < 0 else (L_HIP, L_KNE, L_ANK)
    thigh, shin = lengths
    u = rng.uniform
    if posture == "sitting":  # thighs forward (toward the camera from the front), shins hanging
        thigh_dir, shin_dir = _direction(u(5, 20), u(70, 95), side), _direction(u(0, 10), u(-5, 15), side)
    elif posture == "kneeling":  # thighs down, shins back on the floor
        thigh_dir, shin_dir = _direction(u(3, 12), u(-5, 15), side), _direction(u(0, 8), u(-100, -80), side)
    elif legs == "stride":  # the leading leg swung forward, the trailing one back with its knee bent
        flex = u(15, 30) if forward else -u(10, 20)
        thigh_dir = _direction(u(0, 4), flex, side)
        shin_dir = _direction(u(0, 4), flex - (u(0, 10) if forward else u(35, 55)), side)
    else:
        spread = u(0, 3) if legs == "together" else u(10, 20)
        thigh_dir, shin_dir = _direction(spread, u(-5, 5), side), _direction(spread - u(0, 5), u(-5, 5), side)
    j[kne] = j[hip] + thigh * thigh_dir
    j[ank] = j[kne] + shin * shin_dir


def _body(rng: np.random.Generator, labels: dict) -> np.ndarray:
    """The 18 joints in 3-D body units (hips centre at the origin) for the labelled posture, arms and legs."""
    u = rng.uniform
    j = np.zeros((18, 3))
    torso, shoulder, hip = u(0.28, 0.33), u(0.09, 0.12), u(0.06, 0.08)
    arm, leg = (u(0.15, 0.18), u(0.13, 0.16)), (u(0.22, 0.26), u(0.21, 0.25))
    j[NECK] = (0, -torso, 0)
    j[R_SHO], j[L_SHO] = j[NECK] + (-shoulder, 0.02, 0), j[NECK] + (shoulder, 0.02, 0)
    j[R_HIP], j[L_HIP] = (-hip, 0, 0), (hip, 0, 0)
    arms = labels["arms"]
    raised_side = -1 if rng.random() < 0.5 else 1
    for side in (-1, 1):
        kind = ("raised" if side == raised_side else "down") if arms == "one_raised" else arms
        _arm(j, rng, kind, side, arm)
    leading = -1 if rng.random() < 0.5 else 1
    for side in (-1, 1):
        _leg(j, rng, labels["posture"], labels["legs"], side, side == leading, leg)
    head = j[NECK] + (0, -0.1, 0)
    for index, offset in _HEAD.items():
        j[index] = head + offset
    return j


def _project(j: np.ndarray, yaw_deg: float, roll_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn the body by `yaw_deg` about its vertical axis, project onto the image plane and roll it in that plane;
    returns keypoints (18, 2) and visibility (18,): face points facing away are hidden."""
    t = math.radians(yaw_deg)
    x = j[:, 0] * math.cos(t) + j[:, 2] * math.sin(t)
    depth = -j[:, 0] * math.sin(t) + j[:, 2] * math.cos(t)  # toward the camera is positive
    visible = np.ones(18, dtype=bool)
    head_depth = (depth[R_EAR] + depth[L_EAR]) / 2
    for index, threshold in _FACE_MIN_DEPTH.items():
        visible[index] = depth[index] - head_depth > threshold
    r = math.radians(roll_deg)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return np.stack([x, j[:, 1]], 1) @ rot.T, visible


def sample_labels(rng: np.random.Generator, **fixed: str) -> dict:
    """Consistent labels (view, framing, posture, arms, legs), any of them fixed by keyword."""
    choices = {"view": VIEWS, "framing": FRAMINGS, "posture": POSTURES, "arms": ARMS, "legs": LEGS}
    unknown = [f"{k}={v!r}" for k, v in fixed.items() if k not in choices or v not in choices[k]]
    if unknown:
        raise ValueError(f"unknown label {', '.join(unknown)}; choose from {choices}")
    pick = lambda key, options: fixed.get(key) or options[rng.integers(len(options))]  # noqa: E731
    posture = pick("posture", POSTURES)
    legs = "bent" if posture in ("sitting", "kneeling") else pick(
        "legs", ("together", "apart") if posture == "lying" else ("together", "apart", "stride"))
    arms = pick("arms", _LYING_ARMS if posture == "lying" else ARMS)
    framing = "full_body" if posture == "lying" else pick("framing", FRAMINGS)
    labels = {"view": pick("view", VIEWS), "framing": framing, "posture": posture, "arms": arms, "legs": legs}
    clash = [k for k, v in fixed.items() if labels[k] != v]
    if clash:
        raise ValueError(f"labels {fixed} cannot go together (a {posture} figure fixes {', '.join(clash)})")
    return labels


def sample_labelled_pose(rng: np.random.Generator, **fixed: str) -> LabelledPose:
    """A labelled pose: sampled labels, the 3-D body, its projection for the view, and the framing's crop line."""
    labels = sample_labels(rng, **fixed)
    yaw = rng.uniform(*_YAW[labels["view"]]) * (1 if rng.random() < 0.5 or labels["view"] == "front" else -1)
    roll = rng.choice([-1, 1]) * rng.uniform(75, 105) if labels["posture"] == "lying" else 0.0
    keypoints, visible = _project(_body(rng, labels), yaw, roll)
    bottom = None
    if labels["framing"] == "upper_body":  # cut between the hips and the knees
        bottom = max(keypoints[R_HIP, 1], keypoints[L_HIP, 1]) + rng.uniform(0.03, 0.08)
    elif labels["framing"] == "portrait":  # cut between the shoulders and the hips
        bottom = max(keypoints[R_SHO, 1], keypoints[L_SHO, 1]) + rng.uniform(0.05, 0.1)
    return LabelledPose(keypoints, visible, labels, bottom)
