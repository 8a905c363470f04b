"""Pose metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.pose.metrics import COCO_SIGMAS_18, bbox_size, limb_errors, oks, oks_ap, pck, torso_size


def square_person():
    """Shoulders at (0, 0) and (40, 0), hips at (0, 30) and (40, 30): both torso diagonals are 50 px."""
    ref = np.zeros((18, 3))
    for i, xy in {2: (0, 0), 5: (40, 0), 8: (0, 30), 11: (40, 30), 1: (20, 0), 3: (0, 20)}.items():
        ref[i] = (*xy, 1.0)
    return ref


def test_torso_and_bbox_sizes():
    ref = square_person()
    assert torso_size(ref) == pytest.approx(50.0) and bbox_size(ref) == pytest.approx(40.0)
    ref[[8, 11], 2] = 0
    assert torso_size(ref) is None


def test_pck_counts_joints_within_alpha_torso():
    ref = square_person()
    pred = ref.copy()
    pred[2, 0] += 9.9  # within 0.2 x 50 = 10 px
    pred[5, 0] += 10.5  # outside
    pred[3, 2] = 0  # missed by the detector
    assert pck(ref, pred, alpha=0.2) == (4, 6)
    assert pck(ref, None) == (0, 6)
    assert pck(ref, pred, alpha=0.2, norm="bbox") == (3, 6)  # 0.2 x 40 = 8 px


def test_oks_hand_computed():
    ref = square_person()
    assert oks(ref, ref.copy()) == pytest.approx(1.0)
    pred = ref.copy()
    pred[1, 0] += 3.0  # only the neck moves, by 3 px
    area = 40.0 * 30.0
    neck = math.exp(-9.0 / (2 * area * (2 * COCO_SIGMAS_18[1]) ** 2))
    assert oks(ref, pred) == pytest.approx((5 + neck) / 6)
    assert oks(ref, None) == 0.0


def test_oks_ap():
    assert oks_ap([1.0, 1.0]) == pytest.approx(1.0)
    assert oks_ap([0.0, 0.0]) == 0.0
    assert oks_ap([0.72]) == pytest.approx(5 / 10)  # above 0.50, 0.55, 0.60, 0.65, 0.70 of ten thresholds


def test_limb_errors():
    ref = square_person()
    pred = ref.copy()
    pred[3] = (0, 40, 1)  # upper arm (shoulder (0,0) -> elbow) twice as long, same direction
    errors = limb_errors(ref, pred)
    assert errors["length"][2] == pytest.approx(1.0) and errors["angle"][2] == pytest.approx(0.0)
    pred[3] = (20, 0, 1)  # now pointing sideways: 90 degrees off, same length
    errors = limb_errors(ref, pred)
    assert errors["angle"][2] == pytest.approx(90.0) and errors["length"][2] == pytest.approx(0.0)
    assert np.isnan(errors["length"][3])  # elbow-wrist: no wrist in the reference
