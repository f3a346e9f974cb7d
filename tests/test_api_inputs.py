"""Plausible mistakes through the Python API (not the CLI): each was silently wrong or a deep traceback, and is now
refused with a message naming the argument (or warned about where the input may be legitimate)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from scunext.config import ConfigError, TrainConfig
from scunext.data import SegmentationDataset, discover_pairs, read_image, read_mask, sample_dir
from scunext.deploy.predictor import Predictor
from scunext.losses import build_loss
from scunext.metrics import SegmentationMeter, confusion_counts
from scunext.models import InputShapeError, create_model

ISIC = sample_dir("isic2017")


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.from_run(tiny_run)


@pytest.fixture(scope="module")
def image():
    return read_image(discover_pairs(ISIC)[0].image)


@pytest.mark.parametrize(("convert", "needle"), [
    (lambda im: im / 255.0, "got float64 with values in [0, 0.9"),  # was an almost black input: an empty mask
    (lambda im: (im / 255.0).astype(np.float32), "got float32"),
    (lambda im: im.astype(np.uint16) * 257, "got uint16"),  # was saturated
    (lambda im: im > 127, "got bool"),
    (lambda im: im.astype(np.int64), "got int64"),  # was a Pillow TypeError, only when a resize was needed
])  # fmt: skip
def test_predictor_takes_uint8_images_only(predictor, image, convert, needle):
    for call in (predictor.predict, predictor.probabilities, predictor.assess):
        with pytest.raises(ValueError, match="expected a uint8 image") as err:
            call([convert(image)])
        assert needle in str(err.value)
    assert predictor.predict([image])[0].shape == image.shape[:2]  # the uint8 image itself is fine


def test_predictor_refuses_a_non_finite_input_without_blaming_the_weights(predictor, image):
    x = predictor.prepare(image)[None].clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="the input holds NaN or inf values"):
        predictor.logits(x)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_predictor_batch_size_must_be_a_positive_integer(predictor, image, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predictor.predict([image], batch_size=batch_size)
    assert len(predictor.predict([image, image], batch_size=np.int64(1))) == 2  # a numpy integer is an integer


def test_an_h_w_1_mask_is_refused_not_read_as_h_images():
    rng = np.random.default_rng(0)
    pred, target = rng.random((64, 64)) > 0.5, rng.random((64, 64)) > 0.5
    with pytest.raises(ValueError, match=r"looks like one \(H, W, 1\) image"):
        confusion_counts(pred[..., None], target[..., None])
    meter = SegmentationMeter(output_type="mask")
    with pytest.raises(ValueError, match=r"output of shape \(64, 64, 1\) looks like one"):
        meter.update(pred[..., None], target[None])
    with pytest.raises(ValueError, match=r"target of shape \(64, 64, 1\) looks like one"):
        meter.update(pred[None], target[..., None])
    counts = confusion_counts(pred[None], target[None])  # the right shape: one image
    assert counts.tp.shape[0] == 1


def test_the_meter_warns_when_its_logits_look_like_probabilities(caplog):
    probs = torch.rand(2, 1, 16, 16)
    target = torch.rand(2, 1, 16, 16) > 0.5
    meter = SegmentationMeter()
    with caplog.at_level(logging.WARNING, logger="scunext.metrics.meter"):
        meter.update(probs, target)
        meter.update(probs, target)
    assert [r.getMessage() for r in caplog.records].count(
        "the meter reads its output as logits (output_type='logits'), but every value lies in [0, 1]: if these are "
        "probabilities, build it with output_type='probs'") == 1  # once per meter  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scunext.metrics.meter"):
        SegmentationMeter().update(probs * 8 - 4, target)  # real logits: both signs
        SegmentationMeter(output_type="probs").update(probs, target)
    assert not caplog.records


@pytest.mark.parametrize("name", ["bce_dice", "dice", "edge", "joint"])
@pytest.mark.parametrize(("scale", "needle"), [(255.0, "got values in [0, 255]"), (float("nan"), "and NaN")])
def test_losses_refuse_targets_outside_0_1(name, scale, needle):
    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    assert torch.isfinite(build_loss(name)(logits, target))
    bad = target * scale if scale == 255.0 else target.clone().index_put_((torch.tensor([0]),) * 4, torch.tensor(scale))
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]") as err:
        build_loss(name)(logits, bad)
    assert needle in str(err.value)
    soft = target * 0.9 + 0.05  # label smoothing stays allowed
    assert torch.isfinite(build_loss(name)(logits, soft))


@pytest.mark.parametrize(("kw", "needle"), [
    ({"epochs": 0}, "epochs must be >= 1"),  # "finished" with no checkpoint when data was empty
    ({"epochs": 1.5}, "epochs must be an integer"),
    ({"lr": -1.0}, "lr > 0"),
    ({"intensity": "percentil"}, "intensity must be one of"),
])  # fmt: skip
def test_train_checks_a_config_built_in_python_before_writing(kw, needle, tmp_path):
    from scunext.engine.trainer import train

    with pytest.raises(ConfigError, match=needle):
        train(TrainConfig(in_channels=3, size=32, **kw), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_engines_and_check_onnx_leave_the_callers_model_in_its_mode(tmp_path):
    pytest.importorskip("onnxruntime")
    from scunext.deploy.onnx_export import check_onnx, export_onnx, sample_inputs
    from scunext.deploy.runtimes import make_runner

    model = create_model("unext_s").train()
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:2]
    for m in frozen:  # fine-tuning with frozen BatchNorm: eval layers inside a training model
        m.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    for engine in ("torch-fused", "onnxruntime"):
        make_runner(model, engine)
        assert {n: m.training for n, m in model.named_modules()} == modes, engine  # was all eval (then all train)
    path = export_onnx(model, tmp_path / "m.onnx", in_channels=3)
    inputs = sample_inputs(3, 64, limit=2)  # a list, as sample_inputs returns it (was an AttributeError)
    assert check_onnx(path, model, inputs) < 1e-3
    assert {n: m.training for n, m in model.named_modules()} == modes
    with pytest.raises(ValueError, match=r"inputs must be a \(B, C, H, W\) tensor"):
        check_onnx(path, model, inputs[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8])
def test_a_model_names_the_input_dtype_it_takes(dtype):
    model = create_model("unext_s").eval()
    with pytest.raises(InputShapeError, match=f"takes a torch.float32 input .*got {dtype}"):
        model(torch.zeros(1, 3, 64, 64, dtype=dtype))
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts per op: a float32 input stays allowed
        model(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("threshold", [200, 0.5, "yes", None])
def test_read_mask_threshold_is_a_bool(threshold):
    with pytest.raises(ValueError, match="threshold must be True or False"):
        read_mask(discover_pairs(ISIC)[0].mask, threshold=threshold)


def test_dataset_mean_and_std_on_the_0_255_scale_are_refused():
    pairs = discover_pairs(ISIC)[:2]
    with pytest.raises(ValueError, match=r"mean and std are on the \[0, 1\] scale"):
        SegmentationDataset(pairs, mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4])
    SegmentationDataset(pairs, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])  # ImageNet's, [0, 1] scale


def test_select_pairs_refuses_one_id_given_as_a_bare_string():
    from scunext.data import select_pairs

    pairs = discover_pairs(ISIC)
    with pytest.raises(TypeError, match="pass \\['ISIC_0000000'\\] for one"):
        select_pairs(pairs, "ISIC_0000000")
    assert [p.id for p in select_pairs(pairs, [pairs[0].id])] == [pairs[0].id]


def test_the_meter_refuses_non_finite_outputs_and_skips_empty_batches():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    for output_type in ("logits", "probs"):
        with pytest.raises(ValueError, match="output holds NaN or inf values"):  # was scored as background: Dice 1
            SegmentationMeter(output_type=output_type).update(torch.full((1, 1, 8, 8), float("nan")), target)
    meter = SegmentationMeter()
    meter.update(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8, dtype=torch.bool))  # an empty last chunk
    with pytest.raises(RuntimeError, match="SegmentationMeter is empty"):
        meter.compute()
    meter.update(torch.full((1, 1, 8, 8), -5.0), target)
    assert meter.compute()["n_images"] == 1
