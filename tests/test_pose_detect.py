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


@pytest.mark.parametrize("options", [MediaPipeOptions(), MediaPipeOptions(flip_average=True, person_crop=True)])
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
    assert pose.people == []


def test_prepare_poses_writes_a_dataset_folder_that_datasets_loads(tmp_path, astronaut, capsys):
    import datasets
    from PIL import Image

    from toolkit.pose import load_pose
    from toolkit.prepare_poses import main

    photos, out = tmp_path / "photos", tmp_path / "data"
    (photos / "crew").mkdir(parents=True)
    Image.fromarray(astronaut).save(photos / "crew" / "astronaut.jpg")
    (photos / "crew" / "astronaut.txt").write_text("an astronaut in an orange suit")
    Image.new("RGB", (64, 64), (10, 10, 10)).save(photos / "empty.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    argv = ["--input_dir", str(photos), "--output_dir", str(out), "--num_workers", "1", "--min_joints", "6"]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "kept              1" in report and "no person" in report and "broken.jpg" in report
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
