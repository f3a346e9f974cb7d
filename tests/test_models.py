"""Behaviour of every registered model: shapes, gradients, determinism, pinned counts, argument checks."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import scunext
from scunext.models import InputShapeError, SegmentationModel
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
    model(x).square().mean().backward()
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
    ],
)
def test_sc_unext_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        scunext.create_model("sc_unext", **kwargs)


def test_sc_unext_switch_variants_forward():
    for cbam, sc_skip, pfm in SC_SWITCHES:
        for levels in (1, 4):
            model = scunext.create_model("sc_unext", cbam=cbam, sc_skip=sc_skip, pfm=pfm, pfm_levels=levels).eval()
            with torch.no_grad():
                assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)
