"""``benchmarks/gpu_check.sh --dry-run`` runs end to end on the CPU (about 3 min on 2 cores:
slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_results(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["stage_c"]["loss_finite"]
    assert set(result["generation"]["seconds_per_step"]) == {"without", "with"}
    assert (tmp_path / "gpu.md").is_file() and (tmp_path / "pytest_gpu.log").is_file()
    resume = json.loads((tmp_path / "resume.json").read_text())  # on the CPU the resume is exact
    differences = resume["max_abs_weight_difference"]
    assert differences == {"straight_vs_straight": 0.0, "straight_vs_resumed": 0.0}
    progress = resume["progress"]
    assert progress["straight"] == progress["resumed"] == {"global_step": 8, "epoch": 2}
