"""Hyper-parameter search with Optuna: every trial is a real, time-budgeted run of a toolkit trainer.

    python -m toolkit.tune --config recipes/portraits_64.yaml --space recipes/spaces/portraits_64.yaml \\
        --n_trials 12 --trial_minutes 5 -- --train_data_dir faces/train
    optuna-dashboard sqlite:///runs/tune/study.db        # watch it (pip install optuna-dashboard)

Rerunning the same command resumes the study: finished trials stay, a trial that was running when the study was
killed is run again from its last checkpoint, and the study stops when it holds --n_trials finished trials.
"""

from __future__ import annotations

import sys
from pathlib import Path

from toolkit.config import build_parser, from_dict, load_yaml, to_dict
from toolkit.errors import UserError, cli_errors
from toolkit.tune.config import TuneConfig
from toolkit.tune.objectives import OBJECTIVES, Objective


def parse(argv: list[str] | None) -> tuple[TuneConfig, str | None, list[str]]:
    """The tuner's options, the base recipe (--config) and the trainer flags after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser(TuneConfig, __doc__.splitlines()[0])
    parser.prog = "python -m toolkit.tune"
    namespace = vars(parser.parse_args(argv[:split]))
    recipe = namespace.pop("config", None)  # here: the trainer's recipe, the base of every trial
    return from_dict(TuneConfig, namespace), recipe, argv[split + 1:]


def config_class(trainer: str) -> type:
    """The trainer's config class."""
    if trainer == "gan":
        from toolkit.gan.config import TrainGANConfig

        return TrainGANConfig
    from toolkit.ddpm.config import TrainUNetConfig

    return TrainUNetConfig


def choose_objective(cfg: TuneConfig, base: dict) -> Objective:
    """--objective, with auto resolved (kid when the trials evaluate, else loss) and its needs checked."""
    name = cfg.objective
    if name == "auto":
        name = "kid" if base.get("eval_steps") or base.get("num_evals") else "loss"
    objective = OBJECTIVES[name]
    if objective.needs and not getattr(cfg, objective.needs):
        raise UserError(f"--objective {name} needs --{objective.needs}")
    if name in ("fid", "kid_reference") and not (cfg.reference or base.get("train_data_dir")):
        raise UserError(f"--objective {name} needs --reference (or a --train_data_dir to compare with)")
    if name == "kid" and not (cfg.evals_per_trial or base.get("eval_steps") or base.get("num_evals")):
        raise UserError("--objective kid needs in-loop evaluations: --evals_per_trial N (N >= 1)")
    return objective


def prepare(cfg: TuneConfig, recipe: str | None, trainer_args: list[str]):
    """Resolve the base config, validate the space against it, fix what the tuner sets for every trial."""
    from toolkit.config import parse_config
    from toolkit.tune.space import load_space
    from toolkit.tune.study import threads_per_trial
    from toolkit.tune.trial import Setup

    config_cls = config_class(cfg.trainer)
    base = to_dict(parse_config(config_cls, (["--config", recipe] if recipe else []) + trainer_args,
                                description=f"{cfg.trainer} trial flags"))
    params = load_space(cfg.space, config_cls, base)
    objective = choose_objective(cfg, base)
    fixed = {"max_train_time": cfg.trial_minutes, "num_cpu_threads": threads_per_trial(cfg.n_jobs), "seed": cfg.seed}
    if objective.name == "kid" and not base.get("eval_steps"):
        fixed["num_evals"] = base.get("num_evals") or cfg.evals_per_trial
    from_dict(config_cls, base | fixed)  # the fixed settings must suit the recipe too
    return Setup(cfg, config_cls, base, params, objective, fixed, Path(cfg.space).read_text())


def require_optuna() -> None:
    """A one-line error when the tune extra is missing."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError("the tuner needs Optuna: pip install -e \".[tune]\"")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Parse, validate the space, open (or resume) the study, run the trials, write the report."""
    cfg, recipe, trainer_args = parse(argv)
    require_optuna()
    if recipe:
        load_yaml(recipe)  # a missing or broken recipe is named before anything else
    setup = prepare(cfg, recipe, trainer_args)
    from toolkit.tune.report import report
    from toolkit.tune.study import finished, open_study, optimize

    study = open_study(setup)
    print(f"study '{cfg.study_name}': {finished(study)} of {cfg.n_trials} trials finished; objective "
          f"{setup.objective.name} ({study.direction.name.lower()}), {cfg.trial_minutes:g} min per trial, "
          f"{cfg.n_jobs} at a time with {setup.fixed['num_cpu_threads']} threads each")
    try:
        optimize(study, setup)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume the study (the interrupted trial continues from its "
              "checkpoint)", file=sys.stderr)
        return 130
    print(report(study, setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
