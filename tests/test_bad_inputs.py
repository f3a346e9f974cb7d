"""The bad-input catalogue: every way of getting a command wrong that we know of, as one table.

Each case runs the CLI in-process (``scunext.cli.main.main``) in a folder of prepared bad inputs and asserts:

- the exit code: 2 for a usage, config or data error (a run that failed on its own, exit 1, is tested in
  test_run_dir.py and test_engine.py);
- exactly one line on stderr, ``scunext CMD: error: ...``, naming the problem (a needle), and no traceback;
- nothing left behind and nothing changed: the folder (including a trained run) is the same before and after.

Cases that another branch fixes are marked ``xfail(strict=True)`` with the branch in the reason, so that the merge
flips them. A few cases also run as real subprocesses (exit status and stderr of the real process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scunext.cli.main import main
from scunext.data import sample_dir
from scunext.weights import weights_dir

TINY = ["--model", "unext_s", "--size", "64", "--epochs", "1", "--batch-size", "4", "--no-progress"]


def _copy_pairs(root: Path, n: int = 6) -> Path:
    src = sample_dir("isic2017")
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for f in sorted((src / "images").iterdir())[:n]:
        shutil.copy(f, root / "images" / f.name)
        shutil.copy(src / "masks" / (f.stem + ".png"), root / "masks" / (f.stem + ".png"))
    return root


@pytest.fixture(scope="module")
def world_template(tmp_path_factory, tiny_run) -> Path:
    """A folder of bad inputs next to a copy of a trained run (``run``)."""
    w = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(tiny_run, w / "run")
    (w / "file.txt").write_text("not a folder\n")
    (w / "emptydir").mkdir()
    (w / "nonempty").mkdir()
    (w / "nonempty" / "keep.txt").write_text("user file\n")
    (w / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    sample_image = sorted((sample_dir("isic2017") / "images").iterdir())[0]
    shutil.copy(sample_image, w / "img.jpg")
    Image.open(sample_image).save(w / "img_mask.png")  # an input named like img.jpg's mask (an earlier output)
    Image.fromarray(np.ones((64, 64), np.float32)).save(w / "float.tif")  # refused from the header
    Image.open(sample_image).convert("L").save(w / "rotated.tif", tiffinfo={0x0112: 6})  # Pillow would rotate it
    (w / "preds").mkdir()  # a folder that already holds a user's earlier prediction
    (w / "preds" / "img_mask.png").write_bytes(b"earlier result")
    (w / "report").mkdir()  # a folder that already holds an earlier evaluation report
    (w / "report" / "metrics.json").write_text("{}\n")
    configs = {
        "badyaml.yaml": "epochs: [1\n",
        "list.yaml": "- 1\n- 2\n",
        "unknown.yaml": "bogus: 1\n",
        "aug.yaml": "augment: {hflip: 1}\n",
        "evil.yaml": "lr: !!python/object/apply:os.system [ls]\n",
        "badvalue.yaml": "epochs: many\n",
        "tf.yaml": "test_fraction: 0.3\n",  # Table 2's k-fold ignores it
        "numkeys.yaml": "1: 2\nzz: 3\n",  # YAML keys that are numbers beside strings
        "nested.yaml": "model_args: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "digits.yaml": "epochs: " + "9" * 5000 + "\n",
        "numaug.yaml": "augment: {1: 2, zz: 3}\n",
        "big.yaml": "epochs: 3\njunk: [" + "1, " * 400_000 + "]\n",  # 1.2 MB: parsed whole (GBs) before
    }
    for name, text in configs.items():
        (w / name).write_text(text)
    (w / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01")
    # quality files (predict/robustness/serve --quality) with one wrong value each
    good = {"format": "scunext-quality/1", "threshold": 0.8, "area_lo": 0.1, "area_hi": 0.5,
            "min_area_fraction": 0.01, "max_components": 3}  # fmt: skip
    bad_quality = {"q-text": {"threshold": "high"}, "q-nan": {"threshold": float("nan")},
                   "q-above": {"threshold": 2.0}, "q-swapped": {"area_lo": 0.6},
                   "q-components": {"max_components": -1}, "q-bool": {"max_components": True},
                   "q-sha": {"weights_sha256": "abc"}, "q-other": {"weights_sha256": "0" * 64}}  # fmt: skip
    for name, change in bad_quality.items():
        (w / f"{name}.json").write_text(json.dumps({**good, **change}))
    (w / "q-missing.json").write_text(json.dumps({k: v for k, v in good.items() if k != "threshold"}))
    (w / "q-nested.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json
    (w / "q-digits.json").write_text(json.dumps(good)[:-1] + ', "x": ' + "9" * 5000 + "}")  # over int's 4,300 digits
    (w / "q-bigint.json").write_text(json.dumps({**good, "max_components": 10**400}))  # OverflowError in isfinite
    (w / "q-binary.json").write_bytes(b"\xff\xfe\x00")
    # datasets with one problem each (6 real sample pairs)
    nonbinary = _copy_pairs(w / "nonbinary")
    mask = sorted((nonbinary / "masks").iterdir())[3]
    m = np.array(Image.open(mask))
    m[0, 0] = 7
    Image.fromarray(m).save(mask)
    corrupt = _copy_pairs(w / "corrupt")  # the 4th image (not the first one) is truncated
    bad = sorted((corrupt / "images").iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:200])
    unpaired = _copy_pairs(w / "unpaired")
    sorted((unpaired / "masks").iterdir())[2].unlink()
    sizes = _copy_pairs(w / "sizes")
    mask = sorted((sizes / "masks").iterdir())[1]
    Image.fromarray(np.array(Image.open(mask))[:200]).save(mask)
    empty = _copy_pairs(w / "emptymasks")  # every mask all background (e.g. masks kept in an alpha channel)
    for m in (empty / "masks").iterdir():
        Image.fromarray(np.zeros_like(np.array(Image.open(m)))).save(m)
    # an interrupted run whose last checkpoint was replaced by another model's: its commit record refuses it (the
    # model check behind it, for old runs without a commit record: test_run_dir.py)
    other = w / "other-model"
    shutil.copytree(tiny_run, other)
    status = json.loads((other / "run.json").read_text())
    status["commit"]["config"]["epochs"] = 2  # as if started for 2 epochs: its settings are in the commit record
    (other / "run.json").write_text(json.dumps({**status, "status": "running", "epochs": 2}))
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("epochs: 1", "epochs: 2"))
    from scunext.models import create_model
    from scunext.runs import save_checkpoint

    save_checkpoint(other / "last", create_model("sc_unext"), "sc_unext", epoch=1)
    damaged = w / "damaged"  # a run whose best weights file was deleted
    shutil.copytree(tiny_run, damaged)
    (damaged / "best.safetensors").unlink()
    return w


@pytest.fixture
def world(world_template, tmp_path) -> Path:
    """A fresh copy of the template for each case, so that a case that leaves something behind spoils no other."""
    return Path(shutil.copytree(world_template, tmp_path / "world", symlinks=True))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def case(cmd: str, *argv: str, code: int = 2, needle: str = "", marks=()) -> pytest.param:  # noqa: ANN001
    name = f"{cmd} {' '.join(argv)}".replace(" ".join(TINY), "<tiny run>")
    return pytest.param([cmd, *argv], code, needle, marks=marks, id=name)


CASES = [
    # ---------------------------------------------------------------- train: flags and values
    case("train", "--out", "r", "--model", "nope", needle="invalid choice: 'nope'"),
    case("train", "--out", "r", "--epochs", "x", needle="epochs must be an integer"),
    case("train", "--out", "r", "--epochs", "0", needle="epochs must be >= 1"),
    case("train", "--out", "r", "--epochs", "1.5", needle="epochs must be an integer"),
    case("train", "--out", "r", "--lr", "nan", needle="lr must be finite, got nan"),
    case("train", "--out", "r", "--lr", "-1", needle="lr > 0"),
    case("train", "--out", "r", "--min-lr", "1", "--lr", "0.1", needle="min_lr <= lr"),
    case("train", "--out", "r", "--lr", "1e38", needle="lr must be <= 1e+06"),
    case("train", "--out", "r", *TINY, "--split-csv", "file.txt", needle="--split-csv apply only to --split csv"),
    case("train", "--out", "r", *TINY, "--split-column", "x", needle="--split-column apply only to --split csv"),
    case("train", "--out", "r", *TINY, "--split-id-column", "x", needle="--split-id-column apply only to --split csv"),
    case("train", "--out", "r", *TINY, "--fold", "2", needle="--fold apply only to --split kfold"),
    case("train", "--out", "r", *TINY, "--split", "kfold", "--test-fraction", "0.3", needle="--test-fraction does not"),
    case("train", "--out", "r", "--beta1", "1", needle="beta1"),
    case("train", "--out", "r", "--size", "16", needle="size must be between 32 and 4096"),
    case("train", "--out", "r", "--batch-size", "0", needle="batch_size"),
    case("train", "--out", "r", "--batch-size", "9223372036854775808",
         needle="batch_size must be between 1 and 65,536"),  # was a traceback after the run folder was made
    case("train", "--out", "r", "--in-channels", "2", needle="invalid choice: 2"),
    case("train", "--out", "r", "--split", "holdout", needle="invalid choice: 'holdout'"),
    case("train", "--out", "r", "--fold", "7", needle="fold < folds"),
    case("train", "--out", "r", "--split", "kfold", "--folds", "1", needle="folds >= 2"),
    case("train", "--out", "r", "--test-fraction", "1.5", needle="test_fraction"),
    case("train", "--out", "r", "--val-fraction", "0", needle="val_fraction"),
    case("train", "--out", "r", "--seed", "-1", needle="seed"),
    case("train", "--out", "r", "--max-images", "-3", needle="max_images"),
    case("train", "--out", "r", "--num-workers", "-1", needle="num_workers"),
    case("train", "--out", "r", "--num-workers", "100000", needle="num_workers must be <= 64"),
    case("train", "--out", "r", "--size", "100000", needle="size must be between 32 and 4096"),
    case("train", "--out", "r", "--eval-every", "0", needle="eval_every"),
    case("train", "--out", "r", "--device", "tpu", needle="invalid choice: 'tpu'"),
    case("train", "--out", "r", "--amp-dtype", "int8", needle="invalid choice: 'int8'"),
    case("train", "--out", "r", "--loss", "focal", needle="invalid choice: 'focal'"),
    case("train", "--out", "r", "--bogus-flag", needle="unrecognized arguments: --bogus-flag"),
    # ---------------------------------------------------------------- train: --set / --model-arg / --config
    case("train", "--out", "r", "--set", "lr=[1", needle="not a valid YAML value"),
    case("train", "--out", "r", "--model-arg", "pfm={a", needle="not a valid YAML value"),
    case("train", "--out", "r", "--set", "lr=!!python/object/apply:os.system [x]", needle="not a valid YAML value"),
    case("train", "--out", "r", "--set", "lr=[1]", needle="lr must be a number"),
    case("train", "--out", "r", "--set", "nonsense=1", needle="unknown config key 'nonsense'"),
    case("train", "--out", "r", "--set", "=3", needle="KEY=VALUE"),
    case("train", "--out", "r", "--model-arg", "pfm", needle="KEY=VALUE"),
    case("train", "--out", "r", "--set", "augment.hflip=1", needle="unknown augmentation option 'hflip'"),
    case("train", "--out", "r", "--set", "augment.hflip_p=2", needle="hflip_p is a probability"),
    case("train", "--out", "r", "--set", "augment=3", needle="augment must be a mapping"),
    case("train", "--out", "r", "--set", "model_args=[1]", needle="model_args must be a mapping"),
    case("train", "--out", "r", "--set", "data=[a]", needle="[a]: dataset folder not found"),  # text kept as written
    case("train", "--out", "r", "--set", "model=[a]", needle="model must be one of"),
    case("train", "--out", "r", "--config", "missing.yaml", needle="config file not found"),
    case("train", "--out", "r", "--config", "emptydir", needle="emptydir"),
    case("train", "--out", "r", "--config", "badyaml.yaml", needle="not valid YAML"),
    case("train", "--out", "r", "--config", "evil.yaml", needle="not valid YAML"),
    case("train", "--out", "r", "--config", "list.yaml", needle="expected a mapping"),
    case("train", "--out", "r", "--config", "unknown.yaml", needle="unknown config key(s) ['bogus']"),
    case("train", "--out", "r", "--config", "aug.yaml", needle="unknown augmentation option(s) hflip"),
    case("train", "--out", "r", "--config", "numkeys.yaml", needle="unknown config key(s) [1, 'zz']"),
    case("train", "--out", "r", "--config", "nested.yaml", needle="not valid YAML (RecursionError)"),
    case("train", "--out", "r", "--config", "digits.yaml", needle="not valid YAML (ValueError)"),
    case("train", "--out", "r", "--set", "epochs=" + "9" * 5000, needle="not a valid YAML value"),
    case("train", "--out", "r", "--model-arg", "x=[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, "
         "*a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]]",
         needle="model_args holds more than 10,000 values"),
    case("train", "--out", "r", "--config", "numaug.yaml", needle="unknown augmentation option(s) 1, zz"),
    case("train", "--out", "r", "--config", "badvalue.yaml", needle="epochs must be an integer"),
    case("train", "--out", "r", "--config", "binary.yaml", needle="cannot read"),
    # ---------------------------------------------------------------- train: folders and data
    case("train", "--out", "r", "--data", "missing", needle="dataset folder not found"),
    case("train", "--out", "r", "--data", "file.txt", needle="not a folder"),
    case("train", "--out", "r", "--data", "emptydir", needle="image folder not found"),
    case("train", "--out", "r", "--data", "unpaired", *TINY, needle="without a mask"),
    case("train", "--out", "r", "--split", "csv", "--split-column", "bogus", needle="no split column 'bogus'"),
    case("train", "--out", "r", "--split", "csv", "--split-id-column", "file", needle="no id column 'file'"),
    # empty or repeated: --resume "" started a new 400-epoch default run, --config "" used the defaults, and of two
    # --config files the first was ignored
    case("train", "--resume", "", needle="--resume is empty"),
    case("train", "--out", "", *TINY, needle="--out is empty"),
    case("train", "--out", "r", "--config", "", needle="--config is empty"),
    case("train", "--out", "r", "--config", "tf.yaml", "--config", "aug.yaml", needle="--config given twice"),
    case("train", "--out", "r", "--config", "big.yaml", needle="larger than 1,000,000 bytes"),
    case("train", "--out", "r", "--split", "csv", "--split-csv", "missing.csv", needle="split CSV not found"),
    case("train", "--out", "r", "--max-images", "1", needle="cannot split 1 ids"),
    case("train", "--out", "file.txt", needle="is a file"),
    case("train", "--out", "file.txt/sub", needle="file.txt is a file"),
    case("train", "--out", "nonempty", *TINY, needle="not empty"),
    case("train", "--resume", "missing", needle="does not exist"),
    case("train", "--resume", "emptydir", needle="not a scunext run folder"),
    case("train", "--resume", "run", needle="already finished"),
    case("train", "--resume", "run", "--lr", "0.1", needle="only --device, --data and --num-workers"),
    case("train", "--resume", "run", "--out", "x", needle="drop --out"),
    case("train", "--out", "r", "--data", "nonbinary", *TINY, needle="not binary"),
    case("train", "--out", "r", "--data", "emptymasks", *TINY, needle="every one of the 6 masks is empty"),
    case("train", "--out", "r", "--data", "corrupt", *TINY, needle="corrupt/images/"),
    case("train", "--out", "r", "--data", "sizes", *TINY, needle="mask is 256x200"),
    case("train", "--out", "r", *TINY, "--size", "250", needle="size 250 does not fit unext_s"),
    case("train", "--out", "r", *TINY, "--model-arg", "bogus=1", needle="unexpected keyword argument 'bogus'"),
    case("train", "--out", "r", *TINY, "--loss-arg", "bogus=1", needle="bad arguments for loss 'bce_dice'"),
    case("train", "--resume", "other-model", "--no-progress", needle="last.json differs from the epoch-1 commit"),
    case("train", "--resume", "other-model", "--data", "emptydir", needle="emptydir/images: image folder not found"),
    # ---------------------------------------------------------------- evaluate
    case("evaluate", "missing", needle="run folder not found"),
    case("evaluate", "file.txt", needle="run folder not found"),
    case("evaluate", "emptydir", needle="no best checkpoint"),
    case("evaluate", "run", "--out", "file.txt", needle="is a file"),
    case("evaluate", "run", "--out", "", needle="--out is empty"),  # not the run's own eval/test
    case("evaluate", "run", "--out", "report", needle="already holds a report (metrics.json)"),
    case("evaluate", "run", "--subset", "bogus", needle="invalid choice: 'bogus'"),
    case("evaluate", "run", "--checkpoint", "worst", needle="invalid choice: 'worst'"),
    case("evaluate", "run", "--data", "missing", needle="dataset folder not found"),
    case("evaluate", "run", "--device", "tpu", needle="invalid choice: 'tpu'"),
    # ---------------------------------------------------------------- predict
    case("predict", "run", "img.jpg", "--out", "o", "--threshold", "2", needle="--threshold"),
    case("predict", "run", "garbage.png", "--out", "o", needle="garbage.png"),
    case("predict", "run", "missing.png", "--out", "o", needle="missing.png"),
    case("predict", "damaged", "img.jpg", "--out", "o", needle="best.safetensors is not the file the run committed"),
    case("predict", "run", "img.jpg", "float.tif", "--out", "o", needle="float.tif: floating-point images are not"),
    case("predict", "run", "img.jpg", "rotated.tif", "--out", "o", needle="rotated.tif: TIFF orientation tag 6"),
    case("predict", "run", "emptydir", "--out", "o", needle="no images"),
    case("predict", "run", "--out", "o", needle="at least one INPUT"),
    case("predict", "run", "img.jpg", "img_mask.png", "--out", ".", "--overwrite", needle="would replace input"),
    case("predict", "run", "img.jpg", "--out", "o", "--workers", "100000", needle="--workers must be between 1 and 64"),
    case("predict", "run", "img.jpg", "--out", "o", "--batch-size", "100000",
         needle="--batch-size must be between 1 and 512"),
    case("predict", "missing", "img.jpg", "--out", "o", needle="not a training run folder"),
    case("predict", "--weights", "nope", "img.jpg", "--out", "o", needle="no released weights named 'nope'"),
    case("predict", "run", "img.jpg", "--out", "o", "--engine", "warp", needle="invalid choice: 'warp'"),
    case("predict", "run", "img.jpg", needle="the following arguments are required: --out"),
    case("predict", "run", "img.jpg", "--out", "file.txt", needle="file.txt"),
    case("predict", "run", "img.jpg", "--out", "preds", needle="img_mask.png"),
    case("predict", "--weights", "lungs", "--weights", "isic2017", "img.jpg", "--out", "o", needle="given twice"),
    case("predict", "run", "img.jpg", "--out", "", needle="--out is empty"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-text.json", needle="threshold must be a finite"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-nested.json", needle="not a readable quality"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-digits.json", needle="not a readable quality"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-bigint.json",
         needle="max_components must be a finite number"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "/dev/zero", needle="not a regular file"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-nan.json", needle="threshold must be a finite"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-above.json", needle="threshold must be in [0, 1]"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-swapped.json", needle="area_lo <= area_hi"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-components.json", needle="max_components"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-bool.json", needle="max_components"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-sha.json", needle="weights_sha256 must be"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-other.json", needle="for other weights"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-missing.json", needle="without threshold"),
    case("predict", "run", "img.jpg", "--out", "o", "--quality", "q-binary.json", needle="not a readable quality"),
    case("robustness", "run", "--out", "o", "--group-pattern", "(", needle="not a valid regular expression"),
    case("robustness", "run", "--out", "file.txt", needle="file.txt is a file"),
    case("robustness", "run", "--out", "", needle="--out is empty"),  # not the current folder
    # fails on the 4th image: no per_image.csv.partial and no o/r are left behind
    case("robustness", "run", "--data", "corrupt", "--subset", "all", "--shifts", "noise", "--no-quality",
         "--no-progress", "--out", "o/r", needle="corrupt/images/"),
    case("robustness", "run", "--out", "file.txt/r", needle="file.txt is a file"),
    case("calibrate", "run", "--out", "emptydir", needle="is a folder"),
    case("calibrate", "run", "--out", "", needle="--out is empty"),  # not RUN_DIR/quality.json
    case("calibrate", "run", "--data", "corrupt", "--shifts", "noise", "--no-progress", "--out", "o/q.json",
         needle="not found among the 6 pairs"),  # the o/ it made for q.json is removed again
    case("calibrate", "run", "--out", "file.txt/q.json", needle="file.txt is a file"),
    case("export", "run", "--out", "m.onnx", "--size", "100000", needle="--size 100000 is above 4096"),
    # end-to-end options without --end-to-end were ignored while the model benchmark (minutes) ran instead
    case("benchmark", "--n", "5", "--kinds", "png",
         needle="--n, --kinds are options of --end-to-end; add that flag, or drop them"),
    case("benchmark", "--no-baseline", needle="--no-baseline is an option of --end-to-end; add that flag, or drop it"),
    # an option given twice: an error, not "the last one wins" (the first --out stayed empty without a word)
    case("predict", "run", "img.jpg", "--out", "o", "--out", "p", needle="--out given twice (o, p)"),
    case("evaluate", "run", "--out", "o", "--out", "p", needle="--out given twice"),
    case("export", "run", "--out", "a.onnx", "--out", "b.onnx", needle="--out given twice"),
    case("train", "--out", "r", "--out", "s", "--epochs", "1", needle="--out given twice"),
    case("robustness", "run", "--out", "o", "--out", "p", needle="--out given twice"),
    case("calibrate", "run", "--out", "o.json", "--out", "p.json", needle="--out given twice"),
    case("experiment", "table1", "--data", "ds", "--out", "e", "--models", "unet,sc_unext,unet",
         needle="--models names unet more than once"),
    # the released weights' folders are part of the installed package: no default output goes there
    case("evaluate", str(weights_dir("lungs")), needle="part of the installed package"),
    case("evaluate", str(weights_dir("lungs") / "."), "--subset", "val", needle="default RUN_DIR/eval/val/"),
    case("calibrate", "--weights", "lungs", "--shifts", "gamma", needle="part of the installed package"),
    case("calibrate", str(weights_dir("isic2017")), needle="shipped with the weights"),
    case("export", str(weights_dir("lungs")), needle="part of the installed package"),
    # ---------------------------------------------------------------- export
    case("export", needle="either a RUN_DIR or --weights"),
    case("export", "run", "--weights", "isic2017", needle="either a RUN_DIR or --weights"),
    case("export", "missing", needle="run folder not found"),
    case("export", "emptydir", "--out", "m.onnx", needle="no best checkpoint"),
    case("export", "--weights", "nope", needle="no released weights named 'nope'"),
    case("export", "run", "--out", "emptydir", needle="is a folder"),
    case("export", "run", "--out", "", needle="--out is empty"),  # not RUN_DIR/model.onnx
    case("export", "--weights", "lungs", "--out", " ", needle="--out is empty"),
    case("export", "run", "--out", "file.txt", needle="exists; pass --overwrite"),
    case("export", "run", "--out", "file.txt/m.onnx", needle="file.txt is a file"),
    case("export", "run", "--out", "m.onnx", "--size", "0", needle="--size"),
    case("export", "run", "--out", "m.onnx", "--size", "250", needle="multiple of 32"),
    case("export", "run", "--format", "tflite", needle="invalid choice: 'tflite'"),
    # ---------------------------------------------------------------- serve (never reaches a real server)
    case("serve", needle="at least one RUN_DIR"),
    case("serve", "missing", needle="run folder not found"),
    case("serve", "emptydir", needle="no best checkpoint"),
    case("serve", "--weights", "nope", needle="no released weights named 'nope'"),
    case("serve", "run", "--port", "70000", needle="--port"),
    case("serve", "run", "--port", "x", needle="invalid int value: 'x'"),
    case("serve", "run", "--max-upload-mb", "0", needle="--max-upload-mb"),
    case("serve", "run", "--max-megapixels", "nan", needle="--max-megapixels"),
    case("serve", "run", "--engine", "warp", needle="invalid choice: 'warp'"),
    # ---------------------------------------------------------------- the other commands
    case("weights", "nope", needle="no released weights named 'nope'"),
    case("profile", "--model", "unext_s", "--size", "250", "--no-latency", needle="divisible by 32"),
    case("profile", "--model", "unext_s", "--threads", "0", needle="--threads"),
    case("profile", "--model", "unext_s", "--size", "100000", "--no-latency", needle="--size 100000"),
    case("profile", "--model", "unext_s", "--num-classes", "0", "--no-latency", needle="--num-classes"),
    case("profile", "--model", "unext_s", "--in-channels", "100000", needle="between 1 and 1024"),
    case("profile", "--model", "unext_s", "--num-classes", "100000", needle="between 1 and 1024"),
    case("profile", "--model", "unet", "--in-channels", "1000", "--size", "4096", needle="above the limit of 3 x 4096"),
    case("profile", "--model", "unet", "--in-channels", "50000000", "--size", "1", "--no-latency",
         needle="between 1 and 1024"),  # a 57.6 GB first layer, built before any size check
    case("profile", needle="one of the arguments --model --all is required"),
    case("benchmark", "--size", "250", "--no-memory", needle="multiple of 32"),
    case("benchmark", "--engines", "warp", "--no-memory", needle="available"),
    case("benchmark", "--size", "100000", "--no-memory", needle="--size 100000 is above 4096"),
    case("benchmark", "--end-to-end", "--threads", "5000", needle="--threads must be between 1 and 1024"),
    case("benchmark", "--end-to-end", "--n", "100,10001", needle="numbers of files must be <= 10,000"),
    case("benchmark", "--end-to-end", "--workers", "65", needle="workers must be at most 64"),
    case("experiment", "table1", "--data", "missing", "--out", "e", needle="dataset folder not found"),
    case("experiment", "table1", "--data", "emptydir", "--out", "e", "--epochs", "1", needle="image folder not found"),
    case("experiment", "table1", "--data", "emptydir", "--out", "e", "--epochs", "0", needle="epochs must be >= 1"),
    case("experiment", "table1", "--data", "emptydir", "--out", "e", "--models", "nope", needle="unknown model"),
    case("experiment", "table1", "--data", "emptydir", "--out", "e", "--shard", "3/2", needle="--shard"),
    case("experiment", "table2", "--data", "emptydir", "--out", "e", "--folds", "1", needle="--folds"),
    case("experiment", "table2", "--data", "emptydir", "--out", "e", "--folds", "100000",
         needle="--folds must be <= 100"),
    case("experiment", "cross-site", "--data", "emptydir", "--out", "e", "--site-pattern", "x", "--seeds", "101",
         needle="--seeds must be <= 100"),
    case("experiment", "table2", "--data", "nonbinary", "--out", "e", "--config", "tf.yaml", "--epochs", "1",
         needle="--test-fraction does not apply to --split kfold"),
    case("experiment", "table3", "--data", "emptydir", "--out", "e", needle="invalid choice: 'table3'"),
    # the CSV's test rows are the test part: --test-fraction was ignored silently and recorded in config.yaml
    case("train", "--split", "csv", "--test-fraction", "0.5", "--out", "r",
         needle="--test-fraction does not apply to --split csv"),
    # the latency column is measured after the last training run: its flags are checked before the first
    case("experiment", "leaderboard", "--data", "emptydir", "--out", "e", "--threads", "0",
         needle="--threads must be between 1 and 1024"),
    case("experiment", "leaderboard", "--data", "emptydir", "--out", "e", "--latency-runs", "0",
         needle="--latency-runs must be >= 1"),
    case("experiment", "table2", "--data", "emptydir", "--out", "e", "--n-boot", "0",
         needle="--n-boot must be between 1 and 100,000"),
    case("experiment", "table2", "--data", "emptydir", "--out", "e", "--n-boot", "1000000000",
         needle="--n-boot must be between 1 and 100,000"),  # was a MemoryError traceback after the last run
    case("experiment", "leaderboard", "--data", "emptydir", "--out", "e", "--n-boot", "-1",
         needle="--n-boot must be between 1 and 100,000"),
    case("experiment", "leaderboard", "--data", "emptydir", "--out", "e", "--records", "file.txt",
         needle="is a file, not a folder"),  # was "[Errno 17] File exists" after writing the experiment folder
    case("experiment", "leaderboard", "--data", "emptydir", "--out", "e", "--cross-site", "missing",
         needle="--cross-site missing: folder not found"),  # was read only after the last training run
    case("nope", needle="invalid choice: 'nope'"),
]


@pytest.mark.parametrize(("argv", "code", "needle"), CASES)
def test_bad_input(argv, code, needle, world, capsys, monkeypatch):
    monkeypatch.chdir(world)
    before = _snapshot(world)
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's own errors
        got = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    prog = "scunext" if argv[0] == "nope" else f"scunext {argv[0]}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    assert got == code
    assert _snapshot(world) == before, "a file was left behind or changed"


def test_no_command_writes_into_the_released_weights(tmp_path):
    """``scunext evaluate .../assets/weights/lungs`` wrote its report into the installed package: the cases above
    are refused, and the weights' folders hold the same files afterwards (the snapshot of the test world does not
    cover the package)."""
    folders = [weights_dir(n) for n in ("lungs", "isic2017")]
    before = [sorted(p.relative_to(f) for p in f.rglob("*")) for f in folders]
    for argv in (["evaluate", str(folders[0])], ["calibrate", str(folders[1])], ["export", str(folders[0])]):
        assert main(argv) == 2
    assert [sorted(p.relative_to(f) for p in f.rglob("*")) for f in folders] == before


def test_catalogue_is_large_enough():
    assert len(CASES) >= 50
    commands = {p.values[0][0] for p in CASES}
    assert {"train", "evaluate", "predict", "export", "serve"} <= commands


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--set", "lr=!!python/object/apply:os.system [echo pwned]"], "not a valid YAML value"),
        (["evaluate", "run", "--out", "file.txt"], "is a file"),
        (["export", "run", "--out", "emptydir"], "is a folder"),
        (["serve", "run", "--port", "70000"], "--port"),
        # torch's thread pool crashed the process (segmentation fault, exit 139) at this many threads
        (["profile", "--model", "unext_s", "--size", "64", "--repeats", "1", "--threads", "100000"],
         "--threads must be between 1 and 1024"),
        (["benchmark", "--model", "unext_s", "--size", "64", "--no-memory", "--runs", "3", "--rounds", "1",
          "--engines", "torch", "--threads", "100000"], "--threads must be between 1 and 1024"),
    ],
)
def test_bad_input_real_process(argv, needle, world):
    """The real process: exit status 2, one line on stderr, no traceback, nothing written."""
    before = _snapshot(world)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-m", "scunext", *argv], cwd=world, capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "pwned" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith(f"scunext {argv[0]}: error: ")
    assert _snapshot(world) == before


@pytest.mark.parametrize("argv", [
    ["export", "--weights", "lungs", "--overwrite"],
    ["calibrate", "--weights", "lungs", "--site", str(sample_dir("chest-xray-lungs")), "--max-images", "2",
     "--overwrite", "--no-progress"],
])  # fmt: skip
def test_overwrite_never_replaces_a_device_or_pipe(argv, tmp_path, capsys):
    """``--out /dev/null --overwrite`` as root replaced the machine's /dev/null with a file: an output that exists
    and is not a regular file is refused, with or without --overwrite."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main([*argv, "--out", str(fifo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a regular file" in err[0]
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
