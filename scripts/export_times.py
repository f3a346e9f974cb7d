"""Wall time of the two ONNX exporters (BN folding + export + onnx.checker) and the parity of each graph
(untrained models, default initialisation, on 4 real ISIC sample images)."""

import tempfile
import time

import torch
import torch.nn.functional as F

from scunext.deploy.onnx_export import check_onnx, export_onnx, min_onnx_side, sample_inputs
from scunext.models import create_model

torch.set_num_threads(2)
torch.manual_seed(0)
x = torch.stack(sample_inputs(3, 256, limit=4))
for name in ("unext_s", "sc_unext", "unet", "resunetpp"):
    model = create_model(name).eval()
    with torch.no_grad():
        scale = model(x).abs().max().item()
    for exporter in ("torchscript", "dynamo") if "unext" in name else ("torchscript",):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            opset = 17 if exporter == "torchscript" else 18
            path = export_onnx(model, f"{tmp}/m.onnx", in_channels=3, exporter=exporter, opset=opset)
            dt = time.perf_counter() - t0
            diff = check_onnx(path, model, x)  # 4 images at 256, then 2 at 128
            small = check_onnx(path, model, F.interpolate(x[:1], size=(32, 32))) if exporter == "dynamo" else None
        print(f"| {name} | {exporter} | {dt:.1f} | {scale:.1f} | {diff:.1e} | "
              f"{f'smallest side {min_onnx_side(model)}' if small is None else f'{small:.1e} at 32x32'} |")
