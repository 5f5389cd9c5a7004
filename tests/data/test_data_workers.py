"""DataLoader workers forked from a process that already ran OpenCV on several threads.

``cv2.setNumThreads`` called inside such a worker never returns (the whole run then sits
idle); the loaders set OpenCV's threads in the main process before forking instead
(:func:`datamodules.decoded.workers_start`). Run in a subprocess so a hang fails by timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, cv2, numpy as np
    from torch.utils.data import DataLoader, Dataset
    from datamodules.decoded import keep_item, worker_init, workers_start

    rng = np.random.default_rng(0)
    a = (rng.random((128, 128)) * 255).astype(np.uint8)
    b = np.roll(a, 2, axis=1)

    def flow():
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    class Flows(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return cv2.getNumThreads(), float(flow()[..., 0].mean())

    cv2.setNumThreads(2)
    flow()  # the main process starts OpenCV's thread pool, as a test run or a notebook does
    workers_start()
    loader = DataLoader(
        Flows(), batch_size=None, num_workers=2, worker_init_fn=worker_init,
        collate_fn=keep_item, multiprocessing_context=multiprocessing.get_context("fork"),
    )
    print(json.dumps(sorted(loader)))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers: Linux's default")
def test_workers_forked_after_opencv_ran_finish_and_run_opencv_on_one_thread():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(proc.stdout)  # (OpenCV threads, mean flow) per item
    assert len(items) == 4
    assert all(threads == 1 for threads, _ in items)
    assert all(abs(mean - 2.0) < 0.1 for _, mean in items)  # Farneback ran: a 2 px shift
