"""python -m toolkit.evaluate: the anatomy report over a folder, with and without conditioning poses."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from toolkit.evaluate import main
from toolkit.figures.dataset import write_dataset


def test_report_on_clean_and_distorted_folders(tmp_path, capsys):
    clean = write_dataset(tmp_path / "clean", 8, 64, seed=3)
    distorted = write_dataset(tmp_path / "bad", 8, 64, seed=3, distortion="mixed")
    report_path = tmp_path / "clean.json"
    assert main(["--images", str(clean), "--poses", str(clean / "keypoints"), "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["distortion_rate"] == 0.0 and report["pck"] >= 0.95 and len(report["images"]) == 8
    assert {"file_name", "distorted", "missing", "extra", "broken", "wrong_length", "pck"} <= set(report["images"][0])
    assert "distortion rate" in capsys.readouterr().out

    assert main(["--images", str(distorted), "--output", str(tmp_path / "bad.json")]) == 0
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert bad["distortion_rate"] >= 7 / 8 and bad["pck"] is None and bad["flags_per_image"] >= 7 / 8


def test_a_grid_beside_the_samples_is_left_out(tmp_path, capsys):
    data = write_dataset(tmp_path / "d", 3, 64, seed=1)
    images = tmp_path / "generated"
    images.mkdir()
    for path in (data / "images").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (200, 70)).save(images / "grid.png")
    assert main(["--images", str(images), "--output", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_images"] == 3 and report["skipped_other_size"] == ["grid.png"]
    assert "grid.png" in capsys.readouterr().out


def test_pck_uses_the_poses_rescaled_to_the_image(tmp_path):
    data = write_dataset(tmp_path / "d", 4, 64, seed=5)
    big = tmp_path / "big"
    big.mkdir()
    for path in sorted((data / "images").iterdir()):
        Image.open(path).resize((128, 128), Image.Resampling.LANCZOS).save(big / path.name)
    assert main(["--images", str(big), "--poses", str(data / "keypoints"), "--output", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["pck"] >= 0.95


def test_noise_is_distorted_and_bad_input_is_a_clear_error(tmp_path, capsys):
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise / f"{i}.png")
    (noise / "broken.png").write_bytes(b"not a png")
    assert main(["--images", str(noise), "--output", str(tmp_path / "n.json")]) == 0
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["distortion_rate"] == 1.0 and report["unreadable"] == ["broken.png"]
    assert main(["--images", str(tmp_path / "nowhere")]) == 2
    assert main(["--images", str(noise), "--poses", str(tmp_path / "nowhere")]) == 2
    assert "poses folder not found" in capsys.readouterr().err
