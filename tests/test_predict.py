"""``scunext predict``: the streaming pipeline (scunext.deploy.stream), never-overwrite, predictions.csv, reduced-size
JPEG decoding, and the end-to-end benchmark's report (no speed assertions)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scunext.cli.main import main
from scunext.data import DataError, read_image, sample_dir
from scunext.data.io import ImageInfo
from scunext.deploy import stream
from scunext.deploy.predictor import Predictor
from scunext.deploy.stream import PredictionRecord, PredictionsCSV, plan_predictions, stream_predict
from scunext.deploy.stream_benchmark import baseline_predict
from scunext.visualize import boundary
from scunext.weights import weights_dir

XRAYS = sorted((sample_dir("chest-xray-lungs") / "images").iterdir())
#: predictions.csv's `model` of the released lung weights at the defaults
_LUNGS_SHA = json.loads((weights_dir("lungs") / "card.json").read_text())["weights_sha256"][:12]
LUNGS_MODEL = f"weights lungs, sha256 {_LUNGS_SHA}, threshold 0.5, torch"
ISIC = sorted((sample_dir("isic2017") / "images").iterdir())


@pytest.fixture(scope="module")
def lungs() -> Predictor:
    return Predictor.from_run(weights_dir("lungs"))


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scunext predict: error: ") and needle in err[0], err
    return err[0]


def _copy(files, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*_mask.png"))}


# ------------------------------------------------------------------------------ same masks as before streaming


@pytest.mark.parametrize("name, files", [("lungs", XRAYS[:6]), ("isic2017", ISIC[:6])])
def test_masks_equal_the_pre_streaming_predict_on_the_samples(name, files, tmp_path, capsys):
    predictor = Predictor.from_run(weights_dir(name))
    baseline_predict(predictor, files, tmp_path / "before")
    assert main(["predict", "--weights", name, *map(str, files), "--out", str(tmp_path / "now"),
                 "--batch-size", "4"]) == 0  # fmt: skip
    before, now = _masks(tmp_path / "before"), _masks(tmp_path / "now")
    assert before.keys() == now.keys() and len(now) == 6
    for key in before:
        assert 0.02 < before[key].mean() < 0.9  # real segmentations, so the comparison means something
        np.testing.assert_array_equal(now[key], before[key], err_msg=key)
        overlay_before = np.asarray(Image.open(tmp_path / "before" / key.replace("_mask", "_overlay")))
        overlay_now = np.asarray(Image.open(tmp_path / "now" / key.replace("_mask", "_overlay")))
        np.testing.assert_array_equal(overlay_now, overlay_before)


def test_large_jpeg_decoded_at_reduced_size_gives_nearly_the_same_mask(tmp_path, capsys):
    """--no-overlay --fast-decode decodes a 2000x1500 JPEG at 1/2 scale (draft mode, both sides >= 2 x 256); the
    mask differs from the full-decode one only along the boundary: fewer changed pixels than boundary pixels, none
    farther from the boundary than one model pixel (2000 / 256 ~ 8 px), Dice >= 0.995 (measured on 4 ISIC samples:
    0.3-0.8 boundary pixels, within 6.3 px, Dice >= 0.998). Without --fast-decode the mask is the full decode's:
    it does not depend on whether an overlay is written (it did: --no-overlay alone decoded at reduced size)."""
    from scipy import ndimage

    big = np.asarray(Image.fromarray(read_image(ISIC[0])).resize((2000, 1500), Image.Resampling.BILINEAR))
    src = tmp_path / "in" / "big.jpg"
    src.parent.mkdir()
    Image.fromarray(big).save(src, quality=92)
    predictor = Predictor.from_run(weights_dir("isic2017"))
    baseline_predict(predictor, [src], tmp_path / "full", overlay=False)
    assert main(["predict", "--weights", "isic2017", str(src), "--out", str(tmp_path / "draft"), "--no-overlay",
                 "--fast-decode"]) == 0  # fmt: skip
    full, draft = _masks(tmp_path / "full")["big_mask.png"], _masks(tmp_path / "draft")["big_mask.png"]
    for extra in (["--no-overlay"], []):  # the default decode, with or without the overlay: the full decode's mask
        out = tmp_path / f"default{len(extra)}"
        assert main(["predict", "--weights", "isic2017", str(src), "--out", str(out), *extra]) == 0
        assert np.array_equal(_masks(out)["big_mask.png"], full)
    assert main(["predict", "--weights", "isic2017", str(src), "--out", str(tmp_path / "x"), "--fast-decode"]) == 2
    assert "--fast-decode needs --no-overlay" in capsys.readouterr().err
    assert draft.shape == (1500, 2000) and 0.02 < full.mean() < 0.9
    edge = boundary(full)
    changed = full != draft
    assert 0 < changed.sum() <= edge.sum(), (changed.sum(), edge.sum())  # 0 would mean no reduced-size decode
    assert ndimage.distance_transform_edt(~edge)[changed].max() <= 2000 / 256
    assert 2 * (full & draft).sum() / (full.sum() + draft.sum()) >= 0.995
    assert not (tmp_path / "draft" / "big_overlay.png").exists()


def test_read_image_draft_size(tmp_path):
    rgb = np.asarray(Image.fromarray(read_image(ISIC[0])).resize((2048, 1536)))
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.jpg").shape == (1536, 2048, 3)
    assert read_image(tmp_path / "a.jpg", draft_size=256).shape == (384, 512, 3)  # 1/4; 1/8 would give 192 rows
    assert read_image(tmp_path / "a.jpg", draft_size=1000).shape == (1536, 2048, 3)  # 1/2 would give 768 rows
    assert read_image(tmp_path / "a.png", draft_size=256).shape == (1536, 2048, 3)  # not a JPEG: unchanged
    with pytest.raises(ValueError, match="draft_size"):
        read_image(tmp_path / "a.jpg", draft_size=0)


# ------------------------------------------------------------------------------------------- never overwrite


def test_refuses_to_replace_an_existing_file(tmp_path, capsys):
    inputs = _copy(XRAYS[:3], tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    expert = out / f"{XRAYS[1].stem}_mask.png"
    expert.write_bytes(b"the expert's mask")
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(out)]) == 2
    line = _one_line_error(capsys, "1 output file(s) already exist")
    assert expert.name in line and "--overwrite" in line
    assert expert.read_bytes() == b"the expert's mask" and sorted(out.iterdir()) == [expert]  # nothing written
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(out), "--overwrite"]) == 0
    assert np.asarray(Image.open(expert)).shape == (256, 256) and len(list(out.glob("*_mask.png"))) == 3
    # a second run into the same folder: every output would be replaced; predictions.csv is appended to, not replaced
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(out)]) == 2
    assert "6 output file(s) already exist" in _one_line_error(capsys, "already exist")
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 3
    more = _copy(XRAYS[3:5], tmp_path / "more")
    assert main(["predict", "--weights", "lungs", str(more), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["file"]).name for r in rows] == [f.name for f in XRAYS[:5]]  # earlier rows kept


def test_a_file_that_appears_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    final = out / "x_mask.png"
    tmp = out / ".x_mask.png.tmp"
    tmp.write_bytes(b"new")
    final.write_bytes(b"old")
    with pytest.raises(stream.OutputExistsError):
        stream._publish(tmp, final, overwrite=False)
    assert final.read_bytes() == b"old" and not tmp.exists()


@pytest.mark.parametrize("case, needle", [
    ("out_is_input", "is the input folder"),
    ("out_inside_input", "is the input folder"),
    ("out_is_a_file", "is an existing file"),
    ("only_outputs", "earlier scunext outputs left out"),
    ("missing", "no such file or folder"),
    ("not_an_image", "not a readable image"),
    ("two_bad", "2 of 3 inputs cannot be read"),
    ("same_name", "share the name"),
    ("batch_size", "--batch-size must be between 1 and 512, got 0"),
    ("dicom_seg_png", "needs DICOM inputs"),
])  # fmt: skip
def test_bad_invocations_are_one_line_errors_and_write_nothing(case, needle, tmp_path, capsys):
    inputs = _copy(XRAYS[:3], tmp_path / "in")
    out, extra = tmp_path / "out", []
    if case == "out_is_input":
        out = inputs
    elif case == "out_inside_input":
        out = inputs / "masks"
    elif case == "out_is_a_file":
        out = tmp_path / "file.txt"
        out.write_text("keep me")
    elif case == "only_outputs":
        inputs = tmp_path / "earlier"
        inputs.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(inputs / "a_mask.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(inputs / "a_overlay.png")
    elif case == "missing":
        extra = [str(tmp_path / "nope.png")]
    elif case == "not_an_image":
        (inputs / "notes.png").write_text("not an image")
    elif case == "two_bad":
        inputs = tmp_path / "bad"
        _copy(XRAYS[:1], inputs)
        (inputs / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
        (inputs / "b.jpg").write_bytes(b"")
    elif case == "same_name":
        shutil.copy(XRAYS[0], tmp_path / f"{XRAYS[0].stem}.png")
        extra = [str(tmp_path / f"{XRAYS[0].stem}.png")]
    elif case == "batch_size":
        extra = ["--batch-size", "0"]
    elif case == "dicom_seg_png":
        extra = ["--format", "dicom-seg"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert main(["predict", "--weights", "lungs", str(inputs), *extra, "--out", str(out)]) == 2
    _one_line_error(capsys, needle)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing touched


def test_earlier_outputs_and_expert_masks_in_an_input_folder_are_not_inputs(tmp_path, capsys):
    inputs = _copy(XRAYS[:2], tmp_path / "in")
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(tmp_path / "first")]) == 0
    for f in (tmp_path / "first").glob("*.png"):  # a folder holding images and earlier outputs / expert masks
        shutil.copy(f, inputs / f.name)
    capsys.readouterr()
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(tmp_path / "second")]) == 0
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == sorted(
        p.name for p in (tmp_path / "first").iterdir()
    )  # no NAME_mask_mask.png
    assert "2 of 2 images segmented" in capsys.readouterr().out


# --------------------------------------------------------------------------------- corrupt files, predictions.csv


def test_a_file_corrupt_past_its_header_is_skipped_and_reported(tmp_path, capsys):
    inputs = _copy(XRAYS[:4], tmp_path / "in")
    data = XRAYS[4].read_bytes()
    (inputs / "truncated.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(out), "--batch-size", "2"]) == 1
    captured = capsys.readouterr()
    assert "4 of 5 images segmented" in captured.out and "1 skipped (truncated.png)" in captured.out
    assert "truncated.png: skipped: decode:" in captured.err
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in inputs.iterdir())  # input order
    bad = next(r for r in rows if r["file"].endswith("truncated.png"))
    assert bad["status"].startswith("skipped: decode:") and bad["mask"] == "" and bad["area_px"] == ""
    assert len(list(out.glob("*_mask.png"))) == 4 and not list(out.glob("truncated*"))
    assert not list(out.glob(".*"))  # no temporary files left


def test_predictions_csv_columns_and_values(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", *map(str, XRAYS[:3]), "--out", str(out), "--no-overlay"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["file", "mask", "height", "width", "area_px", "area_mm2", "score", "review",
                             "review_reason", "status", "model"]
    for row, src in zip(rows, XRAYS[:3]):
        mask = np.asarray(Image.open(row["mask"])) > 0
        assert row["file"] == str(src) and row["status"] == "ok"
        assert row["model"] == LUNGS_MODEL
        assert (int(row["height"]), int(row["width"])) == mask.shape
        assert int(row["area_px"]) == int(mask.sum()) > 0
        assert row["area_mm2"] == ""  # PNG: no pixel spacing
        assert 0 <= float(row["score"]) <= 1 and row["review"] in ("True", "False")
    assert not list(out.glob("*_overlay.png"))


def test_quality_columns_equal_the_predictors_assessment_and_flag_a_blank_film(tmp_path, capsys):
    """predictions.csv's score/review are the Predictor's own quality assessment (scunext.deploy.quality) of the same
    images, and a nearly white film (the failure seen on other hospitals' scans) is flagged for review."""
    blank = tmp_path / "in" / "white.png"
    blank.parent.mkdir()
    Image.fromarray(np.full((256, 256), 250, np.uint8)).save(blank)
    inputs = [*XRAYS[:2], blank]
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", *map(str, inputs), "--out", str(out), "--no-overlay"]) == 0
    assert "flagged for review" in capsys.readouterr().out
    rows = {Path(r["file"]).name: r for r in csv.DictReader((out / "predictions.csv").open())}
    predictor = Predictor.from_run(weights_dir("lungs"))
    images = [read_image(f) for f in inputs]
    for f, q in zip(inputs, predictor.assess(images)):
        row = rows[f.name]
        assert float(row["score"]) == pytest.approx(q.score, abs=1e-3), f.name
        assert row["review"] == str(q.review)
    assert rows["white.png"]["review"] == "True" and rows["white.png"]["review_reason"]
    assert main(["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(tmp_path / "o2"), "--no-quality"]) == 0
    row = next(csv.DictReader((tmp_path / "o2" / "predictions.csv").open()))
    assert row["score"] == "" and row["review"] == ""


def test_quality_file_replaces_the_models_own_and_a_mostly_flagged_batch_gets_a_site_hint(tmp_path, capsys):
    """predict --quality FILE judges with that file's threshold; when more than half of >= 10 masks are flagged the
    summary suggests a site calibration; a normal batch gets no such note."""
    from scunext.deploy.quality import QualityCalibration, load_calibration

    own = load_calibration(weights_dir("lungs"))
    strict, lenient = tmp_path / "strict.json", tmp_path / "lenient.json"
    QualityCalibration(**{**own.__dict__, "threshold": 1.0 + 1e-6}).to_json(strict)
    QualityCalibration(**{**own.__dict__, "threshold": 0.0}).to_json(lenient)
    inputs = tmp_path / "in"
    inputs.mkdir()
    small = Image.fromarray(read_image(XRAYS[0])).resize((96, 96))
    for i in range(10):
        small.save(inputs / f"x{i}.png")
    common = ["predict", "--weights", "lungs", str(inputs), "--no-overlay", "--workers", "1"]
    assert main([*common, "--out", str(tmp_path / "s"), "--quality", str(strict)]) == 0
    out = capsys.readouterr().out
    assert "10 flagged for review (x0.png, x1.png, x2.png, ...)" in out
    assert "note: 100 % of the masks are flagged" in out and "scunext calibrate" in out
    rows = list(csv.DictReader((tmp_path / "s" / "predictions.csv").open()))
    assert len(rows) == 10 and all(r["review"] == "True" for r in rows)
    assert main([*common, "--out", str(tmp_path / "l"), "--quality", str(lenient)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "l" / "predictions.csv").open()))
    flagged = sum(r["review"] == "True" for r in rows)
    assert all(r["review"] == "False" or "near-empty" in r["review_reason"] for r in rows)  # only the hard rule
    assert f"{flagged} flagged for review" in out and ("note:" in out) == (flagged > 5)


@pytest.mark.parametrize("extra,msg", [
    (["--quality", "{t}/missing.json"], "not a readable quality file"),
    (["--quality", "{t}/bad.json"], "not a scunext-quality/1 file"),
    (["--quality", "{t}/bad.json", "--no-quality"], "contradict each other"),
])  # fmt: skip
def test_bad_quality_file_is_one_line_and_writes_nothing(extra, msg, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"threshold": 0.5}')
    extra = [a.replace("{t}", str(tmp_path)) for a in extra]
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(out), *extra]) == 2
    _one_line_error(capsys, msg)
    assert not out.exists()


def test_area_in_mm2_from_the_pixel_spacing():
    info = ImageInfo(size=(4, 5), channels=1, format="dicom", pixel_spacing_mm=(0.5, 0.2), is_dicom=True)
    record = PredictionRecord("a.dcm", "a_seg.dcm", 4, 5)
    mask = np.zeros((4, 5), bool)
    mask[:2, :3] = True
    stream._measure(record, mask, None, info)
    assert record.area_px == 6 and record.area_mm2 == pytest.approx(0.6)
    assert record.row()["area_mm2"] == "0.6"


def test_predictions_csv_is_never_replaced(tmp_path, capsys):
    path = tmp_path / "predictions.csv"
    path.write_text("keep")
    with pytest.raises(stream.OutputExistsError):
        PredictionsCSV(path)
    assert path.read_text() == "keep"
    assert main(["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(tmp_path)]) == 2
    assert "predictions.csv" in _one_line_error(capsys, "1 output file(s) already exist")
    assert path.read_text() == "keep"


def test_a_foreign_predictions_csv_is_replaced_only_with_overwrite(tmp_path, capsys):
    """The refusal's advice holds: with --overwrite a table that is not today's (an older version's, a user's file
    of that name) is replaced by a new one; a folder of that name is refused either way."""
    path = tmp_path / "out" / "predictions.csv"
    path.parent.mkdir()
    path.write_text("file,old_column\nx.png,1\n")
    argv = ["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(path.parent)]
    assert main(argv) == 2 and "--overwrite" in _one_line_error(capsys, "predictions.csv")
    assert main([*argv, "--overwrite"]) == 0
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1 and rows[0]["file"] == str(XRAYS[0]) and rows[0]["status"] == "ok"
    (tmp_path / "f" / "predictions.csv").mkdir(parents=True)
    argv = ["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(tmp_path / "f"), "--overwrite"]
    assert main(argv) == 2
    _one_line_error(capsys, "is a folder")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["predictions.csv"]


def test_an_unfinished_last_row_is_not_glued_to_the_next_one(tmp_path, capsys, caplog):
    """A run killed while writing a row leaves a table without its final newline: that torn row is cut off (with a
    warning; its image counts as not done) and the next run's rows parse with all their columns."""
    out = tmp_path / "out"
    out.mkdir()
    header = ",".join(PredictionRecord.columns())
    (out / "predictions.csv").write_text(f"{header}\r\nx.png,m.png,256,256,12", newline="")
    with caplog.at_level("WARNING"):
        assert main(["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(out)]) == 0
    assert "its last row is unfinished" in caplog.text
    rows = list(csv.DictReader((out / "predictions.csv").open(newline="")))
    assert len(rows) == 1 and rows[0]["file"] == str(XRAYS[0]) and rows[0]["status"] == "ok" and None not in rows[0]


def test_a_file_name_that_is_not_utf8_is_segmented_and_escaped_in_the_table(tmp_path, capsys):
    """Linux file names are bytes: one that is not UTF-8 must not stop the run (it did, writing the CSV row);
    its row shows the bytes as \\xNN escapes and the table stays valid UTF-8."""
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        name = os.fsdecode(b"\xff\xfescan.png")
        shutil.copy(XRAYS[0], folder / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", str(folder), "--out", str(out)]) == 0
    assert (out / os.fsdecode(b"\xff\xfescan_mask.png")).is_file()
    rows = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["file"].endswith("\\xff\\xfescan.png") and rows[0]["status"] == "ok"
    assert "\\xff\\xfescan.png" in capsys.readouterr().out


def _predict_process(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "scunext", "predict", "--weights", "lungs", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)  # fmt: skip


def test_a_reader_that_goes_away_does_not_stop_the_run(tmp_path):
    """``scunext predict ... | head -1``: the per-image lines are only a view; every mask and every table row is
    still written, with no traceback (it stopped after a few images with a BrokenPipeError)."""
    inputs = _copy(XRAYS[:8], tmp_path / "in")
    proc = _predict_process([str(inputs), "--out", "out", "--batch-size", "2", "--workers", "1"], tmp_path)
    proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in err and "BrokenPipe" not in err
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 8
    assert len(list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))) == 8


def test_sigterm_stops_like_ctrl_c_and_leaves_no_temporary_file(tmp_path):
    """``kill PID`` (a scheduler, a container stop) unwinds like Ctrl+C: exit 143, one line, and no hidden
    ``.scunext-PID-N.tmp.png`` left in --out (SIGTERM used to kill the process mid-write)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    big = Image.open(XRAYS[0]).resize((2048, 2048))
    for i in range(24):
        big.save(inputs / f"x{i:02d}.png", compress_level=1)
    proc = _predict_process([str(inputs), "--out", "out", "--batch-size", "2", "--workers", "2"], tmp_path)
    proc.stdout.readline()  # the first image is done: the pipeline is full of work in flight
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]
    assert leftovers == []
    assert len(list((tmp_path / "out").glob("*_mask.png"))) < 24  # it did stop early


def test_skip_done_continues_a_killed_run_to_the_uninterrupted_result(tmp_path):
    """SIGKILL in the middle of a folder, then ``--skip-done`` into the same --out: the inputs the first run
    finished are left out, the others (some with an overlay written before the kill) are done, and the folder ends
    with the masks of an uninterrupted run and one ``ok`` row per image."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    big = Image.open(XRAYS[0]).resize((1024, 1024))
    for i in range(16):
        big.rotate(i).save(inputs / f"x{i:02d}.png", compress_level=1)
    args = [str(inputs), "--out", "out", "--batch-size", "2", "--workers", "2"]
    proc = _predict_process(args, tmp_path)
    proc.stdout.readline()  # the first image is done: the pipeline is full of work in flight
    proc.kill()
    proc.communicate(timeout=300)
    out = tmp_path / "out"
    first = {p.name for p in out.glob("*_mask.png")}
    assert 0 < len(first) < 16  # it stopped part of the way
    assert main(["predict", "--weights", "lungs", *args[:1], "--out", str(out), "--overwrite", "--skip-done"]) == 2
    todo = 16 - len(set(stream.finished_masks(out / "predictions.csv")) & first)
    proc = _predict_process([*args, "--skip-done"], tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert f"{16 - todo} of 16 input(s) finished by an earlier run" in stderr.decode()
    assert f"\n{todo} of {todo} images segmented" in stdout.decode()
    rows = [r for r in csv.DictReader((out / "predictions.csv").open()) if r["status"] == "ok"]
    assert sorted(Path(r["file"]).name for r in rows) == sorted(p.name for p in inputs.iterdir())  # once each
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    reference = tmp_path / "ref"
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(reference), "--no-quality"]) == 0
    for ref in sorted(reference.glob("*_mask.png")):
        assert np.array_equal(read_image(out / ref.name), read_image(ref)), ref.name
        assert (out / ref.name.replace("_mask", "_overlay")).is_file()


@pytest.mark.parametrize("other", [["--weights", "isic2017"], ["--weights", "lungs", "--threshold", "0.3"],
                                   ["--weights", "lungs", "--engine", "onnxruntime"]])
def test_skip_done_refuses_to_continue_another_models_run(other, tmp_path, capsys):
    """``--skip-done`` keeps the masks an earlier run finished: of another model, threshold or engine they would
    be mixed silently into this run's. One line naming what made them, nothing written; the same settings go on."""
    out = tmp_path / "out"
    argv = [str(XRAYS[0]), str(XRAYS[1]), "--out", str(out), "--no-overlay", "--no-quality"]
    assert main(["predict", "--weights", "lungs", *argv[:1], *argv[2:]]) == 0  # x0 done by "weights lungs, 0.5"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["model"] for r in rows] == [LUNGS_MODEL]
    capsys.readouterr()
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    assert main(["predict", *other, *argv, "--skip-done"]) == 2
    _one_line_error(capsys, "1 of the finished masks in")
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert main(["predict", "--weights", "lungs", *argv, "--skip-done"]) == 0  # the same model continues
    assert "1 of 1 images segmented" in capsys.readouterr().out


def test_skip_done_tells_two_runs_of_the_same_name_apart(tiny_run, tmp_path, capsys):
    """The model column named a run by its folder's name only: --skip-done continued one experiment's
    ``runs/demo`` masks with another's (or a run retrained into the same folder), mixing two models silently."""
    from scunext.config import load_config
    from scunext.engine.trainer import train

    first = tmp_path / "expA" / "demo"
    shutil.copytree(tiny_run, first)
    second = tmp_path / "expB" / "demo"
    train(load_config(first / "config.yaml", {"seed": 7}), second, show_progress=False)
    images = sorted((sample_dir("isic2017") / "images").iterdir())[:2]
    out = tmp_path / "out"
    assert main(["predict", str(first), str(images[0]), "--out", str(out), "--no-overlay", "--no-quality"]) == 0
    capsys.readouterr()
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    argv = [*map(str, images), "--out", str(out), "--no-overlay", "--no-quality", "--skip-done"]
    assert main(["predict", str(second), *argv]) == 2
    _one_line_error(capsys, "1 of the finished masks in")
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert main(["predict", str(first), *argv]) == 0


def test_long_input_names_are_segmented_and_too_long_output_names_refused_up_front(lungs, tmp_path, capsys):
    """An input name of 240 characters has a legal mask name (249) and was skipped at write time, because the
    temporary name built from it was too long; a name whose outputs cannot exist is refused before any work."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(XRAYS[0], inputs / ("b" * 240 + ".png"))
    assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(tmp_path / "out"), "--no-quality"]) == 0
    assert (tmp_path / "out" / ("b" * 240 + "_overlay.png")).is_file()
    longer = tmp_path / "in2"
    longer.mkdir()
    shutil.copy(XRAYS[0], longer / ("c" * 246 + ".png"))  # its overlay name would be 258 bytes
    assert main(["predict", "--weights", "lungs", str(longer), "--out", str(tmp_path / "out2")]) == 2
    assert "longer than the 255 bytes" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_temporary_files_a_killed_run_left_are_removed_by_the_next_run(lungs, tmp_path):
    """SIGKILL leaves no chance to clean up: the next run into the folder removes the hidden temporary outputs of
    processes that are gone, and keeps those of a process still running and every other file."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    orphans = [f".scunext-{dead.pid}-0.tmp.png", f".scunext-{dead.pid}-17.tmp.png", f".scunext-{dead.pid}-3.tmp.dcm"]
    kept = [f".scunext-{os.getppid()}-0.tmp.png",  # a live writer's
            f".scunext-{dead.pid}-1.tmp.txt", ".hidden.png", f".photo.{dead.pid}.tmp.png", "mine.txt"]  # not ours
    for name in orphans + kept:
        (out / name).write_bytes(b"x")
    jobs = plan_predictions(XRAYS[:1], out)
    records = list(stream_predict(lungs, jobs, batch_size=1, workers=1))
    assert [r.ok for r in records] == [True]
    assert sorted(p.name for p in out.iterdir()) == sorted(kept + [f"{XRAYS[0].stem}_mask.png",
                                                                   f"{XRAYS[0].stem}_overlay.png"])


# ------------------------------------------------------------------------------------------ bounded memory


def test_images_in_flight_are_bounded_whatever_the_number_of_files(lungs, tmp_path, monkeypatch):
    """The pipeline holds at most 2 * batch_size + 2 * workers images between decode and write, for 20 or 60 files."""
    small = np.asarray(Image.fromarray(read_image(XRAYS[0])).resize((64, 64)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(60):
        Image.fromarray(small).save(inputs / f"img{i:03d}.png")
    alive, peak = [0], [0]
    decode, write = stream._decode, stream._safe_write

    def counted_decode(*a, **k):
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        return decode(*a, **k)

    def counted_write(*a, **k):
        try:
            return write(*a, **k)
        finally:
            alive[0] -= 1

    monkeypatch.setattr(stream, "_decode", counted_decode)
    monkeypatch.setattr(stream, "_safe_write", counted_write)
    peaks = {}
    for n in (20, 60):
        alive[0] = peak[0] = 0
        files = sorted(inputs.iterdir())[:n]
        jobs = plan_predictions(files, tmp_path / f"out{n}", overlay=True)
        (tmp_path / f"out{n}").mkdir()
        records = list(stream_predict(lungs, jobs, batch_size=4, workers=2))
        assert [r.file for r in records] == [str(f) for f in files] and all(r.ok for r in records)
        peaks[n] = peak[0]
    assert 4 <= peaks[20] <= 2 * 4 + 2 * 2 and peaks[60] <= 2 * 4 + 2 * 2, peaks


def test_overlay_pixels_in_flight_stay_within_the_budget(lungs, tmp_path, monkeypatch):
    """Full-size images kept for overlays are bounded in bytes too: with a budget of two 256x256 overlays, at most two
    are held, and every file is still written, in order."""
    monkeypatch.setattr(stream, "MAX_KEPT_BYTES", 2 * 3 * 256 * 256)
    held, peak = [0], [0]
    decode, write = stream._decode, stream._safe_write

    def counted_decode(*a, **k):
        held[0] += 1
        peak[0] = max(peak[0], held[0])
        return decode(*a, **k)

    def counted_write(*a, **k):
        try:
            return write(*a, **k)
        finally:
            held[0] -= 1

    monkeypatch.setattr(stream, "_decode", counted_decode)
    monkeypatch.setattr(stream, "_safe_write", counted_write)
    jobs = plan_predictions(XRAYS[:10], tmp_path / "out", overlay=True)
    (tmp_path / "out").mkdir()
    records = list(stream_predict(lungs, jobs, batch_size=4, workers=2))
    assert [r.file for r in records] == [str(f) for f in XRAYS[:10]] and all(r.ok for r in records)
    assert peak[0] <= 2 and len(list((tmp_path / "out").glob("*_overlay.png"))) == 10


def test_stream_predict_argument_errors(lungs, tmp_path):
    jobs = plan_predictions(XRAYS[:1], tmp_path / "out")
    for kw in ({"batch_size": 0}, {"workers": 0}, {"fmt": "tiff"}, {"batch_size": 513}, {"workers": 65},
               {"workers": True}):
        with pytest.raises(ValueError):
            list(stream_predict(lungs, jobs, **kw))
    assert not (tmp_path / "out").exists()  # refused before any folder is made
    with pytest.raises(DataError, match="no such file"):
        plan_predictions([tmp_path / "missing.png"], tmp_path / "out")


# ------------------------------------------------------------------------------------------------ DICOM SEG


def test_dicom_seg_path_of_the_pipeline_with_a_stand_in_writer(lungs, tmp_path, monkeypatch):
    """--format dicom-seg hands write_dicom_seg the source, the native-size bool mask, a hidden .dcm temporary name
    and the model's name and version, and publishes what it wrote."""
    calls = []

    def writer(source, mask, out, *, model_name, model_version, segment):
        assert segment == "auto"  # stream_predict's default: the writer's rule on the model name
        calls.append((source, mask.dtype, mask.shape, out.name, model_name, model_version))
        out.write_bytes(np.packbits(mask).tobytes())
        return out

    monkeypatch.setattr(stream, "dicom_seg_writer", lambda: writer)
    jobs = plan_predictions(XRAYS[:2], tmp_path / "out", overlay=False)
    for job in jobs:
        job.mask = job.mask.with_name(f"{job.source.stem}_seg.dcm")
    records = list(stream_predict(lungs, jobs, fmt="dicom-seg", model_version="v1"))
    assert all(r.ok for r in records) and sorted(c[0] for c in calls) == XRAYS[:2]  # written by 2 threads: any order
    for (_, dtype, shape, name, model, version), record in zip(sorted(calls, key=lambda c: c[0]), records):
        assert dtype == np.bool_ and shape == (256, 256) and name.startswith(".") and name.endswith(".tmp.dcm")
        assert (model, version) == (lungs.name, "v1")
        written = np.unpackbits(np.frombuffer(Path(record.mask).read_bytes(), np.uint8))
        assert int(written.sum()) == record.area_px > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{f.stem}_seg.dcm" for f in XRAYS[:2]]


def test_dicom_seg_output_equals_the_png_mask(tmp_path, capsys):
    """Needs the DICOM reader and scunext.deploy.dicom_seg (DICOM branch); skipped where they are absent."""
    pytest.importorskip("scunext.deploy.dicom_seg")
    pydicom = pytest.importorskip("pydicom")
    from scunext.deploy.stream_benchmark import _write_dicom

    src = tmp_path / "in" / "xray.dcm"
    src.parent.mkdir()
    _write_dicom(read_image(XRAYS[0]), src, 0)
    assert main(["predict", "--weights", "lungs", str(src), "--out", str(tmp_path / "png")]) == 0
    assert main(["predict", "--weights", "lungs", str(src), "--out", str(tmp_path / "seg"),
                 "--format", "dicom-seg", "--no-overlay"]) == 0  # fmt: skip
    png = np.asarray(Image.open(tmp_path / "png" / "xray_mask.png")) > 0
    seg = pydicom.dcmread(tmp_path / "seg" / "xray_seg.dcm")
    np.testing.assert_array_equal(np.asarray(seg.pixel_array).reshape(png.shape) > 0, png)
    row = next(csv.DictReader((tmp_path / "seg" / "predictions.csv").open()))
    assert float(row["area_mm2"]) == pytest.approx(int(png.sum()) * 0.2 * 0.2)
    # coded as what the released weights segment (not as generic "Tissue" from the architecture's name)
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SCT Lung
    assert segment.SegmentAlgorithmName == "lungs"


# --------------------------------------------------------------------------------------------- the benchmark


def test_end_to_end_benchmark_report(tmp_path, capsys):
    argv = ["benchmark", "--end-to-end", "--n", "3", "--kinds", "png,dicom", "--overlay", "no",
            "--baseline-max-n", "2", "--workers", "1", "--batch-size", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    png = next(r for r in report["rows"] if r["kind"] == "png")
    assert png["n"] == 3 and png["ok"] == 3 and png["baseline_n"] == 2 and png["size"] == "2048x2048"
    for key in ("images_per_s", "peak_rss_mb", "cpu_ms_per_image", "baseline_images_per_s", "speed_ratio"):
        assert png[key] > 0, key
    dicom = next(r for r in report["rows"] if r["kind"] == "dicom")
    assert dicom["n"] == 3 and dicom["ok"] == 3 and dicom["size"] == "2048x2048", dicom  # pydicom is a dependency
    assert dicom["images_per_s"] > 0 and dicom["speed_ratio"] > 0
    from scunext.deploy.stream_benchmark import format_end_to_end

    table = format_end_to_end(report).splitlines()
    rows = {line.split()[0]: line.split() for line in table[1:] if line.split()[:1] in (["png"], ["dicom"])}
    assert rows["png"][1] == rows["dicom"][1] == "2048x2048" and rows["dicom"][4] == "3"
    assert main(["benchmark", "--end-to-end", "--kinds", "tiff"]) == 2
    assert "unknown input kind" in capsys.readouterr().err


def test_files_a_folder_scan_leaves_out_are_named(tmp_path, caplog, capsys):
    """A folder holding a .gif and a .webp (readable images, but not of the extensions a folder is scanned for) and
    a note: they were left out without a word ("12 of 13 images" for 15 files). Now a log line names them; given
    by name, the gif is segmented."""
    import logging

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(XRAYS[0], inputs / "a.png")
    Image.open(XRAYS[1]).save(inputs / "b.gif")
    Image.open(XRAYS[2]).save(inputs / "c.webp")
    (inputs / "notes.txt").write_text("ward 3")
    with caplog.at_level(logging.INFO, logger="scunext.deploy.predict_plan"):
        assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(tmp_path / "o"), "--no-overlay",
                     "--no-quality"]) == 0  # fmt: skip
    assert "1 of 1 images segmented" in capsys.readouterr().out
    said = [r.getMessage() for r in caplog.records if "left out file(s) without an image extension" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("b.gif, c.webp, notes.txt; give a file by name to segment it anyway")
    assert main(["predict", "--weights", "lungs", str(inputs / "b.gif"), "--out", str(tmp_path / "g"),
                 "--no-overlay", "--no-quality"]) == 0  # fmt: skip
    assert (tmp_path / "g" / "b.gif_mask.png").is_file()  # (its id keeps the extension it is not scanned for)


@pytest.mark.parametrize(("key", "edit"), [("size", "size: 128"), ("intensity", "intensity: percentile")])
def test_config_edited_away_from_the_checkpoints_preprocessing_is_refused(tiny_run, tmp_path, capsys, key, edit):
    """A ``size: 128`` edited into the config.yaml of a 256 model gave masks with Dice 0.30 against its own, exit 0
    (all empty at 64): the checkpoint records the size and intensity step it was trained with."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = run / "config.yaml"
    cfg.write_text("".join(edit + "\n" if line.startswith(f"{key}:") else line
                           for line in cfg.read_text().splitlines(keepends=True)))  # fmt: skip
    image = str(sorted((sample_dir("isic2017") / "images").iterdir())[0])
    for argv in (["predict", str(run), image, "--out", str(tmp_path / "o")], ["evaluate", str(run), "--no-hd95"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"config.yaml says {key}: " in err and "restore it" in err, err
    assert not (tmp_path / "o").exists() and not (run / "eval").exists()


def test_a_runs_own_quality_file_of_other_weights_is_refused(tmp_path, capsys):
    """A run's own quality.json was never checked against its weights (only --quality FILE was): one copied from
    other weights flagged this model's masks against another model's area prior, exit 0."""
    run = tmp_path / "lungs"
    shutil.copytree(weights_dir("lungs"), run)
    shutil.copy(weights_dir("isic2017") / "quality.json", run / "quality.json")
    image = str(sorted((sample_dir("chest-xray-lungs") / "images").iterdir())[0])
    assert main(["predict", str(run), image, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibrated for other weights" in err and "scunext calibrate" in err, err
    assert not (tmp_path / "a").exists()
    # not used: --no-quality; replaced: --quality FILE of these weights
    assert main(["predict", str(run), image, "--out", str(tmp_path / "b"), "--no-quality"]) == 0
    own = str(weights_dir("lungs") / "quality.json")
    assert main(["predict", str(run), image, "--out", str(tmp_path / "c"), "--quality", own]) == 0
    assert "0 flagged for review" in capsys.readouterr().out


def test_skip_done_does_not_take_another_inputs_mask_of_the_same_name(tmp_path, capsys, caplog):
    """PACS exports repeat names (IM0001) in every series folder: with ``--skip-done`` into the folder of series A,
    series B's IM0001 counted as done by A's mask and was never segmented (exit 0). A row counts only for the input
    it names; a user's file of an unfinished input's name that --skip-done replaces is named in a warning."""
    series = {}
    for name, picks in (("A", XRAYS[:1]), ("B", XRAYS[1:3])):
        series[name] = tmp_path / name
        series[name].mkdir()
        for i, src in enumerate(picks):
            shutil.copy(src, series[name] / f"IM{i:04d}.png")
    out = tmp_path / "out"
    common = ["--out", str(out), "--no-overlay", "--no-quality"]
    assert main(["predict", "--weights", "lungs", str(series["A"]), *common]) == 0
    capsys.readouterr()
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    assert main(["predict", "--weights", "lungs", str(series["B"]), *common, "--skip-done"]) == 2
    _one_line_error(capsys, "made from other inputs of the same name (IM0000_mask.png from")
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    # the same series continues (given by another path to the same folder); a stray file is replaced, and said
    (out / "IM0001_mask.png").write_bytes(b"someone's file")
    more = tmp_path / "A" / "IM0001.png"
    shutil.copy(XRAYS[3], more)
    with caplog.at_level("WARNING"):
        assert main(["predict", "--weights", "lungs", str(tmp_path / "." / "A"), *common, "--skip-done"]) == 0
    assert "1 file(s) of unfinished inputs will be replaced (--skip-done): IM0001_mask.png" in caplog.text
    assert "1 of 1 images segmented" in capsys.readouterr().out


@pytest.mark.parametrize("torn", ["inside the quotes", "without its line break"])
def test_a_torn_last_row_is_cut_off_and_its_image_redone(tmp_path, capsys, torn):
    """A crash (power loss, a full disk) can cut predictions.csv's last row inside its quoted ``model`` field: the
    open quote swallowed the next run's first row into that field (50 rows read as 49) and then blocked
    --skip-done with a garbage model name. The torn row is cut off and its image counts as not done."""
    out = tmp_path / "out"
    argv = ["predict", "--weights", "lungs", str(XRAYS[0]), str(XRAYS[1]), "--out", str(out), "--no-overlay",
            "--no-quality"]  # fmt: skip
    assert main(argv) == 0
    table = out / "predictions.csv"
    text = table.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    last = lines[-1]
    cut = last[: last.index('"weights') + 15] if torn == "inside the quotes" else last.rstrip("\r\n")
    table.write_text("".join(lines[:-1]) + cut, encoding="utf-8", newline="")
    assert stream.complete_length(table) == len("".join(lines[:-1]).encode())
    capsys.readouterr()
    assert main([*argv, "--skip-done"]) == 0
    assert "1 of 1 images segmented" in capsys.readouterr().out
    rows = list(csv.DictReader(table.open(newline="", encoding="utf-8")))
    assert [Path(r["file"]).name for r in rows] == [XRAYS[0].name, XRAYS[1].name]
    assert all(r["model"] == LUNGS_MODEL and r["status"] == "ok" for r in rows)


def test_many_unreadable_inputs_are_all_listed_with_verbose(tmp_path, capsys, caplog):
    """The one-line refusal names three unreadable inputs; with -v every one is logged, so that dozens of bad
    files among thousands are fixed in one go, not three at a time."""
    inputs = _copy(XRAYS[:1], tmp_path / "in")
    for i in range(5):
        (inputs / f"bad{i}.png").write_bytes(b"not an image")
    with caplog.at_level("DEBUG", logger="scunext.deploy.predict_plan"):
        assert main(["predict", "--weights", "lungs", str(inputs), "--out", str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys, "5 of 6 inputs cannot be read")
    assert "(all 5 listed with -v)" in err and not (tmp_path / "out").exists()
    listed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot be read: ")]
    assert sorted(m.split("/")[-1].split(":")[0] for m in listed) == [f"bad{i}.png" for i in range(5)]


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_the_onnxruntime_engine_without_the_onnx_extra_is_one_line(missing, tmp_path, monkeypatch, capsys):
    """Without onnx, --engine onnxruntime (and the benchmark's default engines) died in torch's exporter with a
    traceback (OnnxExporterError, exit 1): one line naming the extra, exit 2, nothing written."""
    from scunext.deploy.runtimes import make_runner
    from scunext.errors import MissingDependencyError
    from scunext.models import create_model

    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(MissingDependencyError, match=rf"{missing} is not installed; .*pip install 'scunext\[onnx\]'"):
        make_runner(create_model("unext_s"), "onnxruntime")
    out = tmp_path / "out"
    assert main(["predict", "--weights", "lungs", str(XRAYS[0]), "--out", str(out), "--engine", "onnxruntime"]) == 2
    _one_line_error(capsys, "pip install 'scunext[onnx]'")
    assert not out.exists()
