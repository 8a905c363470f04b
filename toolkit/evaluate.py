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
from toolkit.errors import cli_errors


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


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Parse every image, write the report, print the summary."""
    from toolkit.anatomy.report import evaluate_folder, table

    cfg = parse_config(EvaluateConfig, argv, description=__doc__.splitlines()[0])
    report = evaluate_folder(Path(cfg.images), Path(cfg.poses) if cfg.poses else None, cfg.pck_alpha)
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"report: {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
