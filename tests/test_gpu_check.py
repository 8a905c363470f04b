"""benchmarks/gpu_check.sh works before a GPU is ever lent: its dry run (toy sizes, CPU) measures every part and
writes the JSON and the table that --record appends to docs/gpu.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_measures_every_part_and_records_a_table(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"))
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry_run"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    parts = report["parts"]
    assert not any("error" in parts[name] for name in ("lora", "unet", "e2e")), parts
    lora = parts["lora"]["result"]
    sdpa = [r for r in lora if r["attention"] == "sdpa"]
    assert len(sdpa) == 4 and all(r["s_per_step"] > 0 and r["peak_memory_mb"] > 0 for r in sdpa)
    assert {(r["gradient_checkpointing"], r["batch_size"]) for r in sdpa} == {(False, 1), (False, 4), (True, 1),
                                                                               (True, 4)}
    assert any(r["attention"] == "xformers" for r in lora)  # measured, or recorded as unavailable
    assert parts["unet"]["result"][0]["s_per_step"] > 0
    e2e = parts["e2e"]["result"]
    assert e2e["first_exit_code"] == 143 and e2e["interrupted_by"] == "SIGTERM"
    assert e2e["resumed_at"] == e2e["stopped_at"] > 0 and e2e["final_step"] > e2e["stopped_at"]
    assert e2e["sample"]["finite"] and (tmp_path / "out/e2e_final.png").is_file()
    table = (tmp_path / "out/gpu_check.md").read_text()
    assert "dry run" in table and "| attention |" in table
    docs = tmp_path / "gpu.md"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--record", str(tmp_path / "out/gpu_check.json"),
                    "--docs", str(docs)], check=True)
    assert docs.read_text().startswith("# GPU checks") and table.splitlines()[0] in docs.read_text()
