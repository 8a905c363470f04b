"""The study: Optuna storage with heartbeats (a killed trial is failed and run again from its checkpoint), the
pruner, and running trials until the study holds --n_trials finished ones, however often it was interrupted and
however many tuners share it."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from toolkit.errors import UserError
from toolkit.tune.config import TuneConfig
from toolkit.tune.trial import Setup, run_trial


def public_url(url: str) -> str:
    """The storage URL with any password masked, for printing and files."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def threads_per_trial(n_jobs: int) -> int:
    """This machine's usable cores shared between `n_jobs` trials."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // n_jobs)


def make_storage(cfg: TuneConfig):
    """The RDB storage with heartbeats; a bad URL or a missing database driver is a one-line error."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    url = cfg.storage_url
    sqlite = url.startswith("sqlite")
    if sqlite:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                              # a heartbeat must not wait on a lock for longer than the grace period
                              engine_kwargs={"connect_args": {"timeout": max(1, cfg.grace_period // 2)}} if sqlite
                              else {})
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise UserError(f"--storage {public_url(url)}: {str(e).splitlines()[0]}") from None


def open_study(setup: Setup):
    """Create or load the study, refusing a resume with other settings."""
    import optuna

    cfg = setup.cfg
    storage = make_storage(cfg)
    direction = cfg.direction if cfg.direction != "auto" else setup.objective.direction
    try:
        before = len(optuna.load_study(study_name=cfg.study_name, storage=storage).trials)
    except KeyError:
        before = 0
    # Reseeded by the trials already made, so a resume does not repeat the random start; tuners sharing a storage
    # of their own (--storage) differ by process too.
    seed = cfg.seed + before + (os.getpid() if cfg.storage else 0)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, cfg.n_trials // 3))
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, direction=direction, sampler=sampler,
                                pruner=make_pruner(cfg, setup.objective.reports), load_if_exists=True)
    check_resume(study, setup, direction)
    return study


def check_resume(study, setup: Setup, direction: str) -> None:
    """A resumed study must keep its direction and settings (a study made elsewhere takes this run's)."""
    if study.direction.name.lower() != direction:
        raise UserError(f"study '{study.study_name}' {study.direction.name.lower()}s; this command would {direction}:"
                        " use another --study_name")
    now = json.loads(json.dumps(setup.settings()))  # as the storage keeps it (tuples become lists)
    before = study.user_attrs.get("settings")
    if before is None:
        study.set_user_attr("settings", now)
        return
    changed = [k for k in now if before.get(k) != now[k]]
    if changed:
        raise UserError(f"study '{study.study_name}' was started with other {', '.join(changed)}: rerun it with the "
                        "same space, recipe and flags, or give another --study_name")


def make_pruner(cfg: TuneConfig, reports: str | None):
    """The Optuna pruner of --pruner (Hyperband's resource: the evaluations, or the checkpoints for the loss)."""
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.pruner == "hyperband":
        top = cfg.evals_per_trial if reports == "eval" and cfg.evals_per_trial else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=top)
    return optuna.pruners.NopPruner()


def count(study, *states: str) -> int:
    """Trials in the given states (names of optuna.trial.TrialState)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in states)))


def finished(study) -> int:
    """Trials that count toward --n_trials: completed or pruned."""
    return count(study, "COMPLETE", "PRUNED")


def fail_stale(study, cfg: TuneConfig, say=print) -> None:
    """Trials left running by a killed tuner: wait out the grace period once (a live trial of another tuner keeps
    beating), then fail the silent ones, which queues them to run again from their checkpoints."""
    import optuna

    if not count(study, "RUNNING"):
        return
    say(f"the study has running trials: waiting {cfg.grace_period} s to tell a killed trial from a live one")
    time.sleep(cfg.grace_period + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def optimize(study, setup: Setup) -> None:
    """Run trials until the study holds --n_trials finished ones (counting those running elsewhere), or until as many
    fail in this session."""
    cfg = setup.cfg
    fail_stale(study, cfg)
    failed_before = count(study, "FAIL")

    def enough(study, _trial) -> None:
        if (finished(study) + count(study, "RUNNING") >= cfg.n_trials
                or count(study, "FAIL") - failed_before >= cfg.n_trials):
            study.stop()

    left = cfg.n_trials - finished(study) - count(study, "RUNNING")
    if left > 0:  # no more workers than trials left: each starts one at once
        study.optimize(lambda trial: run_trial(trial, setup), n_jobs=min(cfg.n_jobs, left), callbacks=[enough],
                       gc_after_trial=False)
