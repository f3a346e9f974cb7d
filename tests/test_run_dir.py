"""The run folder (scunext.runs.RunDir): crash-consistent epoch commits under fault injection, resume rules, the NaN
guard, checks before the folder exists, and refusals of folders whose files disagree."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scunext.config import ConfigError, load_config
from scunext.data import DataError, sample_dir
from scunext.engine import trainer as trainer_mod
from scunext.engine.trainer import TrainingError, train
from scunext.models import create_model
from scunext.runs import CheckpointError, RunDir, RunFolderError, durable, load_model, save_checkpoint

#: a tiny run: 4 training and 4 validation images of the shipped sample at 64 px, 2 epochs
TINY = dict(model="unext_s", size=64, epochs=2, batch_size=4, lr=1e-3, split="csv", max_train_images=4)


def tiny_cfg(**kw):
    return load_config(None, {"data": str(sample_dir("isic2017")), **TINY, **kw})


class Crash(BaseException):
    """A simulated kill: not an Exception, so no handler of the library runs on it."""


@contextmanager
def crash_before(k: int | None):
    """Record every durable operation; with ``k``, crash before the k-th one (and refuse any later one)."""
    ops: list[tuple[str, str]] = []

    def hook(op, path):
        ops.append((op, str(path)))
        if k is not None and len(ops) >= k:
            raise Crash(f"{op} {path}")

    durable.FAULT_HOOK = hook
    try:
        yield ops
    finally:
        durable.FAULT_HOOK = None


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """``ref``: the uninterrupted run; ``base``: the same run stopped after epoch 1."""
    root = tmp_path_factory.mktemp("rundir")
    train(tiny_cfg(), root / "ref", show_progress=False)
    train(tiny_cfg(), root / "base", show_progress=False, stop_after_epoch=1)
    return root


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "log.csv").open()))


def assert_same_as_reference(run: Path, ref: Path) -> None:
    for name in ("last.safetensors", "best.safetensors", "train_state.safetensors"):
        a, b = load_file(str(run / name)), load_file(str(ref / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]  # noqa: E731
    assert strip(_rows(run)) == strip(_rows(ref))  # each epoch once, same numbers
    assert [r["epoch"] for r in _rows(run)] == ["1", "2"]
    status = RunDir(run).read_status()
    assert status["status"] == "finished" and status["epochs_done"] == 2
    assert json.loads((run / "best.json").read_text())["epoch"] == json.loads((ref / "best.json").read_text())["epoch"]
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name or p.name.startswith(".staging")]
    RunDir(run).verify()


def test_crash_at_every_write_and_rename_of_an_epoch_commit(runs, tmp_path):
    """Kill the session that trains (and commits) the last epoch before each of its durable operations; resume;
    the run must end bit-identical to the uninterrupted one with each epoch logged once."""
    probe = tmp_path / "probe"
    shutil.copytree(runs / "base", probe)
    with crash_before(None) as ops:
        train(None, probe, resume=True, show_progress=False)
    assert_same_as_reference(probe, runs / "ref")
    kinds = {op for op, _ in ops}
    assert {"write", "write_mid", "fsync", "fsync_dir", "rename", "remove"} <= kinds
    assert any("best.safetensors" in p for _, p in ops)  # epoch 2 improves: the best checkpoint is in the commit
    # every operation from the first staged file to the removal of the staging folder (the commit itself)
    first = next(i for i, (_, p) in enumerate(ops) if ".staging-e" in p)
    last = max(i for i, (op, p) in enumerate(ops) if op == "remove" and ".staging-e" in p)
    for k in range(first + 1, last + 2):
        work = tmp_path / f"k{k}"
        shutil.copytree(runs / "base", work)
        with pytest.raises(Crash), crash_before(k):
            train(None, work, resume=True, show_progress=False)
        train(None, work, resume=True, show_progress=False)
        assert_same_as_reference(work, runs / "ref")
        shutil.rmtree(work)


def test_a_disk_that_fills_during_an_epoch_commit_is_one_line_and_the_run_resumes(runs, tmp_path, capsys):
    """From the first, a middle and the last file write of the epoch-2 commit on, every write fails with ENOSPC
    (also the writes of the failure handling): the command stops with exit 2 and one line naming the full disk, no
    traceback, and once there is room again the resume ends bit-identical to the uninterrupted run."""
    import errno

    from scunext.cli.main import main

    ops = _resume_ops(runs, tmp_path)
    first = next(i for i, (_, p) in enumerate(ops) if ".staging-e" in p)
    writes = [i for i, (op, _) in enumerate(ops) if op == "write" and i >= first]
    for k in (writes[0], writes[len(writes) // 2], writes[-1]):
        work = tmp_path / f"full{k}"
        shutil.copytree(runs / "base", work)
        seen = []

        def disk_full_from_k(op, path, k=k, seen=seen):
            seen.append(op)
            if len(seen) > k and op in ("write", "write_mid"):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

        durable.FAULT_HOOK = disk_full_from_k
        try:
            assert main(["train", "--resume", str(work), "--no-progress"]) == 2
        finally:
            durable.FAULT_HOOK = None
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
        assert len(err) == 1 and err[0].startswith("scunext train: error: ") and "No space left" in err[0], err
        assert main(["train", "--resume", str(work), "--no-progress"]) == 0
        assert_same_as_reference(work, runs / "ref")


@pytest.mark.slow
def test_crash_at_every_durable_operation_of_a_whole_run(runs, tmp_path):
    """Every operation of a whole run (creation, status updates, both commits, curves, the finish)."""
    with crash_before(None) as ops:
        train(tiny_cfg(), tmp_path / "probe", show_progress=False)
    for k in range(1, len(ops) + 1):
        work = tmp_path / "runs" / f"k{k}"
        with pytest.raises(Crash), crash_before(k):
            train(tiny_cfg(), work, show_progress=False)
        if work.exists() and RunDir(work).status() != "finished":  # (killed after run.json said finished)
            train(None, work, resume=True, show_progress=False)
        elif not work.exists():  # killed before the folder appeared: nothing there to resume
            train(tiny_cfg(), work, show_progress=False)
        assert_same_as_reference(work, runs / "ref")
        assert [p.name for p in work.parent.iterdir()] == [work.name]
        shutil.rmtree(work.parent)


def _cli(*args: str, fault_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if fault_at is not None:
        env["SCUNEXT_FAULT_AT"] = str(fault_at)
    return subprocess.run([sys.executable, "-m", "scunext.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def _kill_and_resume(runs: Path, work: Path, k: int) -> None:
    shutil.copytree(runs / "base", work)
    res = _cli("train", "--resume", str(work), "--no-progress", fault_at=k)
    assert res.returncode == 137, res.stderr[-1000:]
    if RunDir(work).status() != "finished":  # (killed after run.json said finished: nothing to resume)
        res = _cli("train", "--resume", str(work), "--no-progress")
        assert res.returncode == 0, res.stderr[-1000:]
    assert_same_as_reference(work, runs / "ref")


def _resume_ops(runs: Path, tmp_path: Path) -> list[tuple[str, str]]:
    probe = tmp_path / "probe"
    shutil.copytree(runs / "base", probe)
    with crash_before(None) as ops:
        train(None, probe, resume=True, show_progress=False)
    return ops


def test_sigkill_after_the_commit_point_rolls_forward_in_a_new_process(runs, tmp_path):
    """A real process killed (os._exit, no cleanup) right after run.json switched to epoch 2, before any staged file
    was renamed into place: the next process finishes the commit and the run ends bit-identical."""
    ops = _resume_ops(runs, tmp_path)
    k = next(i for i, (op, p) in enumerate(ops) if op == "rename" and p.endswith("best.json")) + 1
    _kill_and_resume(runs, tmp_path / "work", k)


@pytest.mark.slow
def test_sigkill_at_every_operation_of_an_epoch_commit(runs, tmp_path):
    ops = _resume_ops(runs, tmp_path)
    for k in range(1, len(ops) + 1):
        _kill_and_resume(runs, tmp_path / f"k{k}", k)


def test_resume_before_any_epoch_starts_again_identically(runs, tmp_path):
    """Killed in epoch 1 (nothing committed): resume starts from the saved config and split, the same run."""
    work = tmp_path / "w"
    with crash_before(None) as ops:
        train(tiny_cfg(), tmp_path / "probe", show_progress=False)
    k = next(i for i, (_, p) in enumerate(ops) if ".staging-e000001" in p) + 1
    with pytest.raises(Crash), crash_before(k):
        train(tiny_cfg(), work, show_progress=False)
    assert RunDir(work).epochs_done() == 0 and RunDir(work).status() == "running"
    train(None, work, resume=True, show_progress=False)
    assert_same_as_reference(work, runs / "ref")


def test_folder_whose_files_disagree_is_refused(runs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    (work / "train_state.json").write_text((work / "train_state.json").read_text().replace('"epoch": 1', '"epoch": 0'))
    with pytest.raises(RunFolderError, match=r"train_state.json differs from the epoch-1 commit record"):
        train(None, work, resume=True, show_progress=False)
    shutil.copy(runs / "base" / "train_state.json", work / "train_state.json")
    (work / "last.safetensors").unlink()
    with pytest.raises(RunFolderError, match="last.safetensors of the epoch-1 commit is missing"):
        train(None, work, resume=True, show_progress=False)


def test_orphans_are_removed_on_resume(runs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    (work / "last.safetensors.tmp1234").write_bytes(b"half")
    (work / ".staging-e000002").mkdir()
    (work / ".staging-e000002" / "last.json").write_text("{")
    train(None, work, resume=True, show_progress=False)
    assert_same_as_reference(work, runs / "ref")


def test_a_users_files_that_merely_contain_tmp_are_not_orphans(runs, tmp_path):
    """Only this package's own temporary names are swept (``NAME.tmpPID``, ``.NAME.creatingPID``): a user's
    ``notes.tmpl`` or ``extra.tmp_keep/`` in a run folder, or ``.run.creating-backup/`` beside it, are kept."""
    from scunext.config import load_config
    from scunext.data import sample_dir

    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    (work / "last.safetensors.tmp1234").write_bytes(b"half")  # ours: swept
    (work / "notes.tmpl").write_text("user notes")
    (work / "extra.tmp_keep").mkdir()
    (work / "extra.tmp_keep" / "a.txt").write_text("user file")
    train(None, work, resume=True, show_progress=False)
    assert not (work / "last.safetensors.tmp1234").exists()
    assert (work / "notes.tmpl").read_text() == "user notes" and (work / "extra.tmp_keep" / "a.txt").is_file()
    backup = tmp_path / ".new.creating-backup"
    backup.mkdir()
    (backup / "keep.txt").write_text("user file")
    (tmp_path / ".new.creating999999").mkdir()  # ours, from a crash during an earlier create: swept
    cfg = load_config(None, {"data": str(sample_dir("chest-xray-lungs")), "model": "unext_s", "size": 64,
                             "epochs": 1, "batch_size": 4, "max_train_images": 4})  # fmt: skip
    train(cfg, tmp_path / "new", show_progress=False)
    assert (backup / "keep.txt").read_text() == "user file" and not (tmp_path / ".new.creating999999").exists()


def test_a_stray_file_added_to_the_data_does_not_block_resume_or_evaluate(tmp_path, caplog):
    """The run's split.json names its images: an image without a mask copied into the data folder afterwards is
    left out with a warning (it stopped the resume and every evaluation); an image of the run that lost its mask is
    still an error."""
    from scunext.config import load_config
    from scunext.data import sample_dir
    from scunext.engine.evaluate import evaluate_run

    data = tmp_path / "data"
    shutil.copytree(sample_dir("chest-xray-lungs"), data)
    cfg = load_config(None, {"data": str(data), "model": "unext_s", "size": 64, "epochs": 2, "batch_size": 4,
                             "max_train_images": 4})  # fmt: skip
    run = tmp_path / "run"
    train(cfg, run, show_progress=False, stop_after_epoch=1)
    stray = sorted((data / "images").iterdir())[0]
    shutil.copy(stray, data / "images" / "stray_new_scan.png")
    with caplog.at_level("WARNING", logger="scunext.data.dataset"):
        train(None, run, resume=True, show_progress=False)
    assert RunDir(run).status() == "finished" and "stray_new_scan.png" in caplog.text
    assert evaluate_run(run, subset="test", show_progress=False)["n_images"] > 0
    (data / "masks" / f"{RunDir(run).load_split().test[0]}.png").unlink()
    with pytest.raises(DataError, match="1 of the .* images of this run are not in"):
        evaluate_run(run, subset="test", show_progress=False)


def test_a_split_without_a_test_part_is_announced_before_training(tmp_path, caplog):
    from scunext.config import load_config
    from scunext.engine.trainer import build_split

    rows = "".join(f"i{k},{'val' if k < 2 else 'train'}\n" for k in range(8))  # train and val, no test
    (tmp_path / "splits.csv").write_text("image_id,isic2017_split\n" + rows)
    cfg = load_config(None, {"split": "csv"})
    with caplog.at_level("WARNING", logger="scunext.engine.trainer"):
        split = build_split(cfg, [f"i{k}" for k in range(8)], tmp_path)
    assert not split.test and split.val and "the split has no test part" in caplog.text


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*")) if p.name != RunDir.LOCK}  # fmt: skip


def test_a_second_writer_is_refused_until_the_first_dies(runs, tmp_path, lock_holder, capsys):
    """While another process trains a run (it holds the writer lock), a second resume - library or CLI - is refused
    in one line and changes nothing (the live writer's staging folder is not swept as an orphan); once that process
    is killed (no cleanup, as in a crash) the lock is gone with it and the resume finishes the run exactly."""
    from scunext.cli.main import main
    from scunext.runs import RunInUseError

    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    (work / ".staging-e000002").mkdir()  # what a live writer has in the folder mid-commit
    (work / ".staging-e000002" / "last.json").write_text("{")
    holder = lock_holder(work)
    before = _snapshot(work)
    assert RunDir(work).in_use() and f"pid {holder.proc.pid} on " in RunDir(work).lock_holder()
    with pytest.raises(RunInUseError, match=rf"cannot resume: .* is in use by pid {holder.proc.pid} on "):
        train(None, work, resume=True, show_progress=False)
    assert main(["train", "--resume", str(work), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is in use by pid" in err and "Traceback" not in err
    with pytest.raises(RunInUseError):  # nor can a new run replace it
        train(tiny_cfg(), work, show_progress=False)
    assert _snapshot(work) == before
    holder.kill()
    assert not RunDir(work).in_use()
    train(None, work, resume=True, show_progress=False)
    assert_same_as_reference(work, runs / "ref")
    assert not RunDir(work).in_use() and not (work / RunDir.LOCK).exists()  # released at the end of the call


def test_the_trainer_holds_the_lock_from_creation_to_the_end(tmp_path, one_thread):
    """The lock taken on the hidden folder that ``create`` renames into place is held through every durable
    operation of the run (checked from a second RunDir, as another process would see it), and dropped after."""
    work = tmp_path / "w"
    seen: list[bool] = []
    holders: set[str] = set()

    def hook(op, path):
        if Path(path).resolve().is_relative_to(work.resolve()) and work.is_dir():
            seen.append(RunDir(work).in_use())
            holders.add(RunDir(work).lock_holder())

    durable.FAULT_HOOK = hook
    try:
        train(tiny_cfg(), work, show_progress=False)
    finally:
        durable.FAULT_HOOK = None
    assert len(seen) > 10 and all(seen)
    assert holders == {f"pid {os.getpid()} on {socket.gethostname()}"}
    assert not RunDir(work).in_use() and RunDir(work).status() == "finished"
    assert not (work / RunDir.LOCK).exists()  # removed on release: a folder nobody writes has no lock file


def test_a_crash_around_the_creating_rename_keeps_no_lock_in_the_process(tmp_path, one_thread):
    """An exception just before or just after the hidden folder is renamed into place (the lock moves with it)
    must not leave this process holding the lock: the same process can resume (or start) the run at once."""
    with crash_before(None) as ops:
        train(tiny_cfg(), tmp_path / "probe", show_progress=False)
    k = next(i for i, (op, p) in enumerate(ops) if op == "rename" and p.endswith("probe")) + 1
    for crash_at in (k, k + 1):
        work = tmp_path / f"w{crash_at}"
        with pytest.raises(Crash), crash_before(crash_at):
            train(tiny_cfg(), work, show_progress=False)
        assert not RunDir(work).in_use()
        if work.exists():
            train(None, work, resume=True, show_progress=False)
        else:
            train(tiny_cfg(), work, show_progress=False)
        assert RunDir(work).status() == "finished" and not (work / RunDir.LOCK).exists()


def test_a_folder_created_by_another_process_meanwhile_is_not_replaced(tmp_path, one_thread):
    """Two processes start the same new run at once: the one whose rename comes second is refused (RunInUseError,
    which the experiment runner skips), leaves the other's folder as it is and no hidden folder behind."""
    from scunext.runs import RunInUseError

    work = tmp_path / "w"

    def other_process_wins(op, path):
        if op == "rename" and Path(path) == work and not work.exists():
            work.mkdir()
            (work / "run.json").write_text("{}")

    durable.FAULT_HOOK = other_process_wins
    try:
        with pytest.raises(RunInUseError, match="was created by another process just now"):
            train(tiny_cfg(), work, show_progress=False)
    finally:
        durable.FAULT_HOOK = None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    assert sorted(p.name for p in work.iterdir()) == ["run.json"] and (work / "run.json").read_text() == "{}"


def test_a_file_system_without_locks_trains_unprotected_with_a_warning(tmp_path, monkeypatch, caplog):
    """flock failing for another reason than 'held' (ENOLCK on some network mounts) is not 'in use': the writer
    goes on without the lock and says so; a held lock (EWOULDBLOCK) is still refused."""
    import errno

    from scunext.runs import FolderLock
    from scunext.runs import lock as lock_mod

    def flock(fd, op, err=errno.ENOLCK):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(lock_mod.fcntl, "flock", flock)
    lk = FolderLock(tmp_path)
    with caplog.at_level("WARNING", logger="scunext.runs.lock"):
        assert lk.acquire() is True
    assert "file locks are not supported here" in caplog.text and not lk.held
    assert FolderLock(tmp_path).taken_elsewhere() is False
    monkeypatch.setattr(lock_mod.fcntl, "flock", lambda fd, op: flock(fd, op, errno.EWOULDBLOCK))
    assert FolderLock(tmp_path).acquire() is False and FolderLock(tmp_path).taken_elsewhere() is True


def test_another_models_checkpoint_in_the_folder_is_refused(runs, tmp_path):
    from scunext.deploy.predictor import Predictor

    work = tmp_path / "w"
    shutil.copytree(runs / "ref", work)
    save_checkpoint(tmp_path / "other", create_model("sc_unext", in_channels=3), "sc_unext", epoch=1)
    for ext in (".safetensors", ".json"):
        shutil.copy(tmp_path / f"other{ext}", work / f"best{ext}")
    with pytest.raises(CheckpointError, match="not the file the run committed"):
        Predictor.from_run(work)
    # a folder without a commit record (old runs, released weights): refused on the model itself
    status = json.loads((work / "run.json").read_text())
    del status["commit"]
    (work / "run.json").write_text(json.dumps(status))
    with pytest.raises(CheckpointError, match=r"does not belong to this run \(model 'sc_unext' instead of 'unext_s'"):
        Predictor.from_run(work)


def test_resume_with_last_checkpoint_of_another_model_is_one_line(runs, tmp_path, capsys):
    from scunext.cli.main import main

    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    save_checkpoint(work / "last", create_model("sc_unext", in_channels=3), "sc_unext", epoch=1)
    status = json.loads((work / "run.json").read_text())
    del status["commit"]  # as an old-format run, so that only the model check stands in the way
    (work / "run.json").write_text(json.dumps(status))
    assert main(["train", "--resume", str(work), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not belong to this run" in err[0]


def test_corrupt_train_state_json_names_the_file(runs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    state = json.loads((work / "train_state.json").read_text())
    del state["rng_numpy"]
    (work / "train_state.json").write_text(json.dumps(state))
    status = json.loads((work / "run.json").read_text())
    del status["commit"]
    (work / "run.json").write_text(json.dumps(status))
    with pytest.raises(CheckpointError, match=r"train_state.json: corrupt or incomplete training state \(missing"):
        train(None, work, resume=True, show_progress=False)


def test_old_format_run_reads_and_resumes(runs, tmp_path):
    """A run folder of the previous trainer (no commit record; log.csv with the row of a killed epoch): evaluate
    and predict read it; resume cuts the log to the last finished epoch and ends like the uninterrupted run."""
    from scunext.deploy.predictor import Predictor

    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    status = json.loads((work / "run.json").read_text())
    del status["commit"]
    (work / "run.json").write_text(json.dumps(status))
    with (work / "log.csv").open("a") as f:
        f.write("2,9,9,0.5,0.5,0.001,1\n")  # a row written before the old trainer was killed
    assert Predictor.from_run(work).name == "unext_s"
    train(None, work, resume=True, show_progress=False)
    assert_same_as_reference(work, runs / "ref")


def test_old_format_run_whose_files_disagree_is_refused(runs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    status = json.loads((work / "run.json").read_text())
    del status["commit"]
    (work / "run.json").write_text(json.dumps(status))
    meta = json.loads((work / "last.json").read_text())
    meta["epoch"] = 2
    (work / "last.json").write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="old-format run whose files disagree"):
        train(None, work, resume=True, show_progress=False)


# --- NaN guard --------------------------------------------------------------------------------------------------
def _poison(monkeypatch, after_calls: int, only_validation: bool = False):
    real = trainer_mod.build_loss
    calls = {"n": 0}

    class Poisoned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = real("bce_dice")

        def forward(self, logits, target):
            loss = self.inner(logits, target)
            if only_validation and torch.is_grad_enabled():
                return loss
            calls["n"] += 1
            return loss * float("nan") if calls["n"] > after_calls else loss

    monkeypatch.setattr(trainer_mod, "build_loss", lambda name, **kw: Poisoned())


def test_nan_validation_loss_is_never_kept(monkeypatch, tmp_path, one_thread):
    """Epoch 2's validation loss is NaN: epoch 2 is not committed, epoch 1 stays best and last, run.json says
    failed with a message naming epoch 1."""
    _poison(monkeypatch, after_calls=1, only_validation=True)  # 1 validation batch per epoch
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"validation loss became nan at epoch 2.*last good checkpoint \(epoch 1"):
        train(tiny_cfg(), run, show_progress=False)
    r = RunDir(run)
    assert r.status() == "failed" and r.epochs_done() == 1 and "epoch 1" in r.read_status()["message"]
    assert [row["epoch"] for row in _rows(run)] == ["1"]
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    assert json.loads((run / "best.json").read_text())["epoch"] == 1
    load_model(run / "last")


def test_nan_validation_logits_stop_the_run_as_a_training_failure(monkeypatch, tmp_path, one_thread):
    """Finite weights but NaN logits in epoch 2's validation (e.g. an fp16 overflow): the run stops with
    TrainingError (exit 1) and keeps epoch 1, not with the meter's refusal of NaN output (a user error, exit 2)."""
    real = trainer_mod.create_model
    evals = {"n": 0}

    def poisoned(*args, **kwargs):
        model = real(*args, **kwargs)
        forward = model.forward

        def nan_in_second_validation(x):
            out = forward(x)
            if not model.training:
                evals["n"] += 1
                if evals["n"] > 1:  # epoch 1 has one validation batch
                    return torch.full_like(out, float("nan"))
            return out

        model.forward = nan_in_second_validation
        return model

    monkeypatch.setattr(trainer_mod, "create_model", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"validation loss became nan at epoch 2.*last good checkpoint \(epoch 1"):
        train(tiny_cfg(), run, show_progress=False)
    assert RunDir(run).status() == "failed" and RunDir(run).epochs_done() == 1
    assert [row["epoch"] for row in _rows(run)] == ["1"]


def test_nan_in_the_first_epoch_keeps_no_checkpoint_and_the_folder_is_reusable(monkeypatch, tmp_path, one_thread):
    _poison(monkeypatch, after_calls=0)
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match="no epoch ended with finite losses, so no checkpoint is kept"):
        train(tiny_cfg(), run, show_progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "run.json", "split.json"]
    assert "epoch 0" not in RunDir(run).read_status()["message"]
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        RunDir(run).checkpoint_stem("best")
    monkeypatch.undo()
    train(tiny_cfg(epochs=1), run, show_progress=False)  # --out SAME reuses a failed run without a finished epoch
    assert RunDir(run).status() == "finished"


def test_diverging_lr_exits_1_and_never_finishes_with_nan(tmp_path, capsys, one_thread):
    """The issue's case: --lr 1e4 --loss dice."""
    from scunext.cli.main import main

    run = tmp_path / "r"
    code = main(["train", "--data", str(sample_dir("isic2017")), "--model", "unext_s", "--size", "64", "--epochs",
                 "2", "--split", "csv", "--max-train-images", "4", "--batch-size", "4", "--lr", "1e4", "--loss",
                 "dice", "--out", str(run), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "stopped" in err[0], err
    assert RunDir(run).status() == "failed"
    # it diverges in epoch 1: nothing of it is logged or kept (a NaN after a good epoch: the two tests above)
    assert "epoch 1" in err[0] and not (run / "log.csv").exists()
    assert not list(run.glob("best.*")) and not list(run.glob("last.*"))


def test_non_finite_weights_and_logits_are_refused(tmp_path):
    from scunext.deploy.predictor import Predictor

    model = create_model("unext_s", in_channels=3)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan", model, "unext_s", epoch=1)
    with pytest.raises(CheckpointError, match="hold NaN/inf"):
        load_model(tmp_path / "nan")

    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1, *x.shape[2:]), float("nan"))

    pred = Predictor(NaNNet(), in_channels=3, size=64, name="nan")
    with pytest.raises(CheckpointError, match="NaN/inf logits"):
        pred.predict([np.zeros((70, 90, 3), np.uint8)])


# --- nothing half-written -----------------------------------------------------------------------------------------
def _dataset(tmp_path: Path, n: int = 8) -> Path:
    src = sample_dir("isic2017")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for f in sorted((src / "images").iterdir())[:n]:
        shutil.copy(f, root / "images" / f.name)
        shutil.copy(src / "masks" / (f.stem + ".png"), root / "masks" / (f.stem + ".png"))
    return root


def _corrupt_fifth_image(root: Path) -> None:
    f = sorted((root / "images").iterdir())[4]
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])  # truncated JPEG: only a full decode finds it


def _bad_fifth_mask(root: Path) -> None:
    f = sorted((root / "masks").iterdir())[4]
    m = np.array(Image.open(f))
    m[0, 0] = 7
    Image.fromarray(m).save(f)


@pytest.mark.parametrize("extra, damage, needle", [
    (["--model-arg", "bogus=1"], None, "model_args"),
    (["--loss-arg", "bogus=1"], None, "bogus"),
    (["--size", "250"], None, "--size 256"),
    ([], _corrupt_fifth_image, "truncated"),
    ([], _bad_fifth_mask, "mask is not binary, values [0, 7, 255]"),
])  # fmt: skip
def test_mistakes_leave_no_folder(extra, damage, needle, tmp_path, capsys):
    from scunext.cli.main import main

    root = _dataset(tmp_path)
    if damage:
        damage(root)
    out = tmp_path / "runs" / "r"
    code = main(["train", "--data", str(root), "--model", "unext_s", "--size", "64", "--epochs", "1",
                 "--out", str(out), "--no-progress", *extra])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_failure_after_creation_marks_the_run_failed(monkeypatch, tmp_path, one_thread):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer_mod, "validate", boom)
    run = tmp_path / "r"
    with pytest.raises(RuntimeError):
        train(tiny_cfg(), run, show_progress=False)
    status = RunDir(run).read_status()
    assert status["status"] == "failed" and status["message"] == "RuntimeError: disk on fire"
    assert RunDir(run).reusable()


def test_mixed_gray_and_colour_images_train_in_colour(tmp_path, caplog, one_thread):
    root = _dataset(tmp_path)
    first = sorted((root / "images").iterdir())[0]
    Image.open(first).convert("L").save(root / "images" / (first.stem + ".png"))
    first.unlink()
    run = tmp_path / "r"
    with caplog.at_level("INFO"):
        train(load_config(None, {"data": str(root), "model": "unext_s", "size": 64, "epochs": 1, "batch_size": 4}),
              run, show_progress=False)  # fmt: skip
    assert load_config(run / "config.yaml").in_channels == 3
    assert "1 grayscale and 7 colour images" in caplog.text


def test_failed_resume_with_wrong_data_changes_nothing(runs, tmp_path, capsys):
    from scunext.cli.main import main

    work = tmp_path / "w"
    shutil.copytree(runs / "base", work)
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    wrong = _dataset(tmp_path, n=3)
    assert main(["train", "--resume", str(work), "--data", str(wrong), "--no-progress"]) == 2
    assert "images of this run are not in" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kind", ["file", "folder", "file inside the folder"])
def test_remove_tree_tolerates_another_process_removing_the_same_path(tmp_path, monkeypatch, kind):
    """Two writers replacing one report both remove the old files: the loser of that race must not crash."""
    target = tmp_path / "victim"
    if kind == "file":
        target.write_text("x")
    else:
        (target / "sub").mkdir(parents=True)
        for name in ("a", "b", "sub/c"):
            (target / name).write_text("x")

    def other_process_wins(op, path):  # runs between remove_tree's existence check and its removal
        if kind == "folder":
            shutil.rmtree(target)
        elif kind == "file":
            target.unlink()

    if kind == "file inside the folder":  # the other process unlinks "a" just before rmtree does
        real_unlink = os.unlink

        def racing_unlink(path, *args, **kwargs):
            if os.path.basename(path) == "a":
                real_unlink(path, *args, **kwargs)
            real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", racing_unlink)
    durable.FAULT_HOOK = other_process_wins
    try:
        durable.remove_tree(target)
    finally:
        durable.FAULT_HOOK = None
    assert not target.exists()


def test_remove_tree_still_reports_real_errors(tmp_path, monkeypatch):
    target = tmp_path / "victim"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "c").write_text("x")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(PermissionError):
        durable.remove_tree(target)


def test_atomic_write_onto_a_folder_fails_before_writing_anything(tmp_path):
    """The rename cannot replace a folder: refused first, so no ``NAME.tmpPID`` is left beside it (a calibration
    into an existing folder left one after minutes of work)."""
    (tmp_path / "quality.json").mkdir()
    with pytest.raises(IsADirectoryError):
        durable.atomic_write_text(tmp_path / "quality.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["quality.json"]


@pytest.mark.parametrize("cpu_amp", [False, True])
def test_cpu_amp_trains_under_bfloat16_autocast_and_is_saved(tmp_path, one_thread, cpu_amp):
    """``--cpu-amp`` runs the training and validation forwards under CPU bfloat16 autocast (off: float32), is
    written to config.yaml and kept on resume; an old config without the field loads as float32."""
    seen: list[torch.dtype | None] = []

    def record(module, args):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)

    real_create = trainer_mod.create_model

    def create_and_hook(*args, **kwargs):
        model = real_create(*args, **kwargs)
        model.register_forward_pre_hook(record)
        return model

    trainer_mod.create_model = create_and_hook
    try:
        train(tiny_cfg(epochs=1, device="cpu", cpu_amp=cpu_amp), tmp_path / "r", show_progress=False)
    finally:
        trainer_mod.create_model = real_create
    assert seen and set(seen) == {torch.bfloat16 if cpu_amp else None}, set(seen)
    saved = load_config(tmp_path / "r" / "config.yaml")
    assert saved.cpu_amp is cpu_amp
    assert trainer_mod.amp_dtype(saved, torch.device("cpu")) == (torch.bfloat16 if cpu_amp else None)
    old = (tmp_path / "r" / "config.yaml").read_text().replace(f"cpu_amp: {str(cpu_amp).lower()}\n", "")
    assert "cpu_amp" not in old
    (tmp_path / "old.yaml").write_text(old)
    assert load_config(tmp_path / "old.yaml").cpu_amp is False


def test_cpu_amp_without_native_bfloat16_warns(tmp_path, one_thread, monkeypatch, caplog):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="scunext.engine.trainer"):
        train(tiny_cfg(epochs=1, device="cpu", cpu_amp=True), tmp_path / "r", show_progress=False)
    assert any("no native bfloat16" in r.getMessage() for r in caplog.records)


def test_a_lost_torchrun_peer_leaves_the_run_resumable(monkeypatch, tmp_path, one_thread):
    """When another process of a torchrun job is killed, gloo raises "Connection closed by peer" here: that marked
    the run failed (the experiment runner then skipped it for good) and showed a traceback. It is an interrupted
    job: status stays running, one line (TrainingError), and --resume goes on."""
    from scunext.engine.distributed import DistInfo

    run = tmp_path / "r"
    train(tiny_cfg(epochs=2), run, show_progress=False, stop_after_epoch=1)

    def lost(*a, **k):
        raise RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                           "[127.0.0.1]:12345")  # fmt: skip

    two = (DistInfo(rank=0, world_size=2), torch.device("cpu"))
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: two)
    monkeypatch.setattr(trainer_mod, "_train", lost)
    monkeypatch.setattr(trainer_mod, "_check_world_size", lambda *a: None)  # (the run trained as 1 process)
    with pytest.raises(trainer_mod.PeerStopped, match="another process of this torchrun job stopped .*--resume"):
        train(None, run, resume=True, show_progress=False)
    assert RunDir(run).status() == "running" and RunDir(run).epochs_done() == 1
    monkeypatch.undo()
    assert train(None, run, resume=True, show_progress=False).epochs_done == 2


def test_a_resume_refused_for_another_process_count_changes_nothing(monkeypatch, tmp_path, one_thread):
    """The process-count check ran after the resume was prepared: config.yaml and run.json had recorded a move
    (num_workers 0 -> 1) that never happened."""
    from scunext.engine.distributed import DistInfo

    run = tmp_path / "r"
    train(tiny_cfg(epochs=2), run, show_progress=False, stop_after_epoch=1)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    two = (DistInfo(rank=0, world_size=2), torch.device("cpu"))
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: two)
    with pytest.raises(RunFolderError, match=r"trained with 1 process\(es\).*\(without torchrun\)"):
        train(None, run, resume=True, show_progress=False, resume_overrides={"num_workers": 1})
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before


def test_dataloader_workers_leave_stop_signals_to_the_main_process():
    """A worker killed by Ctrl+C/SIGTERM made PyTorch raise "DataLoader worker exited unexpectedly" in place of the
    interruption, and the run was marked failed: the trainer's workers ignore both signals."""
    import signal

    from scunext.config import load_config as _load
    from scunext.engine.distributed import DistInfo

    class Probe(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor([signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                                 signal.getsignal(signal.SIGTERM) is trainer_mod._quiet_exit])  # fmt: skip

    loader = trainer_mod._loader(Probe(), _load(None, {"num_workers": 1, "batch_size": 2}), False, DistInfo(), None)
    assert next(iter(loader)).all()


def test_a_stop_for_another_process_nan_does_not_name_a_finite_loss():
    """Under DDP the ranks stop together when any loss is NaN; rank 0 wrote its own finite loss as the reason."""
    assert trainer_mod._stopped_loss(float("nan")) == "nan" and trainer_mod._stopped_loss(float("inf")) == "inf"
    assert trainer_mod._stopped_loss(1.081) == "non-finite on another process"


def test_other_torchrun_processes_stop_with_process_0s_refusal(monkeypatch, tmp_path, one_thread):
    """Only process 0 checks the checkpoints and takes the lock (prepare_resume / create); the others waited for it
    at a barrier and, when it exited with its one-line refusal, failed with a gloo "Connection closed by peer"
    traceback. Now process 0 sends its refusal (or None) and the others stop with it as one line."""
    from scunext.engine.distributed import DistInfo

    run = tmp_path / "r"
    train(tiny_cfg(epochs=2), run, show_progress=False, stop_after_epoch=1)
    damaged = run / "last.safetensors"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    sent = []
    monkeypatch.setattr(trainer_mod, "_check_world_size", lambda *a: None)  # (the run trained as 1 process)
    monkeypatch.setattr(trainer_mod, "broadcast_object", lambda obj: sent.append(obj) or obj)
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(0, 2), torch.device("cpu")))
    with pytest.raises(RunFolderError, match="last.safetensors differs from the epoch-1 commit") as refused:
        train(None, run, resume=True, show_progress=False)
    assert sent == [str(refused.value)]  # process 0 told the others before raising

    reason = "r: last.safetensors differs from the epoch-1 commit record"
    monkeypatch.setattr(trainer_mod, "broadcast_object", lambda obj: reason)  # what process 0 sent
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(1, 2), torch.device("cpu")))
    monkeypatch.setattr(trainer_mod, "_train", lambda *a: pytest.fail("process 1 trained without process 0"))
    with pytest.raises(trainer_mod.StartRefused, match=f"^process 0 of this torchrun job did not start the run: "
                                                       f"{reason}$"):  # fmt: skip
        train(None, run, resume=True, show_progress=False)
    assert isinstance(trainer_mod.StartRefused("x"), RunFolderError)  # the CLI's one-line exit 2

    def gone(obj):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [::1]:1")

    monkeypatch.setattr(trainer_mod, "broadcast_object", gone)  # another process stopped before (its own error)
    with pytest.raises(trainer_mod.StartRefused, match="stopped before the run started .*nothing was trained"):
        train(None, run, resume=True, show_progress=False)
    fresh = tmp_path / "fresh"  # process 0 created a new run, another process died: the same command may retry
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(0, 2), torch.device("cpu")))
    with pytest.raises(trainer_mod.StartRefused, match="stopped before the run started"):
        train(tiny_cfg(epochs=1), fresh, show_progress=False)
    assert RunDir(fresh).status() == "failed" and RunDir(fresh).reusable()
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(1, 2), torch.device("cpu")))
    monkeypatch.setattr(trainer_mod, "broadcast_object", lambda obj: None)  # process 0 started it: train on
    monkeypatch.setattr(trainer_mod, "_train", lambda *a: "trained")
    assert train(None, run, resume=True, show_progress=False) == "trained"


def test_more_torchrun_processes_than_training_images_is_refused(monkeypatch, tmp_path, one_thread):
    """DistributedSampler pads a short share with repeats: 5 processes on 4 training images trained one image twice
    an epoch without a word."""
    from scunext.engine.distributed import DistInfo

    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(0, 5), torch.device("cpu")))
    with pytest.raises(ConfigError, match=r"^5 processes but 4 training image\(s\).*--nproc_per_node 4$"):
        train(tiny_cfg(max_train_images=4), tmp_path / "r", show_progress=False)
    assert not (tmp_path / "r").exists()
    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: (DistInfo(0, 4), torch.device("cpu")))
    monkeypatch.setattr(trainer_mod, "broadcast_object", lambda obj: obj)
    monkeypatch.setattr(trainer_mod, "_train", lambda *a: "trained")
    assert train(tiny_cfg(max_train_images=4), tmp_path / "r", show_progress=False) == "trained"


def _as_if_written_by(run: Path, edit) -> None:
    """Change config.yaml and the commit record's settings alike, as an older version (or an older bound) left
    them: ``edit(mapping)`` changes the mapping in place."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    edit(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    status = json.loads((run / "run.json").read_text())
    edit(status["commit"]["config"])
    (run / "run.json").write_text(json.dumps(status, indent=2))


def test_a_run_of_an_older_version_resumes_after_an_interrupted_move(tmp_path, one_thread):
    """A resume that moves a run (--num-workers, --device, --data) rewrites config.yaml in the current format, which
    adds the settings introduced since (at their defaults). Interrupted before the next epoch committed, the run was
    refused for good: "not the settings the run was trained with (split_id_column None -> 'image_id')"."""
    run = tmp_path / "r"
    train(tiny_cfg(epochs=3), run, show_progress=False, stop_after_epoch=1)
    _as_if_written_by(run, lambda c: (c.pop("split_id_column"), c["augment"].pop("blur_p")))
    rd = RunDir(run)
    rd.verify()  # the older run itself is fine
    old = rd.load_config()
    rd.record_move(old, load_config(None, {**old.to_dict(), "num_workers": 1}), {"num_workers": 1})  # then killed
    assert "split_id_column: image_id" in (run / "config.yaml").read_text()
    RunDir(run).verify()
    assert train(None, run, resume=True, show_progress=False, stop_after_epoch=2).epochs_done == 2
    # a real edit is still refused, also of a setting the record lacks when it is not at its default
    text = (run / "config.yaml").read_text()
    for edited in (text.replace("lr: 0.001", "lr: 0.002"), text + "bogus_new_setting: 3\n"):
        (run / "config.yaml").write_text(edited)
        with pytest.raises(RunFolderError, match="not the settings the run was trained with"):
            RunDir(run).verify()
    (run / "config.yaml").write_text(text)
    _as_if_written_by(run, lambda c: c.pop("cpu_amp"))  # an added key (now at default) and an edit
    (run / "config.yaml").write_text((run / "config.yaml").read_text() + "cpu_amp: true\n")
    with pytest.raises(RunFolderError, match=r"cpu_amp None -> True"):
        RunDir(run).verify()


def test_a_run_trained_before_a_bound_was_added_still_loads(tmp_path, one_thread):
    """seed < 2**31 and num_workers <= 64 were added after runs existed: a run trained with seed 3000000000 was
    refused by evaluate, predict and --resume ("invalid config: seed must be in [0, 2**31)"), and --num-workers
    could not lower the workers of one that had 100 because the saved config was refused first."""
    from scunext.engine.evaluate import evaluate_run

    run = tmp_path / "r"
    train(tiny_cfg(epochs=2), run, show_progress=False, stop_after_epoch=1)
    _as_if_written_by(run, lambda c: c.update(seed=3_000_000_000))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("num_workers: 0", "num_workers: 100"))
    cfg = RunDir(run).load_config()
    assert (cfg.seed, cfg.num_workers) == (3_000_000_000, 100)
    with pytest.raises(ConfigError, match=r"num_workers must be <= 64"):  # a new value is checked as new
        train(None, run, resume=True, show_progress=False, resume_overrides={"num_workers": 1000})
    result = train(None, run, resume=True, show_progress=False, resume_overrides={"num_workers": 0})
    assert result.epochs_done == 2 and RunDir(run).load_config().seed == 3_000_000_000
    assert evaluate_run(run, show_progress=False)["n_images"] > 0
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*31\)"):  # a new run keeps the bound
        load_config(None, {**cfg.to_dict(), "num_workers": 0})
