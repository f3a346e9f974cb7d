from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _read_warnings_afresh():
    """read_image says each kind of warning once per process: every test starts as a fresh process would."""
    from scunext.data import io

    io._WARNED.clear()
    yield


@pytest.fixture
def shared_data() -> Path:
    """The full real datasets beside the checkout (CI has them); skip where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A cheap trained run (UNeXt-S, 1 epoch at 64 px) on the shipped ISIC sample, shared by the tests that only
    read it."""
    from scunext.config import load_config
    from scunext.data import sample_dir
    from scunext.engine.trainer import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    cfg = {"data": str(sample_dir("isic2017")), "model": "unext_s", "size": 64, "epochs": 1, "batch_size": 4,
           "split": "csv"}  # fmt: skip
    train(load_config(None, cfg), out, show_progress=False)
    return out


class _Holder:
    """Another process that holds a run folder's writer lock (as a live trainer does) until killed."""

    def __init__(self, folder: Path) -> None:
        import subprocess
        import sys

        code = ("import sys, time; from scunext.runs import RunDir; RunDir(sys.argv[1]).acquire(); "
                "print('held', flush=True); time.sleep(600)")  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line == "held", f"the lock holder did not start: {line!r}"

    def kill(self) -> None:
        """SIGKILL: no cleanup runs in the holder, as in a crash."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def lock_holder():
    """``lock_holder(folder)`` starts another process holding ``folder``'s writer lock; all are killed at the end."""
    holders: list[_Holder] = []

    def start(folder: Path) -> _Holder:
        holders.append(_Holder(Path(folder)))
        return holders[-1]

    yield start
    for h in holders:
        if h.proc.poll() is None:
            h.kill()
