"""Fit the MediaPipe -> OpenPose-18 calibration on the fitting half of COCO-mini and write the shipped file.

    python benchmarks/fit_pose_calibration.py [--data ../shared/data] [--out toolkit/assets/pose_calibration.json]

COCO's person keypoints are the conventions OpenPose's body-18 model was trained on (its neck is the midpoint of
the shoulders), and their annotations are CC BY 4.0, so numbers fitted on them may ship with the project. The
detector runs as the calibration will see it, without calibration or test-time augmentation, and each detection is
matched to the annotated person it overlaps (toolkit.pose.metrics.match_people). Only the fitting half is used: the
held-out half and LSPET are what bench_poses.py reports.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_poses import coco_halves

from toolkit.pose.calibrate import DEFAULT_FILE, fit_calibration
from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions
from toolkit.pose.metrics import match_people
from toolkit.pose.prepare import load_photo

PROVENANCE = {
    "detector": "mediapipe 0.10.14, pose_landmark_full (toolkit.pose.detect, one pass, no calibration)",
    "target": "OpenPose body-18 = COCO person keypoints (neck = midpoint of the shoulders)",
    "data": "COCO 2017 person keypoints, the fitting half of ../shared/data/coco_mini (alternate photos with a "
            "person of 8+ keypoints, in file-name order: benchmarks/bench_poses.py coco_halves)",
    "licence": "fitted from COCO annotations, CC BY 4.0 (COCO Consortium, cocodataset.org); no image is shipped",
    "fit_script": "benchmarks/fit_pose_calibration.py",
}


def main(argv: list[str] | None = None) -> None:
    """Detect on the fitting half, fit, write the calibration file and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--out", default=str(DEFAULT_FILE), help="calibration file to write")
    args = parser.parse_args(argv)
    fitting, _ = coco_halves(Path(args.data) / "coco_mini")
    detector = MediaPipeDetector(MediaPipeOptions(tta="off", calibration=None, count_people=False))
    pairs = []
    for path, truths in fitting:
        pose = detector(np.asarray(load_photo(path)))
        pairs += [(pred, truth) for pred, truth in match_people([p.body for p in pose.people], truths)
                  if pred is not None]
    detector.close()
    calibration = fit_calibration(pairs, provenance=PROVENANCE | {"photos": len(fitting), "people": len(pairs)})
    calibration.save(args.out)
    print(json.dumps(json.loads(Path(args.out).read_text()), indent=1))


if __name__ == "__main__":
    main()
