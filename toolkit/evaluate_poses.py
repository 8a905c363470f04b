"""Pose fidelity of generated images against their conditioning poses, as a JSON report and a table.

    python -m toolkit.evaluate_poses --images generated/ --poses data/keypoints/ --output report.json

Each image is matched to the OpenPose JSON of the same stem in --poses; the conditioning pose is rescaled to the
image's size. Needs the [pose] extra (MediaPipe).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.config import option, parse_config
from toolkit.errors import cli_errors


@dataclass
class EvaluatePosesConfig:
    """Options of `python -m toolkit.evaluate_poses`."""

    images: str = option("generated", "folder of generated images")
    poses: str = option("keypoints", "folder of conditioning poses: OpenPose JSON named like the images")
    output: str = option("pose_report.json", "where to write the JSON report")
    face_check: bool = option(True, "also measure the face validity rate (MediaPipe face detection)")
    tta: Literal["off", "auto", "flip"] = option(
        "auto", "detector test-time augmentation with the mirrored image, as in prepare_poses (the same calibrated "
                "detector that made the conditioning scores the images)")
    calibration: str = option("default", "detector calibration to OpenPose conventions, as in prepare_poses: default "
                                         "(the shipped one), a calibration JSON file, or none")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Score every image, write the report, print the summary."""
    from toolkit.pose.fidelity import evaluate_pose_folder, summary_table

    cfg = parse_config(EvaluatePosesConfig, argv, description=__doc__.splitlines()[0])
    report = evaluate_pose_folder(Path(cfg.images), Path(cfg.poses), face_check=cfg.face_check, tta=cfg.tta,
                                  calibration=cfg.calibration)
    Path(cfg.output).write_text(json.dumps(report, indent=2))
    missing = report["summary"]["images_without_pose"]
    print(summary_table(report["summary"]))
    print(f"  report: {cfg.output}" + (f" ({len(missing)} images had no pose)" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
