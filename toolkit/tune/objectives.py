"""What a trial is scored by. Two kinds:

- in-loop (`loss`, `kid`): the trainer measures them itself, so the tuner reads them from the run folder, at every
  report while the run goes on (progress.jsonl: the pruner's intermediate values) and at the end (summary.json);
- from samples (`fid`, `kid_reference`, `face_rate`, `distortion`, `pck`): after training, `python -m toolkit.tune.score` samples the
  saved model and scores the images; while the run goes on, its in-loop KID (if it evaluates) is what the pruner
  sees, for the objectives that are minimised like it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.errors import UserError
from toolkit.training.report import PROGRESS_FILE, read_progress


@dataclass(frozen=True)
class Objective:
    """A score, its direction, and whether the trainer measures it (else it is scored from samples)."""

    name: str
    direction: Literal["minimize", "maximize"]
    in_loop: bool
    needs: str = ""  # the tuner option it cannot do without

    @property
    def reports(self) -> str | None:
        """Which progress.jsonl entries feed the pruner: 'checkpoint' losses, 'eval' KIDs, or none."""
        if self.name == "loss":
            return "checkpoint"
        return "eval" if self.direction == "minimize" else None  # a KID is no proxy for a score to maximise


OBJECTIVES = {o.name: o for o in (
    Objective("loss", "minimize", True),
    Objective("kid", "minimize", True),
    Objective("fid", "minimize", False),
    Objective("kid_reference", "minimize", False),  # KID against --reference (e.g. held-out images), after training
    Objective("face_rate", "maximize", False),
    Objective("distortion", "minimize", False),
    Objective("pck", "maximize", False, needs="poses"),
)}


def intermediate(objective: Objective, run: Path) -> list[float]:
    """The values to report so far, in order (report k is the k-th checkpoint's loss or the k-th in-loop KID)."""
    kind = objective.reports
    if kind is None:
        return []
    key = "loss" if kind == "checkpoint" else "kid"
    return [float(e[key]) for e in read_progress(run / PROGRESS_FILE) if e.get("kind") == kind and key in e]


def in_loop_value(objective: Objective, run: Path) -> float:
    """The finished run's final smoothed loss or last in-loop KID, from its summary.json."""
    path = run / "summary.json"
    if not path.is_file():
        raise UserError(f"{run}: no summary.json (the trial did not finish)")
    summary = json.loads(path.read_text())
    if objective.name == "loss":
        return float(summary["smoothed_loss"])
    if not summary.get("eval_history"):
        raise UserError(f"{run}: no in-loop KID in summary.json (the trial did not evaluate)")
    return float(summary["eval_history"][-1]["kid"])
