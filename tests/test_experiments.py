"""Both experiment runners end to end on the shipped sample (1 epoch): table structure, numbers from run folders,
resumability."""

from __future__ import annotations

import csv
import json

import pytest

from scunext.cli.main import main
from scunext.data import sample_dir
from scunext.experiments import TABLE2_CONFIGS


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
    assert (out / "table1.png").is_file()
    capsys.readouterr()
    # resumable: a second call trains nothing
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("done, skipped") == 4
    # other settings in the same folder are refused
    assert main([*argv[:-2], "--models", "unext_s", "--lr", "0.5"]) == 2


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
    cfg = json.loads((out / "experiment.json").read_text())["base_config"]
    assert cfg["max_images"] == 20 and cfg["epochs"] == 1


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
