"""Pose to text: framing, view, posture, arms and legs read from OpenPose body-18 keypoints, as a short phrase.

Every measure is taken in the body's own frame (up = hips centre to neck, right = the viewer's right across the
torso, lengths in torso lengths), so an in-plane rotation or a lying figure changes nothing. An attribute that the
visible joints cannot decide is None and left out of the phrase rather than guessed: legs apart and together look
the same from the side, and a cropped picture shows no knees. Thresholds sit between the ranges of the labelled
renders of `toolkit.figures.attributes`; `docs/prompts.md` reports the accuracy per attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOSE, NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI = range(8)
R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK, R_EYE, L_EYE, R_EAR, L_EAR = range(8, 18)
_FACE, _HEAD = (NOSE, R_EYE, L_EYE), (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)

PHRASES = {
    "framing": {"full_body": "full body", "upper_body": "upper body", "portrait": "portrait"},
    "view": {"front": "front view", "side": "side view", "back": "back view"},
    "posture": {"standing": "standing", "sitting": "sitting", "kneeling": "kneeling", "lying": "lying down",
                "inverted": "upside down"},
    "arms": {"down": "arms at sides", "raised": "arms raised", "one_raised": "one arm raised",
             "outstretched": "arms outstretched", "crossed": "arms crossed", "on_hips": "hands on hips"},
    "legs": {"together": "legs together", "apart": "legs apart", "stride": "walking stride", "bent": "knees bent"},
}


@dataclass(frozen=True)
class PoseAttributes:
    """What the keypoints say about one person; None where they cannot tell."""

    framing: str | None = None
    view: str | None = None
    posture: str | None = None
    arms: str | None = None
    legs: str | None = None

    def phrase(self) -> str:
        """A comma-separated phrase, e.g. "full body, front view, standing, arms crossed, legs apart"."""
        parts = [PHRASES[key][value] for key, value in vars(self).items() if value is not None
                 and not (key == "legs" and value == "bent" and self.posture in ("sitting", "kneeling"))]
        return ", ".join(parts)


@dataclass(frozen=True)
class _Frame:
    """The body's frame in the image: origin at the neck, unit vectors up and right, the torso length in pixels."""

    neck: np.ndarray
    up: np.ndarray
    right: np.ndarray
    torso: float

    def height(self, p: np.ndarray) -> float:
        return float((p - self.neck) @ self.up) / self.torso

    def across(self, p: np.ndarray) -> float:
        return float((p - self.neck) @ self.right) / self.torso


def _frame(p: np.ndarray, seen: np.ndarray) -> _Frame | None:
    """The body frame from the neck (or shoulders) and the hips, or from the head when no hip is visible."""
    if seen[NECK]:
        neck = p[NECK]
    elif seen[R_SHO] and seen[L_SHO]:
        neck = (p[R_SHO] + p[L_SHO]) / 2
    else:
        return None
    hips = [p[i] for i in (R_HIP, L_HIP) if seen[i]]
    head = [p[i] for i in _HEAD if seen[i]]
    if hips:
        axis, torso = neck - np.mean(hips, 0), None
    elif head:  # a portrait: the head sits about a third of a torso above the neck
        axis = np.mean(head, 0) - neck
        torso = 3.0 * float(np.linalg.norm(axis))
    else:
        return None
    length = float(np.linalg.norm(axis))
    if length < 1e-6:
        return None
    up = axis / length
    return _Frame(neck, up, np.array([-up[1], up[0]]), torso or length)


def _framing(seen: np.ndarray) -> str | None:
    if seen[R_ANK] or seen[L_ANK]:
        return "full_body"
    if seen[R_HIP] or seen[L_HIP]:
        return "upper_body"
    return "portrait" if seen[NECK] or seen[R_SHO] or seen[L_SHO] else None


def _view(p: np.ndarray, seen: np.ndarray, f: _Frame) -> str | None:
    """Front or back from the shoulders' left/right order, side when they nearly overlap; the face if no shoulders."""
    if seen[R_SHO] and seen[L_SHO]:
        width = f.across(p[L_SHO]) - f.across(p[R_SHO])  # the person's left on the viewer's right: facing us
        if abs(width) < 0.36:
            return "side"
        return "front" if width > 0 else "back"
    eyes = int(seen[R_EYE]) + int(seen[L_EYE])
    if eyes == 2:
        return "front"
    if eyes == 1:
        return "side"
    return "back" if seen[R_EAR] and seen[L_EAR] else None


def _posture(p: np.ndarray, seen: np.ndarray, f: _Frame) -> str | None:
    """Lying (or upside down) from the torso's tilt; sitting, kneeling or standing from how much thighs and shins
    drop along it."""
    tilt = f.up @ np.array([0.0, -1.0])  # cosine of the torso's angle from upright
    if (seen[R_HIP] or seen[L_HIP]) and tilt < np.cos(np.radians(50)):
        return "inverted" if tilt < -np.cos(np.radians(40)) else "lying"
    legs = [(h, k, a) for h, k, a in ((R_HIP, R_KNE, R_ANK), (L_HIP, L_KNE, L_ANK)) if seen[[h, k, a]].all()]
    if not legs:
        return None
    thigh = max(f.height(p[h]) - f.height(p[k]) for h, k, _ in legs)  # how far the knee hangs below the hip
    shin = max(f.height(p[k]) - f.height(p[a]) for _, k, a in legs)
    if thigh < 0.4:
        return "sitting"  # thighs point at or away from the camera, or lie level
    return "kneeling" if shin < 0.35 else "standing"


def _legs(p: np.ndarray, seen: np.ndarray, f: _Frame, posture: str | None, view: str | None) -> str | None:
    """Bent for sitting and kneeling; a stride when one shin is much more foreshortened (the trailing leg's knee
    bends back); else apart or together from the ankles' spread against the hips' (unreadable from the side)."""
    if posture in ("sitting", "kneeling"):
        return "bent"
    if posture is None or not seen[[R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK]].all():
        return None
    shins = sorted(f.height(p[k]) - f.height(p[a]) for k, a in ((R_KNE, R_ANK), (L_KNE, L_ANK)))
    if posture != "lying" and shins[0] < 0.8 * shins[1]:
        return "stride"
    if view == "side":
        return None
    hips = abs(f.across(p[L_HIP]) - f.across(p[R_HIP]))
    ankles = abs(f.across(p[L_ANK]) - f.across(p[R_ANK]))
    return "apart" if ankles > 1.7 * hips else "together"


def _arms(p: np.ndarray, seen: np.ndarray, f: _Frame, view: str | None) -> str | None:
    """Raised from the wrists' height above the neck; crossed when each wrist is past the midline; on the hips
    when the elbows stick out and the wrists rest at hip height; outstretched when the wrists are far out near
    shoulder height; else down. From the side only raised and down are told apart."""
    if not seen[[R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI]].all():
        return None
    raised = sum(f.height(p[w]) > 0.45 for w in (R_WRI, L_WRI))
    if raised:
        return "raised" if raised == 2 else "one_raised"
    if view == "side":
        drop = [f.height(p[s]) - f.height(p[e]) for s, e in ((R_SHO, R_ELB), (L_SHO, L_ELB))]
        return "down" if min(drop) > 0.5 and all(f.height(p[w]) < -0.8 for w in (R_WRI, L_WRI)) else None
    outward = {s: np.sign(f.across(p[s])) for s in (R_SHO, L_SHO)}  # which way each side points across
    wrist_out = [f.across(p[w]) * outward[s] for s, w in ((R_SHO, R_WRI), (L_SHO, L_WRI))]
    elbow_out = [(f.across(p[e]) - f.across(p[s])) * outward[s] for s, e in ((R_SHO, R_ELB), (L_SHO, L_ELB))]
    if max(wrist_out) < 0.12 and all(-0.9 < f.height(p[w]) < 0 for w in (R_WRI, L_WRI)):
        return "crossed"
    if min(wrist_out) > 0.9 and all(abs(f.height(p[w]) - f.height(p[s])) < 0.45
                                    for s, w in ((R_SHO, R_WRI), (L_SHO, L_WRI))):
        return "outstretched"
    return "on_hips" if min(elbow_out) > 0.25 else "down"


def describe_pose(body: np.ndarray, min_confidence: float = 0.1) -> PoseAttributes:
    """Attributes of one person from body-18 keypoints (18, 3) as x, y, confidence in pixels."""
    body = np.asarray(body, dtype=np.float64)
    if body.shape != (18, 3):
        raise ValueError(f"expected body-18 keypoints of shape (18, 3), got {body.shape}")
    p, seen = body[:, :2], body[:, 2] > min_confidence
    f = _frame(p, seen)
    if f is None:
        return PoseAttributes(framing=_framing(seen))
    view = _view(p, seen, f)
    posture = _posture(p, seen, f)
    return PoseAttributes(_framing(seen), view, posture, _arms(p, seen, f, view), _legs(p, seen, f, posture, view))


def pose_phrase(people_keypoints: list[np.ndarray], min_confidence: float = 0.1) -> str:
    """The phrase for the most prominent person (largest box of visible keypoints), led by "N people" when there are
    several; "" when there is nobody."""
    def extent(body: np.ndarray) -> float:
        seen = body[body[:, 2] > min_confidence, :2]
        return float(np.prod(np.ptp(seen, 0))) if len(seen) > 1 else 0.0

    if not people_keypoints:
        return ""
    main = max(people_keypoints, key=extent)
    phrase = describe_pose(main, min_confidence).phrase()
    count = len(people_keypoints)
    return f"{count} people, {phrase}" if count > 1 and phrase else phrase


def score_attributes(predicted: list[PoseAttributes], truth: list[dict]) -> dict[str, dict]:
    """Per attribute: accuracy where a value was given, coverage (the share given), and the commonest confusions."""
    out = {}
    for key in PHRASES:
        pairs = [(t[key], getattr(p, key)) for p, t in zip(predicted, truth, strict=True) if key in t]
        given = [(want, got) for want, got in pairs if got is not None]
        wrong: dict[str, int] = {}
        for want, got in given:
            if want != got:
                wrong[f"{want}->{got}"] = wrong.get(f"{want}->{got}", 0) + 1
        out[key] = {"accuracy": sum(w == g for w, g in given) / len(given) if given else None,
                    "coverage": len(given) / len(pairs) if pairs else None, "n": len(given),
                    "confusions": dict(sorted(wrong.items(), key=lambda kv: -kv[1])[:4])}
    return out
