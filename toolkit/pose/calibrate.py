"""Calibration of MediaPipe's shoulders, hips and neck to OpenPose-18 conventions, in body-relative coordinates.

MediaPipe's landmarks are defined by its own annotators; ControlNet-OpenPose was trained on maps from OpenPose,
whose body-18 joints follow COCO's keypoints, with the neck at the midpoint of the shoulders. The difference is a
systematic offset that scales and turns with the body, so it is fitted in the body's own frame. For a joint j of a
left/right pair (shoulders, hips) with partner k:

    p_j <- p_j + down * (hip_mid - shoulder_mid) + inward * (p_k - p_j)

`down` > 0 moves the pair toward the hips, `inward` > 0 moves the two joints toward each other; both sides share
the numbers, so a mirrored body is calibrated to the mirror image. The neck is then the midpoint of the calibrated
shoulders. A body without all four torso joints is left as it is. The shipped numbers
(`toolkit/assets/pose_calibration.json`) come from `benchmarks/fit_pose_calibration.py`, which records what they
were fitted on and its licence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.pose.metrics import torso_size

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "assets" / "pose_calibration.json"
PAIRS = {"shoulders": (2, 5), "hips": (8, 11)}  # body-18 (right, left)
TORSO = (2, 5, 8, 11)
FORMAT = "anatomy-toolkit pose calibration v1"


def torso_down(body: np.ndarray) -> np.ndarray | None:
    """The vector (2,) from the shoulders' midpoint to the hips' midpoint; None unless all four joints are found."""
    if not (body[list(TORSO), 2] > 0).all():
        return None
    return (body[8, :2] + body[11, :2]) / 2 - (body[2, :2] + body[5, :2]) / 2


@dataclass
class Calibration:
    """Per pair, (down, inward) in torso units (see the module docstring), and where the numbers came from."""

    shoulders: tuple[float, float] = (0.0, 0.0)
    hips: tuple[float, float] = (0.0, 0.0)
    provenance: dict = field(default_factory=dict)

    def __call__(self, body: np.ndarray) -> np.ndarray:
        """The calibrated copy of a body-18 (18, 3) array in pixels."""
        out = np.array(body, dtype=np.float64)
        down = torso_down(out)
        if down is None:
            return out
        raw = out.copy()
        for name, (right, left) in PAIRS.items():
            d, inward = getattr(self, name)
            out[right, :2] = raw[right, :2] + d * down + inward * (raw[left, :2] - raw[right, :2])
            out[left, :2] = raw[left, :2] + d * down + inward * (raw[right, :2] - raw[left, :2])
        out[1, :2] = (out[2, :2] + out[5, :2]) / 2  # OpenPose's neck
        out[1, 2] = min(out[2, 2], out[5, 2])
        return out

    def save(self, path: str | Path) -> None:
        """Write the calibration file (JSON)."""
        data = {"format": FORMAT, **{k: [round(float(v), 5) for v in getattr(self, k)] for k in PAIRS},
                "provenance": self.provenance}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


def calibration_option(value: str | None) -> Calibration | None:
    """The calibration a `--calibration` value names: "default" the shipped file, None (or "none") no calibration,
    anything else a calibration file."""
    if value is None or value == "none":
        return None
    return load_calibration(None if value == "default" else value)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The calibration in `path` (default: the shipped file); a bad file is a UserError naming it."""
    path = Path(path) if path is not None else DEFAULT_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        pairs = {k: tuple(float(v) for v in data[k]) for k in PAIRS}
        if any(len(v) != 2 for v in pairs.values()):
            raise ValueError("each pair needs two numbers: [down, inward]")
    except OSError as e:
        raise UserError(f"{path}: cannot read the pose calibration ({e.strerror or e})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a pose calibration file ({e})") from None
    return Calibration(**pairs, provenance=data.get("provenance", {}))


def fit_calibration(pairs: list[tuple[np.ndarray, np.ndarray]], *, max_error: float = 0.5,
                    provenance: dict | None = None) -> Calibration:
    """Least-squares (down, inward) per pair from (detected, ground truth) body-18 pairs, in torso units.

    A joint farther than `max_error` torso sizes from its truth is a detection failure, not an offset: left out.
    """
    fitted, counts = {}, {}
    for name, (right, left) in PAIRS.items():
        rows, targets = [], []
        for pred, truth in pairs:
            size, down = torso_size(truth), torso_down(pred)
            if size is None or down is None:
                continue
            for j, k in ((right, left), (left, right)):
                residual = truth[j, :2] - pred[j, :2]
                if truth[j, 2] > 0 and np.linalg.norm(residual) <= max_error * size:
                    rows.append(np.stack([down, pred[k, :2] - pred[j, :2]], axis=1) / size)  # (2 coords, 2 params)
                    targets.append(residual / size)
        if not rows:
            raise ValueError(f"no detection with all four torso joints matches a labelled {name} pair")
        solution = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0]
        fitted[name], counts[name] = tuple(float(v) for v in solution), len(rows)
    return Calibration(**fitted, provenance={**(provenance or {}), "joints_fitted": counts})

