"""In-loop image quality, for every trainer: every --eval_steps, or --num_evals times over the run (and at the end),
the trainer's samples are scored by KID against its training images, logged, kept in the summary, the checkpoints
and progress.jsonl, plotted against steps and training time, and, if asked, the checkpoint with the best KID is kept
apart.

KID, not FID: it is unbiased at a few hundred samples, so a cheap in-loop estimate tracks the real thing. The
reference's Inception features are computed once and cached on disk (`toolkit.metrics.sets`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.metrics.inception import InceptionFeatures, require_torchmetrics, weights_path
from toolkit.metrics.scores import MIN_IMAGES, kid
from toolkit.metrics.sets import ImageSet, default_cache, embed, load_arrays
from toolkit.training.checkpoints import keep_only

EVAL_SEED_OFFSET = 1_000_003  # evaluation samples use seeds seed + offset + i: never the validation grid's


def spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them if count >= total): a reference that does not
    depend on how the folder is sorted."""
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]


class InLoopKID:
    """KID of `num_eval_images` samples against `num_eval_reference` training images spread over the set."""

    def __init__(self, trainer) -> None:
        require_torchmetrics()  # a missing extra or a damaged file fails before training, not at the first evaluation
        weights_path()
        self.trainer, self.cfg = trainer, trainer.cfg
        self.history: list[dict] = []  # {step, train_seconds, kid, kid_std, seconds}
        self.best: dict | None = None
        acc = trainer.accelerator
        self._extractor = InceptionFeatures(acc.device) if acc.is_main_process else None  # only the main one scores
        self._reference: dict[tuple, ImageSet] = {}  # per image shape: progressive runs change resolution
        self.best_root = trainer.out / "checkpoints_best"

    def due(self, step: int) -> bool:
        """Whether to evaluate after `step`: on the schedule (--eval_steps or --num_evals) and at the end."""
        return self.cfg.eval_due(step, self.trainer.total_steps, len(self.history))

    def restore(self, state: dict) -> None:
        """History and best from a checkpoint's state (empty for a fresh run); on the main process, drop best
        checkpoints that this history does not know (another run's, or a branch abandoned by resuming earlier)."""
        self.history = list(state.get("eval_history", []))
        self.best = state.get("eval_best")
        if self.trainer.accelerator.is_main_process:
            keep_only(self.best_root, f"checkpoint-{self.best['step']}" if self.best else None)

    def state(self) -> dict:
        return {"eval_history": self.history, "eval_best": self.best}

    def measure(self, step: int, train_seconds: float) -> dict:
        """Sample, embed, score against the cached reference: the new point, also appended to the history."""
        tick = time.perf_counter()
        images = self.trainer.eval_images(self.cfg.num_eval_images)  # (N, H, W, 3) uint8
        reference = self._reference_for(images.shape[1:])
        samples = embed(f"samples at step {step}", list(images), self._extractor, total=len(images))
        mean, std = kid(samples.features, reference.features, seed=self.cfg.seed)
        point = {"step": step, "train_seconds": round(train_seconds, 2), "kid": mean, "kid_std": std,
                 "seconds": round(time.perf_counter() - tick, 2)}
        self.history.append(point)
        return point

    def improved(self, point: dict) -> bool:
        """Whether `point` is the best so far (then it becomes the best)."""
        if self.best is not None and point["kid"] >= self.best["kid"]:
            return False
        self.best = point
        return True

    def _reference_for(self, shape: tuple) -> ImageSet:
        """The training images' features at this image shape, from memory, the disk cache, or computed."""
        if shape not in self._reference:
            images = self.trainer.reference_images(self.cfg.num_eval_reference)
            if len(images) < MIN_IMAGES:
                raise UserError(f"in-loop KID needs at least {MIN_IMAGES} readable training images, found "
                                f"{len(images)}")
            self._reference[shape] = load_arrays("training images", images, self._extractor,
                                                 cache_dir=default_cache())
        return self._reference[shape]


def plot_eval(history: list[dict], path: Path) -> None:
    """KID (x 1000, with its std) against steps and against training time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    kid_k = np.array([p["kid"] for p in history]) * 1000
    std_k = np.array([p["kid_std"] for p in history]) * 1000
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100, sharey=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "train_seconds", "training time (s)")):
        ax.errorbar([p[key] for p in history], kid_k, yerr=std_k, marker="o", capsize=3)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="KID x 1000 (lower is better)", title="in-loop KID vs steps")
    axes[1].set(title="in-loop KID vs training time")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
