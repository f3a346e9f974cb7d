"""The documented real-data benchmark (docs/benchmarks.md), as a slow test: ``python -m pytest -m slow``.

Trains SC-UNeXt on the full chest X-ray lung set (80/20 split, seed 0) with ``configs/lungs-cpu15.yaml`` and
checks the issue's bar: test Dice >= 0.95 (per-image mean, native resolution). About 12 minutes on 2 CPU cores.
"""

from __future__ import annotations

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_lungs_sc_unext_reaches_095(shared_data, tmp_path):
    from scunext.config import load_config
    from scunext.engine.evaluate import evaluate_run
    from scunext.engine.trainer import train

    cfg = load_config(REPO / "configs" / "lungs-cpu15.yaml", {"data": str(shared_data / "chest-xray-lungs")})
    result = train(cfg, tmp_path / "run", show_progress=False)
    report = evaluate_run(result.run_dir, show_progress=False)
    assert report["n_images"] == 141
    assert report["dice"]["per_image_mean"] >= 0.95
