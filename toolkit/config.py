"""Typed dataclass configs: defaults < recipe YAML < command-line flags, validated with errors that name the key.

A config class is a plain dataclass whose fields are made with `option(default, "help")`. `parse_config` builds the
argparse parser from the fields (flag names = field names, as in the diffusers examples), so a new option is one line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from toolkit.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config key is unknown, has the wrong type or an invalid value."""


def option(default: Any, help: str, cli: bool = True) -> Any:
    """A dataclass field with a help text; `cli=False` keeps it out of the command line (recipe-only)."""
    metadata = {"help": help, "cli": cli}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_positive(cfg: Any, keys: tuple[str, ...]) -> None:
    """A ConfigError naming the first of `keys` whose value is below 1 (None counts as not given)."""
    for key in keys:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")


def with_defaults(help: dict[str, str] | None = None, **defaults: Any) -> Callable[[type[T]], type[T]]:
    """Give inherited options other defaults (and, through `help`, other help texts) in a subclass, keeping their
    type and place; put it under @dataclass. Shared options are declared once, in the base config, whatever each
    trainer's default or wording."""

    def apply(cls: type[T]) -> type[T]:
        inherited = {f.name: f for base in reversed(cls.__mro__[1:]) if dataclasses.is_dataclass(base)
                     for f in dataclasses.fields(base)}
        hints = typing.get_type_hints(cls)
        annotations = cls.__dict__.get("__annotations__", {})
        for name in {**defaults, **(help or {})}:
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: with_defaults names {name!r}, which no base config declares")
            field = inherited[name]
            old = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            value = defaults.get(name, old)
            _coerce(value, hints[name], f"{cls.__name__} default {name}")  # a wrong default fails at import
            text = (help or {}).get(name, field.metadata.get("help", ""))
            annotations[name] = hints[name]
            setattr(cls, name, option(value, text, field.metadata.get("cli", True)))
        cls.__annotations__ = annotations
        return cls

    return apply


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; int is accepted where float is expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise bad
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise bad
    if not isinstance(value, tp):
        raise bad
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    values = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-serialisable data."""
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file; a missing file, bad YAML or a non-mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config so that `--config path` reproduces the run."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field, tp: Any) -> None:
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": field.metadata.get("help", "")}
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 1
    base = args[0] if optional else tp
    if optional and base in (int, float, str):  # `--name none` clears an optional value set by a recipe
        kwargs.update(type=_none_or(base), metavar=base.__name__.upper())
    elif base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is Literal:
        kwargs["choices"] = typing.get_args(base)
    elif typing.get_origin(base) is list:
        kwargs.update(nargs="+", type=typing.get_args(base)[0])
    else:
        kwargs["type"] = base
    parser.add_argument(f"--{field.name}", **kwargs)


def _none_or(base: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else base(text)

    parse.__name__ = base.__name__  # argparse names the type in its error messages
    return parse


def build_parser(cls: type, description: str) -> argparse.ArgumentParser:
    """An argparse parser with `--config` plus one flag per command-line field of `cls`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="a recipe YAML file; flags given on the command line override it")
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("cli", True):
            _add_flag(parser, field, hints[field.name])
    return parser


def parse_config(cls: type[T], argv: list[str] | None, description: str) -> T:
    """Resolve defaults < `--config` recipe < explicit flags into a validated `cls`."""
    namespace = vars(build_parser(cls, description).parse_args(argv))
    recipe = namespace.pop("config", None)
    data = load_yaml(recipe) if recipe else {}
    data.update(namespace)  # only flags actually given are present (default=SUPPRESS)
    return from_dict(cls, data)


def markdown_table(cls: type) -> str:
    """A Markdown table of a config's options (flag, type, default, help) for the docs."""
    hints = typing.get_type_hints(cls)
    rows = ["| option | type | default | description |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        name = f"`--{f.name}`" if f.metadata.get("cli", True) else f"`{f.name}` (recipe only)"
        rows.append(f"| {name} | {_type_name(hints[f.name])} | `{default}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
