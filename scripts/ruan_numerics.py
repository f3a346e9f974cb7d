"""Float32 exactness of MALUNet / EGE-UNet in every engine, against a float64 run of the same model.

Prints, for seed-0 random weights on shipped ISIC 2017 images at 256x256: the largest logit, eager float32 vs
float64, onnxruntime vs eager and vs float64, channels_last (what ``torch-fused`` runs) vs float64, and for int8
(calibrated on 6 images, scored on 2 others) the correlation and sign agreement of the logits with float32, for
onnxruntime's default op set and for convolutions only; and EGE-UNet's first GroupNorm in NCHW and channels_last
against float64. The numbers are quoted in docs/architecture.md.

    python scripts/ruan_numerics.py
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from scunext.deploy.int8 import quantize_int8
from scunext.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, make_session, sample_inputs
from scunext.models import create_model


def _agreement(out: torch.Tensor, ref: torch.Tensor) -> str:
    corr = torch.corrcoef(torch.stack([out.flatten(), ref.flatten()]))[0, 1].item()
    return f"corr {corr:.3f}, sign agreement {((out > 0) == (ref > 0)).float().mean().item():.3f}"


def main() -> None:
    torch.set_num_threads(1)
    images = torch.stack(sample_inputs(3, 256, limit=8))
    parity, calib, held_out = images[:4], list(images[:6]), images[6:]
    for name in ("malunet", "egeunet"):
        torch.manual_seed(0)
        model = create_model(name).eval()
        with torch.no_grad():
            e32 = model(parity)
            e64 = copy.deepcopy(model).double()(parity.double())
            cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            ecl = cl(parity.contiguous(memory_format=torch.channels_last))
            ref_held = model(held_out)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / "m.onnx", in_channels=3)
            ort = torch.from_numpy(make_session(path, 1).run([OUTPUT_NAME], {INPUT_NAME: parity.numpy()})[0])
            print(f"{name}: max |logit| {e64.abs().max().item():.1f}; eager fp32 vs fp64 "
                  f"{(e32.double() - e64).abs().max().item():.2g}; onnxruntime vs eager "
                  f"{(ort - e32).abs().max().item():.2g}, vs fp64 {(ort.double() - e64).abs().max().item():.2g}; "
                  f"channels_last vs fp64 {(ecl.double() - e64).abs().max().item():.2g}")  # fmt: skip
            if name == "egeunet":  # the first GroupNorm (8 channels at 256x256), NCHW vs channels_last
                gn = model.encoder_norms[0]
                with torch.no_grad():
                    feat = model.encoder[0](parity[:1])
                    ref = torch.nn.functional.group_norm(
                        feat.double(), gn.num_groups, gn.weight.double(), gn.bias.double(), gn.eps
                    )
                    rel = [(gn(f).double() - ref).abs().max().item() / ref.abs().max().item()
                           for f in (feat, feat.contiguous(memory_format=torch.channels_last))]  # fmt: skip
                print(f"  first GroupNorm vs fp64, relative: NCHW {rel[0]:.2g}, channels_last {rel[1]:.2g}")
            for ops in (None, ["Conv"]):
                q = quantize_int8(path, Path(tmp) / "q.onnx", calib, op_types=ops)
                out = make_session(q, 1).run([OUTPUT_NAME], {INPUT_NAME: held_out.numpy()})[0]
                print(f"  int8 ({'default ops' if ops is None else 'Conv only'}), 2 held-out images: "
                      f"{_agreement(torch.from_numpy(out), ref_held)}")  # fmt: skip


if __name__ == "__main__":
    main()
