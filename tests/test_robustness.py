"""Stress test, quality score, review flag and calibration: behaviour on hand-made maps and on the shipped sample."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scunext.cli.main import main
from scunext.data import read_image, sample_dir
from scunext.deploy.predictor import Predictor
from scunext.deploy.quality import (
    QualityCalibration,
    area_prior,
    auroc,
    choose_threshold,
    count_components,
    load_calibration,
    quality_from_probabilities,
)
from scunext.runs import RunDir
from scunext.weights import weights_dir

LUNG_CAL = QualityCalibration(threshold=0.8, area_lo=0.15, area_hi=0.45, min_area_fraction=0.075, max_components=3)


def _lungs(h: int = 64, w: int = 64, p: float = 0.99) -> np.ndarray:
    prob = np.full((h, w), 1 - p)
    prob[10:50, 8:28] = p
    prob[10:50, 36:56] = p
    return prob


def test_confident_plausible_mask_passes_and_its_parts_are_right():
    prob = _lungs()
    q = quality_from_probabilities(prob, prob.copy(), LUNG_CAL)
    assert q.agreement == 1 and q.margin == pytest.approx(0.98) and q.components == 2
    assert q.area_px == 1600 and q.area_fraction == pytest.approx(1600 / 4096)
    assert q.score == pytest.approx(0.98) and not q.review and q.reason == ""


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.8])
def test_empty_or_near_empty_mask_is_always_flagged(threshold):
    cal = QualityCalibration(**{**LUNG_CAL.__dict__, "threshold": threshold})
    empty = np.full((64, 64), 0.01)
    tiny = empty.copy()
    tiny[30:34, 30:34] = 0.99  # 0.4 % of the image, confidently predicted and flip-stable
    for prob in (empty, tiny):
        q = quality_from_probabilities(prob, prob, cal)
        assert q.review and q.score == 0 and "near-empty" in q.reason
    assert quality_from_probabilities(empty, empty, QualityCalibration.default()).review  # also without calibration
    # an empty mask even under a hand-made calibration with no floor and a threshold of 0 (it passed before)
    lax = replace(QualityCalibration.default(), threshold=0.0, min_area_fraction=0.0, area_lo=0.0)
    q = quality_from_probabilities(empty, empty, lax)
    assert q.review and "near-empty" in q.reason
    assert not quality_from_probabilities(tiny, tiny, lax).review  # the floor of 0 is still what decides above 0


def test_each_part_lowers_the_score():
    good = quality_from_probabilities(_lungs(), _lungs(), LUNG_CAL).score
    shifted = np.roll(_lungs(), 6, axis=1)  # the flipped pass disagrees
    assert quality_from_probabilities(_lungs(), shifted, LUNG_CAL).agreement < 0.9
    assert quality_from_probabilities(_lungs(), shifted, LUNG_CAL).score < good
    soft = _lungs(p=0.6)  # same mask, probabilities near 0.5
    assert quality_from_probabilities(soft, soft, LUNG_CAL).margin == pytest.approx(0.2)
    big = np.full((64, 64), 0.99)  # area 100 %, above twice area_hi -> area term 0
    assert quality_from_probabilities(big, big, LUNG_CAL).score == 0
    specks = np.full((64, 64), 0.01)
    for k in range(6):
        specks[4 + 10 * k : 8 + 10 * k, 4:60] = 0.99  # 6 bars, 33 % area, above max_components 3
    q = quality_from_probabilities(specks, specks, LUNG_CAL)
    assert q.components == 6 and q.score == pytest.approx(0.98 * 3 / 6) and q.review and "6 components" in q.reason


def test_area_prior_and_components():
    masks = [np.zeros((10, 10), bool) for _ in range(100)]
    for k, m in enumerate(masks):
        m.flat[: k + 1] = True  # areas 1 %..100 %
    prior = area_prior(masks)
    assert prior["area_lo"] == pytest.approx(np.percentile(np.arange(1, 101) / 100, 1))
    assert prior["area_hi"] == pytest.approx(np.percentile(np.arange(1, 101) / 100, 99))
    assert prior["min_area_fraction"] == pytest.approx(prior["area_lo"] / 2) and prior["max_components"] == 1
    two = np.zeros((40, 40), bool)
    two[2:10, 2:10] = two[20:30, 20:30] = True
    two[39, 39] = True  # one pixel: below 0.1 % of 1600 px is 1.6 px -> not counted
    assert count_components(two) == 2
    with pytest.raises(ValueError, match="no training masks"):
        area_prior([])


def test_auroc_and_threshold_choice():
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 1
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(auroc([0.5, 0.6], [False, False]))
    scores = [0.95, 0.94, 0.93, 0.92, 0.70, 0.60, 0.91, 0.30]
    dices = [0.97, 0.96, 0.95, 0.96, 0.85, 0.40, 0.45, 0.20]  # one failure (0.45) scores high: 0.91
    t, st = choose_threshold(scores, dices)
    flagged = np.array(scores) < t
    assert flagged[np.array(dices) < 0.5].all()  # every Dice < 0.5 is flagged
    assert st["recall_dice_below_0.50"] == 1 and st["n_dice_below_0.50"] == 3
    assert 0.91 < t <= 0.92 and not flagged[:4].any()  # and no good case is flagged
    # a failure with a high score drags the threshold up unless the hard area rule already flags it
    scores, dices = [0.95, 0.94, 0.93, 0.92, 0.50, 0.40, 0.96], [0.97, 0.96, 0.95, 0.96, 0.85, 0.30, 0.20]
    t1, _ = choose_threshold(scores, dices)
    t2, st2 = choose_threshold(scores, dices, forced=[False] * 6 + [True])
    assert t1 > 0.96 and t2 <= 0.92 and st2["recall_dice_below_0.50"] == 1 and st2["flagged_share_dice_ge_0.90"] == 0


@pytest.mark.parametrize(
    "rule, expect_low, expect_high, good_flagged",
    [
        # Youden: the Dice 0.85 case (score 0.88) is worth flagging, so the threshold sits above it and flags
        # the good case scoring 0.87 too
        ("youden", 0.88, 0.93, 1),
        # failures: just above the highest-scoring Dice < 0.5 case (0.60): no good case flagged, 0.85 passes
        ("failures", 0.60, 0.61, 0),
    ],
)
def test_threshold_rules(rule, expect_low, expect_high, good_flagged):
    scores = [0.95, 0.94, 0.93, 0.87, 0.88, 0.60, 0.30]
    dices = [0.97, 0.96, 0.95, 0.93, 0.85, 0.40, 0.20]
    t, st = choose_threshold(scores, dices, rule=rule)
    flagged = np.array(scores) < t
    assert expect_low < t <= expect_high, t
    assert flagged[np.array(dices) < 0.5].all() and st["recall_dice_below_0.50"] == 1
    assert int(flagged[np.array(dices) >= 0.9].sum()) == good_flagged and st["rule_name"] == rule
    with pytest.raises(ValueError, match="rule must be one of youden, failures"):
        choose_threshold(scores, dices, rule="strict")


def test_calibration_file_round_trip_and_default(tmp_path):
    assert load_calibration(tmp_path).source == "default"
    LUNG_CAL.to_json(tmp_path / "quality.json")
    back = load_calibration(tmp_path)
    assert back == LUNG_CAL
    (tmp_path / "quality.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable quality file"):
        load_calibration(tmp_path)


@pytest.fixture(scope="module")
def lung_run(tmp_path_factory) -> Path:
    """A 1-epoch UNeXt-S run on the lung sample at 64 px with the percentile intensity step."""
    from scunext.config import load_config
    from scunext.engine.trainer import train

    out = tmp_path_factory.mktemp("lungrun") / "run"
    cfg = {"data": str(sample_dir("chest-xray-lungs")), "model": "unext_s", "size": 64, "epochs": 1,
           "batch_size": 4, "intensity": "percentile", "val_fraction": 0.2}  # fmt: skip
    train(load_config(None, cfg), out, show_progress=False)
    return out


def test_run_records_and_uses_its_intensity_step(lung_run):
    from scunext.data.preprocess import preprocess

    pred = Predictor.from_run(lung_run)
    assert pred.intensity == "percentile" and "intensity: percentile" in (lung_run / "config.yaml").read_text()
    img = read_image(sorted((sample_dir("chest-xray-lungs") / "images").iterdir())[0])
    assert np.array_equal(pred.prepare(img).numpy(), preprocess(img, 1, 64, "percentile").numpy())
    assert not np.array_equal(pred.prepare(img).numpy(), preprocess(img, 1, 64, "none").numpy())
    weights = Path(__file__).parents[1] / "scunext/assets/weights"
    # a run saved before the field existed (the isic2017 release) loads as `none`, i.e. exactly the old path
    assert "intensity" not in (weights / "isic2017/config.yaml").read_text()
    assert Predictor.from_run(weights / "isic2017").intensity == "none"
    # the re-released lung weights use the percentile step, and their card says so
    card = json.loads((weights / "lungs/card.json").read_text())
    assert Predictor.from_run(weights / "lungs").intensity == card["data"]["intensity"] == "percentile"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_an_optional_group_that_takes_no_part_is_the_other_group():
    """``--group-pattern 'ISIC_(0000)?'`` matched every id with group 1 None for most: sorting the groups was a
    TypeError traceback after the per-image rows were written."""
    import re

    from scunext.engine.robustness import _group_of

    rx = re.compile("ISIC_(0000)?")
    assert [_group_of(rx, i) for i in ("ISIC_0000123", "ISIC_1234567", "x")] == ["0000", "other", "other"]
    assert _group_of(re.compile("(a*)"), "bbb") == "other"  # an empty group names nothing
    assert _group_of(None, "x") == "all"


def test_stress_test_command_on_a_one_epoch_run(lung_run, tmp_path, capsys):
    from scunext.engine.evaluate import evaluate_run

    out = tmp_path / "stress"
    args = ["robustness", str(lung_run), "--shifts", "washout,invert", "--out", str(out), "--no-progress",
            "--group-pattern", "^(MCUCXR|CHNCXR)"]  # fmt: skip
    assert main(args) == 0
    assert "| all | washout | 3 | 215 |" in capsys.readouterr().out
    rows = _rows(out / "per_image.csv")
    n_test = len(json.loads((lung_run / "split.json").read_text())["test"])
    assert len(rows) == n_test * 5  # clean + 3 wash-out severities + invert
    # the clean rows are exactly what evaluate scores (same predictions, same per-image Dice at native size)
    ev = evaluate_run(lung_run, out_dir=tmp_path / "ev", hd95=False, show_progress=False)
    ev_rows = {r["id"]: float(r["dice"]) for r in _rows(tmp_path / "ev" / "per_image.csv")}
    clean = {r["id"]: float(r["dice"]) for r in rows if r["shift"] == "clean"}
    assert clean.keys() == ev_rows.keys()
    assert all(abs(clean[k] - ev_rows[k]) < 1e-5 for k in clean)
    summary = _rows(out / "summary.csv")
    by = {(r["group"], r["shift"], r["severity"]): r for r in summary}
    d_clean = np.mean(list(clean.values()))
    assert float(by[("all", "clean", "0")]["dice_mean"]) == pytest.approx(d_clean, abs=1e-5)
    assert float(by[("all", "clean", "0")]["dice_mean"]) == pytest.approx(ev["dice"]["per_image_mean"], abs=1e-5)
    inv = [float(r["dice"]) for r in rows if r["shift"] == "invert"]
    assert float(by[("all", "invert", "1")]["drop_vs_clean"]) == pytest.approx(d_clean - np.mean(inv), abs=1e-5)
    groups = {r["group"] for r in summary}
    assert "all" in groups and groups <= {"all", "MCUCXR", "CHNCXR"} and len(groups) > 1
    assert {"score", "review"} <= set(rows[0]) and all(0 <= float(r["score"]) <= 1 for r in rows)
    rep = json.loads((out / "robustness.json").read_text())
    assert rep["quality"]["stressed"]["n"] == n_test * 4 and (out / "robustness.png").stat().st_size > 1000
    # a second run into the same folder is refused (one line, exit 2) and leaves the report untouched
    before = (out / "summary.csv").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("scunext robustness: error: ") and "--overwrite" in err and err.count("\n") == 1
    assert (out / "summary.csv").read_bytes() == before


def test_a_stress_test_into_a_folder_another_one_is_writing_is_refused(lung_run, tmp_path, capsys, lock_holder):
    """Two stress tests into one --out would interleave their rows in one per_image.csv.partial: the second one
    says who is writing there (one line, exit 2) and writes no report; once the writer is gone it runs."""
    out = tmp_path / "stress"
    out.mkdir()
    holder = lock_holder(out)
    args = ["robustness", str(lung_run), "--shifts", "invert", "--out", str(out), "--no-progress", "--no-quality"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pid {holder.proc.pid}" in err and "is writing there (a report, or the training" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [".writer.lock"]  # the holder's; nothing of ours
    holder.kill()
    assert main(args) == 0
    assert (out / "summary.csv").is_file() and not (out / ".writer.lock").exists()


def test_a_stopped_stress_test_leaves_the_folder_as_it_was(lung_run, tmp_path, monkeypatch):
    """Ctrl+C (or SIGTERM) in the middle of the scoring: exit 130, no half-written per_image.csv.partial, and a
    folder the command created is removed again; a user's folder keeps exactly its own files."""
    import scunext.engine.robustness as robustness

    calls = []

    def stop_at_second_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    score = robustness.score_conditions
    monkeypatch.setattr(robustness, "score_conditions", stop_at_second_image)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    for out in (tmp_path / "new" / "stress", tmp_path / "mine"):
        calls.clear()
        argv = ["robustness", str(lung_run), "--shifts", "invert", "--out", str(out), "--no-progress", "--no-quality"]
        assert main(argv) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


class _Crash(Exception):
    pass


def _crash_before(k: int):
    """A fault hook that raises before the k-th durable operation."""
    seen = []

    def hook(op: str, path: Path) -> None:
        seen.append(op)
        if len(seen) == k:
            raise _Crash(f"{op} {path}")

    return hook


def test_an_overwrite_stopped_at_any_final_write_never_reads_as_complete_with_mixed_files(lung_run, tmp_path,
                                                                                           monkeypatch):
    """robustness.json marks a complete report: crash an --overwrite before each durable operation of its final
    writes; whenever the folder holds a robustness.json, every report file is from one and the same run (all
    old or all new), never old and new mixed; a folder without it is an incomplete report that a rerun repairs."""
    import scunext.runs.durable as durable
    from scunext.engine.robustness import RESULT_FILES

    def report(out: Path) -> dict[str, bytes]:
        return {n: (out / n).read_bytes() for n in RESULT_FILES if (out / n).exists() and n != "robustness.png"}

    base = ["robustness", str(lung_run), "--no-progress", "--no-quality", "--max-images", "1"]
    old_args, new_args = [*base, "--shifts", "invert"], [*base, "--shifts", "noise", "--overwrite"]
    assert main([*old_args, "--out", str(tmp_path / "old")]) == 0
    ops: list[tuple[str, str]] = []
    monkeypatch.setattr(durable, "FAULT_HOOK", lambda op, path: ops.append((op, str(path))))
    assert main([*new_args, "--out", str(tmp_path / "new")]) == 0
    old, new = report(tmp_path / "old"), report(tmp_path / "new")
    assert old.keys() == new.keys() == set(RESULT_FILES) - {"robustness.png"}
    assert all(old[n] != new[n] for n in old)
    assert ops[-2:] == [("rename", str(tmp_path / "new" / "robustness.json")), ("fsync_dir", str(tmp_path / "new"))]
    ops.insert(0, ("remove", "robustness.json"))  # the old marker's removal: not in a run into an empty folder
    outcomes, incomplete = set(), None
    for k in range(1, len(ops) + 1):
        work = tmp_path / f"k{k}"
        shutil.copytree(tmp_path / "old", work)
        monkeypatch.setattr(durable, "FAULT_HOOK", _crash_before(k))
        with pytest.raises(_Crash):
            main([*new_args, "--out", str(work)])
        monkeypatch.setattr(durable, "FAULT_HOOK", None)
        got = report(work)
        if "robustness.json" in got:
            assert got in (old, new), f"crash before operation {k}: a complete-looking report mixes old and new"
            outcomes.add("old" if got == old else "new")
        else:
            outcomes.add("incomplete")
            incomplete = incomplete or work
        if work != incomplete:
            shutil.rmtree(work)
    assert outcomes == {"old", "incomplete", "new"}  # the window exists, and it never reads as complete
    assert main([*new_args, "--out", str(incomplete)]) == 0 and report(incomplete) == new  # a rerun repairs it


@pytest.mark.parametrize("argv,msg", [
    (["robustness", "--weights", "lungs", "--shifts", "colorcast", "--out", "{o}"], "do not apply to gray"),
    (["robustness", "--weights", "lungs", "--shifts", "fog", "--out", "{o}"], "unknown shift(s) fog"),
    (["robustness", "--out", "{o}"], "either a RUN_DIR or --weights"),
    (["robustness", "{o}", "--out", "{o}"], "run folder not found"),
    (["robustness", "--weights", "nope", "--out", "{o}"], "no released weights named 'nope'"),
    (["robustness", "--weights", "lungs", "--data", "{o}/none", "--out", "{o}"], "dataset folder not found"),
    (["calibrate", "--weights", "lungs", "--max-images", "-1"], "--max-images must be >= 0"),
    (["calibrate", "--weights", "lungs", "--site", "{o}"], "a site calibration needs --out FILE"),
    (["calibrate", "--weights", "lungs", "--site", "{o}", "--data", "{o}", "--out", "{o}/q.json"], "not both"),
    (["calibrate", "--weights", "lungs", "--site", "{o}/none", "--out", "{o}/q.json"], "dataset folder not found"),
    (["robustness", "--weights", "lungs", "--quality", "{o}/none.json", "--out", "{o}"], "not a readable quality"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, msg, tmp_path, capsys):
    argv = [a.replace("{o}", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_calibrate_writes_quality_json_used_by_the_predictor(lung_run, tmp_path, capsys):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(lung_run, run)
    assert main(["calibrate", str(run), "--shifts", "washout", "--no-progress"]) == 0
    assert "review threshold" in capsys.readouterr().out
    cal = load_calibration(run)
    assert cal.source == "calibrated" and 0 <= cal.threshold <= 1 + 1e-6
    assert 0 < cal.min_area_fraction < cal.area_lo < cal.area_hi < 1 and cal.max_components >= 2  # two lungs
    st = cal.stats
    assert st["part"] == "val" and st["conditions"] == 4 and st["n"] == st["n_images"] * 4
    assert st["recall_dice_below_0.50"] in (None, 1.0)
    pred = Predictor.from_run(run)
    assert pred.quality == cal
    img = read_image(sorted((sample_dir("chest-xray-lungs") / "images").iterdir())[0])
    white = np.full_like(img, 255)
    q_img, q_white = pred.assess([img, white])
    assert q_img.area_px == int(pred.predict([img])[0].sum()) and 0 <= q_img.score <= 1
    # a flat white image gives no plausible lungs: flagged whatever the model does with it
    assert q_white.review
    assert main(["calibrate", str(run), "--shifts", "washout", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_calibrate_refuses_a_folder_another_process_is_writing(lung_run, tmp_path, capsys, lock_holder):
    """A training resumed in the run folder (or another calibration writing there) holds its writer lock: calibrate
    says who (one line, exit 2) and writes nothing; once the holder is gone it runs."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lung_run, run)
    holder = lock_holder(run)
    argv = ["calibrate", str(run), "--shifts", "washout", "--no-progress", "--max-images", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pid {holder.proc.pid}" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (run / "quality.json").exists()
    holder.kill()
    assert main(argv) == 0 and (run / "quality.json").is_file() and not (run / ".writer.lock").exists()


def test_calibrate_never_replaces_a_file_written_meanwhile(lung_run, tmp_path, capsys, monkeypatch):
    """Fault injection: another calibration writes the target between our first check and our lock. Without
    --overwrite that file is kept byte for byte and we stop with one line; with --overwrite it is replaced."""
    import scunext.engine.calibrate as rb

    out = tmp_path / "cal" / "q.json"  # its folder does not exist yet: created
    theirs = b'{"written": "by another process"}'
    parse = rb.parse_shifts

    def parse_and_race(*a, **k):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(theirs)
        return parse(*a, **k)

    monkeypatch.setattr(rb, "parse_shifts", parse_and_race)
    argv = ["calibrate", str(lung_run), "--shifts", "washout", "--no-progress", "--max-images", "2", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == theirs and sorted(p.name for p in out.parent.iterdir()) == ["q.json"]
    assert main([*argv, "--overwrite"]) == 0
    assert QualityCalibration.from_json(out).source == "calibrated"


def _site(tmp_path: Path, n: int = 4) -> Path:
    """A "new hospital": a labelled folder of the first n sample X-rays (symbolic links)."""
    src, site = sample_dir("chest-xray-lungs"), tmp_path / "site"
    for sub in ("images", "masks"):
        (site / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir())[:n]:
            (site / sub / f.name).symlink_to(f)
    return site


def test_site_calibration_chooses_on_the_site_keeps_the_prior_and_is_used_by_robustness(tmp_path, capsys):
    """calibrate --site: the threshold comes from every image of the local folder (scored under the same shifts),
    the area prior from the released weights' own quality.json, which stays untouched; robustness --quality uses
    the file."""
    from scunext.deploy.quality import QUALITY_FILE
    from scunext.weights import weights_dir

    site, out = _site(tmp_path), tmp_path / "site.json"
    own_file = weights_dir("lungs") / QUALITY_FILE
    own_bytes, own = own_file.read_bytes(), load_calibration(weights_dir("lungs"))
    argv = ["calibrate", "--weights", "lungs", "--site", str(site), "--out", str(out), "--shifts", "washout",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "on 16 site predictions (4 images x 4 conditions)" in text and f"own threshold: {own.threshold:.4f}" in text
    cal = QualityCalibration.from_json(out)
    assert own_file.read_bytes() == own_bytes
    prior = ("area_lo", "area_hi", "min_area_fraction", "max_components")
    assert [getattr(cal, k) for k in prior] == [getattr(own, k) for k in prior]
    assert cal.stats["part"] == "site (all images)" and cal.stats["data"] == str(site) and cal.stats["n"] == 16
    # the same predictions, scored by robustness on the site folder with the site's file
    rep_dir = tmp_path / "rep"
    assert main(["robustness", "--weights", "lungs", "--data", str(site), "--subset", "all", "--shifts", "washout",
                 "--quality", str(out), "--out", str(rep_dir), "--no-progress"]) == 0  # fmt: skip
    rows = _rows(rep_dir / "per_image.csv")
    rep = json.loads((rep_dir / "robustness.json").read_text())
    assert rep["quality_threshold"] == pytest.approx(cal.threshold) and rep["quality_source"] == str(out)
    assert len(rows) == 16 and cal.stats["n_dice_below_0.90"] == sum(float(r["dice"]) < 0.9 for r in rows)
    # the site's threshold flags exactly the share of these predictions that the calibration recorded
    assert cal.stats["flagged_share"] == pytest.approx(np.mean([r["review"] == "True" for r in rows]))
    # again without --overwrite: refused, file kept
    before = out.read_bytes()
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    # tied to the lung weights: refused for the skin model in every command that takes --quality (its lung area
    # prior flagged a 3.6 % lesion mask as near-empty), before any image is read
    from scunext.cli.serve import add_parser as _serve_parser
    from scunext.weights import weights_card

    assert cal.weights_sha256 == weights_card("lungs")["weights_sha256"] == own.weights_sha256
    wrong = "calibrated for other weights"
    image = str(sorted((sample_dir("isic2017") / "images").iterdir())[0])
    assert main(["predict", "--weights", "isic2017", image, "--quality", str(out), "--out", str(tmp_path / "p")]) == 2
    assert wrong in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["robustness", "--weights", "isic2017", "--shifts", "gamma", "--quality", str(out), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 2  # fmt: skip
    assert wrong in capsys.readouterr().err and not (tmp_path / "r").exists()
    import argparse

    parser = argparse.ArgumentParser()
    _serve_parser(parser.add_subparsers())
    from scunext.cli.serve import models_from_args

    with pytest.raises(ValueError, match=wrong):
        models_from_args(parser.parse_args(["serve", "--weights", "isic2017", "--quality", str(out)]))


@pytest.mark.parametrize(("auroc", "shown"), [(0.0, "Dice < 0.90 0.000,"), (None, "Dice < 0.90 n/a")])
def test_calibrate_prints_the_auroc_it_found(auroc, shown, tmp_path, capsys, monkeypatch):
    """An AUROC of 0 (the score ranks every failure above every success) is printed as 0.000, not as nan; one that
    is undefined (every prediction on one side of Dice 0.90, JSON null) as n/a."""
    import scunext.engine.calibrate as robustness

    stats = {"n": 4, "n_images": 2, "conditions": 2, "auroc_dice_below_0.90": auroc, "flagged_share": 0.5}
    cal = replace(LUNG_CAL, source="calibrated", stats=stats)
    monkeypatch.setattr(robustness, "calibrate_quality", lambda *a, **k: cal)
    assert main(["calibrate", "--weights", "lungs", "--out", str(tmp_path / "q.json"), "--no-progress"]) == 0
    assert shown in capsys.readouterr().out


def test_site_calibration_needs_a_calibrated_run(lung_run, tmp_path, capsys):
    out = tmp_path / "q.json"
    assert main(["calibrate", str(lung_run), "--site", str(_site(tmp_path)), "--out", str(out), "--shifts", "washout",
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no calibrated quality.json" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("name", ["lungs", "lungs-unext_s", "isic2017", "isic2017-unext_s"])
def test_released_weights_carry_a_calibrated_flag_that_catches_blank_images(name):
    from scunext.weights import weights_dir

    pred = Predictor.from_run(weights_dir(name))
    cal = pred.quality
    assert cal.source == "calibrated" and cal.stats["part"] == "val" and 0 < cal.threshold < 1
    assert cal.stats["recall_dice_below_0.50"] in (None, 1.0)  # every validation failure flagged
    shape = (256, 256) if pred.in_channels == 1 else (256, 256, 3)
    blank = [np.full(shape, v, np.uint8) for v in (0, 255)]  # no anatomy at all: must not pass unflagged
    assert all(q.review for q in pred.assess(blank))


def test_intensity_before_augment_orders_the_step_in_training_only():
    """intensity_before_augment moves the percentile step in front of the augmentation (which then perturbs the
    standardised image); the default keeps it after (undoing an affine augmentation); without a transform
    (validation, inference) the flag changes nothing."""
    from scunext.data import SegmentationDataset, discover_pairs
    from scunext.data.intensity import standardise_intensity
    from scunext.data.preprocess import normalise

    def squeeze(image, mask):  # an affine intensity change, the kind the percentile stretch undoes
        return {"image": (image // 3 + 120).astype(np.uint8), "mask": mask}

    pairs = discover_pairs(sample_dir("chest-xray-lungs"))[:2]
    kw = dict(in_channels=1, size=64, intensity="percentile")
    plain = SegmentationDataset(pairs, **kw)
    after = SegmentationDataset(pairs, transform=squeeze, **kw)
    before = SegmentationDataset(pairs, transform=squeeze, intensity_before_augment=True, **kw)
    no_transform = SegmentationDataset(pairs, intensity_before_augment=True, **kw)
    for i in range(len(pairs)):
        raw = np.asarray(SegmentationDataset(pairs, in_channels=1, size=64, mean=0.0, std=1.0)[i]["image"])
        u8 = np.rint(raw.transpose(1, 2, 0) * 255).astype(np.uint8)
        expect_before = normalise(squeeze(standardise_intensity(u8, "percentile"), None)["image"])
        expect_after = normalise(standardise_intensity(squeeze(u8, None)["image"], "percentile"))
        assert np.array_equal(before[i]["image"].numpy(), expect_before.numpy())
        assert np.array_equal(after[i]["image"].numpy(), expect_after.numpy())
        assert not np.allclose(before[i]["image"].numpy(), after[i]["image"].numpy(), atol=0.1)
        assert np.array_equal(no_transform[i]["image"].numpy(), plain[i]["image"].numpy())
        assert np.array_equal(before[i]["mask"].numpy(), plain[i]["mask"].numpy())


def test_old_config_without_the_order_field_loads_with_the_old_order(tmp_path):
    from scunext.config import TrainConfig

    old = TrainConfig().to_dict()
    old.pop("intensity_before_augment")
    assert TrainConfig.from_dict(old).intensity_before_augment is False
    assert TrainConfig.from_dict({**old, "intensity_before_augment": True}).intensity_before_augment is True


@pytest.mark.parametrize("before", [False, True])
def test_trainer_passes_the_order_to_the_training_data_only(before, tmp_path, monkeypatch):
    from scunext.config import load_config
    from scunext.engine import trainer as trainer_module

    made = []
    real = trainer_module.SegmentationDataset

    def recording(*args, **kwargs):
        ds = real(*args, **kwargs)
        made.append(ds)
        return ds

    monkeypatch.setattr(trainer_module, "SegmentationDataset", recording)
    cfg = {"data": str(sample_dir("chest-xray-lungs")), "model": "unext_s", "size": 64, "epochs": 1,
           "batch_size": 4, "intensity": "percentile", "val_fraction": 0.2, "intensity_before_augment": before}
    trainer_module.train(load_config(None, cfg), tmp_path / "run", show_progress=False)
    train_ds, val_ds = made[0], made[1]
    assert train_ds.transform is not None and train_ds.intensity_before_augment is before
    assert val_ds.transform is None and val_ds.intensity_before_augment is False
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"intensity_before_augment: {str(before).lower()}" in saved


def test_calibrate_replaces_a_quality_file_of_other_weights(tiny_run, tmp_path, capsys):
    """predict refuses a run's own quality.json made for other weights, and points to calibrate, which must then be
    able to replace it (it does not read the old file unless it is a site calibration)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copy(weights_dir("isic2017") / "quality.json", run / "quality.json")
    image = str(sorted((sample_dir("isic2017") / "images").iterdir())[0])
    assert main(["predict", str(run), image, "--out", str(tmp_path / "p")]) == 2
    assert "calibrated for other weights" in capsys.readouterr().err
    argv = ["calibrate", str(run), "--overwrite", "--shifts", "gamma", "--max-images", "2", "--no-progress"]
    assert main(argv) == 0
    assert QualityCalibration.from_json(run / "quality.json").weights_sha256 == RunDir(run).weights_sha256()
    assert main(["predict", str(run), image, "--out", str(tmp_path / "p")]) == 0


def test_robustness_audit_group_all_no_quality_orphans_and_chunks(lung_run, tmp_path, capsys, monkeypatch):
    """Found by an audit (2026-11-30): a group named 'all' was counted twice in the overall row (n = 6 for 4
    images, a wrong mean); --no-quality still read (and refused) a run's quality.json of other weights; a killed
    stress test's NAME.tmpPID stayed; all conditions of one image were held at once (8.3 GB for a 4000x3000 photo):
    they are scored in chunks now, with the same numbers."""
    import subprocess
    import sys

    import scunext.engine.robustness as rob

    data = tmp_path / "grp"
    lungs = sample_dir("chest-xray-lungs")
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for k, name in enumerate(sorted(p.name for p in (lungs / "images").iterdir())[:2]):
        shutil.copy(lungs / "images" / name, data / "images" / f"all_{k}.png")
        shutil.copy(lungs / "masks" / name, data / "masks" / f"all_{k}.png")
    argv = ["robustness", str(lung_run), "--data", str(data), "--subset", "all", "--shifts", "invert",
            "--no-progress", "--no-quality", "--group-pattern", "^([a-z]+)_", "--out", str(tmp_path / "a")]
    assert main(argv) == 2
    assert "names a group 'all' (image all_0)" in capsys.readouterr().err and not (tmp_path / "a").exists()

    run = tmp_path / "run"
    shutil.copytree(lung_run, run)
    shutil.copy(weights_dir("isic2017") / "quality.json", run / "quality.json")  # other weights: not read
    whole, out = tmp_path / "whole", tmp_path / "r"
    common = ["--shifts", "washout,invert", "--no-progress", "--no-quality"]
    assert main(["robustness", str(run), *common, "--out", str(whole)]) == 0
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f"summary.md.tmp{int(dead.stdout)}").write_text("left by a killed stress test")
    calls = []
    real = rob._score_chunk

    def counting(predictor, image, mask, image_id, conditions, *rest):
        calls.append(len(conditions))
        return real(predictor, image, mask, image_id, conditions, *rest)

    monkeypatch.setattr(rob, "_score_chunk", counting)
    monkeypatch.setattr(rob, "CONDITION_BYTES", 2 * 256 * 256 * 13)  # two conditions of a 256x256 image at once
    assert main(["robustness", str(run), *common, "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(rob.RESULT_FILES)  # the orphan is gone
    n = len({r["id"] for r in _rows(out / "per_image.csv")})
    assert calls == [2, 2, 1] * n  # clean + 3 wash-out + invert, two at a time
    assert _rows(out / "per_image.csv") == _rows(whole / "per_image.csv")  # the same numbers as all at once
    assert "No quality score (--no-quality)." in (out / "summary.md").read_text()


def _per_image_csv(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def test_robustness_paired_script_pairs_a_stress_report_with_an_evaluate_folder(tmp_path):
    """scripts/robustness_paired.py: an evaluate folder (clean only) against a stress report compares the clean
    condition and says what it left out (it raised KeyError on the first shift before); two stress reports give
    each shift's row with the mean difference in Dice points."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "robustness_paired.py"
    stress = [{"id": f"i{k}", "shift": s, "severity": v, "dice": d}
              for k in range(3) for s, v, d in (("clean", "0", 0.9), ("blur", "1", 0.8 - 0.1 * k))]  # fmt: skip
    a = _per_image_csv(tmp_path / "a", stress)
    b = _per_image_csv(tmp_path / "b", [{"id": f"i{k}", "dice": 0.85} for k in range(3)])
    c = _per_image_csv(tmp_path / "c", [{**r, "dice": float(r["dice"]) - 0.1} for r in stress])
    out = subprocess.run([sys.executable, str(script), str(a), str(b)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "| clean | 3 | +5.0 | 3 / 3 |" in out.stdout and not any(x.startswith("| blur") for x in lines)
    assert "1 conditions scored by only one report are left out" in out.stdout
    out = subprocess.run([sys.executable, str(script), str(a), str(c)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| blur | 3 | +10.0 | 3 / 3 |" in out.stdout and "| all stressed | 3 | +10.0 |" in out.stdout
