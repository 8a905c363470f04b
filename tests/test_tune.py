"""The Optuna tuner: the space and its errors, the progress file trials are watched through, and tiny real studies
(completed, pruned, killed and resumed)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_inception, tiny_argv

from toolkit.config import ConfigError, from_dict, parse_config
from toolkit.ddpm.config import TrainUNetConfig
from toolkit.training.budget import Overheads, plan_steps
from toolkit.training.report import PROGRESS_FILE, append_progress, read_progress

optuna = pytest.importorskip("optuna")

from toolkit.tune.__main__ import main  # noqa: E402 (needs optuna)
from toolkit.tune.space import load_space, parse_space  # noqa: E402

TINY = ["--model_preset", "tiny", "--resolution", "16", "--train_batch_size", "4", "--num_figures", "12",
        "--validation_steps", "1000", "--num_validation_images", "4", "--num_inference_steps", "3",
        "--mixed_precision", "no", "--report_to", "none", "--lr_warmup_steps", "0"]
SPACE = "learning_rate: {type: float, low: 1e-9, high: 1.0e-2, log: true}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tune_argv(tmp_path: Path, *flags: str, steps: int = 6, every: int = 2) -> list[str]:
    space = write(tmp_path / "space.yaml", SPACE)
    return ["--space", str(space), "--output_dir", str(tmp_path / "tune"), "--trial_minutes", "3", *flags, "--",
            *TINY, "--max_train_steps", str(steps), "--checkpointing_steps", str(every)]


def trials(tmp_path: Path):
    return optuna.load_study(study_name="tune", storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}").trials


# --- the space -----------------------------------------------------------------------------------------------------

def test_space_parses_ranges_and_choices(tmp_path):
    space = write(tmp_path / "s.yaml", "learning_rate: {type: float, low: 1e-5, high: 1.0e-2, log: true}\n"
                                      "train_batch_size: {type: int, low: 8, high: 32, step: 8}\n"
                                      "model_preset: {type: categorical, choices: [tiny, small]}\n")
    params = load_space(space, TrainUNetConfig, {})
    assert [(p.name, p.type) for p in params] == [("learning_rate", "float"), ("train_batch_size", "int"),
                                                   ("model_preset", "categorical")]
    assert params[0].low == 1e-5 and params[0].log  # YAML reads 1e-5 as a string: taken as the number
    trial = optuna.create_study().ask()
    values = {p.name: p.suggest(trial) for p in params}
    assert 1e-5 <= values["learning_rate"] <= 1e-2 and values["train_batch_size"] in (8, 16, 24, 32)
    assert values["model_preset"] in ("tiny", "small")


@pytest.mark.parametrize("text, message", [
    ("learning_rat: {type: float, low: 0.1, high: 1.0}", "'learning_rat' is not an option of TrainUNetConfig "
                                                         "(did you mean 'learning_rate'?)"),
    ("learning_rate: {type: float, low: 1.0, high: 0.1}", "learning_rate: low must be below high"),
    ("learning_rate: {type: float, low: 0.0, high: 0.1, log: true}", "learning_rate: a log range needs low > 0"),
    ("learning_rate: {type: float, lowe: 0.1, high: 1.0}", "unknown config key 'learning_rate.lowe'"),
    ("learning_rate: {type: floaty, low: 0.1, high: 1.0}", "learning_rate.type: expected one of"),
    ("learning_rate: 0.1", "learning_rate: expected a mapping"),
    ("train_batch_size: {type: int, low: 1.5, high: 8}", "train_batch_size: an int range needs whole"),
    ("train_batch_size: {type: int, low: 0, high: 8}", "train_batch_size = 0 is not a valid trainer setting"),
    ("model_preset: {type: categorical, choices: [small, huge]}", "model_preset = 'huge' is not a valid"),
    ("model_preset: {type: categorical, choices: []}", "model_preset: a categorical takes only a non-empty list"),
    ("output_dir: {type: categorical, choices: [a, b]}", "'output_dir' is set by the tuner"),
    ("", "the search space is empty"),
])
def test_a_bad_space_is_a_one_line_error_naming_the_key(tmp_path, capsys, text, message):
    space = write(tmp_path / "space.yaml", text + "\n")
    assert main(["--space", str(space), "--output_dir", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(space) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t" / "study.db").exists()  # nothing starts before the space is valid


@pytest.mark.parametrize("space, recipe", [("portraits_64", "portraits_64"), ("figures", None)])
def test_the_shipped_spaces_suit_their_recipes(space, recipe):
    from toolkit.config import to_dict

    root = Path(__file__).resolve().parents[1] / "recipes"
    base = to_dict(parse_config(TrainUNetConfig, ["--config", str(root / f"{recipe}.yaml")] if recipe else [], ""))
    assert load_space(root / "spaces" / f"{space}.yaml", TrainUNetConfig, base)


def test_space_is_checked_against_the_gan_config_too(tmp_path):
    from toolkit.gan.config import TrainGANConfig

    assert load_space(write(tmp_path / "s.yaml", "gan_loss: {type: categorical, choices: [hinge, wgan]}\n"),
                      TrainGANConfig, {})[0].choices == ["hinge", "wgan"]
    with pytest.raises(ConfigError, match="'snr_gamma' is not an option of TrainGANConfig"):
        parse_and_check = write(tmp_path / "g.yaml", "snr_gamma: {type: float, low: 1, high: 5}\n")
        load_space(parse_and_check, TrainGANConfig, {})


def test_tuner_options_are_checked(tmp_path, capsys):
    space = write(tmp_path / "space.yaml", SPACE)
    assert main(["--space", str(space), "--n_trials", "0"]) == 2
    assert "n_trials must be >= 1" in capsys.readouterr().err
    assert main(["--space", str(space), "--objective", "pck", "--output_dir", str(tmp_path / "t")]) == 2
    assert "--objective pck needs --poses" in capsys.readouterr().err
    assert main(["--space", str(tmp_path / "missing.yaml")]) == 2
    assert "space: file not found" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        parse_space({"x": {"type": "float", "low": 1, "high": 2, "choices": [1]}}, "inline")


# --- what trials are watched through --------------------------------------------------------------------------------

def test_progress_keeps_the_current_branch_after_a_resume(tmp_path):
    for step, kind in ((2, "checkpoint"), (4, "eval"), (4, "checkpoint"), (6, "checkpoint"),  # killed after 6,
                       (5, "checkpoint"), (6, "checkpoint")):  # resumed from 4: 5 and 6 written again
        append_progress(tmp_path, {"kind": kind, "step": step, "loss": float(step)})
    with open(tmp_path / PROGRESS_FILE, "a") as f:
        f.write('{"kind": "checkpoint", "st')  # a line cut short by a kill
    assert [(e["step"], e["kind"]) for e in read_progress(tmp_path / PROGRESS_FILE)] == [
        (2, "checkpoint"), (4, "eval"), (4, "checkpoint"), (5, "checkpoint"), (6, "checkpoint")]


def test_num_evals_spreads_evaluations_over_the_planned_run():
    cfg = from_dict(TrainUNetConfig, {"num_evals": 3})
    def schedule(total: int) -> list[int]:
        done = []
        for step in range(1, total + 1):
            if cfg.eval_due(step, total, len(done)):
                done.append(step)
        return done

    assert schedule(7) == [3, 5, 7] and schedule(100) == [34, 67, 100] and schedule(2) == [1, 2]
    plain = from_dict(TrainUNetConfig, {})  # no evaluation at all, not even at the end
    assert not plain.eval_due(5, 10, 0) and not plain.eval_due(10, 10, 0)
    with pytest.raises(ConfigError, match="eval_steps or num_evals, not both"):
        from_dict(TrainUNetConfig, {"num_evals": 3, "eval_steps": 10})
    costs = Overheads(validation=0.0, evaluation=10.0, final=10.0)
    assert plan_steps(0, seconds_left=100.0, step_seconds=1.0, overheads=costs, validation_steps=1000,
                      eval_steps=None, num_evals=3) == math.floor(100 - 10 - 2 * 10)  # two before the end's


@needs_inception
def test_a_run_with_num_evals_reports_its_kid_in_progress(tmp_path, monkeypatch):
    from toolkit.train_unet import main as train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert train(tiny_argv(out, max_train_steps=7, num_evals=3, num_eval_images=8, num_eval_reference=12,
                           checkpointing_steps=2)) == 0
    entries = read_progress(out / PROGRESS_FILE)
    assert [e["step"] for e in entries if e["kind"] == "eval"] == [3, 5, 7]
    assert [e["step"] for e in entries if e["kind"] == "checkpoint"] == [2, 4, 6, 7]
    assert all(math.isfinite(e["kid"]) and e["total_steps"] == 7 for e in entries if e["kind"] == "eval")


# --- studies --------------------------------------------------------------------------------------------------------

def test_a_tiny_study_completes_and_its_best_recipe_reproduces_the_trial(tmp_path, capsys):
    assert main(tune_argv(tmp_path, "--n_trials", "2", "--pruner", "none")) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"]
    assert all(math.isfinite(t.value) for t in done)
    best = min(done, key=lambda t: t.value)
    out = tmp_path / "tune"
    recipe = parse_config(TrainUNetConfig, ["--config", str(out / "best.yaml")], "")
    trial_config = best.user_attrs["config"]
    for key, value in json.loads(json.dumps(vars(recipe))).items():
        if key not in ("output_dir", "resume_from_checkpoint", "num_cpu_threads"):
            assert value == trial_config[key], key
    assert recipe.learning_rate == best.params["learning_rate"] and recipe.max_train_time == 3
    assert "changed from the base recipe: learning_rate" in (out / "best.yaml").read_text()
    assert (out / "history.png").is_file() and (out / "trials.md").is_file()
    kept = sorted(p.name for p in (out / "trials" / "tune").iterdir())
    assert kept == [f"trial_{best.number:04d}"]  # --keep_runs best
    summary = json.loads((out / "study.json").read_text())
    assert summary["best"]["number"] == best.number and len(summary["trials"]) == 2
    assert "2 complete, 0 pruned" in capsys.readouterr().out
    assert main(tune_argv(tmp_path, "--n_trials", "2", "--pruner", "none")) == 0  # already done: nothing runs
    assert len(trials(tmp_path)) == 2


def test_a_resumed_study_with_another_space_is_refused(tmp_path, capsys):
    assert main(tune_argv(tmp_path, "--n_trials", "1", "--pruner", "none", steps=2)) == 0
    argv = tune_argv(tmp_path, "--n_trials", "2", "--pruner", "none", steps=2)
    write(tmp_path / "space.yaml", "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    assert main(argv) == 2
    assert "was started with other space_text" in capsys.readouterr().err


def test_a_trial_worse_than_the_median_is_pruned(tmp_path, monkeypatch):
    import toolkit.tune.trial as trial_module

    monkeypatch.setattr(trial_module, "POLL_SECONDS", 0.05)
    storage = f"sqlite:///{tmp_path / 'tune' / 'study.db'}"
    (tmp_path / "tune").mkdir()
    study = optuna.create_study(study_name="tune", storage=storage)  # a user may enqueue trials to try first
    study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-9})  # learns nothing: worse at every report
    argv = tune_argv(tmp_path, "--n_trials", "2", "--n_startup_trials", "1", "--n_warmup_steps", "0",
                     "--keep_runs", "all", steps=30, every=3)
    assert main(argv) == 0
    first, second = trials(tmp_path)
    assert first.state.name == "COMPLETE" and second.state.name == "PRUNED"
    assert len(second.intermediate_values) < 10  # stopped before its 10 reports
    summary = json.loads((tmp_path / "tune" / "study.json").read_text())
    assert summary["pruned"] == 1 and summary["minutes_saved"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="trials die with the tuner through prctl (Linux)")
def test_a_killed_study_resumes_the_interrupted_trial_and_counts_each_once(tmp_path):
    argv = tune_argv(tmp_path, "--n_trials", "2", "--pruner", "none", "--heartbeat_interval", "1",
                     "--grace_period", "2", "--keep_runs", "all", steps=40, every=4)
    cmd = [sys.executable, "-m", "toolkit.tune", *argv]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    tuner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = tmp_path / "tune" / "trials" / "tune" / "trial_0000"
    deadline = time.time() + 240
    while not list((first / "checkpoints").glob("checkpoint-*")) and time.time() < deadline:
        assert tuner.poll() is None, tuner.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    tuner.send_signal(signal.SIGKILL)  # mid-trial: the trial's process dies with it
    tuner.wait()
    time.sleep(0.5)
    steps = read_progress(first / PROGRESS_FILE)
    assert steps and steps[-1]["step"] < 40  # killed before the end
    time.sleep(1.5)
    assert read_progress(first / PROGRESS_FILE) == steps  # nothing writes into the folder any more
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    states = [t.state.name for t in trials(tmp_path)]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1 and len(states) == 3
    retry = next(t for t in trials(tmp_path) if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.user_attrs["run_dir"] == str(first.resolve())
    assert "waiting 2 s to tell a killed trial" in result.stdout
    assert "resumed from" in (first / "trial.log").read_text()


def test_two_gan_trials_run_at_once_and_are_scored_from_samples(tmp_path):
    space = write(tmp_path / "space.yaml", "gan_loss: {type: categorical, choices: [hinge, ns]}\n")
    argv = ["--space", str(space), "--trainer", "gan", "--output_dir", str(tmp_path / "tune"), "--n_trials", "2",
            "--n_jobs", "2", "--objective", "distortion", "--num_images", "4", "--pruner", "none", "--keep_runs", "all",
            "--", "--resolution", "16", "--train_batch_size", "4", "--num_figures", "12", "--max_train_steps", "4",
            "--validation_steps", "100", "--checkpointing_steps", "100", "--num_validation_images", "4", "--z_dim", "8",
            "--gan_channels", "4", "--mixed_precision", "no", "--report_to", "none"]
    assert main(argv) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"] and all(0 <= t.value <= 1 for t in done)
    first, second = done
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # each trial its share of the cores
    for t in done:
        assert t.user_attrs["config"]["num_cpu_threads"] == threads
        score = json.loads((Path(t.user_attrs["run_dir"]) / "score.json").read_text())
        assert score["objective"] == "distortion" and score["num_images"] == 4 and score["value"] == t.value
