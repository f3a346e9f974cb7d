"""The experiment runners end to end on the shipped sample (1 epoch): table structure, numbers from run folders or
their portable records, resumability, the leaderboard's plan, paired columns and latency cache."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from scunext.cli.main import main
from scunext.data import sample_dir
from scunext.experiments import TABLE2_CONFIGS
from scunext.runs import RunDir


def _metrics(run: str) -> dict:
    from pathlib import Path

    return json.loads((Path(run) / "eval" / "test" / "metrics.json").read_text())


def test_table1_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "t1"
    argv = ["experiment", "table1", "--data", str(sample_dir("isic2017")), "--out", str(out), "--epochs", "1",
            "--seeds", "2", "--size", "64", "--models", "unext_s,sc_unext"]  # fmt: skip
    assert main(argv) == 0
    md = (out / "table1.md").read_text()
    assert "| `unext_s` | 253,561 | 0.099 |" in md and "| `sc_unext` | 253,345 | 0.091 |" in md
    assert md.startswith("Data: `isic2017`; split:")  # the dataset's name: no machine's path in a committed table
    assert "Paired difference SC-UNeXt − UNeXt-S" in md and "86.64 / 78.71" in md
    rows = list(csv.DictReader((out / "table1.csv").open()))
    assert len(rows) == 4 and {r["split"] for r in rows} == {"seed 0", "seed 1"}
    for r in rows:  # every number comes from a run folder
        m = _metrics(r["run"])
        assert float(r["dice"]) == pytest.approx(m["dice"]["per_image_mean"])
        assert float(r["iou"]) == pytest.approx(m["iou"]["per_image_mean"])
    paired = list(csv.DictReader((out / "table1_paired.csv").open()))
    assert len(paired) == 2
    assert all(float(p["difference"]) == pytest.approx(float(p["sc_unext"]) - float(p["unext_s"])) for p in paired)
    # and per image (the per-split means alone cannot tell a tenth of a point from image sampling)
    images = list(csv.DictReader((out / "table1_paired_images.csv").open()))
    n_test = sum(_metrics(r["run"])["n_images"] for r in rows if r["model"] == "sc_unext")  # 6 per split
    assert [(r["model"], r["reference"], r["groups"], r["n_images"]) for r in images] == [("unext_s", "sc_unext", "2",
                                                                                          str(n_test))]  # fmt: skip
    per_split = [float(d) for d in images[0]["per_split_differences"].split(";")]
    assert per_split == pytest.approx([-float(p["difference"]) for p in paired], abs=1e-6)  # unext_s − sc_unext
    assert "| `unext_s` − `sc_unext` |" in md and images[0]["verdict"] in md
    assert (out / "table1.png").is_file()
    written = capsys.readouterr().out.splitlines()[-1]  # the closing line names every file the table wrote
    assert written.startswith("written: ") and all(str(out / f) in written for f in
                                                    ("table1.md", "table1.csv", "table1_paired.csv",
                                                     "table1_paired_images.csv", "table1.png"))  # fmt: skip
    # resumable: a second call trains nothing
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("done, skipped") == 4
    # other settings in the same folder are refused
    assert main([*argv[:-2], "--models", "unext_s", "--lr", "0.5"]) == 2
    assert "holds an experiment with other settings (base_config: lr, models)" in capsys.readouterr().err


def test_table2_end_to_end(tmp_path):
    out = tmp_path / "t2"
    argv = ["experiment", "table2", "--data", str(sample_dir("isic2017")), "--out", str(out), "--epochs", "1",
            "--folds", "2", "--images", "20", "--size", "64"]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "table2.csv").open()))
    assert len(rows) == 2 * len(TABLE2_CONFIGS)
    for r in rows:
        assert float(r["dice"]) == pytest.approx(_metrics(r["run"])["dice"]["per_image_mean"])
        split = json.loads((__import__("pathlib").Path(r["run"]) / "split.json").read_text())
        assert len(split["test"]) == 10  # 20 images, 2 folds
    md = (out / "table2.md").read_text()
    for name in TABLE2_CONFIGS:
        assert f"| {name} |" in md
    assert "85.89 / 0.14%" in md  # the paper's UNeXt row beside ours
    assert md.startswith("Data: `isic2017`, a seeded pick")
    cfg = json.loads((out / "experiment.json").read_text())["base_config"]
    assert cfg["max_images"] == 20 and cfg["epochs"] == 1
    # paired per image: every configuration against UNeXt (folds are the groups), and one line per component
    paired = {p["label"]: p for p in csv.DictReader((out / "table2_paired.csv").open())}
    assert set(paired) == (set(TABLE2_CONFIGS) - {"UNeXt"}) | {"edge loss", "skip", "fuse"}
    dice = {(r["configuration"], r["fold"]): float(r["dice"]) for r in rows}
    full = "SC-UNeXt (edge loss+skip+fuse)"
    per_fold = [dice[(full, f)] - dice[("UNeXt", f)] for f in ("fold 1", "fold 2")]
    assert [float(x) for x in paired[full]["per_group_differences"].split(";")] == pytest.approx(per_fold, abs=1e-6)
    assert paired["skip"]["groups"] == "8" and paired["skip"]["n_images"] == "80"  # 4 pairs x 2 folds x 10 images
    assert "| component |" in md and "| skip |" in md
    # the fold-level test beside the per-image one: in how many folds the row is ahead, and p over the fold means
    from scunext.metrics.paired import wilcoxon_p

    line = next(x for x in md.splitlines() if x.startswith(f"| {full} | ") and "[" in x)
    ahead = sum(d > 0 for d in per_fold)
    assert line.endswith(f"| {ahead} of 2 | {wilcoxon_p(__import__('numpy').array(per_fold)):.3g} |"), line
    assert "over the 2 folds of one configuration the Wilcoxon p cannot fall below 0.5" in md


def test_table1_shards_share_one_folder(tmp_path, capsys):
    """Two --shard processes split the runs between them; a final call without --shard trains nothing and writes
    the tables from all run folders."""
    out = tmp_path / "t1s"
    argv = ["experiment", "table1", "--data", str(sample_dir("chest-xray-lungs")), "--out", str(out), "--epochs",
            "1", "--seeds", "1", "--size", "64", "--models", "unext_s,sc_unext", "--max-train-images", "8"]  # fmt: skip
    assert main([*argv, "--shard", "2/2"]) == 0
    assert not (out / "table1.md").exists()
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sc_unext-seed-0"]
    assert main([*argv, "--report-only"]) == 0  # tables from what is finished, nothing trained
    md = (out / "table1.md").read_text()
    assert "| 0/1 |" in md and "| 1/1 |" in md
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sc_unext-seed-0"]
    assert main([*argv, "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("done, skipped") == 2
    assert "2/1" not in (out / "table1.md").read_text() and (out / "table1.csv").is_file()
    assert main([*argv, "--shard", "3/2"]) == 2  # a clear error, not a traceback


def test_a_run_another_process_is_training_is_skipped_not_restarted(tmp_path, capsys, lock_holder, monkeypatch):
    """Two runners on one experiment without --shard (or the same shard twice): a run whose folder another process
    holds is skipped and left as it is (before, one still in its first epoch was deleted and started again)."""
    out = tmp_path / "t1"
    argv = ["experiment", "table1", "--data", str(sample_dir("chest-xray-lungs")), "--out", str(out), "--epochs",
            "1", "--seeds", "1", "--size", "64", "--models", "unext_s,sc_unext", "--max-train-images", "8"]  # fmt: skip
    live = out / "runs" / "sc_unext-seed-0"
    live.mkdir(parents=True)
    status = '{"status": "running", "epochs": 1, "epochs_done": 0, "commit": {"epoch": 0, "files": {}}}'
    (live / "run.json").write_text(status)  # a trainer in its first epoch
    holder = lock_holder(live)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"sc_unext / seed 0: in use by another process (pid {holder.proc.pid} on " in err
    assert err.count("skipped") == 1 and (live / "run.json").read_text() == status
    assert sorted(p.name for p in live.iterdir()) == [".writer.lock", "run.json"]
    assert "| `unext_s` |" in (out / "table1.md").read_text()
    holder.kill()  # the other runner died: its unfinished run is started again by the next call
    assert main(argv) == 0
    assert capsys.readouterr().err.count("done, skipped") == 1
    assert (live / "eval" / "test" / "metrics.json").is_file()
    # trained but not yet scored, and another runner took it for scoring right after this one looked (the race
    # past the first check): not scored a second time here
    shutil.rmtree(live / "eval")
    holder = lock_holder(live)
    with monkeypatch.context() as m:
        m.setattr(RunDir, "in_use", lambda self: False)
        assert main(argv) == 0
    assert f"cannot write to it: {live} is in use by pid {holder.proc.pid} on " in capsys.readouterr().err
    assert not (live / "eval").exists()
    holder.kill()
    assert main(argv) == 0 and (live / "eval" / "test" / "metrics.json").is_file()


def test_table1_records_round_trip(tmp_path, capsys):
    """Each finished run leaves a small portable record (no weights); --report-only rebuilds the same table from the
    records alone, in a folder that never held a run."""
    from pathlib import Path

    out, rec = tmp_path / "t1", tmp_path / "docs-results" / "table1-sample"
    argv = ["experiment", "table1", "--data", str(sample_dir("chest-xray-lungs")), "--out", str(out), "--epochs",
            "1", "--seeds", "1", "--size", "64", "--models", "unext_s,sc_unext", "--max-train-images", "8",
            "--records", str(rec)]  # fmt: skip
    assert main(argv) == 0
    for name in ("unext_s-seed-0", "sc_unext-seed-0"):
        files = sorted(str(p.relative_to(rec / name)) for p in (rec / name).rglob("*") if p.is_file())
        assert files == ["config.yaml", "eval/test/metrics.json", "eval/test/per_image.csv", "log.csv",
                         "record.json", "split.json"]  # fmt: skip
        assert sum(p.stat().st_size for p in (rec / name).rglob("*")) < 200_000
        r = json.loads((rec / name / "record.json").read_text())
        assert r["status"] == "finished" and r["device"] == "cpu" and r["train_seconds"] > 0
        assert (rec / name / "split.json").read_bytes() == (out / "runs" / name / "split.json").read_bytes()
    md = (out / "table1.md").read_text()
    out2 = tmp_path / "elsewhere"
    argv2 = [*argv[:5], str(out2), *argv[6:], "--report-only"]
    capsys.readouterr()
    assert main(argv2) == 0
    assert capsys.readouterr().err.count("done elsewhere") == 2
    assert (out2 / "table1.md").read_text() == md
    rows = list(csv.DictReader((out2 / "table1.csv").open()))
    assert all(Path(r["run"]).parent == rec for r in rows)
    # no data folder needed to rebuild the tables from records
    out3 = tmp_path / "nodata"
    argv3 = [*argv2[:3], str(tmp_path / "gone" / "chest-xray-lungs"), argv2[4], str(out3), *argv2[6:]]
    assert main(argv3) == 0
    table = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert [ln for ln in (out3 / "table1.md").read_text().splitlines() if ln.startswith("| `")] == table
    assert "trained on: cpu (" in md and "cores, torch" in md  # the training host, from the records
    # a half-written record (crash during export) does not count as done
    (rec / "sc_unext-seed-0" / "eval" / "test" / "metrics.json").unlink()
    assert main(argv2) == 0
    assert "| 0/1 |" in (out2 / "table1.md").read_text()


def test_leaderboard_plan_and_default_models(monkeypatch, caplog):
    import logging

    from scunext.config import load_config
    from scunext.experiments import LEADERBOARD_MODELS, default_models, leaderboard_plan
    from scunext.experiments import leaderboard as lb

    base = load_config(None, {"data": str(sample_dir("chest-xray-lungs")), "epochs": 1})
    plan = leaderboard_plan(base, seeds=2, models=("unext_s", "sc_unext", "unet"))
    assert [(p.row, p.column, p.folder) for p in plan[:3]] == [
        ("unext_s", "seed 0", "unext_s-seed-0"), ("sc_unext", "seed 0", "sc_unext-seed-0"),
        ("unet", "seed 0", "unet-seed-0")]  # fmt: skip
    assert len(plan) == 6 and all(p.hd95 and p.cfg.seed == int(p.column[-1]) for p in plan)
    # one protocol: every setting but the model and the seed is the same
    keep = {k: v for k, v in plan[0].cfg.to_dict().items() if k not in ("model", "seed")}
    assert all({k: v for k, v in p.cfg.to_dict().items() if k not in ("model", "seed")} == keep for p in plan)
    # the default rows are the registered ones among the six, with a log line when some are missing
    monkeypatch.setattr(lb, "list_models", lambda: ["unet", "sc_unext", "unext", "unext_s", "resunetpp"])
    with caplog.at_level(logging.INFO, logger="scunext.experiments.leaderboard"):
        assert default_models() == ("unext_s", "sc_unext", "unext", "unet")
    assert "malunet, egeunet not registered" in caplog.text
    monkeypatch.setattr(lb, "list_models", lambda: [*LEADERBOARD_MODELS, "resunetpp"])
    assert default_models() == LEADERBOARD_MODELS
    with pytest.raises(ValueError, match="twice"):
        leaderboard_plan(base, 1, ("unext_s", "unext_s"))


@pytest.mark.parametrize(
    "table, extra, replaced",
    [
        ("table1", ["--set", "seed=7"], "seed: --seeds"),
        ("leaderboard", ["--config", "split.yaml"], "split: --split"),  # a training config with split: csv
        ("table2", ["--set", "max_images=0", "--set", "fold=3"], "max_images from --config/--set would be "
                                                                 "replaced in every run: the experiment sets it "
                                                                 "itself (max_images: --images)"),  # (fold 3 is run)
        ("table2", ["--set", "model_args.cbam=false"], "model_args: its 8 configurations"),
        ("table2", ["--set", "split=csv"], "split: its k-fold split"),  # (table2 has no --split flag)
        ("cross-site", ["--site-pattern", "^(MCUCXR|CHNCXR)_", "--set", "max_images=10"], "max_images: its site"),
        ("cross-site", ["--site-pattern", "^(MCUCXR|CHNCXR)_", "--set", "seed=4"], "seed: --seeds"),
    ],
)
def test_settings_the_experiment_replaces_are_refused(tmp_path, capsys, monkeypatch, table, extra, replaced):
    """--config/--set values that an experiment sets itself per run were dropped without a word (a --config with
    split: csv trained every run on a random split; --set seed=7 trained seed 0), while experiment.json recorded
    the asked value. Refused in one line before anything is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "split.yaml").write_text("split: csv\nepochs: 1\n")
    data = sample_dir("chest-xray-lungs" if table == "cross-site" else "isic2017")
    out = tmp_path / "exp"
    assert main(["experiment", table, "--data", str(data), "--out", str(out), "--epochs", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would be replaced in every run: the experiment sets" in err[0] and replaced in err[0]
    assert not out.exists()
    # what the runs keep is fine: a shared setting, and a value some runs use (the first seed, a row's model)
    assert main(["experiment", "table1", "--data", str(data), "--out", str(out), "--epochs", "1", "--set",
                 "weight_decay=0", "--set", f"data={data}", "--set", "seed=0", "--set", "model=unext_s",
                 "--models", "unext_s,sc_unext", "--report-only"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--models", "unext_s,nosuchnet"], "nosuchnet"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--seeds", "1000000000"], "--seeds must be <= 100"),  # was planned (billions of runs in memory) first
        (["--shard", "0/2"], "--shard 0/2"),
    ],
)
def test_leaderboard_bad_input(tmp_path, capsys, extra, message):
    out = tmp_path / "lb"
    argv = ["experiment", "leaderboard", "--data", str(sample_dir("isic2017")), "--out", str(out), "--epochs", "1",
            *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scunext experiment: error:") and message in err[0]
    assert not (out / "runs").exists()


def test_leaderboard_end_to_end(tmp_path, capsys, monkeypatch):
    """Two models on the official split of the ISIC sample, 2 seeds: every row against SC-UNeXt on the same test
    images, latency measured once and cached, plot and CSVs written; a second call trains and measures nothing."""
    out = tmp_path / "lb"
    argv = ["experiment", "leaderboard", "--data", str(sample_dir("isic2017")), "--out", str(out), "--epochs", "1",
            "--seeds", "2", "--split", "csv", "--size", "64", "--models", "unext_s,sc_unext", "--threads", "1",
            "--latency-runs", "3", "--n-boot", "300", "--max-train-images", "6"]  # fmt: skip
    assert main(argv) == 0
    md = (out / "leaderboard.md").read_text()
    assert "| `unext_s` | 253,561 | 0.099 |" in md and "| `sc_unext` | 253,345 | 0.091 |" in md
    assert "Budget: 1 epochs" in md and "reference" in md and "7:3 split" in md and "| 2/2 |" in md
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 4
    for r in rows:
        m = _metrics(r["run"])
        assert float(r["dice"]) == pytest.approx(m["dice"]["per_image_mean"])
        assert float(r["hd95"]) == pytest.approx(m["hd95"]["per_image_mean"])
        assert float(r["latency_ms"]) > 0 and r["latency_engine"] in ("torch", "torch-fused", "onnxruntime")
    (paired,) = list(csv.DictReader((out / "leaderboard_paired.csv").open()))
    assert (paired["model"], paired["reference"], paired["n_images"]) == ("unext_s", "sc_unext", "16")
    by = {(r["model"], r["seed"]): float(r["dice"]) for r in rows}
    per_seed = [float(x) for x in paired["per_seed_differences"].split(";")]
    # same official test images for both models and seeds: each per-seed difference is the difference of means
    assert per_seed == pytest.approx([by[("unext_s", s)] - by[("sc_unext", s)] for s in ("seed 0", "seed 1")],
                                     abs=1e-6)  # fmt: skip
    assert float(paired["mean_difference"]) == pytest.approx(sum(per_seed) / 2, abs=1e-6)
    assert float(paired["ci_low"]) <= float(paired["mean_difference"]) <= float(paired["ci_high"])
    assert (out / "leaderboard.png").stat().st_size > 1000
    cached = (out / "latency.json").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("done, skipped") == 4
    assert (out / "latency.json").read_text() == cached
    assert "‡" not in md and not any(r["differs_from_budget"] for r in rows)
    # a run trained with another budget setting (here: as if with --cpu-amp, e.g. a record made elsewhere) is
    # marked in its row, named under the table and in the CSV; the other runs are not
    cfg_file = out / "runs" / "unext_s-seed-1" / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("cpu_amp: false", "cpu_amp: true"))
    assert main([*argv, "--report-only"]) == 0
    md = (out / "leaderboard.md").read_text()
    assert md.count("‡") == 2 and "‡ `unext_s`: trained with cpu_amp=True" in md
    assert next(line for line in md.splitlines() if line.startswith("| `unext_s`")).count("‡") == 1
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    marks = {(r["model"], r["seed"]): r["differs_from_budget"] for r in rows}
    assert marks == {("unext_s", "seed 0"): "", ("unext_s", "seed 1"): "cpu_amp=True", ("sc_unext", "seed 0"): "",
                     ("sc_unext", "seed 1"): ""}  # fmt: skip
    # a row still missing a seed: the plot names it (its mean is of fewer seeds than the others'), and the CSV
    # names no run folder for the missing one (it named the report-only --out's planned folder)
    import shutil as _shutil

    from scunext.experiments import leaderboard as lb_mod

    plotted = []
    monkeypatch.setattr(lb_mod, "_plot", lambda path, names, *a: plotted.append(names))
    _shutil.rmtree(out / "runs" / "unext_s-seed-1")
    assert main([*argv, "--report-only"]) == 0
    assert plotted == [["unext_s, 1/2 seeds", "sc_unext"]]
    runs = {(r["model"], r["seed"]): r["run"] for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert runs[("unext_s", "seed 1")] == "" and all(runs[k] for k in runs if k != ("unext_s", "seed 1"))


def test_pareto_front():
    from scunext.experiments.leaderboard import pareto_front

    # (cost, Dice): index 2 is dominated by index 0 (cheaper and better), 4 ties 0 on cost with a lower score
    pts = [(10.0, 0.83), (7.0, 0.81), (12.0, 0.80), (160.0, 0.85), (10.0, 0.82), (22.0, 0.845)]
    assert pareto_front(pts) == [1, 0, 5, 3]
    assert pareto_front([(1.0, 0.5)]) == [0]


def test_record_export_is_all_or_nothing(tiny_run, tmp_path, monkeypatch):
    """A crash while a record is written leaves the previous record (or none) in place, never a half one."""
    import shutil as _shutil

    from scunext.engine.evaluate import evaluate_run
    from scunext.experiments import export_record, is_complete
    from scunext.experiments import records as rec_mod

    run = tmp_path / "run"
    _shutil.copytree(tiny_run, run)
    if not (run / "eval" / "test" / "metrics.json").is_file():
        evaluate_run(run, subset="test", hd95=False, show_progress=False)
    dest = tmp_path / "records" / "run"
    with pytest.raises(ValueError, match="not a finished and scored run"):
        export_record(run, dest, ("test", "external"))
    export_record(run, dest)
    before = {p.name: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    calls, real_copy = [], _shutil.copy2

    def failing_copy(src, dst, *a, **k):
        calls.append(src)
        if str(src).endswith("metrics.json"):
            raise OSError("disk full")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(rec_mod.shutil, "copy2", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        export_record(run, dest)
    assert calls and is_complete(dest)
    assert {p.name: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_a_partial_table2_marks_what_its_means_and_verdicts_rest_on(tmp_path, capsys):
    """--report-only of a Table 2 with runs missing printed a one-fold value as the "mean" and verdicts from one
    fold with nothing to say so: a runs column, ‡ on means over fewer folds, and a note on the comparisons."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "results" / "table2-isic120-e100"
    records = tmp_path / "records"
    shutil.copytree(docs / "records", records)
    for k in (2, 3, 4, 5):
        shutil.rmtree(records / f"unext-fold{k}")
    argv = ["experiment", "table2", "--data", str(tmp_path / "isic2017"), "--out", str(tmp_path / "t2"), "--epochs",
            "100", "--lr", "1e-3", "--device", "cpu", "--set", "channels_last=true", "--records", str(records),
            "--report-only", "--n-boot", "1000"]  # fmt: skip
    assert main(argv) == 0
    md = (tmp_path / "t2" / "table2.md").read_text()
    assert "| UNeXt | 71.06 | – | – | – | – | 71.06 ‡ |" in md and md.count("| 5/5 |") == 7 and "| 1/5 |" in md
    assert "‡ 36 of 40 runs finished" in md
    full = (docs / "table2.md").read_text()
    assert "| UNeXt | 71.06 | 75.84 | 75.50 | 74.35 | 80.70 | 75.49 | 0.12% | 3.47 | 85.89 / 0.14% | 5/5 |" in full
    assert "‡" not in full


def test_an_experiment_started_with_an_ignored_test_fraction_continues_without_it(tmp_path):
    """--test-fraction with --split csv was ignored, then refused: an experiment folder started before the
    refusal (its experiment.json holds the value) continues with the flag dropped, instead of being locked out."""
    import json

    from scunext.config import load_config
    from scunext.experiments.plan import check_experiment_record

    old = load_config(None, {"split": "csv"}).to_dict()
    record = {"table": "leaderboard", "seeds": 1, "base_config": {**old, "test_fraction": 0.3}}
    (tmp_path / "experiment.json").write_text(json.dumps(record))
    check_experiment_record(tmp_path, {**record, "base_config": old})  # the same experiment, flag dropped
    with pytest.raises(ValueError, match="other settings .base_config: lr"):
        check_experiment_record(tmp_path, {**record, "base_config": {**old, "lr": 0.5}})
    random_split = {**old, "split": "random"}  # where the split uses it, test_fraction still counts
    (tmp_path / "experiment.json").write_text(json.dumps({**record, "base_config": {**random_split,
                                                                                   "test_fraction": 0.3}}))
    with pytest.raises(ValueError, match="test_fraction"):
        check_experiment_record(tmp_path, {**record, "base_config": random_split})
