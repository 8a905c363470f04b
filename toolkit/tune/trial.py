"""One trial = one real training run in a process of its own, watched through its progress.jsonl: reports to the
pruner while it runs, stopped if pruned, then scored. A run interrupted from outside is queued to run again from its
checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import ConfigError, from_dict, save_yaml, to_dict
from toolkit.errors import UserError
from toolkit.tune.child import PARENT_ENV
from toolkit.tune.config import TuneConfig
from toolkit.tune.objectives import Objective, in_loop_value, intermediate
from toolkit.tune.space import Param

POLL_SECONDS = 2.0
STOP_SECONDS = 30.0  # a pruned trial's process gets this long to exit after SIGTERM
MODULES = {"unet": "toolkit.train_unet", "gan": "toolkit.train_gan"}
INTERRUPTED = (130, -signal.SIGINT, -signal.SIGTERM, 143)  # exit codes of a run stopped from outside


class TrialFailed(Exception):
    """A trial's run or scoring ended with an error: recorded as failed with its message; the study goes on."""


@dataclass
class Setup:
    """What every trial shares: the resolved base config, the space, the objective and the fixed settings."""

    cfg: TuneConfig
    config_cls: type
    base: dict[str, Any]  # the trainer's resolved config from --config and the flags after --
    params: list[Param]
    objective: Objective
    fixed: dict[str, Any]  # what the tuner sets for every trial (time budget, evaluations, threads, seed)
    space_text: str

    def settings(self) -> dict:
        """What must not change when the study is resumed (trials would not be comparable)."""
        cfg = self.cfg
        return {"trainer": cfg.trainer, "trial_minutes": cfg.trial_minutes, "objective": self.objective.name,
                "space_text": self.space_text, "seed": cfg.seed, "evals_per_trial": cfg.evals_per_trial,
                "reference": cfg.reference, "poses": cfg.poses, "num_images": cfg.num_images,
                "base": {k: v for k, v in self.base.items() if k not in ("output_dir", "num_cpu_threads")}}

    def run_dir(self, number: int) -> Path:
        """A fresh trial's run folder."""
        return (Path(self.cfg.output_dir) / "trials" / self.cfg.study_name / f"trial_{number:04d}").resolve()


def trial_config(setup: Setup, values: dict, run: Path, *, resume: bool) -> dict:
    """The trial's full config: base < the tuner's fixed settings < the drawn values; validated as a whole."""
    data = setup.base | setup.fixed | values | {"output_dir": str(run),
                                                 "resume_from_checkpoint": "latest" if resume else None}
    try:
        return to_dict(from_dict(setup.config_cls, data))
    except ConfigError as e:
        raise TrialFailed(f"this combination is not a valid config: {e}") from None


def launch(module: str, args: list[str], log: Path, threads: int) -> subprocess.Popen:
    """`python -m module args` through toolkit.tune.child (it dies with the tuner), output appended to `log`."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "toolkit.tune.child", module, *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env)


def stop(proc: subprocess.Popen) -> None:
    """End a process: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_line(log: Path) -> str:
    """The last non-empty line of a log (a trainer's one-line error), for the trial's record."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def watch(trial, proc: subprocess.Popen, objective: Objective, run: Path) -> None:
    """Wait for the run, reporting each new intermediate value; stop it and raise TrialPruned if the pruner says."""
    import optuna

    reported = 0
    while True:
        done = proc.poll() is not None
        values = intermediate(objective, run)
        for step in range(reported, len(values)):
            trial.report(values[step], step)
        if len(values) > reported and not done and trial.should_prune():
            stop(proc)
            raise optuna.TrialPruned(f"pruned at report {len(values)}: {values[-1]:.4g}")
        reported = len(values)
        if done:
            return
        time.sleep(POLL_SECONDS)


def queue_again(trial, values: dict) -> None:
    """Queue the trial's values to run again in its folder (from its last checkpoint)."""
    trial.study.enqueue_trial(values, user_attrs={"run_dir": trial.user_attrs["run_dir"],
                                                  "retry_of": trial.user_attrs.get("retry_of", trial.number)})


def train(trial, setup: Setup) -> float:
    """Train one trial (continuing the run folder of the trial it repeats, if any), then its objective's value."""
    values = {p.name: p.suggest(trial) for p in setup.params}
    inherited = trial.user_attrs.get("run_dir")  # a repeat of an interrupted trial: continue its run
    run = Path(inherited) if inherited else setup.run_dir(trial.number)
    if not inherited and run.exists():
        shutil.rmtree(run)  # left by an earlier study of this name whose database was removed
    run.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("run_dir", str(run))
    config = trial_config(setup, values, run, resume=bool(inherited))
    trial.set_user_attr("config", config)
    save_yaml(from_dict(setup.config_cls, config), run / "trial.yaml")
    threads = setup.fixed["num_cpu_threads"]
    proc = launch(MODULES[setup.cfg.trainer], ["--config", str(run / "trial.yaml")], run / "trial.log", threads)
    try:
        watch(trial, proc, setup.objective, run)
    except KeyboardInterrupt:
        queue_again(trial, values)
        raise
    finally:
        stop(proc)  # whatever ends the watch, the run must not go on unseen
    if proc.returncode in INTERRUPTED:
        queue_again(trial, values)
        raise TrialFailed(f"trial {trial.number} was interrupted (exit {proc.returncode}); queued to continue from "
                          "its checkpoint")
    if proc.returncode != 0:
        raise TrialFailed(f"trial {trial.number}: {last_line(run / 'trial.log')} (log: {run / 'trial.log'})")
    return score(setup, run, threads)


def score(setup: Setup, run: Path, threads: int) -> float:
    """The finished run's objective: read from it, or sampled and scored by `python -m toolkit.tune.score`."""
    if setup.objective.in_loop:
        try:
            return in_loop_value(setup.objective, run)
        except (UserError, KeyError, TypeError, ValueError) as e:
            raise TrialFailed(f"{run}: cannot read its {setup.objective.name}: {e}") from None
    cfg = setup.cfg
    args = ["--run", str(run), "--trainer", cfg.trainer, "--objective", setup.objective.name,
            "--num_images", str(cfg.num_images), "--seed", str(cfg.seed)]
    if setup.objective.name in ("fid", "kid_reference"):
        args += ["--reference", cfg.reference or str(setup.base.get("train_data_dir") or "")]
    if cfg.poses:
        args += ["--poses", cfg.poses]
    (run / "score.json").unlink(missing_ok=True)
    proc = launch("toolkit.tune.score", args, run / "score.log", threads)
    try:
        proc.wait()
    finally:
        stop(proc)
    try:
        return float(json.loads((run / "score.json").read_text())["value"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TrialFailed(f"scoring {run}: {last_line(run / 'score.log')}") from None


def run_trial(trial, setup: Setup) -> float:
    """Optuna's objective: the trial's value; a failure is recorded on the trial and returned as NaN, which Optuna
    records as a failed trial in one line (an exception would print its traceback)."""
    start = time.perf_counter()
    try:
        return train(trial, setup)
    except TrialFailed as e:
        trial.set_user_attr("error", str(e))
        print(f"trial {trial.number} failed: {e}", file=sys.stderr)
        return math.nan
    finally:
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
