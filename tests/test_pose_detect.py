"""MediaPipe on a real photo (the public-domain astronaut image shipped inside scikit-image): the pose backend and
the face-detection rate."""

from __future__ import annotations

import numpy as np
import pytest

mediapipe = pytest.importorskip("mediapipe", reason="the [pose] extra (mediapipe==0.10.14) is not installed")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the photo fixture) is not installed")

from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions  # noqa: E402


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()  # (512, 512, 3) uint8, Eileen Collins, NASA (public domain)


@pytest.mark.parametrize("options", [MediaPipeOptions(), MediaPipeOptions(tta="flip", calibration=None)])
def test_finds_the_astronaut_with_a_plausible_upper_body(astronaut, options):
    detector = MediaPipeDetector(options)
    pose = detector(astronaut)
    detector.close()
    assert (pose.width, pose.height) == (512, 512) and len(pose.people) == 1
    body = pose.people[0].body
    nose, neck, r_sho, l_sho = body[0], body[1], body[2], body[5]
    assert min(nose[2], r_sho[2], l_sho[2]) > 0.5
    assert 150 < nose[0] < 300 and 80 < nose[1] < 200  # the face is upper centre-left
    assert r_sho[0] < neck[0] < l_sho[0]  # facing the camera: her right shoulder on the image's left
    assert nose[1] < neck[1] < 300


def test_blank_image_has_nobody():
    detector = MediaPipeDetector()
    pose = detector(np.zeros((200, 200, 3), dtype=np.uint8))
    detector.close()
    assert pose.people == [] and pose.counted == 0


def test_tta_on_a_flipped_photo_equals_the_flipped_output(astronaut):
    from toolkit.pose.keypoints import flip_pose

    detector = MediaPipeDetector(MediaPipeOptions(tta="flip"))
    direct, mirrored = detector(astronaut), detector(np.ascontiguousarray(astronaut[:, ::-1]))
    detector.close()
    expected = flip_pose(direct)  # x -> W - 1 - x, left and right swapped
    assert len(mirrored.people) == len(expected.people) == 1
    np.testing.assert_allclose(mirrored.people[0].body, expected.people[0].body, atol=1.0)


def test_two_people_are_both_in_the_pose_or_the_photo_is_flagged(astronaut):
    two = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # (512, 1024, 3): two astronauts side by side
    detector = MediaPipeDetector()
    pose = detector(two)
    one = MediaPipeDetector(MediaPipeOptions(max_people=1))
    missed = one(two)
    detector.close(), one.close()
    assert pose.counted >= 2 and len(pose.people) == 2  # both found, each on her own side
    assert sorted(p.body[0, 0] < 512 for p in pose.people) == [False, True]
    assert len(missed.people) == 1 and missed.counted >= 2  # a one-person map of two people is flagged


def test_the_pose_bundle_is_built_once_from_the_wheel_and_checked(tmp_path, monkeypatch):
    from toolkit.errors import UserError
    from toolkit.pose import mediapipe_models

    first = mediapipe_models.pose_landmarker_bundle(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert mediapipe_models.pose_landmarker_bundle(tmp_path) == first and first.stat().st_mtime_ns == stamp
    wrong = dict(mediapipe_models.POSE_MODELS)
    wrong["pose_detector.tflite"] = (wrong["pose_detector.tflite"][0], "0" * 64, -1.0)
    monkeypatch.setattr(mediapipe_models, "POSE_MODELS", wrong)
    with pytest.raises(UserError, match="not the model of mediapipe 0.10.14"):
        mediapipe_models.pose_landmarker_bundle(tmp_path / "other")


def test_prepare_poses_writes_a_dataset_folder_that_datasets_loads(tmp_path, astronaut, capsys):
    import json

    import datasets
    from PIL import Image

    from toolkit.pose import load_pose
    from toolkit.prepare_poses import main

    photos, out = tmp_path / "photos", tmp_path / "data"
    (photos / "crew").mkdir(parents=True)
    Image.fromarray(astronaut).save(photos / "crew" / "astronaut.jpg")
    Image.fromarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)).save(photos / "pair.jpg")
    (photos / "crew" / "astronaut.txt").write_text("an astronaut in an orange suit")
    Image.new("RGB", (64, 64), (10, 10, 10)).save(photos / "empty.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    argv = ["--input_dir", str(photos), "--output_dir", str(out), "--num_workers", "1", "--min_joints", "6"]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "kept              2" in report and "no person" in report and "broken.jpg" in report
    assert "several people    1 photos: 1 kept with everyone in the map" in report
    people = json.loads((out / "report.json").read_text())["people"]
    assert people["pair"] == {"detected": 2, "counted": 2, "decision": "kept"}
    assert people["empty"]["decision"] == "no person" and people["crew__astronaut"]["detected"] == 1
    assert main([*argv, "--multi_person", "drop"]) == 0  # re-filtered from the saved keypoints and counts
    assert "several people    1 photos: 0 kept" in capsys.readouterr().out
    pose = load_pose(out / "keypoints" / "crew__astronaut.json")
    assert (pose.width, pose.height) == (512, 512) and len(pose.people) == 1
    assert load_pose(out / "keypoints" / "empty.json").people == []
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert ds.num_rows == 1 and set(ds.column_names) == {"image", "conditioning_image", "text", "joint_threshold"}
    assert ds[0]["joint_threshold"] == 0.3  # what the maps were drawn with; trainers draw the same joints
    row = ds[0]
    assert row["text"] == "an astronaut in an orange suit" and row["conditioning_image"].size == (512, 512)
    assert np.asarray(row["conditioning_image"]).sum() > 0
    assert main(argv) == 0  # a re-run skips finished photos
    assert "detected this run 0" in capsys.readouterr().out
    assert main([*argv, "--tta", "off"]) == 0  # other detector settings: every readable photo is detected again
    assert "detected this run 3" in capsys.readouterr().out
    assert main([*argv, "--calibration", str(tmp_path / "nope.json")]) == 2  # a one-line error, before any worker
    assert "nope.json: cannot read the pose calibration" in capsys.readouterr().err
    assert main([*argv[:-2], "--min_joints", "18"]) == 0  # stricter filter: re-applied without re-detecting
    assert "kept              0" in capsys.readouterr().out
    assert not (out / "conditioning" / "crew__astronaut.png").exists()  # no stale map left behind


def test_face_rate_finds_the_astronauts_face_at_64px_and_none_in_noise(astronaut):
    from PIL import Image

    from toolkit.pose.fidelity import face_rate

    face = np.asarray(Image.fromarray(astronaut[20:240, 120:340]).resize((64, 64), Image.BICUBIC))  # her head
    noise = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    assert face_rate([face]) == 1.0
    assert face_rate(list(noise) + [np.full((64, 64, 3), 128, np.uint8)]) == 0.0
    assert face_rate([face, noise[0]]) == 0.5
