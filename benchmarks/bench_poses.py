"""Pose detection against ground truth, people counting and speed on real photos; prints JSON and tables.

    python benchmarks/bench_poses.py [--data ../shared/data] [--limit N]

Accuracy: detection rate and PCK@0.2 (torso), overall and for the neck, shoulders and hips, of each step of the
MediaPipe path (single pass, + calibration, + test-time augmentation) on LSPET-400 and on the held-out half of
COCO-mini. The calibration is fitted on the other COCO half (fit_pose_calibration.py), never on these. Every
annotated person with 8+ keypoints is scored; a person no detection matches scores 0. Counting: on all COCO-mini
photos, whether a photo of several people (COCO boxes covering 1 % of the image or more) ever gives a map of fewer
people without being flagged. Speed: prepare_poses with the defaults on the LSPET photos, 2 workers.
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
from toolkit.pose.keypoints import BODY_18
from toolkit.pose.metrics import match_people, torso_size
from toolkit.pose.prepare import PoseFilter, load_photo, prepare_poses

CONFIGS = {
    "single pass": MediaPipeOptions(tta="off", calibration=None, count_people=False),
    "+ calibration": MediaPipeOptions(tta="off", count_people=False),
    "+ calibration + tta auto (default)": MediaPipeOptions(count_people=False),
    "+ calibration + tta flip": MediaPipeOptions(tta="flip", count_people=False),
}
JOINTS = {"neck": [1], "shoulders": [2, 5], "hips": [8, 11]}
MIN_KEYPOINTS, MIN_AREA = 8, 0.01


def lspet(root: Path, limit: int | None) -> list[tuple[Path, list[np.ndarray]]]:
    """(photo, [ground-truth body-18]) pairs of LSPET; flag 1 = annotated."""
    from scipy.io import loadmat

    joints = loadmat(root / "joints.mat")["joints"]  # (14, 3, N)
    files = sorted((root / "images").glob("*.jpg"))[:limit]
    return [(f, [lsp14_to_openpose18(joints[:, :, i])]) for i, f in enumerate(files)]


def coco_people(root: Path) -> dict[Path, list[dict]]:
    """Every COCO-mini photo with its person annotations (images without any person are left out)."""
    out: dict[Path, list[dict]] = {}
    for split in ("train2017", "val2017"):
        data = json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())
        images = {i["id"]: i for i in data["images"] if (root / split / i["file_name"]).is_file()}
        for ann in data["annotations"]:
            if ann["image_id"] in images:
                image = images[ann["image_id"]]
                out.setdefault(root / split / image["file_name"], []).append(
                    ann | {"image_area": image["width"] * image["height"]})
    return dict(sorted(out.items()))


def coco_halves(root: Path, limit: int | None = None) -> tuple[list, list]:
    """(fitting half, held-out half) of the COCO-mini photos with a person of 8+ keypoints, as (photo, [body-18])
    pairs: alternate photos in file-name order, so neither half depends on how the folder was copied."""
    items = []
    for path, anns in coco_people(root).items():
        truths = [coco17_to_openpose18(np.array(a["keypoints"], dtype=float).reshape(17, 3)) for a in anns
                  if a["num_keypoints"] >= MIN_KEYPOINTS and not a.get("iscrowd")]
        if truths:
            items.append((path, truths))
    items = items[:limit]
    return items[0::2], items[1::2]


def evaluate(items, options: MediaPipeOptions) -> dict:
    """Detection rate, PCK@0.2 (torso) overall, per joint group and per joint, and seconds per photo of one
    configuration."""
    detector = MediaPipeDetector(options)
    hit, total, found, people, seconds = np.zeros(18), np.zeros(18), 0, 0, 0.0
    for path, truths in items:
        photo = np.asarray(load_photo(path))
        start = time.perf_counter()
        pose = detector(photo)
        seconds += time.perf_counter() - start
        for pred, truth in match_people([p.body for p in pose.people], truths):
            size, labelled = torso_size(truth), truth[:, 2] > 0
            if size is None:
                continue
            people, found, total = people + 1, found + (pred is not None), total + labelled
            if pred is not None:
                hit += labelled & (pred[:, 2] > 0) & (np.linalg.norm(pred[:, :2] - truth[:, :2], axis=1) <= 0.2 * size)
    detector.close()
    row = {"people": people, "detection_rate": round(found / max(people, 1), 3),
           "pck@0.2": round(hit.sum() / max(total.sum(), 1), 3)}
    row |= {name: round(hit[j].sum() / max(total[j].sum(), 1), 3) for name, j in JOINTS.items()}
    return row | {"s_per_image": round(seconds / len(items), 4),
                  "per_joint": {BODY_18[j]: round(hit[j] / total[j], 3) for j in range(18) if total[j]}}


def counting(root: Path) -> dict:
    """On every COCO-mini photo: people annotated (box >= 1 % of the photo), detected and counted, and whether a
    photo of several people gave a map of fewer without the count flagging it."""
    detector, rows = MediaPipeDetector(), []
    for path, anns in coco_people(root).items():
        pose = detector(np.asarray(load_photo(path)))
        people = sum(a["area"] >= MIN_AREA * a["image_area"] and not a.get("iscrowd") for a in anns)
        rows.append({"photo": path.name, "annotated": people, "detected": len(pose.people), "counted": pose.counted,
                     "flagged": pose.counted > len(pose.people)})
    detector.close()
    several = [r for r in rows if r["annotated"] >= 2]
    silent = [r["photo"] for r in several if r["detected"] == 1 and not r["flagged"]]
    alone = [r for r in rows if r["annotated"] <= 1]
    return {"photos": len(rows), "several_people": len(several),
            "several_all_detected": sum(r["detected"] >= r["annotated"] for r in several),
            "several_flagged": sum(r["flagged"] for r in several),
            "several_someone_missed_unflagged": sum(r["detected"] < r["annotated"] and not r["flagged"]
                                                    for r in several),
            "several_silent_one_person_map": silent,
            "alone_flagged": sum(r["flagged"] for r in alone), "alone": len(alone), "rows": rows}


def throughput(photos: Path, workers: int) -> dict:
    """prepare_poses wall-clock images/s on a folder with the default options (detection, counting, drawing and
    writing included)."""
    sizes = [min(Image.open(p).size) for p in sorted(photos.glob("*.jpg"))]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = prepare_poses(photos, out, pose_filter=PoseFilter(), detector_options={}, num_workers=workers,
                               progress=False)
        seconds = time.perf_counter() - start
    return {"workers": workers, "photos": report.photos, "median_short_side_px": int(np.median(sizes)),
            "img_per_s": round(report.photos / seconds, 1), "kept": report.kept}


def main(argv: list[str] | None = None) -> None:
    """Accuracy per configuration on both sets, per-joint PCK of the default, counting, then throughput."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images of each dataset")
    parser.add_argument("--skip_speed", action="store_true", help="leave out the prepare_poses throughput")
    args = parser.parse_args(argv)
    data = Path(args.data)
    sets = {"LSPET-400": lspet(data / "lspet_400", args.limit),
            "COCO-mini held-out half": coco_halves(data / "coco_mini", args.limit)[1]}
    rows = [{"dataset": name, "config": config, **evaluate(items, options)}
            for name, items in sets.items() for config, options in CONFIGS.items()]
    people = counting(data / "coco_mini")
    speed = None if args.skip_speed else throughput(data / "lspet_400" / "images", workers=2)
    print(json.dumps({"accuracy": rows, "counting": people, "prepare_poses": speed}, indent=1))
    print("\n| dataset | config | people | detected | PCK@0.2 | neck | shoulders | hips | s/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['config']} | {r['people']} | {r['detection_rate']} | {r['pck@0.2']} | "
              f"{r['neck']} | {r['shoulders']} | {r['hips']} | {r['s_per_image']} |")
    print(f"\nCOCO-mini, {people['several_people']} photos of several people: all detected in "
          f"{people['several_all_detected']}, flagged in {people['several_flagged']}, a silent one-person map in "
          f"{len(people['several_silent_one_person_map'])}; {people['alone_flagged']} of {people['alone']} other "
          "photos flagged")
    if speed:
        print(f"prepare_poses, {speed['workers']} workers, defaults: {speed['img_per_s']} img/s on {speed['photos']} "
              f"photos (median short side {speed['median_short_side_px']} px)")


if __name__ == "__main__":
    main()
