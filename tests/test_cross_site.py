"""Cross-site runner: site assignment, the plan's splits (site separation, no test image in train/val), the
``external`` split part, and one end-to-end run on the shipped lung sample (Montgomery + Shenzhen ids)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scunext.cli.main import main
from scunext.config import load_config
from scunext.data import DataError, Split, csv_split, discover_pairs, sample_dir
from scunext.experiments import TABLE2_CONFIGS, cross_site_plan, cross_site_scores, sites_from_csv, sites_from_pattern

PATTERN = "^(MCUCXR|CHNCXR)_"


@pytest.fixture(scope="module")
def lung_ids() -> list[str]:
    return [p.id for p in discover_pairs(sample_dir("chest-xray-lungs"))]


def _parts(path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["cross_site"], []).append(row["image_id"])
    return out


def test_sites_from_pattern_and_errors(lung_ids, tmp_path):
    sites = sites_from_pattern(lung_ids, PATTERN)
    assert {s for s in sites.values()} == {"MCUCXR", "CHNCXR"}
    assert sum(s == "MCUCXR" for s in sites.values()) == 12 and len(sites) == 30
    with pytest.raises(ValueError, match="match no site"):
        sites_from_pattern(lung_ids, "^(MCUCXR)_")
    with pytest.raises(ValueError, match="18 of 30 images match no site"):  # an optional group: None was a site
        sites_from_pattern(lung_ids, "^(MCUCXR)?")
    with pytest.raises(ValueError, match=r"found 1 site\(s\) \(CXR\); cross-site needs at least 2"):
        sites_from_pattern(lung_ids, "(CXR)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        sites_from_pattern(lung_ids, "(")
    site_csv = tmp_path / "sites.csv"
    site_csv.write_text("image_id,hospital\n" + "".join(f"{i},{i[:2]}\n" for i in lung_ids))
    assert sites_from_csv(site_csv, "hospital", lung_ids) == {i: i[:2] for i in lung_ids}
    site_csv.write_text("image_id,hospital\n" + "".join(f"{i},{i[:2]}\n" for i in lung_ids[1:]))
    with pytest.raises(DataError, match="have no site"):
        sites_from_csv(site_csv, "hospital", lung_ids)


def test_plan_separates_sites_and_parts(lung_ids, tmp_path):
    sites = sites_from_pattern(lung_ids, PATTERN)
    base = load_config(None, {"data": str(sample_dir("chest-xray-lungs")), "epochs": 1})
    plan = cross_site_plan(base, sites, tmp_path, seeds=2)
    assert len(plan) == 2 * 2 * 2  # sites x seeds x (sc_unext, unext_s)
    assert {(p.row, p.info["train_site"], p.info["seed"]) for p in plan} == {
        (m, s, k) for m in ("sc_unext", "unext_s") for s in ("MCUCXR", "CHNCXR") for k in (0, 1)
    }
    tests_by_seed: dict[tuple[str, int], list[str]] = {}
    for p in plan:
        assert p.subsets == ("test", "external") and p.cfg.split == "csv" and p.cfg.split_column == "cross_site"
        parts = _parts(p.cfg.split_csv)
        site = p.info["train_site"]
        own = {i for i, s in sites.items() if s == site}
        assert set(parts["train"]) | set(parts["val"]) | set(parts["test"]) == own  # the training site only
        assert set(parts["external"]) == set(sites) - own  # every image of the other site, scored only
        assert not set(parts["test"]) & (set(parts["train"]) | set(parts["val"]))
        assert len(parts["test"]) == round(0.2 * len(own))
        # the trainer reads the same four parts from the CSV
        split = csv_split(p.cfg.split_csv, "cross_site", ids=lung_ids)
        assert sorted(split.external) == sorted(parts["external"]) and sorted(split.test) == sorted(parts["test"])
        tests_by_seed.setdefault((site, p.info["seed"]), []).append(",".join(sorted(parts["test"])))
    for tests in tests_by_seed.values():
        assert len(set(tests)) == 1  # both models of a column share the split: paired per image
    assert tests_by_seed[("CHNCXR", 0)] != tests_by_seed[("CHNCXR", 1)]  # seeds draw other held-out parts
    # the same plan again is fine; a changed split file is refused, not overwritten
    cross_site_plan(base, sites, tmp_path, seeds=2)
    victim = Path(plan[0].cfg.split_csv)
    victim.write_text(victim.read_text().replace(",train,", ",test,", 1))
    with pytest.raises(ValueError, match="holds another split"):
        cross_site_plan(base, sites, tmp_path, seeds=2)


def test_ablation_plan(lung_ids, tmp_path):
    sites = sites_from_pattern(lung_ids, PATTERN)
    base = load_config(None, {"data": str(sample_dir("chest-xray-lungs")), "epochs": 1})
    plan = cross_site_plan(base, sites, tmp_path, seeds=1, configs="ablation")
    assert len(plan) == len(TABLE2_CONFIGS) * 2
    for p in plan:
        model, args, loss = TABLE2_CONFIGS[p.row]
        assert (p.cfg.model, p.cfg.model_args, p.cfg.loss) == (model, args, loss)


def test_split_external_part_round_trip(tmp_path):
    s = Split(["a", "b"], ["c"], ["d"], {"method": "x"}, external=["e", "f"])
    back = Split.from_json(s.to_json(tmp_path / "s.json"))
    assert back.external == ["e", "f"] and back.counts()["external"] == 2
    plain = Split(["a", "b"], [], ["d"], {}).to_dict()
    assert "external" not in plain and "external" not in plain["counts"]  # older split files stay as they were
    with pytest.raises(ValueError, match="more than once"):
        Split(["a"], ["b"], [], {}, external=["a"])
    carved = Split(["a", "b", "c"], [], ["d"], {}, external=["e"]).with_carved_validation(0.34)
    assert carved.external == ["e"]


def test_evaluate_external_of_a_run_without_one(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--subset", "external"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scunext evaluate: error: the run's split has no 'external' part; choose another --subset "
                   "(or 'all')"]


def test_evaluate_of_one_image_shows_no_sd(tiny_run, tmp_path, capsys):
    """The sd of one per-image score is undefined (null in metrics.json): the table shows '-', not 0.0000."""
    import re
    import shutil

    one = tmp_path / "one"
    (one / "images").mkdir(parents=True)
    (one / "masks").mkdir()
    image = sorted((sample_dir("isic2017") / "images").iterdir())[0]
    shutil.copy(image, one / "images" / image.name)
    shutil.copy(sample_dir("isic2017") / "masks" / f"{image.stem}.png", one / "masks" / f"{image.stem}.png")
    argv = ["evaluate", str(tiny_run), "--data", str(one), "--subset", "all", "--out", str(tmp_path / "ev"),
            "--no-hd95", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    row = re.compile(r"(dice|iou|precision|recall|specificity) +[0-9.]+ +- +[0-9.]+")
    assert sum(bool(row.fullmatch(x)) for x in lines) == 5


def test_cross_site_end_to_end_resume_and_records(tmp_path, capsys):
    data = sample_dir("chest-xray-lungs")
    out, rec = tmp_path / "cs", tmp_path / "records"
    argv = ["experiment", "cross-site", "--data", str(data), "--out", str(out), "--epochs", "1", "--size", "64",
            "--seeds", "1", "--max-train-images", "6", "--site-pattern", PATTERN, "--n-boot", "200",
            "--records", str(rec)]  # fmt: skip
    assert main(argv) == 0
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4
    for rd in runs:
        split = json.loads((rd / "split.json").read_text())
        train_site = "MCUCXR" if "mcucxr" in rd.name else "CHNCXR"
        assert all(i.startswith(train_site) for i in split["train"] + split["val"] + split["test"])
        assert split["external"] and not any(i.startswith(train_site) for i in split["external"])
        ext = json.loads((rd / "eval" / "external" / "metrics.json").read_text())
        assert ext["n_images"] == len(split["external"]) == (18 if train_site == "MCUCXR" else 12)
        assert (rec / rd.name / "eval" / "external" / "per_image.csv").is_file()
    md = (out / "cross_site.md").read_text()
    assert "| `sc_unext` | MCUCXR |" in md and "| sc_unext | CHNCXR | other site |" in md
    paired = list(csv.DictReader((out / "cross_site_paired.csv").open()))
    assert {(p["row"], p["reference"], p["scored_on"]) for p in paired} == {
        ("sc_unext", "unext_s", "external"), ("sc_unext", "unext_s", "test")}  # fmt: skip
    # the paired mean on the other site equals the difference of the two runs' per-image means (same images)
    rows = {(r["row"], r["train_site"]): r for r in csv.DictReader((out / "cross_site.csv").open())}
    for p in paired:
        if p["scored_on"] == "external":
            a, b = rows[("sc_unext", p["train_site"])], rows[("unext_s", p["train_site"])]
            assert float(p["mean_difference"]) == pytest.approx(float(a["external_dice"]) - float(b["external_dice"]))
    capsys.readouterr()
    assert main(argv) == 0  # resumable: nothing trained again
    assert capsys.readouterr().err.count("done, skipped") == 4
    # the tables again from the records alone, in another folder
    out2 = tmp_path / "cs2"
    assert main([*argv[:5], str(out2), *argv[6:], "--report-only"]) == 0
    assert (out2 / "cross_site.md").read_text() == md
    assert not (out2 / "runs").exists()
    scores = cross_site_scores(rec)
    assert set(scores) == {"sc_unext", "unext_s"} and all(n == 2 for _, n in scores.values())


SITE_CSVS = {  # (file bytes, what the one-line error says)
    "id twice": ("image_id,site\n{rows}CHNCXR_0021_0,MCUCXR\n", "'CHNCXR_0021_0' is listed twice (line 32)"),
    "latin-1": (b"image_id,site\n{rows}" + "x,h\xf4pital\n".encode("latin-1"), "cannot read CSV"),
    "long field": ("image_id,site\n{rows}x," + "a" * 140_000 + "\n", "cannot read CSV (field larger"),
    "column twice": ("image_id,site,site\n{rows3}", "column(s) 'site' named twice"),
    "a folder": (None, "site CSV not found (it is a folder)"),
}


@pytest.mark.parametrize("case", sorted(SITE_CSVS))
def test_a_bad_site_csv_is_one_line_and_leaves_nothing(case, lung_ids, tmp_path, capsys):
    """An id listed twice took the last row's site (a Shenzhen image trained as Montgomery's); a Latin-1 file or
    a field over the csv limit was a traceback. All one line, exit 2, no experiment folder."""
    text, said = SITE_CSVS[case]
    path = tmp_path / "sites.csv"
    if text is None:
        path.mkdir()
    else:
        rows = "".join(f"{i},{i[:6]}\n" for i in lung_ids)
        rows3 = "".join(f"{i},{i[:6]},{i[:6]}\n" for i in lung_ids)
        data = text if isinstance(text, bytes) else text.format(rows=rows, rows3=rows3).encode()
        path.write_bytes(data.replace(b"{rows}", rows.encode()))
    out = tmp_path / "xs"
    argv = ["experiment", "cross-site", "--data", str(sample_dir("chest-xray-lungs")), "--site-csv", str(path),
            "--site-column", "site", "--out", str(out), "--epochs", "1", "--size", "64", "--seeds", "1",
            "--models", "unext_s"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and said in err[0], err
    assert not out.exists()


def test_a_refused_plan_leaves_no_folder_and_the_corrected_rerun_works(lung_ids, tmp_path, capsys):
    """A site with 3 images (or two site names with one file name) was refused after experiment.json and the
    first site's split file were written; the rerun with the corrected CSV into the same --out was then refused
    as "another split" or "other settings". Now nothing is written until every check passed."""
    path, out = tmp_path / "sites.csv", tmp_path / "xs"
    few = {i: ("Z" if i in lung_ids[:3] else "A") for i in lung_ids}
    path.write_text("image_id,site\n" + "".join(f"{i},{s}\n" for i, s in few.items()))
    argv = ["experiment", "cross-site", "--data", str(sample_dir("chest-xray-lungs")), "--site-csv", str(path),
            "--site-column", "site", "--out", str(out), "--epochs", "1", "--size", "64", "--seeds", "1",
            "--models", "unext_s", "--report-only"]  # fmt: skip
    assert main(argv) == 2 and "site 'Z' has 3 images" in capsys.readouterr().err
    assert not out.exists()
    clash = {i: ("Site A" if i.startswith("MC") else "site-a") for i in lung_ids}
    path.write_text("image_id,site\n" + "".join(f"{i},{s}\n" for i, s in clash.items()))
    assert main(argv) == 2
    assert "sites 'Site A' and 'site-a' have the same file name" in capsys.readouterr().err and not out.exists()
    path.write_text("image_id,site\n" + "".join(f"{i},{i[:6]}\n" for i in lung_ids))
    assert main(argv) == 0  # the corrected CSV, same --out: the plan and its report (no run trained)
    assert sorted(p.name for p in (out / "splits").iterdir()) == ["train-chncxr-seed-0.csv", "train-mcucxr-seed-0.csv"]


def test_evaluate_subset_all_on_the_training_data_says_so(tiny_run, tmp_path, caplog):
    """``--subset all`` on the data the run trained on scored its training images without a word (the refusal for
    a folder missing test images even pointed there): a warning and ``seen_in_training`` in metrics.json."""
    import json

    argv = ["evaluate", str(tiny_run), "--subset", "all", "--out", str(tmp_path / "ev"), "--no-hd95", "--no-progress"]
    with caplog.at_level("WARNING", logger="scunext.engine.evaluate"):
        assert main(argv) == 0
    split = json.loads((tiny_run / "split.json").read_text())
    seen = json.loads((tmp_path / "ev" / "metrics.json").read_text())["seen_in_training"]
    assert seen == {"train": len(split["train"]), "val": len(split["val"])} and seen["train"] > 0
    assert f"{seen['train']} of the" in caplog.text and "not a held-out score" in caplog.text
    caplog.clear()
    argv = ["evaluate", str(tiny_run), "--out", str(tmp_path / "ev2"), "--no-hd95", "--no-progress"]
    with caplog.at_level("WARNING", logger="scunext.engine.evaluate"):
        assert main(argv) == 0  # the test part: nothing seen in training, no warning
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["seen_in_training"] == {"train": 0, "val": 0}
    assert "held-out" not in caplog.text
