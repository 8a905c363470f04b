"""The search space: a YAML mapping of trainer option -> distribution, validated against the trainer's config.

    learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    train_batch_size: {type: int, low: 8, high: 32, step: 8}
    model_preset: {type: categorical, choices: [small, medium]}

Every key must be an option of the trainer, every bound and choice a value that option accepts on top of the base
recipe; a mistake is a one-line error naming the file and the key, before any trial runs.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolkit.config import ConfigError, from_dict, load_yaml

# Options the tuner sets for every trial (or that would make trials incomparable or leak): not searchable.
RESERVED = ("output_dir", "max_train_time", "resume_from_checkpoint", "overwrite_output_dir", "eval_steps",
            "num_evals", "num_cpu_threads", "push_to_hub", "hub_dry_run", "hub_model_id", "logging_dir")

Choice = str | int | float | bool | None


@dataclass(frozen=True)
class Param:
    """One searched option: a float or int range (optionally log-scaled or stepped), or a list of choices."""

    name: str
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Choice] | None = None

    def __post_init__(self) -> None:
        if self.type == "categorical":
            if not self.choices or any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ConfigError(f"{self.name}: a categorical takes only a non-empty list of choices")
            return
        if self.choices is not None or self.low is None or self.high is None:
            raise ConfigError(f"{self.name}: a {self.type} range needs low and high (and no choices)")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ConfigError(f"{self.name}: an int range needs whole low, high and step, got {self.low}..{self.high}")
        if not self.low < self.high:
            raise ConfigError(f"{self.name}: low must be below high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{self.name}: a log range needs low > 0, got {self.low}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ConfigError(f"{self.name}: step must be > 0 and not with log, got {self.step}")

    def candidates(self) -> list[Any]:
        """Values to check against the trainer's config: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]

    def suggest(self, trial) -> Any:
        """Draw this option's value for an Optuna trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _number(value: Any) -> Any:
    """YAML reads 1e-5 (no dot) as a string: take it as the number it is meant to be."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_space(data: dict, source: str) -> list[Param]:
    """Params from a mapping of option -> {type, ...}; a ConfigError naming `source` and the key otherwise."""
    if not data:
        raise ConfigError(f"{source}: the search space is empty (e.g. learning_rate: {{type: float, low: 1.0e-5, "
                          "high: 1.0e-2, log: true}})")
    params = []
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: {name}: expected a mapping such as {{type: float, low: 0.1, high: 1}}, got "
                              f"{spec!r}")
        spec = {k: _number(v) if k in ("low", "high", "step") else v for k, v in spec.items()}
        try:
            params.append(from_dict(Param, {**spec, "name": str(name)}, prefix=f"{name}."))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return params


def check_against(params: list[Param], config_cls: type, base: dict, source: str) -> None:
    """Every param is an option of `config_cls` that accepts each candidate value on top of `base` (the resolved
    base config); a ConfigError naming `source` and the key otherwise."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for param in params:
        if param.name not in fields:
            close = difflib.get_close_matches(param.name, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: '{param.name}' is not an option of {config_cls.__name__}{hint}")
        if param.name in RESERVED:
            raise ConfigError(f"{source}: '{param.name}' is set by the tuner for every trial and cannot be searched")
        for value in param.candidates():
            try:
                from_dict(config_cls, base | {param.name: value})
            except ConfigError as e:
                raise ConfigError(f"{source}: {param.name} = {value!r} is not a valid trainer setting: {e}") from None


def load_space(path: str | Path, config_cls: type, base: dict) -> list[Param]:
    """The validated search space of the YAML file at `path`."""
    params = parse_space(load_yaml(path), str(path))
    check_against(params, config_cls, base, str(path))
    return params
