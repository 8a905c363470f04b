"""Options of `python -m toolkit.tune`. `--config` is the trainer's recipe (the base of every trial), and flags after
`--` go to every trial, so a study is described as a training run is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.config import ConfigError, check_positive, option


@dataclass
class TuneConfig:
    """Options of `python -m toolkit.tune` (the trainer's own flags go after `--`)."""

    space: str | None = option(None, "the search space YAML: option: {type: float, int or categorical, ...} (docs/tune.md)")
    trainer: Literal["unet", "gan"] = option("unet", "what each trial runs: toolkit/train_unet.py or train_gan.py")
    n_trials: int = option(12, "trials the study holds when done (finished or pruned), counted over resumes and "
                                "workers")
    trial_minutes: float = option(5.0, "each trial's --max_train_time: trials are compared at equal wall time")
    objective: Literal["auto", "loss", "kid", "fid", "kid_reference", "face_rate", "distortion", "pck"] = option(
        "auto", "the score: auto is kid (the in-loop KID against training images) when the trials evaluate "
                "(--eval_steps or --num_evals in the recipe) and the final smoothed loss otherwise; fid, "
                "kid_reference (against --reference), face_rate, distortion and pck sample the trained model")
    direction: Literal["auto", "minimize", "maximize"] = option(
        "auto", "auto: maximize face_rate and pck, minimize the rest")
    evals_per_trial: int = option(3, "objective kid: in-loop KIDs per trial (--num_evals), the pruner's reports")
    pruner: Literal["median", "hyperband", "none"] = option(
        "median", "stop a trial early when its reports are worse than the median of earlier trials' at the same "
                  "report (median), or by successive halving (hyperband)")
    n_startup_trials: int = option(3, "median pruner: trials that finish before any is pruned")
    n_warmup_steps: int = option(1, "median pruner: a trial's first N reports never prune it")
    storage: str | None = option(
        None, "Optuna storage URL; default sqlite:///OUTPUT_DIR/study.db. A postgresql:// or mysql:// URL shares "
              "one study between machines")
    study_name: str = option("tune", "the study's name in the storage (rerun the same command to resume it)")
    output_dir: str = option("runs/tune", "trial run folders, best.yaml, plots and the trials table")
    n_jobs: int = option(1, "trials at once, each a process with its share of the cores")
    seed: int = option(0, "seed of the sampler (TPE) and of every trial's --seed unless the space searches it")
    reference: str | None = option(None, "fid, kid_reference: the real images to compare with, e.g. held-out "
                                         "photos (default: the training data folder)")
    poses: str | None = option(None, "distortion, pck: OpenPose JSON folder (held-out poses); a pose-conditioned "
                                     "model samples one image per pose")
    num_images: int = option(100, "samples per trial scored by fid, face_rate, distortion or pck")
    keep_runs: Literal["all", "best", "none"] = option("best", "which trials' run folders remain at the end")
    heartbeat_interval: int = option(10, "seconds between a running trial's heartbeats in the storage")
    grace_period: int = option(30, "a trial silent this long was killed: it is failed and run again, resuming its "
                                   "run folder from the last checkpoint")

    POSITIVE = ("n_trials", "n_jobs", "n_startup_trials", "heartbeat_interval", "grace_period", "num_images")

    def __post_init__(self) -> None:
        check_positive(self, self.POSITIVE)
        if not self.space:
            raise ConfigError("space: give the search space YAML with --space (docs/tune.md shows one)")
        if not Path(self.space).is_file():
            raise ConfigError(f"space: file not found: {self.space}")
        if self.trial_minutes <= 0:
            raise ConfigError(f"trial_minutes must be > 0, got {self.trial_minutes}")
        if self.evals_per_trial < 0 or self.n_warmup_steps < 0:
            raise ConfigError("evals_per_trial and n_warmup_steps must be >= 0")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"grace_period ({self.grace_period} s) must exceed heartbeat_interval "
                              f"({self.heartbeat_interval} s), or live trials would be failed")

    @property
    def storage_url(self) -> str:
        """The storage URL (an SQLite file in output_dir by default)."""
        return self.storage or f"sqlite:///{(Path(self.output_dir) / 'study.db').resolve()}"
