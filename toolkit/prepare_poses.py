"""Detect OpenPose keypoints in a folder of photos and write a pose-conditioned dataset folder (offline, MediaPipe).

    python -m toolkit.prepare_poses --input_dir photos/ --output_dir data/
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import cli_errors


@dataclass
class PreparePosesConfig:
    """Options of `python -m toolkit.prepare_poses`."""

    input_dir: str = option("photos", "folder of photos (searched recursively); captions from .txt files beside "
                                      "them or metadata.jsonl / metadata.csv (file_name, text)")
    output_dir: str = option("data", "dataset folder to write (re-runs skip photos already done)")
    num_workers: int = option(2, "detection processes")
    joint_threshold: float = option(0.3, "a joint counts, and is drawn, above this confidence")
    min_joints: int = option(8, "drop photos with fewer confident body joints")
    min_mean_confidence: float = option(0.5, "drop photos whose confident joints average below this")
    min_size: int = option(256, "upscale photos whose short side is smaller, so small people are found")
    tta: Literal["off", "auto", "flip"] = option(
        "auto", "test-time augmentation with the mirrored photo: auto (re-run only unsure detections), flip "
                "(always; about 2x slower) or off")
    calibration: str = option("default", "move MediaPipe's shoulders, hips and neck to OpenPose conventions: default "
                                         "(the shipped calibration), a calibration JSON file, or none")
    max_people: int = option(4, "detect up to this many people per photo (every one is drawn in the map)")
    multi_person: Literal["keep", "drop"] = option(
        "keep", "photos of several people: keep (the map shows everyone; a photo where the count says someone was "
                "missed is dropped) or drop them all")
    count_people: bool = option(True, "count the people with MediaPipe's face detector and person mask, to flag "
                                      "photos where the pose detector missed someone")
    min_detection_confidence: float = option(0.3, "MediaPipe's person-detection threshold")
    hands: bool = option(False, "also detect hands (21 points each, MediaPipe Hands) and draw them")

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.min_joints < 0 or self.min_size < 1 or self.max_people < 1:
            raise ConfigError("num_workers, min_size and max_people must be >= 1 and min_joints >= 0")
        for key in ("joint_threshold", "min_mean_confidence", "min_detection_confidence"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} must be in [0, 1], got {getattr(self, key)}")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Detect, filter, draw and write the dataset folder; print the report."""
    from toolkit.pose.prepare import PoseFilter, prepare_poses

    cfg = parse_config(PreparePosesConfig, argv, description=__doc__.splitlines()[0])
    pose_filter = PoseFilter(cfg.joint_threshold, cfg.min_joints, cfg.min_mean_confidence, cfg.multi_person)
    detector = {"min_detection_confidence": cfg.min_detection_confidence, "min_size": cfg.min_size,
                "tta": cfg.tta, "calibration": cfg.calibration,
                "max_people": cfg.max_people, "count_people": cfg.count_people, "hands": cfg.hands}
    report = prepare_poses(cfg.input_dir, cfg.output_dir, pose_filter=pose_filter, detector_options=detector,
                           num_workers=cfg.num_workers)
    print(f"\nprepared {cfg.output_dir}:\n{report.table()}")
    if not report.kept:  # a result of the filters, not an input error: re-running with looser ones keeps some
        print(f"warning: no photo of {cfg.input_dir} passed the filters, so {cfg.output_dir} has nothing to train on "
              "yet (loosen --min_joints / --min_mean_confidence; detections are kept and re-filtered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
