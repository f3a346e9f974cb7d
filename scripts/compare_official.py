"""Check MALUNet / EGE-UNet against the official code: parameter and MAC counts, and outputs with ported weights.

The official files are not part of this repository (MALUNet has no licence); clone them and point at them:

    git clone https://github.com/JCruan519/MALUNet /tmp/MALUNet
    git clone https://github.com/JCruan519/EGE-UNet /tmp/EGE-UNet
    python scripts/compare_official.py --malunet /tmp/MALUNet/models/malunet.py \
        --egeunet /tmp/EGE-UNet/models/egeunet.py

The official modules import ``timm`` (only ``trunc_normal_``) and ``einops`` (unused); stand-ins are put on the path
when they are not installed. Each official parameter is mapped to ours by module (a table of name prefixes) and by
order inside the module; all parameters are perturbed first so that a wrong mapping shows. The official forward ends in
a sigmoid, so probabilities are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import types
from pathlib import Path

import torch

import scunext
from scunext.profiling import count_macs, count_params

#: official name prefix -> ours
PREFIXES = [
    (r"^encoder(\d)", lambda m: f"encoder.{int(m[1]) - 1}"),
    (r"^ebn(\d)", lambda m: f"encoder_norms.{int(m[1]) - 1}"),
    (r"^decoder(\d)", lambda m: f"decoder.{int(m[1]) - 1}"),
    (r"^dbn(\d)", lambda m: f"decoder_norms.{int(m[1]) - 1}"),
    (r"^final", lambda m: "head"),
    (r"^GAB(\d)", lambda m: f"bridges.{5 - int(m[1])}"),
    (r"^gt_conv(\d)", lambda m: f"ds_heads.{int(m[1]) - 1}"),
    (r"^scab\.catt\.get_all_att", lambda m: "bridge.mix"),
    (r"^scab\.catt\.att(\d)", lambda m: f"bridge.heads.{int(m[1]) - 1}"),
    (r"^scab\.satt\.shared_conv2d\.0", lambda m: "bridge.spatial"),
]


def _ours(name: str) -> str:
    for pattern, rename in PREFIXES:
        m = re.match(pattern, name)
        if m:
            return rename(m)
    raise KeyError(f"no mapping for official parameter {name}")


def _load(path: Path, module: str):
    # stand-ins when not installed: the official files use timm's trunc_normal_ only and never use einops
    if "timm" not in sys.modules and importlib.util.find_spec("timm") is None:
        for name in ("timm", "timm.models", "timm.models.layers"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["timm.models.layers"].trunc_normal_ = torch.nn.init.trunc_normal_
    if "einops" not in sys.modules and importlib.util.find_spec("einops") is None:
        sys.modules["einops"] = types.ModuleType("einops")
        sys.modules["einops"].rearrange = None
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def port(official: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Copy ``official``'s parameters into ``ours`` (module by module, in order within a module)."""
    groups: dict[str, list] = {}
    for name, p in official.named_parameters():
        groups.setdefault(_ours(name), []).append(p)
    mine: dict[str, list] = {}
    for name, p in ours.named_parameters():
        key = max((k for k in groups if name.startswith(k + ".")), key=len)
        mine.setdefault(key, []).append(p)
    assert groups.keys() == mine.keys(), set(groups) ^ set(mine)
    with torch.no_grad():
        for key, params in groups.items():
            assert len(params) == len(mine[key]), key
            for a, b in zip(params, mine[key]):
                b.copy_(a.reshape(b.shape))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--malunet", type=Path, required=True, help="official models/malunet.py")
    ap.add_argument("--egeunet", type=Path, required=True, help="official models/egeunet.py")
    args = ap.parse_args()
    torch.manual_seed(0)
    mal, ege = _load(args.malunet, "official_malunet"), _load(args.egeunet, "official_egeunet")
    cases = [
        ("malunet", {}, lambda: mal.MALUNet(1, 3, [8, 16, 24, 32, 48, 64], "fc", True)),
        ("malunet", {"split_att": "conv"}, lambda: mal.MALUNet(1, 3, [8, 16, 24, 32, 48, 64], "conv", True)),
        ("egeunet", {}, lambda: ege.EGEUNet(1, 3, [8, 16, 24, 32, 48, 64], True, True)),
    ]
    x = torch.randn(2, 3, 64, 96)
    for name, kwargs, build in cases:
        official, ours = build(), scunext.create_model(name, **kwargs)
        shape = (1, 3, 256, 256)
        counts = (count_params(official), count_macs(official, shape)), (count_params(ours), count_macs(ours, shape))
        with torch.no_grad():
            for p in official.parameters():
                p.add_(0.1 * torch.randn_like(p))
        port(official, ours)
        official.eval(), ours.eval()
        with torch.no_grad():
            ref = official(x)
            ref = ref[1] if isinstance(ref, tuple) else ref
            diff = (torch.sigmoid(ours(x)) - ref).abs().max().item()
        line = f"{name} {kwargs}: official {counts[0][0]:,} params / {counts[0][1]:,} MACs, ours {counts[1][0]:,} / "
        print(line + f"{counts[1][1]:,}; max |probability difference| {diff:.2g} at 2x3x64x96")
        if name == "egeunet":
            official.train(), ours.train()
            aux_ref, ref = official(x)
            out = ours(x)
            aux = max((torch.sigmoid(b) - a).abs().max().item() for a, b in zip(aux_ref, out.aux))
            print(f"  training mode: main {(torch.sigmoid(out.main) - ref).abs().max().item():.2g}, "
                  f"deep-supervision maps {aux:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
