"""Calibration to OpenPose conventions, test-time-augmentation merging, people counting and the filter's decisions,
on synthetic landmark sets (no MediaPipe needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.errors import UserError
from toolkit.pose.calibrate import Calibration, fit_calibration, load_calibration
from toolkit.pose.detect import limb_confidence, more_confident, same_person
from toolkit.pose.keypoints import FLIP_18, Person, Pose, flip_person, load_pose, save_pose
from toolkit.pose.metrics import match_people
from toolkit.pose.people import PeopleCount, other_regions, person_boxes
from toolkit.pose.prepare import PoseFilter


def standing(x: float = 100.0, y: float = 50.0, scale: float = 1.0, conf: float = 0.9) -> np.ndarray:
    """A frontal body-18 (18, 3): shoulders 40 px apart, hips 100 px below them and 24 px apart (times scale)."""
    points = {0: (0, -25), 2: (-20, 0), 3: (-25, 40), 4: (-28, 80), 5: (20, 0), 6: (25, 40), 7: (28, 80),
              8: (-12, 100), 9: (-13, 150), 10: (-14, 200), 11: (12, 100), 12: (13, 150), 13: (14, 200),
              14: (-5, -30), 15: (5, -30), 16: (-10, -28), 17: (10, -28)}
    body = np.zeros((18, 3))
    for j, (dx, dy) in points.items():
        body[j] = (x + scale * dx, y + scale * dy, conf)
    body[1] = (x, y, conf)
    return body


def test_calibration_moves_hips_shoulders_and_neck_the_documented_way():
    body = standing()
    out = Calibration(shoulders=(0.05, 0.1), hips=(-0.1, -0.25))(body)
    # down = hip_mid - shoulder_mid = (0, 100); shoulder inward = 0.1 * 40 px; hips move up 10 px and 6 px apart
    np.testing.assert_allclose(out[2, :2], [80 + 4, 50 + 5])
    np.testing.assert_allclose(out[5, :2], [120 - 4, 50 + 5])
    np.testing.assert_allclose(out[8, :2], [88 - 6, 150 - 10])
    np.testing.assert_allclose(out[11, :2], [112 + 6, 150 - 10])
    np.testing.assert_allclose(out[1, :2], [100, 55])  # the neck: midpoint of the calibrated shoulders
    np.testing.assert_array_equal(np.delete(out, [1, 2, 5, 8, 11], axis=0), np.delete(body, [1, 2, 5, 8, 11], axis=0))


def test_calibration_turns_with_the_body_and_is_mirror_symmetric():
    calibration = Calibration(shoulders=(0.03, 0.05), hips=(-0.06, -0.03))
    body = standing()
    angle = np.radians(70)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = body.copy()
    turned[:, :2] = (body[:, :2] - 100) @ rot.T + 100
    expected = calibration(body)
    expected[:, :2] = (expected[:, :2] - 100) @ rot.T + 100
    np.testing.assert_allclose(calibration(turned), expected, atol=1e-9)
    mirrored = flip_person(Person(body), 300).body
    np.testing.assert_allclose(calibration(mirrored), flip_person(Person(calibration(body)), 300).body, atol=1e-9)


def test_a_body_without_all_four_torso_joints_is_left_as_it_is():
    body = standing()
    body[11] = 0.0
    np.testing.assert_array_equal(Calibration(shoulders=(0.1, 0.1), hips=(0.1, 0.1))(body), body)


def test_fit_recovers_known_offsets_and_ignores_gross_failures():
    rng = np.random.default_rng(0)
    truth_calibration = Calibration(shoulders=(-0.02, 0.04), hips=(-0.07, -0.05))
    pairs = []
    for _ in range(40):
        pred = standing(rng.uniform(50, 400), rng.uniform(50, 400), rng.uniform(0.5, 2))
        angle = rng.uniform(-0.5, 0.5)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pred[:, :2] = (pred[:, :2] - pred[1, :2]) @ rot.T + pred[1, :2]
        truth = truth_calibration(pred)
        truth[:, :2] += rng.normal(0, 0.5, (18, 2))
        pairs.append((pred, truth))
    bad = standing()
    pairs.append((bad, bad + np.array([300.0, 0, 0])))  # a wrong person: far off, must not drag the fit
    fitted = fit_calibration(pairs, provenance={"data": "synthetic"})
    np.testing.assert_allclose(fitted.shoulders, truth_calibration.shoulders, atol=0.01)
    np.testing.assert_allclose(fitted.hips, truth_calibration.hips, atol=0.01)
    assert fitted.provenance["data"] == "synthetic" and fitted.provenance["joints_fitted"]["hips"] == 80


def test_shipped_calibration_loads_with_its_provenance_and_round_trips(tmp_path):
    shipped = load_calibration()
    assert "CC BY 4.0" in shipped.provenance["licence"] and shipped.provenance["people"] > 0
    assert all(abs(v) < 0.3 for v in (*shipped.shoulders, *shipped.hips))  # offsets, not a different skeleton
    shipped.save(tmp_path / "c.json")
    again = load_calibration(tmp_path / "c.json")
    np.testing.assert_allclose(again.hips, shipped.hips, atol=1e-5)


@pytest.mark.parametrize("content, message", [("{", "not a pose calibration file"),
                                              ('{"format": "other"}', "format"),
                                              ('{"format": "anatomy-toolkit pose calibration v1", "hips": [1]}',
                                               "shoulders")])
def test_a_bad_calibration_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        load_calibration(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


def test_tta_keeps_the_more_confident_detection_of_each_person_and_adds_people_only_the_mirror_found():
    sure, unsure, other = standing(conf=0.9), standing(conf=0.4), standing(x=400, conf=0.6)
    assert same_person(sure, unsure) and not same_person(sure, other)
    merged = more_confident([unsure], [sure, other])
    assert len(merged) == 2 and limb_confidence(merged[0]) == pytest.approx(0.9) and merged[1] is other
    assert more_confident([], [other]) == [other]
    assert same_person(sure, sure[FLIP_18])  # a pass that took the back for the front is still the same person


def test_match_people_pairs_each_reference_with_its_own_detection():
    a, b = standing(x=100), standing(x=300)
    pairs = match_people([b, a], [a, b, standing(x=600)])
    assert pairs[0][0] is a and pairs[1][0] is b and pairs[2][0] is None


def test_people_count_uses_faces_and_unexplained_person_regions():
    mask = np.zeros((100, 200), dtype=bool)
    mask[10:88, 28:56] = True  # the detected person: its silhouette a little wider than its padded box
    mask[10:90, 140:170] = True  # someone else
    mask[0:3, 0:3] = True  # a speck below min_region
    box = person_boxes([standing(x=40, y=20, scale=0.3)])
    assert other_regions(mask, box, min_region=0.01) == 1
    assert PeopleCount(detected=1, faces=1, other_regions=1).count == 2
    assert PeopleCount(detected=2, faces=3, other_regions=0).count == 3
    assert PeopleCount(detected=1, faces=0, other_regions=0).count == 1


def test_filter_flags_a_photo_whose_map_would_miss_someone(tmp_path):
    one, two = Person(standing()), Person(standing(x=300))
    keep, drop = PoseFilter(), PoseFilter(multi_person="drop")
    assert keep.reason(Pose(400, 300, [one], counted=2)) == "someone missed"
    assert keep.reason(Pose(400, 300, [one, two], counted=2)) is None  # everyone is in the map
    assert drop.reason(Pose(400, 300, [one, two], counted=2)) == "several people"
    assert keep.reason(Pose(400, 300, [one])) is None  # not counted: nothing to flag
    with pytest.raises(UserError, match="multi_person"):
        PoseFilter(multi_person="first")
    save_pose(Pose(400, 300, [one], counted=3), tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["people_counted"] == 3
    assert load_pose(tmp_path / "p.json").counted == 3
    (tmp_path / "bad.json").write_text(json.dumps(Pose(400, 300, [one]).to_json() | {"people_counted": 1.5}))
    with pytest.raises(UserError, match="people_counted"):
        load_pose(tmp_path / "bad.json")


def test_flip_order_is_its_own_inverse():
    assert [FLIP_18[i] for i in FLIP_18] == list(range(18))
