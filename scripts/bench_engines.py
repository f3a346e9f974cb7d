"""Batch-1 CPU latency of UNeXt-S and SC-UNeXt per engine, each interleaved with eager UNeXt-S (the baseline).

Every entry is timed in rounds: 5 baseline runs, then 5 runs of the entry, 6 rounds (30 + 30 timed runs after
5 warm-up runs each). The ratio is median(entry) / median(the baseline runs paired with it), so a background
load slows both sides of each ratio alike.
"""

import os
import statistics
import sys
import time

import onnxruntime
import torch

from scunext.deploy.fuse import fuse_for_inference
from scunext.deploy.onnx_export import make_session, onnx_bytes
from scunext.deploy.runtimes import make_runner
from scunext.models import create_model

THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
torch.set_num_threads(THREADS)
torch.manual_seed(0)
ROUNDS, PER_ROUND, WARMUP, SIZE = 6, 5, 5, 256
x = torch.randn(1, 3, SIZE, SIZE)


def nchw_fused(model):  # torch-fused without channels_last, for the memory-format decision
    fused = fuse_for_inference(model)

    def run(t):
        with torch.inference_mode():
            return fused(t)

    return run


def dynamo_ort(model):  # onnxruntime on the dynamo exporter's graph, for the exporter decision
    sess = make_session(onnx_bytes(model, in_channels=3, size=SIZE, exporter="dynamo", opset=18), THREADS)
    return lambda t: torch.from_numpy(sess.run(["logits"], {"image": t.numpy()})[0])


models = {name: create_model(name, in_channels=3).eval() for name in ("unext_s", "sc_unext")}
baseline = make_runner(models["unext_s"], "torch")
entries = {}
for name, model in models.items():
    for engine in ("torch", "torch-fused", "onnxruntime", "onnxruntime-int8"):
        entries[(name, engine)] = make_runner(model, engine, threads=THREADS)
    entries[(name, "torch-fused (NCHW)")] = nchw_fused(model)
    if "--dynamo" in sys.argv:
        entries[(name, "onnxruntime (dynamo graph)")] = dynamo_ort(model)


def timed(run, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


for run in [baseline, *entries.values()]:
    timed(run, WARMUP)
load0 = os.getloadavg()
times = {k: [] for k in entries}
paired = {k: [] for k in entries}
for _ in range(ROUNDS):
    for key, run in entries.items():
        paired[key] += timed(baseline, PER_ROUND)
        times[key] += timed(run, PER_ROUND)
load1 = os.getloadavg()
base_all = [t for v in paired.values() for t in v]
print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {THREADS} threads, 1x3x{SIZE}x{SIZE}, "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load avg {load0[0]:.1f} -> {load1[0]:.1f}; "
      f"UNeXt-S eager baseline median {statistics.median(base_all):.1f} ms over {len(base_all)} runs")
print("| model | engine | median ms | p10-p90 ms | paired baseline ms | ratio to UNeXt-S eager |")
print("|---|---|---:|---:|---:|---:|")
for (name, engine), ts in times.items():
    q = statistics.quantiles(ts, n=10)
    med, base = statistics.median(ts), statistics.median(paired[(name, engine)])
    print(f"| {name} | {engine} | {med:.1f} | {q[0]:.1f}-{q[-1]:.1f} | {base:.1f} | {med / base:.3f} |")
