"""The committed result tables are what the committed run records give: each table under ``docs/results/`` is rebuilt
with its documented command plus ``--report-only`` (no training) and compared with the committed file.

A table edited by hand, a record added without rebuilding its table (or the reverse), or a change in the reporting
code that alters a published number fails here. The CSVs are compared without their last column, the path of the
run folder each row came from (the training machine's ``EXP/...`` when written, the records folder when rebuilt).
Needs the real datasets beside the checkout (the split files and image ids); skipped where they are absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scunext.cli.main import main

REPO = Path(__file__).resolve().parents[1]
RESULTS = "docs/results"
LUNGS_SITES = ["--site-pattern", "^(MCUCXR|CHNCXR)_"]

#: (folder under docs/results, dataset, the experiment command's arguments after --data, the table's file stem);
#: the commands are the ones in docs/results.md
TABLES = [
    ("leaderboard-isic2017", "isic2017", ["leaderboard", "--split", "csv", "--config", "configs/robust-cpu.yaml",
                                          "--epochs", "40", "--seeds", "3"], "leaderboard"),
    ("leaderboard-lungs", "chest-xray-lungs", ["leaderboard", "--config", "configs/robust-cpu.yaml", "--epochs", "50",
                                               "--seeds", "3", "--cross-site",
                                               f"{RESULTS}/cross-site-lungs-robust-e20/records"], "leaderboard"),
    ("cross-site-lungs-e20", "chest-xray-lungs", ["cross-site", *LUNGS_SITES, "--config",
                                                  "configs/leaderboard-cpu.yaml", "--epochs", "20", "--seeds", "3"],
     "cross_site"),
    ("cross-site-lungs-robust-e20", "chest-xray-lungs", ["cross-site", *LUNGS_SITES, "--config",
                                                         "configs/robust-cpu.yaml", "--epochs", "20", "--seeds", "3"],
     "cross_site"),
    ("cross-site-ablation-e20", "chest-xray-lungs", ["cross-site", *LUNGS_SITES, "--configs", "ablation", "--config",
                                                     "configs/leaderboard-cpu.yaml", "--epochs", "20", "--device",
                                                     "cpu"], "cross_site"),
    ("table2-isic120-e100", "isic2017", ["table2", "--epochs", "100", "--lr", "1e-3", "--device", "cpu", "--set",
                                         "channels_last=true"], "table2"),
]  # fmt: skip


def _records(folder: str) -> str:
    path = f"{RESULTS}/{folder}"
    return f"{path}/records" if (REPO / path / "records").is_dir() else path


def _rows_without_run(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows and rows[0][-1] == "run", f"{path}: the last column is not the run folder"
    return [row[:-1] for row in rows]


@pytest.mark.parametrize(("folder", "dataset", "argv", "stem"), TABLES, ids=[t[0] for t in TABLES])
def test_a_committed_table_is_what_its_records_give(folder, dataset, argv, stem, shared_data, tmp_path, monkeypatch,
                                                    capsys):  # fmt: skip
    monkeypatch.chdir(REPO)  # the documented commands name the records and configs relative to the repository
    out = tmp_path / "tables"
    command, *rest = argv
    code = main(["experiment", command, "--data", str(shared_data / dataset), *rest, "--records", _records(folder),
                 "--out", str(out), "--report-only"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    committed = REPO / RESULTS / folder
    assert (out / f"{stem}.md").read_text() == (committed / f"{stem}.md").read_text()
    assert (out / f"{stem}_paired.csv").read_bytes() == (committed / f"{stem}_paired.csv").read_bytes()
    assert _rows_without_run(out / f"{stem}.csv") == _rows_without_run(committed / f"{stem}.csv")
