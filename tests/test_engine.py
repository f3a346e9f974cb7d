"""Training engine, checkpoints, evaluation and prediction, end to end on the shipped real sample."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scunext.config import TrainConfig, load_config
from scunext.data import sample_dir
from scunext.engine import trainer as trainer_mod
from scunext.engine.evaluate import ReportExistsError, evaluate_run
from scunext.engine.trainer import RunFolderError, TrainingError, train
from scunext.models import create_model
from scunext.runs import CheckpointError, durable, load_model, save_checkpoint

FAST = dict(model="unext_s", size=64, epochs=2, batch_size=4, lr=1e-3, split="csv")


def fast_cfg(**kw) -> TrainConfig:
    return load_config(None, {"data": str(sample_dir("isic2017")), **FAST, **kw})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "r"
    train(fast_cfg(), run, show_progress=False)
    return run


def _log(run):
    return list(csv.DictReader((run / "log.csv").open()))


def test_run_folder_contents(finished_run):
    run = finished_run
    for name in ["config.yaml", "split.json", "run.json", "log.csv", "curves.png", "best.safetensors", "best.json",
                 "last.safetensors", "last.json", "train_state.safetensors", "train_state.json"]:  # fmt: skip
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == fast_cfg(in_channels=3)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs_done"] == 2
    split = json.loads((run / "split.json").read_text())
    counts = {part: len(split[part]) for part in ("train", "val", "test")}
    assert counts == split["counts"] == {"train": 18, "val": 4, "test": 8}  # official split of the sample, by part
    rows = _log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(r["val_dice"] for r in rows)
    best = json.loads((run / "best.json").read_text())
    assert best["selected_on"] == "val" and best["model"] == "unext_s"
    assert float(rows[best["epoch"] - 1]["val_dice"]) == pytest.approx(max(float(r["val_dice"]) for r in rows))


def test_deterministic_on_cpu(finished_run, tmp_path):
    again = tmp_path / "again"
    train(fast_cfg(), again, show_progress=False)
    a, b = _log(finished_run), _log(again)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    wa, wb = load_file(str(finished_run / "last.safetensors")), load_file(str(again / "last.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_number_of_dataloader_workers_does_not_change_the_run(finished_run, tmp_path):
    """Each sample is augmented with a seed from (seed, epoch, sample) alone. The augmentation stream came from the
    main process with 0 workers and from the workers' own seeds otherwise, so --num-workers 2 trained other
    weights, and a run resumed with another --num-workers (which resume allows) matched neither."""
    workers = tmp_path / "w2"
    train(fast_cfg(num_workers=2), workers, show_progress=False)
    wa, wb = load_file(str(finished_run / "last.safetensors")), load_file(str(workers / "last.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["train_loss"] for r in _log(finished_run)] == [r["train_loss"] for r in _log(workers)]


def test_resume_continues_exactly(tmp_path):
    cfg = fast_cfg(epochs=3)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    train(cfg, straight, show_progress=False)
    train(cfg, cut, show_progress=False, stop_after_epoch=1)
    assert json.loads((cut / "run.json").read_text())["status"] == "running"
    train(None, cut, resume=True, show_progress=False)
    wa, wb = load_file(str(straight / "last.safetensors")), load_file(str(cut / "last.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["val_dice"] for r in _log(straight)] == [r["val_dice"] for r in _log(cut)]


def test_resume_errors(finished_run, tmp_path):
    with pytest.raises(RunFolderError, match="already finished"):
        train(None, finished_run, resume=True, show_progress=False)
    with pytest.raises(RunFolderError, match="does not exist"):
        train(None, tmp_path / "missing", resume=True, show_progress=False)
    with pytest.raises(RunFolderError, match="not empty"):
        train(fast_cfg(), finished_run, show_progress=False)


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: t.replace("epochs: 3", "epochs: 4"), "epochs 3 -> 4"),
    (lambda t: t.replace("lr: 0.001", "lr: 0.01"), "lr 0.001 -> 0.01"),
    (lambda t: t.replace("batch_size: 4", "batch_size: 2"), "batch_size 4 -> 2"),
])
def test_a_config_edited_between_stop_and_resume_is_refused(edit, said, tmp_path):
    """config.yaml was read on resume without a check: a run stopped at epoch 1 of 3 and resumed with epochs: 4 went
    on with the 3-epoch cosine schedule of its train_state past its end, and an edited lr was ignored while the file
    claimed it. The commit record holds the settings; only --device, --data and --num-workers may change."""
    run = tmp_path / "cut"
    train(fast_cfg(epochs=3), run, show_progress=False, stop_after_epoch=1)
    cfg = run / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(edit(text))
    expected = f"not the settings the run was trained with up to epoch 1 \\({re.escape(said)}"
    with pytest.raises(RunFolderError, match=expected):
        train(None, run, resume=True, show_progress=False)
    cfg.write_text(text.replace("num_workers: 0", "num_workers: 1"))  # where it runs may change: resumes
    train(None, run, resume=True, show_progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = trainer_mod.build_loss
    calls = {"n": 0}

    class Poisoned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = real("bce_dice")

        def forward(self, logits, target):
            calls["n"] += 1
            loss = self.inner(logits, target)
            return loss * float("nan") if calls["n"] > 7 else loss  # epoch 1: 5 train + 1 val batch

    monkeypatch.setattr(trainer_mod, "build_loss", lambda name, **kw: Poisoned())
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match="loss became nan at epoch 2"):
        train(fast_cfg(), run, show_progress=False)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "nan" in status["message"]
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    load_model(run / "last")  # still loadable


def test_checkpoint_errors(finished_run, tmp_path):
    with pytest.raises(CheckpointError, match="expected 'sc_unext'"):
        load_model(finished_run / "best", expected_model="sc_unext")
    bad = tmp_path / "bad"
    (tmp_path / "bad.json").write_text((finished_run / "best.json").read_text())
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(bad)
    # weights of another architecture under this metadata
    save_checkpoint(tmp_path / "other", create_model("sc_unext"), "sc_unext")
    meta = json.loads((tmp_path / "other.json").read_text())
    meta["model"], meta["model_args"] = "unext_s", {"in_channels": 3, "num_classes": 1}
    (tmp_path / "other.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "other")
    (tmp_path / "nojson.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_model(tmp_path / "nojson")


def test_evaluate_report_and_batch_invariance(finished_run, tmp_path):
    a = evaluate_run(finished_run, out_dir=tmp_path / "a", batch_size=1, show_progress=False)
    b = evaluate_run(finished_run, out_dir=tmp_path / "b", batch_size=8, show_progress=False)
    assert a["n_images"] == 8 and a["subset"] == "test"
    for m in ("dice", "iou", "precision", "recall", "specificity"):
        assert set(a[m]) >= {"per_image_mean", "per_image_std", "pooled"}
        # the metric itself is per image (tests/test_metrics.py checks exact invariance); here only the network's
        # float arithmetic may differ with the batch size and flip a pixel at the threshold
        for k in ("per_image_mean", "pooled"):
            assert a[m][k] == pytest.approx(b[m][k], abs=1e-3)
    assert "per_image_mean" in a["hd95"]
    rows = list(csv.DictReader((tmp_path / "a" / "per_image.csv").open()))
    assert len(rows) == 8 and np.mean([float(r["dice"]) for r in rows]) == pytest.approx(a["dice"]["per_image_mean"])
    assert (tmp_path / "a" / "worst.png").is_file() and (tmp_path / "a" / "metrics.json").is_file()


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("crash_at", ["per_image.csv", "worst.png", "metrics.json"])
def test_evaluate_replaces_a_report_all_or_nothing(finished_run, tmp_path, crash_at):
    """An existing report in a chosen --out is never overwritten without overwrite=True; a crash while a report
    is replaced leaves no metrics.json (the mark every reader checks), so no reader sees old metrics beside new
    per-image rows; the next evaluation sweeps the leftovers and writes the same report."""
    out = tmp_path / "ev"
    evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
    first = _files(out)
    assert set(first) == {"per_image.csv", "worst.png", "metrics.json"}
    with pytest.raises(ReportExistsError, match="already holds a report"):
        evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
    assert _files(out) == first

    def crash(op, path):
        if op == "rename" and path.name == crash_at:
            raise OSError("injected crash")

    durable.FAULT_HOOK = crash
    try:
        with pytest.raises(OSError, match="injected"):
            evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False, overwrite=True)
    finally:
        durable.FAULT_HOOK = None
    assert not (out / "metrics.json").exists()
    assert any(".tmp" in name for name in _files(out))  # the interrupted write's leftover
    evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False, overwrite=True)
    again = _files(out)
    assert set(again) == set(first)
    assert again["per_image.csv"] == first["per_image.csv"]
    strip = lambda b: {k: v for k, v in json.loads(b).items() if k != "run"}  # noqa: E731
    assert strip(again["metrics.json"]) == strip(first["metrics.json"])


def test_evaluate_sweeps_only_orphans_of_dead_writers(finished_run, tmp_path):
    """A ``*.tmpPID`` of a process that is gone is an orphan and removed; one of a process still running is another
    evaluation's write in progress and is left alone (removing it would crash that process's rename)."""
    out = tmp_path / "ev"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / f"per_image.csv.tmp{int(done.stdout)}").write_text("orphan")
        (out / f"metrics.json.tmp{live.pid}").write_text("in progress")
        (out / "notes.tmp1").write_text("a user's file")
        evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["metrics.json", "per_image.csv", "worst.png", f"metrics.json.tmp{live.pid}", "notes.tmp1"]
        )
    finally:
        live.kill()
        live.wait()


def test_a_report_written_meanwhile_by_another_evaluation_is_not_overwritten(finished_run, tmp_path, monkeypatch):
    """Two evaluations into one new --out: both find it empty at the start; the one that finishes second must
    refuse (a user's report) instead of overwriting the first one's files, and leave them as they are."""
    from scunext.engine import evaluate as ev_mod

    out = tmp_path / "ev"
    real_compute = ev_mod.SegmentationMeter.compute

    def other_finishes_first(self):
        if not (out / "metrics.json").exists():
            out.mkdir(exist_ok=True)
            for name in ("per_image.csv", "metrics.json"):
                (out / name).write_text(f"the other evaluation's {name}")
        return real_compute(self)

    monkeypatch.setattr(ev_mod.SegmentationMeter, "compute", other_finishes_first)
    with pytest.raises(ReportExistsError, match="already holds a report"):
        evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
    assert _files(out) == {n: f"the other evaluation's {n}".encode() for n in ("metrics.json", "per_image.csv")}


def test_report_writers_of_one_folder_take_turns(finished_run, tmp_path, monkeypatch, lock_holder):
    """While another process writes a report into the folder (holds its writer lock), an evaluation waits for it;
    if it does not finish in time the evaluation says who holds it and writes nothing."""
    from scunext.engine import evaluate as ev_mod
    from scunext.runs import RunInUseError

    out = tmp_path / "ev"
    out.mkdir()
    holder = lock_holder(out)
    monkeypatch.setattr(ev_mod, "REPORT_LOCK_WAIT_S", 0.3)
    with pytest.raises(RunInUseError, match=f"pid {holder.proc.pid}"):
        evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
    assert not any(n in _files(out) for n in ("metrics.json", "per_image.csv", "worst.png"))
    monkeypatch.setattr(ev_mod, "REPORT_LOCK_WAIT_S", 60.0)
    holder.kill()  # the lock dies with its holder: the next evaluation writes at once
    evaluate_run(finished_run, out_dir=out, hd95=False, show_progress=False)
    assert {"metrics.json", "per_image.csv", "worst.png"} <= set(_files(out))
    assert ".writer.lock" not in _files(out)  # released: a folder nobody writes holds no lock file


def test_predict_native_resolution_and_errors(finished_run, tmp_path, capsys):
    from scunext.cli.main import main

    img = np.array(Image.open(next((sample_dir("isic2017") / "images").iterdir())).resize((300, 200)))
    Image.fromarray(img).save(tmp_path / "odd.png")
    Image.fromarray(img[..., 0]).save(tmp_path / "gray.png")
    out = tmp_path / "pred"
    assert main(["predict", str(finished_run), str(tmp_path / "odd.png"), str(tmp_path / "gray.png"),
                 "--out", str(out)]) == 0  # fmt: skip
    mask = np.array(Image.open(out / "odd_mask.png"))
    assert mask.shape == (200, 300) and set(np.unique(mask)) <= {0, 255}
    assert (out / "odd_overlay.png").is_file() and (out / "gray_mask.png").is_file()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out2 = tmp_path / "pred2"
    assert main(["predict", str(finished_run), str(tmp_path / "odd.png"), str(tmp_path / "broken.png"),
                 "--out", str(out2)]) == 2  # fmt: skip
    assert not out2.exists()  # nothing half-written
    assert "broken.png" in capsys.readouterr().err


@pytest.mark.parametrize("argv_tail, needle", [
    (["--data", "/nonexistent/folder"], "not found"),
    (["--epochs", "0"], "epochs"),
    (["--set", "nonsense=1"], "unknown config key"),
    (["--model-arg", "pfm"], "KEY=VALUE"),
])  # fmt: skip
def test_train_cli_user_errors(argv_tail, needle, tmp_path, capsys):
    from scunext.cli.main import main

    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress", *argv_tail]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "r").exists()


def _copy_sample(tmp_path, n=6):
    src = sample_dir("isic2017")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for f in sorted((src / "images").iterdir())[:n]:
        (root / "images" / f.name).write_bytes(f.read_bytes())
        (root / "masks" / (f.stem + ".png")).write_bytes((src / "masks" / (f.stem + ".png")).read_bytes())
    return root


def test_train_cli_bad_data(tmp_path, capsys):
    from scunext.cli.main import main

    root = _copy_sample(tmp_path)
    mask = next((root / "masks").iterdir())
    m = np.array(Image.open(mask))
    m[0, 0] = 7
    Image.fromarray(m).save(mask)
    args = ["train", "--data", str(root), "--model", "unext_s", "--size", "64", "--epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 2
    assert "mask is not binary, values [0, 7, 255]" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "r2"), "--threshold-masks"]) == 0
    next((root / "masks").iterdir()).unlink()
    assert main([*args, "--out", str(tmp_path / "r3")]) == 2
    assert "1 image(s) without a mask" in capsys.readouterr().err


def test_ddp_two_processes_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scunext.cli.main", "train", "--data", str(sample_dir("isic2017")), "--model", "unext_s",
           "--size", "64", "--epochs", "2", "--batch-size", "4", "--split", "csv", "--out", str(run), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["world_size"] == 2
    assert [int(r["epoch"]) for r in _log(run)] == [1, 2]  # one coherent log: rank 0 only
    load_model(run / "best")
    assert res.stdout.count("run:") == 1


def test_channels_last_training_is_the_same_function(finished_run, tmp_path):
    """``channels_last`` (the default: the fastest CPU path) only changes the memory layout: the same losses as
    NCHW up to float rounding, loadable weights."""
    assert TrainConfig().channels_last and fast_cfg().channels_last  # finished_run trained channels_last
    run = tmp_path / "nchw"
    train(fast_cfg(channels_last=False), run, show_progress=False)
    a, b = _log(finished_run), _log(run)
    for ra, rb in zip(a, b):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-3)
    model, _ = load_model(run / "best")
    assert next(model.parameters()).is_contiguous()  # checkpoints hold plain tensors


def test_amp_dtype_choice():
    from scunext.config import ConfigError, load_config
    from scunext.engine.trainer import amp_dtype

    cfg = load_config(None, {"amp_dtype": "float16"})
    assert amp_dtype(cfg, torch.device("cpu")) is None  # autocast is a CUDA-only option here
    assert load_config(None, {"amp_dtype": "bfloat16"}).amp_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="amp_dtype"):
        load_config(None, {"amp_dtype": "int8"})


def test_resume_on_another_machine_records_the_move(tmp_path, capsys):
    """A run may continue with another --data folder / --device (e.g. started on a GPU box, finished on a laptop);
    what it trains cannot change, and the move is recorded."""
    import shutil

    from scunext.cli.main import main
    from scunext.config import load_config
    from scunext.data import sample_dir
    from scunext.engine.trainer import train

    run = tmp_path / "run"
    cfg = load_config(None, {"data": str(sample_dir("chest-xray-lungs")), "model": "unext_s", "size": 64,
                             "epochs": 2, "batch_size": 8, "max_train_images": 8})  # fmt: skip
    train(cfg, run, show_progress=False, stop_after_epoch=1)
    moved = tmp_path / "moved-data"
    shutil.copytree(sample_dir("chest-xray-lungs"), moved)
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert "only --device, --data and --num-workers" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--data", str(moved), "--device", "cpu", "--no-progress"]) == 0
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs_done"] == 2
    assert status["moves"] == [{"after_epoch": 1, "data": [cfg.data, str(moved.resolve())], "device": ["auto", "cpu"]}]
    assert load_config(run / "config.yaml").data == str(moved.resolve())


def test_validation_builds_no_graph():
    """validate() must not record autograd history (memory and time): its loss comes back as a plain float."""
    from scunext.engine.trainer import validate
    from scunext.losses import build_loss

    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    batch = {"image": torch.randn(2, 1, 8, 8), "mask": torch.ones(2, 1, 8, 8), "id": ["a", "b"]}
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    validate(model, [batch], build_loss("bce_dice"), torch.device("cpu"), False)
    assert seen == [False]


def test_max_images_with_a_csv_split_is_not_a_missing_file(tmp_path, caplog):
    """--max-images 12 on the 30-image sample with its CSV split warned that 18 listed ids "are not among the
    dataset's images" and recorded them as listed_but_absent (files missing from disk): they were only left out by
    --max-images. The split keeps each chosen image's CSV part."""
    import logging

    from scunext.data import csv_split, discover_pairs
    from scunext.engine.trainer import build_split

    cfg = fast_cfg(max_images=12)
    ids = [p.id for p in discover_pairs(sample_dir("isic2017"))]
    with caplog.at_level(logging.WARNING):
        split = build_split(cfg, ids, sample_dir("isic2017"))
    assert not [r for r in caplog.records if "not among the dataset's images" in r.getMessage()]
    assert "listed_but_absent" not in split.description and split.description["max_images"] == 12
    full = csv_split(sample_dir("isic2017") / "splits.csv", cfg.split_column, ids=ids)
    chosen = set(split.train) | set(split.val) | set(split.test)
    assert len(chosen) == 12 and set(split.test) == set(full.test) & chosen and set(split.train) <= set(full.train)


def test_a_config_edited_while_the_run_trains_is_not_recorded_as_its_settings(tmp_path, monkeypatch, caplog):
    """The commit recorded config.yaml as it was on disk: an edit made while the run trained (epochs 40 -> 44,
    lr) became the run's recorded settings, and --resume then trained half and half. The commit keeps the values
    the trainer holds for the edited keys (with a warning), so the resume refuses the edited file."""
    from scunext.runs import RunDir

    real = RunDir.commit_epoch

    def edit_then_commit(self, epoch, *args, **kwargs):
        if epoch == 1:  # the user edits the file while epoch 1 trains
            self.config_file.write_text(self.config_file.read_text().replace("lr: 0.001", "lr: 0.01"))
        return real(self, epoch, *args, **kwargs)

    run = tmp_path / "r"
    monkeypatch.setattr(RunDir, "commit_epoch", edit_then_commit)
    with caplog.at_level("WARNING"):
        train(fast_cfg(epochs=3), run, show_progress=False, stop_after_epoch=1)
    assert "was changed while the run trains (lr)" in caplog.text
    assert json.loads((run / "run.json").read_text())["commit"]["config"]["lr"] == 0.001
    with pytest.raises(RunFolderError, match="lr 0.001 -> 0.01"):
        train(None, run, resume=True, show_progress=False)


def test_resume_with_another_process_count_is_refused(tmp_path):
    """A run trained by 2 DDP processes and resumed by one trained its next epochs with half the global batch and
    another data order, and overwrote world_size in run.json without a word."""
    run = tmp_path / "r"
    train(fast_cfg(epochs=3), run, show_progress=False, stop_after_epoch=1)
    status = json.loads((run / "run.json").read_text())
    assert status["world_size"] == 1
    (run / "run.json").write_text(json.dumps({**status, "world_size": 2}))  # as a 2-process run leaves it
    with pytest.raises(RunFolderError, match=r"trained with 2 process\(es\) .* this is 1"):
        train(None, run, resume=True, show_progress=False)


@pytest.mark.parametrize("extra", [{"batch_size": 1}, {"batch_size": 4, "max_train_images": 9}])
def test_a_batch_of_one_the_model_cannot_train_on_is_refused_up_front(tmp_path, extra):
    """UNeXt-S at --size 32 has a 1x1 bottleneck: a batch of one image (--batch-size 1, or a last batch of one)
    raised BatchNorm's traceback mid-epoch and left a failed run folder."""
    from scunext.config import ConfigError

    with pytest.raises(ConfigError, match="cannot train on a batch of one image at size 32"):
        train(fast_cfg(model="unext_s", size=32, epochs=1, **extra), tmp_path / "r", show_progress=False)
    assert not (tmp_path / "r").exists()


def test_a_run_of_an_older_version_resumes_again_and_again(tmp_path, caplog):
    """Older runs' config.yaml hold `augment: {}` (or a shorter augment mapping) and `hd95_in_val: false`: the
    edit check compared that raw file with the full settings, warned of an edit nobody made, recorded the filled-in
    mapping, and the next resume refused the untouched file."""
    run = tmp_path / "old"
    train(fast_cfg(epochs=3), run, show_progress=False, stop_after_epoch=1)
    cfg = run / "config.yaml"
    lines = cfg.read_text().splitlines()
    start = lines.index("augment:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    old = "\n".join([*lines[:start], "augment: {}", *lines[end:], "hd95_in_val: false"]) + "\n"
    cfg.write_text(old)
    status = json.loads((run / "run.json").read_text())
    from scunext.runs import RunDir

    status["commit"]["config"] = RunDir(run)._settings()  # as an older version recorded it: the file itself
    (run / "run.json").write_text(json.dumps(status))
    with caplog.at_level("WARNING"):
        train(None, run, resume=True, show_progress=False, stop_after_epoch=2)
        train(None, run, resume=True, show_progress=False)
    assert "was changed while the run trains" not in caplog.text
    assert json.loads((run / "run.json").read_text())["status"] == "finished" and cfg.read_text() == old


def test_the_batch_of_one_check_counts_each_process_share():
    """Under DDP each process trains on ceil(n / world_size) images: 18 images in batches of 17 on 2 processes are
    one batch of 9 each (was refused), in batches of 8 a last batch of one each (was missed: both ranks crashed)."""
    from scunext.config import ConfigError

    model = create_model("unext_s", in_channels=3)
    cfg = fast_cfg(model="unext_s", size=32, batch_size=17)
    trainer_mod._check_single_image_batch(model, cfg, -(-18 // 2))
    with pytest.raises(ConfigError, match="9 training images \\(per process\\) in batches of 8"):
        trainer_mod._check_single_image_batch(model, fast_cfg(model="unext_s", size=32, batch_size=8), -(-18 // 2))


def test_a_split_csv_with_another_id_column_gives_the_same_split(tmp_path):
    """The id column of a split CSV was fixed to image_id (no flag): a CSV with its ids under another name was
    refused. --split-id-column names it; the split is the one the same CSV gives under image_id."""
    from pathlib import Path

    data = sample_dir("isic2017")
    rows = list(csv.DictReader((data / "splits.csv").open()))
    mine = tmp_path / "mine.csv"
    with mine.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "part"])
        w.writerows([(r["image_id"], r["isic2017_split"]) for r in rows])
    ids = [p.id for p in trainer_mod.discover_pairs(data)]
    default = trainer_mod.build_split(load_config(None, {"data": str(data), "split": "csv"}), ids, Path(data))
    cfg = load_config(None, {"data": str(data), "split": "csv", "split_csv": str(mine), "split_column": "part",
                             "split_id_column": "file"})  # fmt: skip
    split = trainer_mod.build_split(cfg, ids, Path(data))
    assert (split.train, split.val, split.test) == (default.train, default.val, default.test) and split.test
    assert split.description["id_column"] == "file"
    old = load_config(None, {k: v for k, v in cfg.to_dict().items() if k != "split_id_column"})  # an older run
    assert old.split_id_column == "image_id"
