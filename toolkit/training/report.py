"""The run report every trainer shares: trackers named after the trainer, logged images, the summary (printed and
written as summary.json) and the loss plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from toolkit.config import to_dict
from toolkit.training.config import TrainingConfig


def rate(images_per_second: float) -> str:
    """A throughput for people: 67.4, 2500.0, or 0.0912 (three significant digits below 1)."""
    return f"{images_per_second:.1f}" if images_per_second >= 1 else f"{images_per_second:.3g}"


@dataclass
class RunSummary:
    """Figures of a finished run, printed at the end and written to summary.json."""

    output_dir: str
    total_steps: int
    start_step: int = 0
    data: str = ""
    steps_done: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0
    smoothed_loss: float = float("nan")
    last_rate: float = 0.0
    skipped_files: list[str] = field(default_factory=list)
    samples: str = ""
    resumed_from: str | None = None
    mixed_precision: str = ""
    loss_history: list[float] = field(default_factory=list)  # per step, since step 0 (kept across resumes)
    prior_train_seconds: float = 0.0  # training time before this session's resume
    eval_history: list[dict] = field(default_factory=list)  # in-loop KID: {step, train_seconds, kid, kid_std, seconds}
    best_eval: dict | None = None
    eval_seconds: float = 0.0  # spent on in-loop KID in this session
    time_budget: dict | None = None  # --max_train_time: {minutes, planned_steps, plan_step_seconds, step_seconds,
    #                                                       wall_seconds}
    stopped_by_budget: bool = False  # ended by --max_train_time before its last planned step
    skipped_steps: int = 0  # steps with a NaN/inf loss that made no update, over the whole run
    interrupted_by: str = ""  # the signal (SIGTERM, SIGINT) that stopped the run after a checkpoint

    def add_step(self, loss: float, seconds: float, images: int) -> None:
        """Record one optimiser step; the loss is smoothed with an EMA of 0.9 (the first finite loss taken as is; a
        skipped step's NaN leaves it alone)."""
        if math.isfinite(loss):
            first = not math.isfinite(self.smoothed_loss)
            self.smoothed_loss = loss if first else 0.9 * self.smoothed_loss + 0.1 * loss
        self.loss_history.append(round(loss, 6))
        self.steps_done += 1
        self.images_seen += images
        self.train_seconds += seconds
        self.last_rate = images / max(seconds, 1e-9)

    @property
    def images_per_second(self) -> float:
        return self.images_seen / max(self.train_seconds, 1e-9)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the summary table; trainers with other outputs override `output_rows`."""
        out = Path(self.output_dir)
        skipped = ", ".join(self.skipped_files[:5]) + (" ..." if len(self.skipped_files) > 5 else "")
        return [
            ("steps", f"{self.start_step + self.steps_done} / {self.total_steps}"
                      + (f" (resumed at {self.start_step})" if self.start_step else "")),
            ("throughput", f"{rate(self.images_per_second)} img/s over {self.train_seconds:.0f} s of training"),
            *self.budget_rows(),
            ("final loss", f"{self.smoothed_loss:.4f} (smoothed)"),
            ("mixed precision", self.mixed_precision),
            ("data", self.data),
            ("skipped files", f"{len(self.skipped_files)}" + (f": {skipped}" if self.skipped_files else "")),
            *([("skipped steps", f"{self.skipped_steps} with a NaN/inf loss (no update)")] if self.skipped_steps
              else []),
            *self.eval_rows(),
            *self.output_rows(),
            ("checkpoints", str(out / "checkpoints")),
            ("logs", f"tensorboard --logdir {out / 'logs'}"),
        ]

    def budget_rows(self) -> list[tuple[str, str]]:
        """The time budget, when the run had one."""
        budget = self.time_budget
        if not budget or not budget["minutes"]:
            return []
        again = f", planned again at step {budget['replanned_at']}" if budget.get("replanned_at") else ""
        plan = (f"{budget['planned_steps']} steps planned at {budget['plan_step_seconds']:.2f} s/step{again} (then "
                f"{budget['step_seconds']:.2f})" if budget["planned_steps"]
                else "not planned (length given in steps, or stopped before its plan)")
        end = "stopped by the budget" if self.stopped_by_budget else "finished its steps"
        return [("time budget", f"{budget['minutes']:g} min: {plan}; {end} after {budget['wall_seconds'] / 60:.1f} "
                                "min (before the final grid and saving)")]

    def eval_rows(self) -> list[tuple[str, str]]:
        """The in-loop KID, when the run measured it."""
        if not self.eval_history:
            return []
        last, best = self.eval_history[-1], self.best_eval or self.eval_history[-1]
        share = self.eval_seconds / max(self.train_seconds, 1e-9)
        return [("KID x 1000", f"{1000 * last['kid']:.2f} ± {1000 * last['kid_std']:.2f} at step {last['step']}; "
                               f"best {1000 * best['kid']:.2f} at step {best['step']} (kid.png)"),
                *([("best checkpoint", str(Path(self.output_dir) / "checkpoints_best" / f"checkpoint-{best['step']}"))]
                  if (Path(self.output_dir) / "checkpoints_best" / f"checkpoint-{best['step']}").is_dir() else []),
                ("evaluation cost", f"{self.eval_seconds:.0f} s, {share:.0%} of training time")]

    def output_rows(self) -> list[tuple[str, str]]:
        """What the run produced; the base summary knows only the samples."""
        return [("samples", self.samples)]

    def table(self) -> str:
        """A short human-readable summary."""
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def write_summary(summary: RunSummary, out: Path) -> None:
    """summary.json with the run's figures (the per-step losses go to loss.png instead)."""
    data = asdict(summary) | {"images_per_second": round(summary.images_per_second, 3)}
    data.pop("loss_history")
    (out / "summary.json").write_text(json.dumps(data, indent=2))
    plot_loss(summary.loss_history, out / "loss.png")
    if summary.eval_history:
        from toolkit.training.evaluation import plot_eval

        plot_eval(summary.eval_history, out / "kid.png")


PROGRESS_FILE = "progress.jsonl"


def append_progress(out: Path, entry: dict) -> None:
    """One line of progress.jsonl (at each checkpoint and evaluation): what a watcher, such as the tuner, reads
    while the run goes on."""
    with open(out / PROGRESS_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_progress(path: Path) -> list[dict]:
    """progress.jsonl's entries on the run's current branch. A resumed run writes again the steps after its
    checkpoint, so an entry drops the earlier ones of later steps (and its own step and kind); a line cut short by
    a kill is skipped."""
    entries: list[dict] = []
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        entries = [e for e in entries if e["step"] < entry["step"]
                   or (e["step"] == entry["step"] and e.get("kind") != entry.get("kind"))]
        entries.append(entry)
    return entries


def restart_progress(out: Path, step: int, state: dict) -> None:
    """Start progress.jsonl for a run beginning at `step`: empty for a fresh run; for a resumed one, the entries up
    to its checkpoint (a kill may have left later ones, a cut line, or no entry for the checkpoint itself)."""
    path = out / PROGRESS_FILE
    kept = [e for e in read_progress(path) if e["step"] <= step] if step else []
    if step and not any(e["step"] == step and e.get("kind") == "checkpoint" for e in kept):
        kept.append({"kind": "checkpoint", "step": step, "total_steps": state.get("planned_steps"),
                     "train_seconds": round(float(state.get("train_seconds", 0.0)), 2), "loss": state.get("loss")})
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))
    tmp.replace(path)


def plot_loss(losses: list[float], path: Path) -> None:
    """The training loss per step (light) and its moving average (dark) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    values = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return
    window = max(1, len(values) // 50)
    filled = values.copy()  # skipped (NaN) steps are gaps in the raw line and bridged in its moving average
    filled[~finite] = np.interp(np.flatnonzero(~finite), np.flatnonzero(finite), values[finite])
    smooth = np.convolve(filled, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(values, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
    ax.plot(np.arange(len(smooth)) + window - 1, smooth, color="tab:blue", label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def init_trackers(accelerator, project_name: str, cfg: TrainingConfig) -> None:
    """Start TensorBoard/wandb under the trainer's name, with the config's scalar options as hyper-parameters."""
    hparams = {k: v for k, v in to_dict(cfg).items() if isinstance(v, (int, float, str, bool))}
    accelerator.init_trackers(project_name, config=hparams)


def log_images(accelerator, images: np.ndarray, step: int) -> None:
    """Send validation images (N, H, W, 3) uint8 to each active tracker."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation", images, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(im) for im in images]}, step=step)
