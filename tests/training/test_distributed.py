"""Several processes: logged router statistics are all-reduced; DeepSpeed strategy construction."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_process_ddp_logs_all_reduced_router_statistics(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_stage_c.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "version_0" / "metrics.csv")))
    logged = [r for r in rows if r.get("train/router/selection_rate/rigid_body")]
    assert logged, "router statistics were not logged"
    last = logged[-1]
    # rank 0 alone saw only rigid_body clips, rank 1 only fluid ones
    assert float(last["train/router/selection_rate/rigid_body"]) == pytest.approx(0.5)
    assert float(last["train/router/selection_rate/fluid"]) == pytest.approx(0.5)
    assert float(last["train/router/label_precision"]) == pytest.approx(1.0)
