"""What all processes of a run must decide alike (skip a step, stop on a signal, give up a checkpoint): one
all-reduce of a flag, so that no process goes on while another stops, and none waits forever at a barrier."""

from __future__ import annotations

import torch


def any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` holds on any process (one all-reduce when there are several)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)
