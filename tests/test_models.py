"""Behaviour of every registered model: shapes, gradients, determinism, pinned counts, argument checks."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import scunext
from scunext.models import DeepSupervisionOutput, InputShapeError, SegmentationModel
from scunext.models._registry import UnknownModelError
from scunext.models.layers import shift_channels
from scunext.profiling import count_macs, count_params

MODELS = scunext.list_models()

#: (params, MACs at 1x3x256x256) with in_channels=3, num_classes=1. MACs = torch.utils.flop_counter FLOPs / 2.
PINNED = {
    "unext": (1_471_921, 562_003_968),  # official UNext: 1,471,921 params, 0.562 GMACs
    "unext_s": (253_561, 99_229_696),  # official UNext_S: 253,561 params, 0.099 GMACs
    "sc_unext": (253_345, 90_947_712),
    "unet": (7_763_041, 12_071_206_912),  # widths 32..512
    "resunetpp": (3_631_140, 17_675_588_928),  # filters 16..256
    "malunet": (177_943, 82_740_224),  # official MALUNet: 177,943 params, 0.0827 GMACs (same counter)
    "egeunet": (53_374, 72_096_256),  # official EGE-UNet (gt_ds heads included): 53,374 params, 0.0721 GMACs
}

#: the same with in_channels=1 (first conv has 8 x 9 fewer weights): MALUNet and EGE-UNet
PINNED_IN1 = {"malunet": (177_799, 73_303_040), "egeunet": (53_230, 62_659_072)}

#: (model, switches) -> (params, MACs at 1x3x256x256)
RUAN_SWITCHES = {
    ("malunet", (("bridge", True), ("split_att", "fc"))): (177_943, 82_740_224),
    ("malunet", (("bridge", True), ("split_att", "conv"))): (177_943, 82_740_224),
    ("malunet", (("bridge", False), ("split_att", "fc"))): (161_329, 80_584_704),
    ("egeunet", (("bridge", True), ("gt_ds", True))): (53_374, 72_096_256),
    ("egeunet", (("bridge", True), ("gt_ds", False))): (52_449, 70_148_352),
    # without the bridge the deep-supervision heads are training-only: same inference MACs with or without them
    ("egeunet", (("bridge", False), ("gt_ds", True))): (34_406, 58_362_112),
    ("egeunet", (("bridge", False), ("gt_ds", False))): (34_273, 58_362_112),
}

#: SC-UNeXt (cbam, sc_skip, pfm) -> (params, MACs at 1x3x256x256)
SC_SWITCHES = {
    (False, False, False): (253_561, 99_229_696),
    (False, False, True): (253_183, 90_546_176),
    (False, True, False): (253_561, 99_229_696),
    (False, True, True): (253_183, 90_546_176),
    (True, False, False): (253_723, 99_631_232),
    (True, False, True): (253_345, 90_947_712),
    (True, True, False): (253_723, 99_631_232),
    (True, True, True): (253_345, 90_947_712),
}


def _size(model: SegmentationModel) -> int:
    return max(64, model.input_divisor * 2)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_no_nan(name):
    for in_ch, classes, batch in itertools.product((1, 3), (1, 2), (1, 2)):
        model = scunext.create_model(name, in_channels=in_ch, num_classes=classes).eval()
        s = _size(model)
        with torch.no_grad():
            y = model(torch.randn(batch, in_ch, s, s))
        assert y.shape == (batch, classes, s, s), (in_ch, classes, batch)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_non_square_input(name):
    model = scunext.create_model(name).eval()
    d = model.input_divisor
    h, w = max(64, 2 * d), max(64, 2 * d) + d
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 1, h, w)


@pytest.mark.parametrize("name", MODELS)
def test_eval_deterministic(name):
    model = scunext.create_model(name).eval()
    x = torch.randn(2, 3, _size(model), _size(model))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = scunext.create_model(name, num_classes=2).train()
    x = torch.randn(2, 3, _size(model), _size(model))
    out = model(x)
    outputs = [out.main, *out.aux] if isinstance(out, DeepSupervisionOutput) else [out]
    sum(o.square().mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (built but unused?): {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_pinned_params_and_macs(name):
    assert name in PINNED, f"pin the parameter/MAC count of {name}"
    model = scunext.create_model(name)
    assert (count_params(model), count_macs(model, (1, 3, 256, 256))) == PINNED[name]


@pytest.mark.parametrize("switches", sorted(SC_SWITCHES))
def test_sc_unext_switch_counts(switches):
    cbam, sc_skip, pfm = switches
    model = scunext.create_model("sc_unext", cbam=cbam, sc_skip=sc_skip, pfm=pfm)
    assert (count_params(model), count_macs(model, (1, 3, 256, 256))) == SC_SWITCHES[switches]


def test_sc_unext_default_within_paper_budget():
    params, macs = PINNED["sc_unext"]
    assert params <= PINNED["unext_s"][0]
    assert macs <= 0.135e9


def test_sc_unext_all_off_is_unext_s():
    ref = scunext.create_model("unext_s").eval()
    off = scunext.create_model("sc_unext", cbam=False, sc_skip=False, pfm=False).eval()
    off.load_state_dict(ref.state_dict(), strict=True)  # same modules, same names
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(off(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("switch", ["cbam", "sc_skip", "pfm"])
def test_each_switch_changes_the_function(switch):
    """A switch that is on must do something: its output differs from the model with it off."""
    torch.manual_seed(1)
    on = scunext.create_model("sc_unext").eval()
    off = scunext.create_model("sc_unext", **{switch: False}).eval()
    target = off.state_dict()
    shared = {k: v for k, v in on.state_dict().items() if k in target and target[k].shape == v.shape}
    off.load_state_dict(shared, strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(on(x), off(x))


def test_in_channels_really_used():
    for name in MODELS:
        model = scunext.create_model(name, in_channels=1)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 1, name
    assert count_params(scunext.create_model("unext_s", in_channels=1)) == 253_561 - 8 * 9 * 2


def _official_shift(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """The official UNeXt shift, re-stated from its description: zero-pad, chunk, roll chunk i by i - pad, crop."""
    pad = shift_size // 2
    h, w = x.shape[2], x.shape[3]
    xp = F.pad(x, (pad, pad, pad, pad))
    chunks = torch.chunk(xp, shift_size, 1)
    rolled = torch.cat([torch.roll(c, s, dim) for c, s in zip(chunks, range(-pad, pad + 1))], 1)
    return rolled[:, :, pad : pad + h, pad : pad + w]


@pytest.mark.parametrize("channels", [32, 64, 128, 160, 7])
@pytest.mark.parametrize("dim", [2, 3])
def test_shift_matches_official_definition(channels, dim):
    x = torch.randn(2, channels, 8, 6)
    torch.testing.assert_close(shift_channels(x, 5, dim), _official_shift(x, 5, dim), rtol=0, atol=0)


def test_state_dict_round_trip(tmp_path):
    model = scunext.create_model("sc_unext", in_channels=1).eval()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    clone = scunext.create_model("sc_unext", **{k: v for k, v in model.init_args.items()}).eval()
    clone.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_init_args_rebuild_same_architecture(name):
    model = scunext.create_model(name, in_channels=1, num_classes=2)
    clone = type(model)(**model.init_args)
    assert count_params(clone) == count_params(model)
    assert list(clone.state_dict()) == list(model.state_dict())


# --- bad arguments ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kwargs", [{"in_channels": 0}, {"num_classes": 0}, {"in_channels": -1}, {"num_classes": 1.5}])
def test_bad_constructor_arguments(name, kwargs):
    with pytest.raises(ValueError, match="in_channels|num_classes"):
        scunext.create_model(name, **kwargs)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        scunext.create_model("unet++")
    msg = str(info.value)
    assert "unet++" in msg and all(n in msg for n in MODELS)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError):
        scunext.create_model("unext_s", widths=3)


@pytest.mark.parametrize("name", MODELS)
def test_indivisible_input_rejected_clearly(name):
    model = scunext.create_model(name).eval()
    with pytest.raises(InputShapeError, match=r"divisible by \d+, got 250x250; resize or pad to \d+x\d+"):
        model(torch.randn(1, 3, 250, 250))


@pytest.mark.parametrize("name", MODELS)
def test_wrong_channels_or_rank_rejected(name):
    model = scunext.create_model(name, in_channels=1).eval()
    with pytest.raises(InputShapeError, match="in_channels=1"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputShapeError, match="4-D"):
        model(torch.randn(1, 64, 64))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cbam_levels": (4,)},
        {"cbam_levels": (1, 1)},
        {"pfm_levels": 0},
        {"pfm_levels": 5},
        {"pfm_channels": 0},
        {"cbam": "yes"},
        {"cbam_reduction": 0},
        {"cbam_kernel": 4},
        {"conv_widths": (8, 16)},
        {"token_widths": (64, 0)},
        {"mlp_ratio": 0},
        {"shift_size": 4},
        {"drop_path_rate": 1.0},
        # wrong types: a bare TypeError from a comparison deep inside, or (a bool level) a CBAM built under the key
        # "True" that never ran; YAML 1.1 strings such as '1e-1' reached the model as text
        {"mlp_ratio": "1"},
        {"mlp_ratio": None},
        {"drop_rate": "0.1"},
        {"drop_path_rate": "1e-1"},
        {"cbam_levels": 2},
        {"cbam_levels": (True,)},
    ],
)
def test_sc_unext_bad_arguments(kwargs):
    """Each wrong value is a ValueError that names the argument."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        scunext.create_model("sc_unext", **kwargs)


def test_cbam_levels_in_any_order_load_back(tmp_path):
    """``cbam_levels=[3, 2]`` was saved sorted in the checkpoint while config.yaml kept [3, 2]: the run's own
    checkpoint was then refused by evaluate, predict and --resume as another run's."""
    from scunext.cli.main import main
    from scunext.config import load_config, parse_value
    from scunext.data import sample_dir
    from scunext.engine.trainer import train

    cfg = {"data": str(sample_dir("isic2017")), "model": "sc_unext", "size": 64, "epochs": 1, "batch_size": 4,
           "split": "csv", "model_args": {"cbam_levels": parse_value("[3, 2]", "x"),
                                          "drop_path_rate": parse_value("1e-1", "x")}}  # fmt: skip
    train(load_config(None, cfg), tmp_path / "run", show_progress=False)
    assert main(["evaluate", str(tmp_path / "run"), "--no-hd95"]) == 0
    model = scunext.create_model("sc_unext", cbam_levels=[3, 2])
    assert model.init_args["cbam_levels"] == [3, 2] and sorted(model.attn) == ["2", "3"]


def test_sc_unext_switch_variants_forward():
    for cbam, sc_skip, pfm in SC_SWITCHES:
        for levels in (1, 4):
            model = scunext.create_model("sc_unext", cbam=cbam, sc_skip=sc_skip, pfm=pfm, pfm_levels=levels).eval()
            with torch.no_grad():
                assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


# --- MALUNet and EGE-UNet ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PINNED_IN1))
def test_ruan_models_one_channel_counts(name):
    model = scunext.create_model(name, in_channels=1)
    assert (count_params(model), count_macs(model, (1, 1, 256, 256))) == PINNED_IN1[name]


@pytest.mark.parametrize("key", sorted(RUAN_SWITCHES, key=str), ids=str)
def test_ruan_switch_counts(key):
    name, switches = key
    model = scunext.create_model(name, **dict(switches))
    assert (count_params(model), count_macs(model, (1, 3, 256, 256))) == RUAN_SWITCHES[key]


@pytest.mark.parametrize("key", sorted(RUAN_SWITCHES, key=str), ids=str)
def test_ruan_switch_variants_forward_and_rebuild(key):
    name, switches = key
    model = scunext.create_model(name, num_classes=2, **dict(switches)).eval()
    clone = type(model)(**model.init_args).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 2, 64, 96) and torch.isfinite(y).all()
        assert torch.equal(clone(x), y)


@pytest.mark.parametrize("name, switch, off", [("malunet", "bridge", False), ("malunet", "split_att", "conv"),
                                               ("egeunet", "bridge", False), ("egeunet", "gt_ds", False)])  # fmt: skip
def test_ruan_each_switch_changes_the_function(name, switch, off):
    torch.manual_seed(2)
    on = scunext.create_model(name).eval()
    other = scunext.create_model(name, **{switch: off}).eval()
    target = other.state_dict()
    other.load_state_dict({k: v for k, v in on.state_dict().items() if k in target and target[k].shape == v.shape},
                          strict=False)  # fmt: skip
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(on(x), other(x))


def test_egeunet_deep_supervision_in_training_only():
    torch.manual_seed(0)
    model = scunext.create_model("egeunet", num_classes=2)
    x = torch.randn(2, 3, 64, 96)
    out = model.train()(x)
    assert isinstance(out, DeepSupervisionOutput) and len(out.aux) == 5
    assert all(a.shape == (2, 2, 64, 96) for a in out.aux)
    # no BatchNorm or dropout: the training-mode main output is the eval output
    with torch.no_grad():
        plain = model.eval()(x)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain, out.main.detach())
    # each auxiliary map is its level's 1x1 head, upsampled (deepest first: 1/32 .. 1/2)
    assert not torch.allclose(out.aux[0], out.aux[4])
    no_ds = scunext.create_model("egeunet", gt_ds=False).train()
    assert isinstance(no_ds(x[:, :3]), torch.Tensor)
    assert isinstance(scunext.create_model("malunet").train()(x), torch.Tensor)


@pytest.mark.parametrize("bridge, heads_at_inference", [(True, 5), (False, 0)])
def test_egeunet_heads_at_inference(bridge, heads_at_inference):
    """With the bridge the heads' maps are the bridges' mask input (they must run); without, they are training-only."""
    model = scunext.create_model("egeunet", bridge=bridge)
    calls = []
    for head in model.ds_heads:
        head.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert len(calls) == heads_at_inference
    calls.clear()
    model.train()(torch.randn(1, 3, 64, 64))
    assert len(calls) == 5


def test_layernorm2d_is_layernorm_over_channels():
    from scunext.models.layers import LayerNorm2d

    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)


def test_external_attention_memories_start_transposed():
    """MALUNet's init: the key memory starts as the transpose of the value memory, N(0, 2 / channels); they are
    separate parameters (both counted, trained independently)."""
    from scunext.models.layers import ExternalAttention

    torch.manual_seed(0)
    ea = scunext.create_model("malunet").encoder[3][0]
    assert isinstance(ea, ExternalAttention)
    k, v = ea.keys.weight[:, :, 0, 0], ea.values.weight[:, :, 0, 0]
    assert k.shape == (96, 24) and torch.equal(k, v.t()) and k.data_ptr() != v.data_ptr()
    assert abs(v.std().item() - (2 / 24) ** 0.5) < 0.03


def test_external_attention_hand_value():
    """softmax over the pixels, then normalised over the memory units: with one memory unit every pixel gets
    weight 1, so the values conv sees ones."""
    from scunext.models.layers import ExternalAttention

    ea = ExternalAttention(4, memory=1)
    with torch.no_grad():
        ea.values.weight.fill_(1.0)
        ea.out.weight.copy_(torch.eye(4)[:, :, None, None])
    x = torch.randn(1, 4, 3, 3)
    expected = F.gelu(F.group_norm(torch.ones(1, 4, 3, 3), 4) + x)  # a constant map: GroupNorm gives 0
    torch.testing.assert_close(ea(x), expected)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("malunet", {"widths": (8, 16, 24, 32, 48)}),
        ("malunet", {"widths": (8, 16, 24, 32, 48, 66)}),
        ("malunet", {"split_att": "mlp"}),
        ("malunet", {"bridge": 1}),
        ("egeunet", {"widths": (6, 16, 24, 32, 48, 64)}),
        ("egeunet", {"gt_ds": "yes"}),
        ("egeunet", {"bridge": None}),
    ],
)
def test_ruan_bad_arguments(name, kwargs):
    with pytest.raises(ValueError):
        scunext.create_model(name, **kwargs)
