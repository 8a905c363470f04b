"""Training entry points, kept apart from the loop (as EDM keeps its CLI apart from its training loop)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from toolkit.config import parse_config
from toolkit.errors import cli_errors
from toolkit.training.config import TrainingConfig


def command(config_cls: type[TrainingConfig], trainer: str, doc: str) -> Callable[[list[str] | None], int]:
    """A training entry point's `main(argv)`: parse flags (and a recipe) into `config_cls`, then run the trainer
    named "module:Class" with `toolkit.training.loop.run`. The loop and the trainer are imported only after
    parsing, so that --help and bad flags answer at once."""

    @cli_errors
    def main(argv: list[str] | None = None) -> int:
        cfg = parse_config(config_cls, argv, description=doc.splitlines()[0])
        from toolkit.training.loop import run

        module, name = trainer.split(":")
        return run(getattr(importlib.import_module(module), name), cfg)

    main.__doc__ = f"Parse flags (and a recipe) into {config_cls.__name__}, train with {trainer}, report."
    return main
