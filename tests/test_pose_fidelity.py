"""Pose fidelity: hand assignment, proportions, rescaling, and the report over an image set."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.pose import Person, Pose
from toolkit.pose.detect import assign_hands
from toolkit.pose.fidelity import evaluate_fidelity, plausible_proportions, rescale


def body_with_arms():
    body = np.zeros((18, 3))
    for i, xy in {2: (80, 60), 3: (70, 90), 4: (65, 120), 5: (120, 60), 6: (130, 90), 7: (135, 120),
                  8: (90, 120), 9: (88, 150), 10: (86, 185), 11: (110, 120), 12: (112, 150), 13: (114, 185)}.items():
        body[i] = (*xy, 1.0)
    return body


def hand_at(x, y, score=0.9):
    hand = np.full((21, 3), score)
    hand[:, :2] = (x, y)
    return hand


def test_hands_go_to_the_nearest_wrist_and_strays_are_dropped():
    body = body_with_arms()
    left, right = assign_hands([hand_at(136, 125), hand_at(64, 124)], body)
    assert left is not None and left[0, 0] == 136 and right is not None and right[0, 0] == 64
    left, right = assign_hands([hand_at(10, 10)], body)  # far from both wrists
    assert left is None and right is None
    body[[4, 7], 2] = 0  # no wrists found: hands cannot be attached
    assert assign_hands([hand_at(64, 124)], body) == (None, None)


def test_plausible_proportions():
    body = body_with_arms()
    assert plausible_proportions(body) is True
    body[4, :2] = (40, 300)  # a forearm far longer than the upper arm
    assert plausible_proportions(body) is False
    assert plausible_proportions(np.zeros((18, 3))) is None


def test_rescale_to_the_image_size():
    pose = Pose(100, 50, [Person(body_with_arms())])
    body = rescale(pose, 200, 200)
    assert tuple(body[2, :2]) == (160, 240) and rescale(Pose(1, 1, []), 5, 5) is None


class FixedDetector:
    """Returns fixed bodies (in the pixels of the image it is given): one body, a list of them, or None."""

    def __init__(self, body):
        self.bodies = [] if body is None else body if isinstance(body, list) else [body]

    def __call__(self, image):
        h, w = image.shape[:2]
        return Pose(w, h, [Person(b.copy()) for b in self.bodies])


def test_fidelity_is_perfect_for_the_same_pose_and_zero_when_nobody_is_found():
    body = body_with_arms()
    images = [np.zeros((200, 200, 3), dtype=np.uint8)] * 2
    refs = [Pose(200, 200, [Person(body)])] * 2
    perfect = evaluate_fidelity(images, refs, FixedDetector(body))
    assert perfect["detection_rate"] == 1.0 and perfect["pck@0.2_torso"] == 1.0 and perfect["oks_ap"] == 1.0
    assert perfect["limb_length_error"] == 0.0 and perfect["plausible_proportions_rate"] == 1.0
    none = evaluate_fidelity(images, refs, FixedDetector(None))
    assert none["detection_rate"] == 0.0 and none["pck@0.2_torso"] == 0.0 and none["oks"] == 0.0
    shifted = body.copy()
    shifted[:, 0] += 100  # everything 100 px off: far beyond 0.2 x torso
    assert evaluate_fidelity(images, refs, FixedDetector(shifted))["pck@0.2_torso"] == 0.0


def test_evaluate_poses_cli_on_a_real_photo(tmp_path, capsys):
    pytest.importorskip("mediapipe", reason="the [pose] extra is not installed")
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the photo fixture) is not installed")
    import json

    from PIL import Image

    from toolkit.evaluate_poses import main
    from toolkit.pose import save_pose
    from toolkit.pose.detect import MediaPipeDetector

    photo = skimage_data.astronaut()
    (tmp_path / "images").mkdir()
    (tmp_path / "poses").mkdir()
    Image.fromarray(photo).save(tmp_path / "images" / "astronaut.png")
    Image.fromarray(photo[:, ::-1]).save(tmp_path / "images" / "unposed.png")  # no pose JSON: reported
    detector = MediaPipeDetector()
    save_pose(detector(photo), tmp_path / "poses" / "astronaut.json")  # the photo's own pose as "conditioning"
    detector.close()
    report = tmp_path / "report.json"
    argv = ["--images", str(tmp_path / "images"), "--poses", str(tmp_path / "poses"), "--output", str(report)]
    assert main(argv) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["images"] == 1 and summary["images_without_pose"] == ["unposed.png"]
    assert summary["pck@0.2_torso"] == 1.0 and summary["face_validity_rate"] == 1.0
    assert "pck@0.2_torso" in capsys.readouterr().out


def test_hands_option_runs_on_a_real_photo():
    pytest.importorskip("mediapipe", reason="the [pose] extra is not installed")
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions

    detector = MediaPipeDetector(MediaPipeOptions(hands=True))
    person = detector(skimage_data.astronaut()).people[0]
    detector.close()
    assert person.body.shape == (18, 3)  # her hands are hidden by the helmet: none may be attached
    assert person.left_hand is None or person.left_hand.shape == (21, 3)


def test_a_group_image_is_scored_person_by_person_whatever_the_detection_order():
    left = body_with_arms()
    right = left.copy()
    right[:, 0] += 300  # a second person to the right
    images, refs = [np.zeros((200, 500, 3), dtype=np.uint8)], [Pose(500, 200, [Person(left), Person(right)])]
    both = evaluate_fidelity(images, refs, FixedDetector([right, left]))  # found in the other order
    assert both["detection_rate"] == 1.0 and both["pck@0.2_torso"] == 1.0 and both["oks"] == 1.0
    one = evaluate_fidelity(images, refs, FixedDetector([right]))  # the left person is missed
    assert one["detection_rate"] == 0.5 and one["pck@0.2_torso"] == 0.5 and one["oks"] == 0.5
    assert one["limb_length_error"] == 0.0  # limb errors only over the people found


def test_a_person_without_a_visible_torso_is_still_matched_and_an_empty_one_is_left_out():
    upper = body_with_arms()
    upper[8:14] = 0  # no hips or legs: a half-body pose has no torso diagonal
    nobody = np.zeros((18, 3))
    images, refs = [np.zeros((200, 200, 3), dtype=np.uint8)], [Pose(200, 200, [Person(upper), Person(nobody)])]
    report = evaluate_fidelity(images, refs, FixedDetector(upper))
    assert report["detection_rate"] == 1.0 and report["pck@0.1_bbox"] == 1.0 and report["oks"] == 1.0
