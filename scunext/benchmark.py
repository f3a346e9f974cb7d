"""``scunext benchmark``: inference and training speed of a model on each engine, as ratios to a baseline
(UNeXt-S, eager PyTorch fp32) measured in the same run, with the machine's compute floor.

Timings are wall-clock medians after warm-up. Models and engines are measured in interleaved rounds (model A,
baseline, model A, baseline, ...) so that a background load affects both sides of every ratio alike.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from scunext.deploy.onnx_export import min_onnx_side
from scunext.deploy.runtimes import ENGINES, make_runner
from scunext.engine.distributed import cpu_has_native_bf16
from scunext.hostinfo import cpu_name, package_version
from scunext.losses import DeepSupervisionLoss
from scunext.models import create_model
from scunext.profiling import check_threads, count_macs, count_params, p90

__all__ = ["BenchmarkConfig", "BenchmarkMemoryError", "run_benchmark", "matmul_gflops", "peak_inference_memory_mb"]

log = logging.getLogger(__name__)


class BenchmarkMemoryError(ValueError):
    """A batch of the benchmark (throughput at batch 8/32, training at batch 8) does not fit in this machine's memory
    at the asked size."""


@contextmanager
def _fits(what: str, size: int):
    """Turn an allocation failure of one benchmark step into a one-line :class:`BenchmarkMemoryError` naming it."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        raise BenchmarkMemoryError(f"{what} at --size {size} does not fit in this machine's memory "
                                   f"({type(exc).__name__}); use a smaller --size") from None  # fmt: skip


@dataclass
class BenchmarkConfig:
    """What to measure. ``engines`` apply to ``model``; the baseline always runs on eager ``torch``."""

    model: str = "sc_unext"
    baseline: str = "unext_s"
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    size: int = 256
    in_channels: int = 3
    threads: int = 2
    latency_runs: int = 30
    throughput_batches: tuple[int, ...] = (8, 32)
    train_batch: int = 8
    train_steps: int = 8
    rounds: int = 3
    memory: bool = True

    def validate(self) -> BenchmarkConfig:
        bad = [e for e in self.engines if e not in ENGINES]
        if bad:
            raise ValueError(f"unknown engine(s) {', '.join(bad)}; available: {', '.join(ENGINES)}")
        if not self.engines:
            raise ValueError("give at least one engine")
        if self.size < 32 or self.size % 32:
            raise ValueError(f"--size must be a positive multiple of 32, got {self.size}")
        check_threads(self.threads)
        if self.latency_runs < 3 or self.rounds < 1 or self.train_steps < 2:
            raise ValueError("need latency runs >= 3, rounds >= 1, train steps >= 2")
        return self


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """Measured fp32 GEMM throughput (GFLOP/s) of this machine with ``threads`` threads: the compute floor."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / statistics.median(times) / 1e9


def _time(fn, x, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _train_step_ms(
    model_name: str, in_ch: int, size: int, batch: int, steps: int, channels_last: bool = False,
    bf16: bool = False,
) -> list[float]:
    """Milliseconds per training step (forward + backward + Adam) after 2 warm-up steps; ``bf16``: under CPU
    bfloat16 autocast, as ``scunext train --cpu-amp`` trains."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, in_channels=in_ch).train().to(memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, in_ch, size, size).contiguous(memory_format=layout)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    loss_fn = DeepSupervisionLoss(torch.nn.BCEWithLogitsLoss())  # EGE-UNet trains on its auxiliary outputs too
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss_fn(logits, y).backward()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _train_label(channels_last: bool, bf16: bool) -> str:
    return "torch" + (" channels_last" if channels_last else "") + (" bf16" if bf16 else "")


_MEMORY_SNIPPET = """
import os, threading, time, torch
from scunext.deploy.runtimes import make_runner
from scunext.models import create_model
torch.set_num_threads({threads})
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
m = create_model({model!r}, in_channels={in_ch}).eval()
run = make_runner(m, {engine!r})
x = torch.randn({batch}, {in_ch}, {size}, {size})
run(x[:1])
before, stop = rss(), threading.Event()
peak = [before]
def watch():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=watch)
t.start()
run(x); run(x)
stop.set(); t.join()
peak[0] = max(peak[0], rss())
print((peak[0] - before) / 2**20)
"""


def peak_inference_memory_mb(model: str, engine: str, in_ch: int, size: int, batch: int, threads: int) -> float:
    """Peak resident memory added while running ``batch`` images, over the process's state after one warm-up image
    (fresh subprocess; resident set sampled every 0.5 ms from ``/proc/self/statm``, MiB; Linux only)."""
    code = _MEMORY_SNIPPET.format(model=model, engine=engine, in_ch=in_ch, size=size, batch=batch, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed for {model}/{engine}: {out.stderr.strip()[-300:]}")
    return float(out.stdout.strip().splitlines()[-1])


def run_benchmark(cfg: BenchmarkConfig, progress=None) -> dict[str, Any]:
    """Measure ``cfg.model`` on each engine and ``cfg.baseline`` on eager torch; returns a JSON-able report."""
    cfg.validate()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, progress)
    finally:
        torch.set_num_threads(old_threads)


def _run(cfg: BenchmarkConfig, progress) -> dict[str, Any]:
    say = progress or (lambda msg: log.info("%s", msg))
    entries = [(cfg.baseline, "torch")] + [(cfg.model, e) for e in cfg.engines]
    models = [create_model(name, in_channels=cfg.in_channels).eval() for name, _ in entries]  # one per runner
    for (name, engine), model in zip(entries, models):  # before anything is built or timed (it stopped after minutes)
        low = min_onnx_side(model) if engine.startswith("onnxruntime") else 0
        if cfg.size < low:
            raise ValueError(f"--size {cfg.size}: the onnxruntime engines need H and W >= {low} for {name}; use a "
                             f"larger --size, or --engines torch,torch-fused")  # fmt: skip
    runners, info = {}, {}
    for (name, engine), model in zip(entries, models):
        if name not in info:
            macs = count_macs(model, (1, cfg.in_channels, cfg.size, cfg.size))
            info[name] = {"params": count_params(model), "macs": macs}
        say(f"building {name} on {engine}")
        runners[(name, engine)] = make_runner(model, engine)
    one = torch.randn(1, cfg.in_channels, cfg.size, cfg.size)
    lat: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    thr: dict[tuple[str, str, int], list[float]] = {}
    for r in range(cfg.rounds):  # interleaved rounds
        for key, run in runners.items():
            say(f"round {r + 1}/{cfg.rounds}: {key[0]} on {key[1]}")
            for _ in range(3):
                run(one)
            lat[key] += _time(run, one, cfg.latency_runs)
            for b in cfg.throughput_batches:
                with _fits(f"the throughput step of {key[0]} on {key[1]} (a batch of {b})", cfg.size):
                    xb = torch.randn(b, cfg.in_channels, cfg.size, cfg.size)
                    run(xb)
                    ms = statistics.mean(_time(run, xb, 2))  # this round's figure: the mean of 2 timed batches
                thr.setdefault((*key, b), []).append(b / ms * 1e3)
    # training: eager NCHW (the baseline's reference), the channels_last layout (the default of ``scunext train``)
    # and, on a CPU with native bfloat16, channels_last under bfloat16 autocast (``--cpu-amp``)
    train_keys = [(cfg.baseline, False, False), (cfg.model, False, False), (cfg.baseline, True, False),
                  (cfg.model, True, False)]  # fmt: skip
    if cpu_has_native_bf16():
        train_keys += [(cfg.baseline, True, True), (cfg.model, True, True)]
    train: dict[tuple[str, bool, bool], list[float]] = {k: [] for k in train_keys}
    for r in range(cfg.rounds):
        for key in train_keys:
            name, cl, bf16 = key
            say(f"training round {r + 1}/{cfg.rounds}: {name} {_train_label(cl, bf16)}")
            with _fits(f"the training step of {name} (a batch of {cfg.train_batch})", cfg.size):
                train[key] += _train_step_ms(
                    name, cfg.in_channels, cfg.size, cfg.train_batch, cfg.train_steps, channels_last=cl, bf16=bf16
                )
    gflops = matmul_gflops(cfg.threads)

    base_key = (cfg.baseline, "torch")
    base_lat = statistics.median(lat[base_key])
    rows = []
    for key in runners:
        name, engine = key
        times = sorted(lat[key])
        med = statistics.median(times)
        flops = 2 * info[name]["macs"]
        row = {
            "model": name,
            "engine": engine,
            "params": info[name]["params"],
            "gmacs": round(info[name]["macs"] / 1e9, 4),
            "latency_ms_median": round(med, 3),
            "latency_ms_p90": round(p90(times), 3),
            "latency_ratio_to_baseline": round(med / base_lat, 3),
            "compute_floor_ms": round(flops / (gflops * 1e9) * 1e3, 3),
            "fraction_of_floor": round(flops / (gflops * 1e9) * 1e3 / med, 5),
        }
        for b in cfg.throughput_batches:
            ips = statistics.median(thr[(*key, b)])
            base_ips = statistics.median(thr[(*base_key, b)])
            row[f"throughput_b{b}_img_s"] = round(ips, 1)
            row[f"throughput_b{b}_ratio"] = round(ips / base_ips, 3)
        if cfg.memory:
            say(f"peak memory: {name} on {engine}")
            row["peak_memory_mb_b8"] = round(
                peak_inference_memory_mb(name, engine, cfg.in_channels, cfg.size, 8, cfg.threads), 1
            )
        rows.append(row)
    if cfg.memory:  # the baseline's row is the first
        base_mem = rows[0]["peak_memory_mb_b8"]
        for row in rows:
            row["peak_memory_ratio"] = round(row["peak_memory_mb_b8"] / base_mem, 3) if base_mem > 0 else None
    base_train = cfg.train_batch / statistics.median(train[(cfg.baseline, False, False)]) * 1e3
    training = []
    for (name, cl, bf16), times in train.items():
        ips = cfg.train_batch / statistics.median(times) * 1e3
        engine = _train_label(cl, bf16)
        training.append({"model": name, "engine": engine, "train_img_s": round(ips, 2),
                         "train_ratio_to_baseline": round(ips / base_train, 3)})  # fmt: skip
    return {
        "config": asdict(cfg),
        "context": {
            "input": f"{cfg.in_channels}x{cfg.size}x{cfg.size}", "threads": cfg.threads,
            "precision": "fp32 (training rows marked bf16: CPU bfloat16 autocast, as scunext train --cpu-amp)",
            "torch": torch.__version__, "onnxruntime": package_version("onnxruntime"),
            "python": platform.python_version(),
            "cpu": cpu_name(), "matmul_gflops": round(gflops, 1),
            "baseline": f"{cfg.baseline} on eager torch, measured in the same run",
            "mac_counter": "torch.utils.flop_counter FLOPs / 2; floor = 2*MACs / measured 1024^3 GEMM GFLOP/s",
            "memory": "peak RSS growth while running a batch of 8 over a warm process (sampled, subprocess)",
            "timing": f"median of {cfg.rounds} interleaved rounds x {cfg.latency_runs} runs after warm-up",
            "throughput_timing": f"median over {cfg.rounds} rounds of the mean of 2 timed batches after 1 warm-up "
                                 "batch",
            "training_timing": f"median over {cfg.rounds} rounds x {cfg.train_steps} steps after 2 warm-up steps",
            "latency_batch": 1,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },  # fmt: skip
        "inference": rows,
        "training": training,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`run_benchmark`'s report."""
    ctx = report["context"]
    bs = report["config"]["throughput_batches"]
    head = f"{'model':<10} {'engine':<16} {'lat ms':>8} {'p90':>7} {'x base':>7} {'floor %':>8}"
    head += "".join(f" {'b' + str(b) + ' img/s':>11} {'x base':>7}" for b in bs) + f" {'mem MiB':>7} {'x base':>7}"
    lines = [head]
    for r in report["inference"]:
        line = (f"{r['model']:<10} {r['engine']:<16} {r['latency_ms_median']:>8.2f} {r['latency_ms_p90']:>7.2f} "
                f"{r['latency_ratio_to_baseline']:>7.3f} {100 * r['fraction_of_floor']:>7.1f}%")  # fmt: skip
        line += "".join(f" {r[f'throughput_b{b}_img_s']:>11.1f} {r[f'throughput_b{b}_ratio']:>7.3f}" for b in bs)
        mem = r.get("peak_memory_mb_b8")  # absent with --no-memory: not measured, shown as '-' (not nan)
        ratio = r.get("peak_memory_ratio")
        line += f" {'-' if mem is None else f'{mem:.1f}':>7} {'-' if ratio is None else f'{ratio:.3f}':>7}"
        lines.append(line)
    lines.append("")
    head = f"training img/s (batch {report['config']['train_batch']})"
    lines.append(f"{'model':<10} {'engine':<24} {head:>22} {'x base':>7}")
    for t in report["training"]:
        lines.append(
            f"{t['model']:<10} {t['engine']:<24} {t['train_img_s']:>22.2f} {t['train_ratio_to_baseline']:>7.3f}"
        )
    lines.append("")
    lines.append(f"input {ctx['input']}, {ctx['precision']}, {ctx['threads']} threads, torch {ctx['torch']}, "
                 f"onnxruntime {ctx['onnxruntime']}, {ctx['cpu']}; GEMM {ctx['matmul_gflops']} GFLOP/s")  # fmt: skip
    lines.append(f"baseline: {ctx['baseline']}; latency: {ctx['timing']}")
    if "throughput_timing" in ctx:
        lines.append(f"throughput: {ctx['throughput_timing']}; training: {ctx['training_timing']}")
    lines.append(f"latency: batch {ctx.get('latency_batch', 1)}; floor %: compute floor / median latency, "
                 f"{ctx['mac_counter']}; mem: {ctx['memory']}")  # fmt: skip
    lines.append(f"OMP_WAIT_POLICY={ctx.get('omp_wait_policy', 'unset')}, load average at the end "
                 f"{ctx.get('load_avg_1min_at_end')}")  # fmt: skip
    return "\n".join(lines)


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
