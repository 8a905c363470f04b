"""What a study leaves: the best trial as a recipe (only what differs from the trainer's defaults, with the changes
from the base recipe named), the trials table, history and parameter-importance PNGs, study.json, and the run
folders kept by --keep_runs."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml

from toolkit.config import to_dict
from toolkit.tune.study import public_url
from toolkit.tune.trial import Setup

# Settings of the run, not of the recipe: a recipe that carried them would write into the trial's folder.
MIN_FOR_IMPORTANCE = 4  # completed trials before a parameter-importance plot means anything
RUN_ONLY = ("output_dir", "resume_from_checkpoint", "overwrite_output_dir", "num_cpu_threads")


def best_recipe(config: dict, setup: Setup) -> dict[str, Any]:
    """The trial's config reduced to what differs from the trainer's defaults (run-only settings left out)."""
    default = json.loads(json.dumps(to_dict(setup.config_cls())))  # the defaults as the stored config has them
    return {k: v for k, v in config.items() if k not in RUN_ONLY and v != default.get(k)}


def write_best(study, setup: Setup, out: Path) -> Path | None:
    """best.yaml: the best trial's recipe, loadable with `--config` (None when no trial completed)."""
    best = best_trial(study)
    if best is None:
        return None
    recipe = best_recipe(best.user_attrs["config"], setup)
    changed = {k: v for k, v in best.params.items() if v != setup.base.get(k)}
    header = [f"# best of study '{study.study_name}': trial {best.number}, {setup.objective.name} = {best.value:.6g}",
              f"# changed from the base recipe: {', '.join(f'{k}: {setup.base.get(k)!r} -> {v!r}' for k, v in changed.items()) or 'nothing'}",
              "# reproduce that trial: python toolkit/train_unet.py --config best.yaml --output_dir DIR"
              if setup.cfg.trainer == "unet" else
              "# reproduce that trial: python toolkit/train_gan.py --config best.yaml --output_dir DIR"]
    path = out / "best.yaml"
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def best_trial(study):
    """The best completed trial, or None."""
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def rows(study) -> list[dict]:
    """One row per trial: number, state, value, minutes, params, the trial it repeats, and a failure's error."""
    return [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "reports": len(t.intermediate_values), "minutes": round(t.user_attrs.get("seconds", 0) / 60, 2),
             "retry_of": t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of")),
             "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}
            for t in study.get_trials(deepcopy=False)]


def table(trial_rows: list[dict]) -> str:
    """The trials as a Markdown table."""
    names = sorted({k for r in trial_rows for k in r["params"]})
    head = ["trial", "state", "value", "minutes", "reports", *names, "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in trial_rows:
        value = "" if r["value"] is None else f"{r['value']:.5g}"
        params = [f"{r['params'][n]:.4g}" if isinstance(r["params"].get(n), float) else str(r["params"].get(n, ""))
                  for n in names]
        note = (f"repeats {r['retry_of']}; " if r["retry_of"] is not None else "") + (r["error"] or "")
        lines.append("| " + " | ".join([str(r["number"]), r["state"], value, f"{r['minutes']:g}", str(r["reports"]),
                                        *params, note.replace("|", "/")]) + " |")
    return "\n".join(lines)


def pruning_savings(trial_rows: list[dict], trial_minutes: float) -> dict:
    """Minutes pruning saved: each pruned trial's minutes short of a completed trial's (their mean, scoring included;
    the training budget when none completed)."""
    pruned = [r for r in trial_rows if r["state"] == "pruned"]
    complete = [r["minutes"] for r in trial_rows if r["state"] == "complete" and r["minutes"]]
    full = sum(complete) / len(complete) if complete else trial_minutes
    return {"pruned": len(pruned), "minutes_saved": round(sum(max(0.0, full - r["minutes"]) for r in pruned), 2)}


def plots(study, out: Path, *, completed: int) -> list[Path]:
    """history.png, and importance.png once MIN_FOR_IMPORTANCE trials completed (fewer say nothing), with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    made = []
    drawings = [("history.png", ovm.plot_optimization_history)]
    if completed >= MIN_FOR_IMPORTANCE:
        drawings.append(("importance.png", ovm.plot_param_importances))
    for name, draw in drawings:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = draw(study)
            except (ValueError, RuntimeError):  # e.g. no completed trial yet
                continue
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        ax.figure.savefig(out / name, dpi=100)
        plt.close(ax.figure)
        made.append(out / name)
    return made


def keep_runs(trial_rows: list[dict], keep: str, best_number: int | None, out: Path) -> None:
    """Remove the run folders that --keep_runs does not keep: only this study's, under OUTPUT_DIR/trials, and never
    one that a running or queued trial (of another tuner, or a repeat) still uses."""
    if keep == "all":
        return
    best_dir = next((r["run_dir"] for r in trial_rows if r["number"] == best_number), None)
    in_use = {r["run_dir"] for r in trial_rows if r["state"] in ("running", "waiting")}
    keep_dirs = in_use | ({best_dir} if keep == "best" else set())
    for r in trial_rows:
        run = Path(r["run_dir"] or "")
        if r["run_dir"] and r["run_dir"] not in keep_dirs and run.parent.parent == (out / "trials").resolve() \
                and run.is_dir():
            shutil.rmtree(run)


def report(study, setup: Setup) -> str:
    """Write best.yaml, trials.md, study.json and the plots; remove runs per --keep_runs; a summary to print."""
    out = Path(setup.cfg.output_dir)
    trial_rows = rows(study)
    best = best_trial(study)
    best_path = write_best(study, setup, out)
    (out / "trials.md").write_text(table(trial_rows) + "\n")
    savings = pruning_savings(trial_rows, setup.cfg.trial_minutes)
    summary = {"study": study.study_name, "storage": public_url(setup.cfg.storage_url),
               "objective": setup.objective.name, "direction": study.direction.name.lower(),
               "best": {"number": best.number, "value": best.value, "params": best.params} if best else None,
               "trials": trial_rows, **savings}
    (out / "study.json").write_text(json.dumps(summary, indent=1, default=str))
    made = plots(study, out, completed=sum(r["state"] == "complete" for r in trial_rows))
    keep_runs(trial_rows, setup.cfg.keep_runs, best.number if best else None, out)
    states = {s: sum(r["state"] == s for r in trial_rows) for s in ("complete", "pruned", "fail", "running")}
    lines = [table(trial_rows), "",
             f"trials: {states['complete']} complete, {states['pruned']} pruned "
             f"({savings['minutes_saved']} min saved), {states['fail']} failed",
             f"best: trial {best.number}, {setup.objective.name} = {best.value:.5g}, {best.params}" if best
             else "best: none (no trial completed)",
             f"recipe: {best_path}" if best_path else "",
             f"plots: {', '.join(str(p) for p in made) or 'none (too few completed trials)'}",
             f"dashboard: optuna-dashboard {public_url(setup.cfg.storage_url)}"]
    return "\n".join(line for line in lines if line)
