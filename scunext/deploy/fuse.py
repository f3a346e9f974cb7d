"""BatchNorm folding for inference: :func:`fuse_for_inference` folds every BatchNorm that directly follows a
convolution into that convolution (found structurally with ``torch.fx``, folded with
``torch.nn.utils.fusion.fuse_conv_bn_eval``)."""

from __future__ import annotations

import copy
import logging
from collections import Counter

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_for_inference"]

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """``(conv, bn)`` submodule names where ``bn`` consumes ``conv``'s output and nothing else does; None if
    ``module.forward`` cannot be traced symbolically."""
    try:
        graph = fx.Tracer().trace(module)
    except Exception as exc:  # untraceable Python control flow: the caller descends into the children instead
        log.debug("fx cannot trace %s (%s); looking inside it", type(module).__name__, exc)
        return None
    mods = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BATCHNORMS) or not node.args:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        conv = mods.get(src.target)
        foldable = isinstance(conv, _CONVS) or (isinstance(conv, _TRANSPOSED) and conv.groups == 1)
        # a conv whose output is also used elsewhere, or a module called twice, cannot be rewritten in place
        if foldable and len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _fold(module: nn.Module) -> int:
    if not any(True for _ in module.children()):
        return 0
    # containers have no forward of their own: search their members
    pairs = None if isinstance(module, (nn.ModuleList, nn.ModuleDict)) else _conv_bn_pairs(module)
    if pairs is None:
        return sum(_fold(child) for child in module.children())
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        _replace(module, conv_name, fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, _TRANSPOSED)))
        _replace(module, bn_name, nn.Identity())
    return len(pairs)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A deep-copied eval-mode model with every BatchNorm that directly follows a convolution folded into it.

    Pairs are found structurally: each module whose ``forward`` ``torch.fx`` can trace is searched for a BatchNorm
    applied to the output of a convolution that feeds nothing else (``ConvBNReLU``, UNeXt's ``ConvStage`` and
    ``UpStage``, U-Net's double convs, the ResUNet++ residual bodies and shortcuts); modules fx cannot trace (the
    models' top level, the token-shift blocks) are searched child by child. A BatchNorm that does not follow a
    convolution directly (pre-activation ``BN -> ReLU -> conv``, ASPP's ``conv -> ReLU -> BN``, the SC-UNeXt
    pyramid's BN after a sum) stays as it is; it is exact in eval mode anyway. Folded BatchNorms become
    ``nn.Identity``, so the module tree and ``forward`` code are unchanged.

    Args:
        model: any module; it is not modified.

    Returns:
        The folded copy, in eval mode. Its outputs equal ``model.eval()``'s up to float rounding (~1e-6).
    """
    fused = copy.deepcopy(model).eval()
    total = sum(isinstance(m, _BATCHNORMS) for m in fused.modules())
    folded = _fold(fused)
    log.debug("folded %d of %d BatchNorm layers into their convolutions", folded, total)
    return fused

