"""Released weights: shipped in the package, usable without training, and their cards hold true."""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from scunext.cli.main import main
from scunext.data import sample_dir
from scunext.deploy.predictor import Predictor
from scunext.profiling import count_params
from scunext.runs import load_model
from scunext.weights import UnknownWeightsError, list_weights, weights_card, weights_dir

EXPECTED = {"lungs": ("sc_unext", "chest-xray-lungs"), "lungs-unext_s": ("unext_s", "chest-xray-lungs"),
            "isic2017": ("sc_unext", "isic2017"), "isic2017-unext_s": ("unext_s", "isic2017")}  # fmt: skip
SAMPLE = {"isic2017": "isic2017", "chest-xray-lungs": "chest-xray-lungs"}


def test_every_release_is_shipped_with_a_true_card():
    assert set(list_weights()) == set(EXPECTED)
    for name, (model, dataset) in EXPECTED.items():
        card, folder = weights_card(name), weights_dir(name)
        assert (card["model"], card["data"]["dataset"]) == (model, dataset)
        assert hashlib.sha256((folder / "best.safetensors").read_bytes()).hexdigest() == card["weights_sha256"]
        net, meta = load_model(folder / "best")
        assert count_params(net) == card["params"] and meta["model"] == model
        split = json.loads((folder / "split.json").read_text())
        assert [len(split[k]) for k in ("train", "val", "test")] == [card["split"][k] for k in ("train", "val", "test")]
        assert not set(split["train"]) & set(split["test"])
        assert 0.5 < card["test_metrics"]["dice"]["per_image_mean"] <= 1
        assert card["command"] and "non-commercial" in card["data"]["licence"]
        assert card["data"]["intensity"] == Predictor.from_run(folder).intensity  # the card says what predict does
    with pytest.raises(UnknownWeightsError, match="available: "):
        weights_dir("nope")


def _held_out_sample_image(name: str):
    """A shipped sample image that the release did not train on (in its test part)."""
    card = weights_card(name)
    test = set(json.loads((weights_dir(name) / "split.json").read_text())["test"])
    folder = sample_dir(SAMPLE[card["data"]["dataset"]]) / "images"
    return next(p for p in sorted(folder.iterdir()) if p.stem in test)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_predict_with_weights_needs_no_training(name, tmp_path, capsys):
    image = _held_out_sample_image(name)
    assert main(["predict", "--weights", name, str(image), "--out", str(tmp_path)]) == 0
    mask = np.asarray(Image.open(tmp_path / f"{image.stem}_mask.png"))
    assert set(np.unique(mask)) <= {0, 255} and 0.02 < (mask > 0).mean() < 0.9  # a real segmentation
    assert f"{int((mask > 0).sum())} px" in capsys.readouterr().out


def test_weights_user_errors(capsys, tmp_path):
    assert main(["predict", "--weights", "nope", "x.png", "--out", str(tmp_path)]) == 2
    assert "available: isic2017" in capsys.readouterr().err
    assert main(["export"]) == 2
    assert "either a RUN_DIR or --weights" in capsys.readouterr().err
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in EXPECTED)


def test_export_weights_parity(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "lungs.onnx"
    assert main(["export", "--weights", "lungs", "--out", str(out)]) == 0
    diff = float(capsys.readouterr().out.split("PyTorch: ")[1].split()[0])
    assert out.is_file() and diff < 1e-4
    # the bare .onnx says how to prepare its input: the re-released lung weights need the percentile step
    from scunext.deploy.onnx_export import read_preprocessing_metadata
    from scunext.deploy.predictor import Predictor

    meta = read_preprocessing_metadata(out)
    assert meta == Predictor.from_run(weights_dir("lungs")).preprocessing()
    assert meta["intensity"] == "percentile" and meta["in_channels"] == 1 and meta["size"] == 256


def test_serve_offers_weights():
    pytest.importorskip("flask")
    from scunext.cli.serve import models_from_args

    args = argparse.Namespace(run_dirs=[], weights=["lungs", "isic2017"], checkpoint="best", device="cpu",
                              engine="torch", quality=None)  # fmt: skip
    models = models_from_args(args)
    assert [m.predictor.name for m in models] == ["sc_unext", "sc_unext"]
    assert "lungs" in models[0].label and "isic2017" in models[1].label


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_card_metrics_reproduce_on_the_full_test_set(name, shared_data, tmp_path):
    """The card's test Dice/IoU are what the shipped weights score on the release's test part (CI has the data)."""
    from scunext.engine.evaluate import evaluate_run

    card = weights_card(name)
    m = evaluate_run(weights_dir(name), data=shared_data / card["data"]["dataset"], out_dir=tmp_path, hd95=False,
                     show_progress=False)  # fmt: skip
    assert m["n_images"] == card["test_metrics"]["n_images"]
    for metric in ("dice", "iou"):
        assert m[metric]["per_image_mean"] == pytest.approx(card["test_metrics"][metric]["per_image_mean"], abs=2e-4)


def test_int8_engine_of_a_percentile_model_is_calibrated_on_stretched_images(monkeypatch):
    """The onnxruntime-int8 engine calibrates its activation ranges on the shipped samples *as the model sees
    them*: for the re-released lung weights that means after the percentile stretch."""
    pytest.importorskip("onnxruntime")
    from scunext.data import read_image, sample_dir
    from scunext.data.preprocess import preprocess
    from scunext.deploy import predictor as predictor_module
    from scunext.deploy.predictor import Predictor

    seen = {}

    def fake_make_runner(model, engine="torch", *, threads=None, calibration=None):
        seen["engine"], seen["calibration"] = engine, calibration
        return lambda x: model(x)

    monkeypatch.setattr(predictor_module, "make_runner", fake_make_runner)
    pred = Predictor.from_run(weights_dir("lungs"), engine="onnxruntime-int8")
    assert pred.intensity == "percentile" and seen["engine"] == "onnxruntime-int8"
    first = sorted((sample_dir("chest-xray-lungs") / "images").iterdir())[0]
    want = preprocess(read_image(first), 1, 256, "percentile")
    assert len(seen["calibration"]) == 30 and torch.equal(seen["calibration"][0], want)
    assert not torch.equal(seen["calibration"][0], preprocess(read_image(first), 1, 256, "none"))
    Predictor.from_run(weights_dir("isic2017"), engine="onnxruntime-int8")  # intensity none: the samples as they are
    isic = sorted((sample_dir("isic2017") / "images").iterdir())[0]
    assert torch.equal(seen["calibration"][0], preprocess(read_image(isic), 3, 256, "none"))


def test_int8_engine_calibrates_at_the_models_own_size(tiny_run, monkeypatch):
    """The int8 engine calibrated at 256 whatever the model's size (a 64-pixel model got 256-pixel activations)."""
    from scunext.deploy import predictor as predictor_module
    from scunext.deploy.predictor import Predictor

    seen = {}

    def fake_make_runner(model, engine="torch", *, threads=None, calibration=None):
        seen["calibration"] = calibration
        return lambda x: model(x)

    monkeypatch.setattr(predictor_module, "make_runner", fake_make_runner)
    Predictor.from_run(tiny_run, engine="onnxruntime-int8")
    assert {tuple(x.shape) for x in seen["calibration"]} == {(3, 64, 64)}
