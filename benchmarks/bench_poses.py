"""Pose detection accuracy and speed on real photos with ground truth; prints JSON and a table.

    python benchmarks/bench_poses.py [--data ../shared/data] [--limit N]

Accuracy: detection rate and PCK@0.2 (torso) of the MediaPipe backend against LSPET (14 joints, LSP order) and the
COCO-mini person keypoints, for the raw detector and each test-time option. MediaPipe finds one person per image: on
COCO the detection is matched to the annotated person with the highest PCK. Speed: prepare_poses on the LSPET photos
with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.pose.convert import coco17_to_openpose18, lsp14_to_openpose18
from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions
from toolkit.pose.metrics import pck
from toolkit.pose.prepare import PoseFilter, load_photo, prepare_poses

CONFIGS = {
    "raw (no upscaling)": MediaPipeOptions(min_size=1),
    "upscale to 256 (default)": MediaPipeOptions(),
    "upscale + flip average": MediaPipeOptions(flip_average=True),
    "upscale + person crop": MediaPipeOptions(person_crop=True),
    "upscale + flip + crop": MediaPipeOptions(flip_average=True, person_crop=True),
}


def lspet(root: Path, limit: int | None) -> list[tuple[Path, list[np.ndarray]]]:
    """(photo, [ground-truth body-18]) pairs of LSPET; flag 1 = annotated."""
    from scipy.io import loadmat

    joints = loadmat(root / "joints.mat")["joints"]  # (14, 3, N)
    files = sorted((root / "images").glob("*.jpg"))[:limit]
    return [(f, [lsp14_to_openpose18(joints[:, :, i])]) for i, f in enumerate(files)]


def coco(root: Path, limit: int | None, min_keypoints: int = 8) -> list[tuple[Path, list[np.ndarray]]]:
    """(photo, [ground-truth body-18 per annotated person]) for COCO-mini images with a well-annotated person."""
    items = []
    for split in ("train2017", "val2017"):
        data = json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())
        people: dict[int, list[np.ndarray]] = {}
        for ann in data["annotations"]:
            if ann["num_keypoints"] >= min_keypoints and not ann.get("iscrowd"):
                people.setdefault(ann["image_id"], []).append(
                    coco17_to_openpose18(np.array(ann["keypoints"], dtype=float).reshape(17, 3)))
        for image in data["images"]:
            if image["id"] in people and (root / split / image["file_name"]).is_file():
                items.append((root / split / image["file_name"], people[image["id"]]))
    return items[:limit]


def evaluate(items, options: MediaPipeOptions) -> dict:
    """Detection rate, PCK@0.2 (torso) and seconds per image of one detector configuration."""
    detector = MediaPipeDetector(options)
    correct = total = found = 0
    start = time.perf_counter()
    for path, truths in items:
        pose = detector(np.asarray(load_photo(path)))
        pred = pose.people[0].body if pose.people else None
        found += pred is not None
        scores = [pck(gt, pred, alpha=0.2) for gt in truths]
        best = max(scores, key=lambda s: (s[0] / s[1]) if s[1] else -1)
        correct, total = correct + best[0], total + best[1]
    seconds = time.perf_counter() - start
    detector.close()
    return {"detection_rate": round(found / len(items), 3), "pck@0.2": round(correct / max(total, 1), 3),
            "s_per_image": round(seconds / len(items), 4), "images": len(items)}


def throughput(photos: Path, workers: int) -> dict:
    """prepare_poses wall-clock images/s on a folder (detection, drawing and writing included)."""
    sizes = [min(Image.open(p).size) for p in sorted(photos.glob("*.jpg"))]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = prepare_poses(photos, out, pose_filter=PoseFilter(), detector_options={}, num_workers=workers,
                               progress=False)
        seconds = time.perf_counter() - start
    return {"workers": workers, "photos": report.photos, "median_short_side_px": int(np.median(sizes)),
            "img_per_s": round(report.photos / seconds, 1), "kept": report.kept}


def main(argv: list[str] | None = None) -> None:
    """Run the accuracy table on both datasets, then the throughput measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images of each dataset")
    args = parser.parse_args(argv)
    data = Path(args.data)
    datasets = {"LSPET-400": lspet(data / "lspet_400", args.limit), "COCO-mini": coco(data / "coco_mini", args.limit)}
    rows = [{"dataset": name, "config": config, **evaluate(items, options)}
            for name, items in datasets.items() for config, options in CONFIGS.items()]
    speed = throughput(data / "lspet_400" / "images", workers=2)
    print(json.dumps({"accuracy": rows, "prepare_poses": speed}, indent=1))
    print("\n| dataset | config | detection rate | PCK@0.2 | s/image |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['config']} | {r['detection_rate']} | {r['pck@0.2']} | {r['s_per_image']} |")
    print(f"\nprepare_poses, {speed['workers']} workers: {speed['img_per_s']} img/s on {speed['photos']} photos "
          f"(median short side {speed['median_short_side_px']} px)")


if __name__ == "__main__":
    main()
