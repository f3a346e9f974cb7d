"""Losses: hand values, near-zero loss for perfect logits, gradients, the edge band, and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scunext.losses import (
    BCEDiceLoss,
    DeepSupervisionLoss,
    EdgeLoss,
    JointLoss,
    SoftDiceLoss,
    boundary_band,
    build_loss,
    edge_loss,
    list_losses,
    soft_dice_loss,
)
from scunext.models import DeepSupervisionOutput

ALL_LOSSES = ["bce_dice", "dice", "edge", "joint"]


def _target(b: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random rectangles, one per sample, as float (B, 1, H, W)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(b, 1, size, size)
    for i in range(b):
        r, c = torch.randint(1, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(2, size // 2, (2,), generator=g).tolist()
        t[i, 0, r : r + h, c : c + w] = 1
    return t


def _unext_bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official UNeXt BCEDiceLoss formula, written out independently."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).view(len(logits), -1)
    t = target.view(len(target), -1)
    dice = (2.0 * (p * t).sum(1) + 1e-5) / (p.sum(1) + t.sum(1) + 1e-5)
    return 0.5 * bce + (1 - dice.sum() / len(logits))


# ------------------------------------------------------------------------------------------------- dice / bce_dice
def test_soft_dice_hand_value():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    logits = torch.zeros_like(target)  # p = 0.5 everywhere
    # dice = (2 * 0.5 * 2 + s) / (0.5 * 4 + 2 + s)
    assert float(soft_dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.5)
    s = 1e-5
    assert float(SoftDiceLoss()(logits, target)) == pytest.approx(1 - (2 + s) / (4 + s))


def test_soft_dice_is_per_sample_mean():
    target = _target(3)
    logits = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    each = [soft_dice_loss(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    assert float(soft_dice_loss(logits, target)) == pytest.approx(float(sum(each) / 3), abs=1e-6)


def test_bce_dice_matches_unext_formula():
    target = _target(4, seed=2)
    logits = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    loss = BCEDiceLoss()
    torch.testing.assert_close(loss(logits, target), _unext_bce_dice(logits, target))
    assert set(loss.last_components) == {"bce", "dice", "total"}


def test_empty_target_and_empty_prediction_costs_nothing():
    target = torch.zeros(2, 1, 8, 8)
    logits = torch.full_like(target, -30.0)
    for name in ALL_LOSSES:
        assert float(build_loss(name)(logits, target)) < 1e-6, name


# ------------------------------------------------------------------------------------------------- edge band
def test_boundary_band_hand_case():
    t = torch.zeros(1, 1, 7, 7)
    t[..., 2:5, 2:5] = 1
    band = boundary_band(t)
    expected = torch.zeros(7, 7)
    expected[1:6, 1:6] = 1  # dilation: 5x5 ...
    expected[3, 3] = 0  # ... minus the erosion: the centre pixel
    assert torch.equal(band[0, 0], expected) and int(band.sum()) == 24
    assert band.dtype == t.dtype and not band.requires_grad
    assert int(boundary_band(t, kernel_size=5).sum()) == 49  # dilation fills the image, erosion is empty


def test_boundary_band_ignores_the_image_frame():
    assert int(boundary_band(torch.ones(1, 1, 6, 6)).sum()) == 0
    assert int(boundary_band(torch.zeros(1, 1, 6, 6)).sum()) == 0
    t = torch.zeros(1, 1, 7, 7)
    t[..., 0:3, 0:3] = 1  # touches the top-left corner
    expected = torch.zeros(7, 7)
    expected[0:4, 0:4] = 1  # dilation
    expected[0:2, 0:2] = 0  # erosion: the frame counts as foreground, not as a boundary
    assert torch.equal(boundary_band(t)[0, 0], expected)
    assert torch.equal(boundary_band(t.bool())[0, 0], expected)


def test_edge_loss_hand_values():
    t = torch.zeros(2, 1, 7, 7)
    t[0, 0, 2:5, 2:5] = 1  # sample 1 is empty: no band, left out of the mean
    assert float(edge_loss(torch.zeros_like(t), t)) == pytest.approx(math.log(2))
    logits = torch.randn(2, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    band = boundary_band(t)[0]
    bce = F.binary_cross_entropy_with_logits(logits[0], t[0], reduction="none")
    assert float(EdgeLoss()(logits, t)) == pytest.approx(float(bce[band > 0].mean()), abs=1e-6)


def test_edge_loss_gradient_lives_on_the_band_only():
    t = torch.zeros(1, 1, 9, 9)
    t[..., 3:6, 2:7] = 1
    logits = torch.randn(1, 1, 9, 9, generator=torch.Generator().manual_seed(5), requires_grad=True)
    edge_loss(logits, t).backward()
    assert torch.equal(logits.grad != 0, boundary_band(t) > 0)


def test_edge_loss_without_any_boundary_is_zero_and_differentiable():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = edge_loss(logits, torch.zeros(2, 1, 8, 8))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


# ------------------------------------------------------------------------------------------------- joint / all
def test_joint_is_bce_dice_plus_weighted_edge():
    target = _target(2, seed=7)
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    joint = JointLoss()
    total = joint(logits, target)
    comp = joint.last_components
    assert set(comp) == {"bce", "dice", "bce_dice", "edge", "total"}
    assert comp["bce_dice"] == pytest.approx(float(_unext_bce_dice(logits, target)), abs=1e-6)
    assert comp["edge"] == pytest.approx(float(edge_loss(logits, target)), abs=1e-6)
    assert float(total) == pytest.approx(comp["bce_dice"] + 0.5 * comp["edge"], abs=1e-6)
    assert float(JointLoss(edge_weight=0.0)(logits, target)) == pytest.approx(comp["bce_dice"], abs=1e-6)
    assert float(JointLoss(edge_weight=2.0)(logits, target)) == pytest.approx(
        comp["bce_dice"] + 2.0 * comp["edge"], abs=1e-5
    )


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_perfect_prediction_is_near_minimal(name):
    target = _target(2, seed=9)
    perfect = 30.0 * (2 * target - 1)
    loss = build_loss(name)
    assert float(loss(perfect, target)) < 1e-6
    assert float(loss(torch.zeros_like(target), target)) > 0.1
    assert float(loss(-perfect, target)) > float(loss(torch.zeros_like(target), target))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradients_flow_and_loss_decreases(name):
    target = torch.cat([_target(2, seed=10), _target(2, seed=11)], dim=1)  # two channels
    logits = torch.zeros_like(target, requires_grad=True)
    loss_fn = build_loss(name)
    first = loss_fn(logits, target)
    assert first.dim() == 0
    first.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        loss_fn(logits, target).backward()
        opt.step()
    assert loss_fn(logits, target).item() < 0.5 * first.item()


# ------------------------------------------------------------------------------------------------- errors, factory
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bad_shapes_raise(name):
    loss = build_loss(name)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        loss(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="unsqueeze"):
        loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="must equal"):
        loss(torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        loss(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, 1, 8, 8))


def test_bad_arguments_raise():
    for k in (1, 2, 4, True):
        with pytest.raises(ValueError, match="kernel_size"):
            EdgeLoss(kernel_size=k)
    with pytest.raises(ValueError, match="kernel_size"):
        boundary_band(torch.zeros(1, 1, 4, 4), kernel_size=2)
    with pytest.raises(ValueError, match="edge_weight"):
        JointLoss(edge_weight=-1.0)
    with pytest.raises(ValueError, match="smooth"):
        SoftDiceLoss(smooth=-1e-5)


def test_build_loss_factory():
    assert list_losses() == ALL_LOSSES
    assert isinstance(build_loss("joint", edge_weight=0.25), JointLoss)
    assert build_loss("joint", edge_weight=0.25).edge_weight == 0.25
    assert isinstance(build_loss("BCE_DICE"), BCEDiceLoss)
    with pytest.raises(ValueError, match="bce_dice, dice, edge, joint"):
        build_loss("focal")
    with pytest.raises(ValueError, match="edge_weight"):
        build_loss("bce_dice", edge_weight=0.5)


# ------------------------------------------------------------------------------------------------ deep supervision
def test_deep_supervision_is_main_plus_official_weights():
    """EGE-UNet's official objective: L(main) + 0.1 L(aux 1/32) + 0.2 + 0.3 + 0.4 + 0.5 L(aux 1/2)."""
    torch.manual_seed(0)
    target = _target()
    main = torch.randn(2, 1, 16, 16)
    aux = tuple(torch.randn(2, 1, 16, 16) for _ in range(5))
    loss = DeepSupervisionLoss(BCEDiceLoss())
    got = loss(DeepSupervisionOutput(main, aux), target)
    expected = _unext_bce_dice(main, target) + sum(w * _unext_bce_dice(a, target)
                                                   for w, a in zip((0.1, 0.2, 0.3, 0.4, 0.5), aux))  # fmt: skip
    torch.testing.assert_close(got, expected)
    assert loss.last_components["total"] == pytest.approx(float(expected), rel=1e-6)
    assert loss.last_components["main"] == pytest.approx(float(_unext_bce_dice(main, target)), rel=1e-6)


def test_deep_supervision_passes_plain_logits_through_and_casts_to_float():
    torch.manual_seed(1)
    target = _target()
    logits = torch.randn(2, 1, 16, 16)
    wrapped = DeepSupervisionLoss(build_loss("joint"))
    assert torch.equal(wrapped(logits, target), build_loss("joint")(logits, target))
    half = DeepSupervisionOutput(logits.bfloat16(), tuple(logits.bfloat16() for _ in range(5)))
    out = wrapped(half, target)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_deep_supervision_trains_the_auxiliary_outputs():
    target = _target()
    main = torch.zeros(2, 1, 16, 16, requires_grad=True)
    aux = tuple(torch.zeros(2, 1, 16, 16, requires_grad=True) for _ in range(5))
    DeepSupervisionLoss(BCEDiceLoss())(DeepSupervisionOutput(main, aux), target).backward()
    norms = [a.grad.abs().sum().item() for a in aux]
    assert all(n > 0 for n in norms) and norms == sorted(norms)  # weights rise from the deepest to the finest
    assert main.grad.abs().sum().item() > norms[-1]  # weight 1 > 0.5


def test_deep_supervision_bad_arguments():
    with pytest.raises(ValueError, match="aux_weights"):
        DeepSupervisionLoss(BCEDiceLoss(), aux_weights=(0.1, -1.0))
    with pytest.raises(TypeError, match="callable"):
        DeepSupervisionLoss("bce_dice")
    out = DeepSupervisionOutput(torch.zeros(1, 1, 4, 4), (torch.zeros(1, 1, 4, 4),) * 3)
    with pytest.raises(ValueError, match="3 auxiliary outputs but 5 aux_weights"):
        DeepSupervisionLoss(BCEDiceLoss())(out, torch.zeros(1, 1, 4, 4))


def test_egeunet_training_step_through_the_wrapper():
    """One optimiser step of EGE-UNet on the wrapped loss reaches the deep-supervision heads."""
    import scunext

    torch.manual_seed(0)
    model = scunext.create_model("egeunet", bridge=False).train()  # heads are then training-only
    x, target = torch.randn(2, 3, 64, 64), _target(2, 64)
    loss = DeepSupervisionLoss(build_loss("bce_dice"))(model(x), target)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ds_heads.parameters())


def test_a_bool_weight_and_an_image_wide_edge_band_are_refused():
    """``--loss-arg edge_weight=true`` trained with weight 1.0 (while kernel_size=true was refused), and
    kernel_size=100001 made the edge band the whole image."""
    from scunext.losses import build_loss

    with pytest.raises(ValueError, match="edge_weight must be a finite number"):
        build_loss("joint", edge_weight=True)
    with pytest.raises(ValueError, match="kernel_size must be at most 129"):
        build_loss("joint", kernel_size=100001)
    assert build_loss("joint", edge_weight=np.float32(0.5), kernel_size=129).edge_weight == 0.5
