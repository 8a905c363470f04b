"""Pose fidelity of generated images against their conditioning poses, as a JSON report and a table.

    python -m toolkit.evaluate_poses --images generated/ --poses data/keypoints/ --output report.json

Each image is matched to the OpenPose JSON of the same stem in --poses; the conditioning pose is rescaled to the
image's size. Needs the [pose] extra (MediaPipe).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.config import option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class EvaluatePosesConfig:
    """Options of `python -m toolkit.evaluate_poses`."""

    images: str = option("generated", "folder of generated images")
    poses: str = option("keypoints", "folder of conditioning poses: OpenPose JSON named like the images")
    output: str = option("pose_report.json", "where to write the JSON report")
    face_check: bool = option(True, "also measure the face validity rate (MediaPipe face detection)")
    flip_average: bool = option(False, "detector option: also detect on the mirrored image")


def pairs(images: Path, poses: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, pose JSON) pairs by stem, and the names of images that have no pose."""
    from toolkit.images import list_image_files

    if not poses.is_dir():
        raise UserError(f"poses folder not found: {poses}")
    found, missing = [], []
    for image in list_image_files(images):
        pose = poses / f"{image.stem}.json"
        (found.append((image, pose)) if pose.is_file() else missing.append(image.name))
    if not found:
        raise UserError(f"no image in {images} has a pose JSON of the same name in {poses}")
    return found, missing


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Score every image, write the report, print the summary."""
    import numpy as np
    from tqdm.auto import tqdm

    from toolkit.pose.detect import FaceChecker, MediaPipeDetector, MediaPipeOptions
    from toolkit.pose.fidelity import score_image, summarize
    from toolkit.pose.keypoints import load_pose
    from toolkit.pose.prepare import load_photo

    cfg = parse_config(EvaluatePosesConfig, argv, description=__doc__.splitlines()[0])
    found, missing = pairs(Path(cfg.images), Path(cfg.poses))
    detector = MediaPipeDetector(MediaPipeOptions(flip_average=cfg.flip_average))
    faces = FaceChecker() if cfg.face_check else None
    scores = [score_image(image.name, np.asarray(load_photo(image)), load_pose(pose), detector, face_checker=faces)
              for image, pose in tqdm(found, desc="scoring poses")]
    summary = summarize(scores) | {"images_without_pose": missing}
    Path(cfg.output).write_text(json.dumps({"summary": summary, "images": [asdict(s) for s in scores]}, indent=2))
    width = max(len(k) for k in summary)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in summary.items() if k != "images_without_pose"))
    print(f"  report: {cfg.output}" + (f" ({len(missing)} images had no pose)" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
