"""Write a dataset of synthetic human figures with ground-truth poses (and planted distortions, if asked).

    python -m toolkit.figures --num_images 1000 --resolution 64 --seed 0 --output_dir data/figures
    python -m toolkit.figures --num_images 200 --distortion mixed --output_dir data/figures-distorted
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import cli_errors


@dataclass
class FiguresConfig:
    """Options of `python -m toolkit.figures`."""

    num_images: int = option(1000, "how many figures to render")
    resolution: int = option(64, "image size in pixels (square), 32 to 256")
    seed: int = option(0, "image i is rendered from seed (seed, i): the same seed gives the same dataset")
    output_dir: str = option("data/figures", "dataset folder to write (images/, conditioning/, keypoints/, "
                                             "metadata.jsonl)")
    distortion: Literal["none", "extra_limb", "missing_limb", "broken_limb", "stretched_limb", "mixed"] = option(
        "none", "plant this distortion in every image; mixed picks one of the four per image")

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ConfigError(f"num_images must be >= 1, got {self.num_images}")
        if not 32 <= self.resolution <= 256:
            raise ConfigError(f"resolution must be between 32 and 256, got {self.resolution}")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Render the figures and write the dataset folder."""
    from toolkit.figures.dataset import write_dataset

    cfg = parse_config(FiguresConfig, argv, description=__doc__.splitlines()[0])
    out = write_dataset(cfg.output_dir, cfg.num_images, cfg.resolution, seed=cfg.seed, distortion=cfg.distortion)
    print(f"wrote {cfg.num_images} figures ({cfg.resolution} px, distortion {cfg.distortion}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
