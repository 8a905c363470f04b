"""What every trainer builds around its models: the Accelerator, the optimiser and its schedule, checkpoint hooks,
EMA weight swaps, the per-step seed, and resume-or-start."""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel

from toolkit.errors import UserError
from toolkit.training.checkpoints import list_checkpoints, load_checkpoint, remove_partial, resolve_resume
from toolkit.training.config import AdamW, ScratchImageConfig, TrainingConfig
from toolkit.training.precision import resolve_mixed_precision, set_cpu_threads


def make_accelerator(cfg: TrainingConfig, out: Path) -> tuple[Accelerator, str]:
    """An Accelerator with the resolved precision, trackers, TF32 and CPU threads; returns it and the precision
    reason."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision, reason = resolve_mixed_precision(cfg.mixed_precision, device_type)
    trackers = {"none": None, "all": ["tensorboard", "wandb"]}.get(cfg.report_to, [cfg.report_to])
    if trackers and "wandb" in trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("--report_to wandb needs wandb: pip install 'anatomy-toolkit[wandb]'") from None
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / cfg.logging_dir))
    accelerator = Accelerator(mixed_precision=precision, log_with=trackers, project_config=project)
    if cfg.allow_tf32 and device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if device_type == "cpu":
        accelerator.print(set_cpu_threads(cfg.num_cpu_threads, accelerator.num_processes))
    return accelerator, reason


def total_steps(cfg: TrainingConfig, num_examples: int, world: int) -> int:
    """Optimiser steps of a run: --max_train_steps, else enough for --num_epochs passes, else the default."""
    if cfg.max_train_steps:
        return cfg.max_train_steps
    if cfg.num_epochs:
        per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * world
        return max(1, math.ceil(cfg.num_epochs * num_examples / per_step))
    return cfg.DEFAULT_TRAIN_STEPS


def make_optimizer(params: list[torch.nn.Parameter], settings: AdamW, *, eight_bit: bool = False,
                   device: torch.device | None = None, say: Callable[[str], None] = print) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW when asked for and possible (CUDA), with a message otherwise."""
    kwargs = dict(lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, eps=settings.eps)
    if eight_bit:
        try:
            import bitsandbytes as bnb

            if device is None or device.type != "cuda":
                raise ImportError("needs CUDA")
            return bnb.optim.AdamW8bit(params, **kwargs)
        except ImportError as e:
            say(f"--use_8bit_adam: bitsandbytes unavailable ({e}); using torch AdamW")
    return torch.optim.AdamW(params, **kwargs)


def make_lr_scheduler(cfg: TrainingConfig, optimizer: torch.optim.Optimizer, steps: int, world: int):
    """The diffusers LR schedule of --lr_scheduler over `steps` optimiser steps.

    Accelerate steps a prepared scheduler once per process per call, hence the `world` factor.
    """
    from diffusers.optimization import get_scheduler

    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps * world,
                         num_training_steps=steps * world)


def reschedule(lr_scheduler, cfg: TrainingConfig, optimizer: torch.optim.Optimizer, *, steps: int, done: int,
               world: int):
    """The LR schedule of `make_lr_scheduler` over `steps` steps, positioned after `done` of them, in place of
    `lr_scheduler`'s (inside Accelerate's wrapper, which checkpoints keep). Returns the scheduler to step."""
    import warnings

    with warnings.catch_warnings():  # stepping a new schedule before its optimiser has stepped is the point here
        warnings.simplefilter("ignore", UserWarning)
        fresh = make_lr_scheduler(cfg, optimizer, steps, world)
        fresh.last_epoch = done * world - 1
        fresh.step()  # sets the optimiser's lr for step `done`
    if hasattr(lr_scheduler, "scheduler"):  # accelerate's AcceleratedScheduler
        lr_scheduler.scheduler = fresh
        return lr_scheduler
    return fresh


def step_generator(seed: int, step: int, accelerator: Accelerator) -> torch.Generator:
    """Seed optimiser step `step` on this process: the global generator (dropout) and the returned one (noise,
    timesteps, augmentation). A resumed run therefore draws exactly what the uninterrupted run drew."""
    value = (seed * 1_000_003 + step) * accelerator.num_processes + accelerator.process_index
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def register_checkpoint_hooks(accelerator: Accelerator, save: Callable[[Path], None],
                              load: Callable[[Path], None]) -> None:
    """Checkpoints hold what `save(folder)` writes (safetensors, on the main process) instead of Accelerate's
    pickled weights; `load(folder)` restores it. Optimiser, schedule and RNG states stay Accelerate's."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            save(Path(output_dir))
        weights.clear()  # stop Accelerate from also pickling the weights

    def load_hook(models, input_dir):
        load(Path(input_dir))
        models.clear()  # loaded above; Accelerate must not look for its own weight files

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def enable_xformers(modules: list[torch.nn.Module], device: torch.device, say: Callable[[str], None]) -> None:
    """xformers attention on `modules` when on CUDA with xformers installed; else a message (SDPA stays on)."""
    from diffusers.utils.import_utils import is_xformers_available

    if device.type != "cuda" or not is_xformers_available():
        say("xformers needs CUDA and `pip install xformers`: using PyTorch SDPA attention instead")
        return
    for module in modules:
        module.enable_xformers_memory_efficient_attention()


@contextlib.contextmanager
def ema_weights(ema, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` with its EMA weights swapped in for the duration (as is, without an EMA)."""
    if ema is None:
        yield module
        return
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        yield module
    finally:
        ema.restore(module.parameters())


def make_ema(cfg: ScratchImageConfig, model) -> EMAModel | None:
    """The EMA of a diffusers model's weights per the config's EMA options (warm-up on), or None without --use_ema."""
    if not cfg.use_ema:
        return None
    return EMAModel(model.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=cfg.ema_inv_gamma,
                    power=cfg.ema_power, foreach=True, model_cls=type(model), model_config=model.config)


def maybe_resume(accelerator: Accelerator, out: Path, resume_from_checkpoint: str | None,
                 overwrite_output_dir: bool) -> tuple[int, str | None, dict]:
    """(step, checkpoint path, saved state) to continue from; (0, None, {}) for a fresh run."""
    ckpt_root = out / "checkpoints"
    remove_partial(ckpt_root)
    path = resolve_resume(ckpt_root, resume_from_checkpoint)
    if resume_from_checkpoint == "latest" and path is None:
        accelerator.print(f"no checkpoint in {ckpt_root} yet: starting a new run")
    if path is None:
        _refuse_to_mix_runs(out, ckpt_root, overwrite_output_dir)
        return 0, None, {}
    state = load_checkpoint(accelerator, path)
    accelerator.print(f"resumed from {path} at step {state['global_step']}")
    return int(state["global_step"]), str(path), state


def _refuse_to_mix_runs(out: Path, ckpt_root: Path, overwrite_output_dir: bool) -> None:
    """A fresh run must not rotate away, or later resume from, another run's checkpoints."""
    old = list_checkpoints(ckpt_root)
    if not old:
        return
    if not overwrite_output_dir:
        raise UserError(f"{out} already holds checkpoints of an earlier run ({old[-1].name}): pass "
                        "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to start over, "
                        "or another --output_dir")
    for path in old:
        shutil.rmtree(path)
