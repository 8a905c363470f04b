"""Anatomy of generated figures: distortion rate (missing, extra, broken, wrong-length limbs) and pose fidelity.

    python -m toolkit.evaluate --images generated/ --poses data/figures/keypoints --output report.json

For images of the synthetic figures world (toolkit.figures), 48 px and up. --images may be a folder of images or a
dataset folder with metadata.jsonl; --poses holds OpenPose JSON named like the images (PCK@0.1 of the figure's
keypoints against them, normalised by the pose's bounding box).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class EvaluateConfig:
    """Options of `python -m toolkit.evaluate`."""

    images: str = option("generated", "folder of images (or a dataset folder with metadata.jsonl)")
    poses: str | None = option(None, "folder of conditioning poses (OpenPose JSON named like the images)")
    output: str = option("report.json", "where to write the JSON report")
    pck_alpha: float = option(0.1, "PCK threshold as a fraction of the pose's bounding-box size")

    def __post_init__(self) -> None:
        if not 0 < self.pck_alpha <= 1:
            raise ConfigError(f"pck_alpha must be in (0, 1], got {self.pck_alpha}")


def _one_size(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split files into those of the most common image size and the rest (grids, strays); unreadable ones stay in."""
    from collections import Counter

    from PIL import Image

    from toolkit.images import DECODE_ERRORS

    sizes = {}
    for path in files:
        try:
            with Image.open(path) as image:
                sizes[path] = image.size
        except DECODE_ERRORS:
            sizes[path] = None  # reported as unreadable by the evaluation
    common = Counter(s for s in sizes.values() if s is not None).most_common(1)
    keep = common[0][0] if common else None
    return ([p for p in files if sizes[p] in (keep, None)], [p for p in files if sizes[p] not in (keep, None)])


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Parse every image, write the report, print the summary."""
    from PIL import Image

    from toolkit.anatomy.report import MIN_RESOLUTION, evaluate_images, table
    from toolkit.images import list_image_files

    cfg = parse_config(EvaluateConfig, argv, description=__doc__.splitlines()[0])
    files = list_image_files(cfg.images)
    if not files:
        raise UserError(f"no images found in {cfg.images}")
    poses = Path(cfg.poses) if cfg.poses else None
    if poses is not None and not poses.is_dir():
        raise UserError(f"poses folder not found: {poses}")
    files, others = _one_size(files)
    if others:
        print(f"skipped {len(others)} image(s) of another size than the rest (e.g. {others[0].name}: a grid?)")
    with Image.open(files[0]) as first:
        if min(first.size) < MIN_RESOLUTION:
            print(f"warning: {files[0].name} is {first.size[0]}x{first.size[1]}; the parser is validated from "
                  f"{MIN_RESOLUTION} px up and flags clean figures below that")
    report = evaluate_images(files, poses, cfg.pck_alpha)
    report["skipped_other_size"] = [p.name for p in others]
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"report: {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
