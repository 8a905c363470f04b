"""The pose layer: converters, OpenPose JSON, exact drawing, and left/right-aware flips."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.pose import PALETTE_18, Person, Pose, flip_pose, load_pose, render_pose, save_pose
from toolkit.pose.convert import (
    coco17_to_openpose18,
    lsp14_to_openpose18,
    mediapipe33_to_openpose18,
    mpii16_to_openpose18,
    openpose18_to_coco17,
    openpose18_to_lsp14,
)
from toolkit.pose.keypoints import FLIP_18, LIMBS_18


def standing_person(width=200, height=200) -> Person:
    """A hand-placed front-facing person (the person's right on the image's left), all points confident."""
    body = np.array([
        [100, 40], [100, 60], [80, 60], [70, 90], [65, 120], [120, 60], [130, 90], [135, 120],
        [90, 120], [88, 150], [86, 185], [110, 120], [112, 150], [114, 185], [95, 35], [105, 35], [88, 38], [112, 38],
    ], dtype=float)
    return Person(np.concatenate([body, np.ones((18, 1))], axis=1))


def test_coco_round_trip_and_derived_neck():
    rng = np.random.default_rng(0)
    coco = np.concatenate([rng.uniform(0, 100, (17, 2)), np.full((17, 1), 2.0)], axis=1)
    body = coco17_to_openpose18(coco)
    assert np.allclose(body[1, :2], (coco[5, :2] + coco[6, :2]) / 2)  # neck = midpoint of the shoulders
    assert np.allclose(body[2, :2], coco[6, :2]) and np.allclose(body[5, :2], coco[5, :2])  # person's right/left
    back = openpose18_to_coco17(body)
    assert np.allclose(back[:, :2], coco[:, :2]) and (back[:, 2] == 1).all()
    coco[6, 2] = 0  # right shoulder not labelled -> no neck
    assert coco17_to_openpose18(coco)[1, 2] == 0 and coco17_to_openpose18(coco)[2, 2] == 0


def test_lsp_mpii_mediapipe_mappings():
    lsp = np.concatenate([np.arange(28).reshape(14, 2), np.ones((14, 1))], axis=1)
    body = lsp14_to_openpose18(lsp)
    assert np.allclose(body[1, :2], lsp[12, :2]) and np.allclose(body[10, :2], lsp[0, :2])  # neck, right ankle
    assert (body[[0, 14, 15, 16, 17], 2] == 0).all()  # no face points in LSP
    back = openpose18_to_lsp14(body)
    assert np.allclose(back[:13], lsp[:13]) and back[13, 2] == 0  # all but the head top survive
    mpii = np.concatenate([np.arange(32).reshape(16, 2), np.ones((16, 1))], axis=1)
    assert np.allclose(mpii16_to_openpose18(mpii)[1, :2], mpii[7, :2])  # neck = thorax
    mp = np.concatenate([np.arange(66).reshape(33, 2), np.full((33, 1), 0.9)], axis=1)
    body = mediapipe33_to_openpose18(mp)
    assert np.allclose(body[4, :2], mp[16, :2]) and np.allclose(body[7, :2], mp[15, :2])  # right/left wrist
    assert np.allclose(body[1, :2], (mp[11, :2] + mp[12, :2]) / 2)
    with pytest.raises(ValueError, match=r"LSP-14: expected \(14, 3\)"):
        lsp14_to_openpose18(np.zeros((13, 3)))


def test_openpose_json_round_trip(tmp_path):
    person = standing_person()
    person.left_hand = np.concatenate([np.random.default_rng(1).uniform(0, 200, (21, 2)), np.ones((21, 1))], 1)
    person.face = np.concatenate([np.random.default_rng(2).uniform(0, 200, (68, 2)), np.ones((68, 1))], 1)
    save_pose(Pose(200, 180, [person]), tmp_path / "p.json")
    loaded = load_pose(tmp_path / "p.json")
    assert (loaded.width, loaded.height) == (200, 180) and loaded.people[0].right_hand is None
    assert np.allclose(loaded.people[0].body, person.body) and np.allclose(loaded.people[0].face, person.face, atol=1e-3)
    (tmp_path / "bad.json").write_text('{"people": [{"pose_keypoints_2d": [1, 2, 3]}], "canvas_width": 5, '
                                       '"canvas_height": 5}')
    with pytest.raises(ValueError, match=r"bad.json: not OpenPose JSON \(pose_keypoints_2d: expected 54 numbers"):
        load_pose(tmp_path / "bad.json")


def test_drawing_puts_palette_colours_at_joints_and_dimmed_colours_on_limbs():
    person = standing_person()
    canvas = render_pose(Pose(200, 200, [person]))
    for i, (x, y, _) in enumerate(person.body):
        assert tuple(canvas[int(y), int(x)]) == PALETTE_18[i], i
    for i, (a, b) in enumerate(LIMBS_18):  # the middle of long limbs shows the limb colour at 0.6x
        pa, pb = person.body[a], person.body[b]
        if np.hypot(*(pa[:2] - pb[:2])) < 25:
            continue
        mx, my = int((pa[0] + pb[0]) / 2), int((pa[1] + pb[1]) / 2)
        assert tuple(canvas[my, mx]) == tuple(int(c * 0.6) for c in PALETTE_18[i]), i
    assert tuple(canvas[5, 5]) == (0, 0, 0)


def test_low_confidence_points_and_their_limbs_are_not_drawn():
    person = standing_person()
    person.body[4, 2] = 0.1  # right wrist below the threshold
    canvas = render_pose(Pose(200, 200, [person]))
    assert tuple(canvas[120, 65]) == (0, 0, 0)  # no wrist dot
    assert tuple(canvas[105, 67]) == (0, 0, 0)  # no forearm (elbow (70, 90) -> wrist (65, 120))
    assert tuple(canvas[int(person.body[3, 1]), int(person.body[3, 0])]) == PALETTE_18[3]  # elbow still drawn


def test_flip_twice_is_identity_and_flip_swaps_left_right_colours():
    pose = Pose(200, 200, [standing_person()])
    twice = flip_pose(flip_pose(pose))
    assert np.allclose(twice.people[0].body, pose.people[0].body)
    flipped = flip_pose(pose)
    canvas = render_pose(flipped)
    rx, ry = pose.people[0].body[2, :2]  # the right shoulder at (80, 60)
    assert tuple(canvas[int(ry), int(199 - rx)]) == PALETTE_18[5]  # is now the LEFT shoulder, in its colour
    pixel_flipped = render_pose(pose)[:, ::-1]
    assert tuple(pixel_flipped[int(ry), int(199 - rx)]) == PALETTE_18[2]  # a pixel flip keeps the wrong colour
    assert sorted(FLIP_18) == list(range(18)) and all(FLIP_18[FLIP_18[i]] == i for i in range(18))


def test_figures_keypoints_render_as_a_skeleton():
    from toolkit.figures import render_figure

    fig = render_figure(5, 128)
    canvas = render_pose(Pose(128, 128, [Person(fig.keypoints)]))
    x, y = fig.keypoints[1, :2]
    assert tuple(canvas[int(y), int(x)]) == PALETTE_18[1] and (canvas.sum(axis=2) > 0).mean() > 0.02


def test_controlnet_aux_keypoints_convert_to_pixels():
    from collections import namedtuple

    from toolkit.pose.detect import keypoints_from_controlnet_aux

    Keypoint = namedtuple("Keypoint", ["x", "y", "score", "id"], defaults=[1.0, -1])  # controlnet_aux's shape
    points = [Keypoint(0.5, 0.25), None, Keypoint(-1.0, -1.0), Keypoint(0.1, 0.2, 0.7)]
    out = keypoints_from_controlnet_aux(points, 200, 100, 18)
    assert out.shape == (18, 3) and tuple(out[0]) == (100.0, 25.0, 1.0) and tuple(out[3]) == (20.0, 20.0, 0.7)
    assert out[1, 2] == 0 and out[2, 2] == 0 and keypoints_from_controlnet_aux(None, 1, 1, 21) is None


def test_controlnet_aux_backend_errors_are_clear(tmp_path):
    from toolkit.errors import UserError
    from toolkit.pose.detect import ControlnetAuxDetector

    with pytest.raises(UserError, match="controlnet-aux|body_pose_model.pth"):
        ControlnetAuxDetector(str(tmp_path))
