"""`python -m toolkit.tune.score`: sample a finished trial's model and score the samples (FID against reference
images, KID against them, MediaPipe's face rate, or the figures testbed's distortion rate and PCK). The tuner runs it as its own
process after each trial, with the trial's share of the cores; it writes score.json into the run folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from toolkit.config import option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class ScoreConfig:
    """Options of `python -m toolkit.tune.score`."""

    run: str = option("runs/train", "a finished train_unet.py or train_gan.py run folder")
    trainer: Literal["unet", "gan"] = option("unet", "which trainer made it")
    objective: Literal["fid", "kid_reference", "face_rate", "distortion", "pck"] = option("fid", "what to score")
    num_images: int = option(100, "samples to score (with --poses and a pose-conditioned model: at most this many)")
    reference: str | None = option(None, "fid, kid_reference: the real images to compare with")
    poses: str | None = option(None, "OpenPose JSON folder: a pose-conditioned model samples one image per pose, "
                                     "and pck compares the figures' joints with them")
    seed: int = option(0, "sampling seed")
    output: str | None = option(None, "where to write the JSON (default: RUN/score.json)")


def pose_conditioned(run: Path, trainer: str) -> bool:
    """Whether the run's saved model takes pose maps."""
    config = run / ("unet" if trainer == "unet" else "generator") / "config.json"
    if not config.is_file():
        raise UserError(f"{run}: no saved model ({config} is missing; did the trial finish?)")
    data = json.loads(config.read_text())
    return data["in_channels"] > data["out_channels"] if trainer == "unet" else bool(data.get("pose"))


def sample(cfg: ScoreConfig, out: Path) -> bool:
    """Write the run's samples into `out`; whether they were made from --poses."""
    run = Path(cfg.run)
    poses = cfg.poses if cfg.poses and pose_conditioned(run, cfg.trainer) else None
    common = {"num_images": cfg.num_images, "seed": cfg.seed, "poses": poses, "output_dir": str(out)}
    if cfg.trainer == "unet":
        from toolkit.ddpm.generate import DDPMSampleConfig, sample_ddpm

        print(sample_ddpm(DDPMSampleConfig(pipeline=str(run), **common)))
    else:
        from toolkit.gan.generate import GANSampleConfig, sample_gan

        print(sample_gan(GANSampleConfig(generator=str(run / "generator"), **common)))
    return poses is not None


def _images(folder: Path) -> list[Path]:
    """The samples (grid.png, of another size, left out)."""
    from toolkit.images import list_image_files, one_size

    return one_size(list_image_files(folder))[0]


def inception_score(samples: Path, reference: Path, metric: str, *, seed: int) -> float:
    """FID or KID (mean) of the samples against the reference folder (the reference's features cached)."""
    from PIL import Image

    from toolkit.images import list_image_files
    from toolkit.metrics.inception import InceptionFeatures, require_torchmetrics
    from toolkit.metrics.scores import fid, kid
    from toolkit.metrics.sets import default_cache, load_folder

    require_torchmetrics()
    files = _images(samples)
    with Image.open(files[0]) as first:
        resolution = min(first.size)
    extractor = InceptionFeatures("cpu")
    gen = load_folder(samples, files, resolution, extractor, cache_dir=None)
    ref_files = list_image_files(reference)
    if not ref_files:
        raise UserError(f"--reference: no images in {reference}")
    ref = load_folder(reference, ref_files, resolution, extractor, cache_dir=default_cache())
    return fid(gen.features, ref.features) if metric == "fid" else kid(gen.features, ref.features, seed=seed)[0]


def score(cfg: ScoreConfig) -> dict:
    """Sample, then the objective's value (and what it was computed from)."""
    run = Path(cfg.run)
    if cfg.objective in ("fid", "kid_reference") and not cfg.reference:
        raise UserError(f"{cfg.objective} needs --reference (real images to compare with)")
    out = run / "tune_samples"
    from_poses = sample(cfg, out)
    if cfg.objective in ("fid", "kid_reference"):
        value = inception_score(out, Path(cfg.reference), "fid" if cfg.objective == "fid" else "kid", seed=cfg.seed)
    elif cfg.objective == "face_rate":
        from PIL import Image

        from toolkit.pose.fidelity import face_rate

        value = face_rate(np.asarray(Image.open(p).convert("RGB")) for p in _images(out))
    else:
        from toolkit.anatomy.report import evaluate_folder

        report = evaluate_folder(out, Path(cfg.poses) if from_poses else None)
        value = report["distortion_rate"] if cfg.objective == "distortion" else report["pck"]
        if value is None:
            raise UserError(f"pck needs a pose-conditioned run and --poses; {run} sampled without poses")
    return {"objective": cfg.objective, "value": float(value), "num_images": len(_images(out)),
            "from_poses": from_poses, "samples": str(out)}


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Score one run and write its score.json."""
    cfg = parse_config(ScoreConfig, argv, description=__doc__.splitlines()[0])
    result = score(cfg)
    output = Path(cfg.output or Path(cfg.run) / "score.json")
    output.write_text(json.dumps(result, indent=1))
    print(f"{cfg.objective} = {result['value']:.4f} ({result['num_images']} samples): {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
