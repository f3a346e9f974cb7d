"""int8 decision: Dice change of static int8 vs fp32 SC-UNeXt on the 141 chest X-ray test images of
/work/bench/lungs-sc_unext, for the two calibration sets (the run's training images; the engine's default)."""

import json
import sys
import tempfile

import numpy as np
import torch

from scunext.data import discover_pairs, read_image, read_mask, select_pairs
from scunext.deploy.int8 import dice_change, quantize_int8
from scunext.deploy.onnx_export import export_onnx, sample_inputs
from scunext.deploy.predictor import Predictor
from scunext.runs import RunDir

torch.set_num_threads(2)
run, data = sys.argv[1], sys.argv[2]
pred = Predictor.from_run(run)
split = RunDir(run).load_split()
pairs = discover_pairs(data)
test = select_pairs(pairs, split.test)
images, masks = [read_image(p.image) for p in test], [read_mask(p.mask) for p in test]
rng = np.random.default_rng(0)  # the same choice as `scunext export --int8`
train = select_pairs(pairs, split.train)
chosen = [train[i] for i in sorted(rng.choice(len(train), 32, replace=False))]
calibrations = {
    "32 training images (scunext export --int8)": [pred.prepare(read_image(p.image)) for p in chosen],
    "30 shipped chest-xray samples (engine default)": sample_inputs(1, 256),
}
with tempfile.TemporaryDirectory() as tmp:
    fp32 = export_onnx(pred.model, f"{tmp}/fp32.onnx", in_channels=1, size=pred.size)
    for label, calib in calibrations.items():
        q = quantize_int8(fp32, f"{tmp}/int8.onnx", calib)
        print(label, json.dumps(dice_change(fp32, q, images, masks, pred.prepare)))
