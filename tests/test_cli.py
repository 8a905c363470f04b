"""The entry points as a user runs them, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import tiny_argv

ROOT = Path(__file__).resolve().parents[1]


def test_accelerate_launch_smoke(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
           str(ROOT / "toolkit/train_unet.py"), *tiny_argv(out, max_train_steps=2)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model_index.json").is_file() and "run finished" in result.stdout


def test_bad_input_exits_nonzero_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "toolkit.train_unet", "--train_data_dir", str(tmp_path / "nowhere"),
           "--output_dir", str(tmp_path / "run")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "error: train_data_dir not found" in result.stderr and "Traceback" not in result.stderr
    bad_key = subprocess.run([sys.executable, "-m", "toolkit.train_unet", "--resolutionn", "3"],
                             capture_output=True, text=True, timeout=300)
    assert bad_key.returncode == 2 and "unrecognized arguments: --resolutionn" in bad_key.stderr
