"""End-to-end benchmark of ``scunext predict`` on generated full-size inputs (``scunext benchmark --end-to-end``).

Each case (input kind x number of files x overlays on/off) runs in a fresh subprocess, which reports its wall time
and its peak resident memory (``ru_maxrss``: the whole process, with PyTorch and the model). Two ways of
predicting are measured in the same run, so that background load affects both:

``streaming``
    today's ``scunext predict``: :func:`~scunext.deploy.stream.plan_predictions` then
    :func:`~scunext.deploy.stream.stream_predict` writing ``predictions.csv``, exactly as the CLI does.
``baseline``
    :func:`baseline_predict`, the ``scunext predict`` of before the streaming pipeline (up to commit 96ec791),
    reproduced here as the reference: read and decode every input, then predict all of them (a float32
    probability map at full size per image, all held until the end), then write masks and overlays one after the
    other with Pillow's default PNG compression. Its memory grows with the number of files (about 24 MB per
    2048x2048 image), so it is run on at most ``baseline_max_n`` files; its images/s do not depend on N.

Inputs (generated once per run in a temporary folder from the shipped samples, upscaled, with mild noise so that
the files do not compress unrealistically well; ``distinct`` different files, hard-linked to N names):

``png``    2048x2048 8-bit grayscale PNG chest X-rays (released weights ``lungs``)
``dicom``  2048x2048 16-bit (12 bits stored) MONOCHROME2 DICOM chest X-rays with a pixel spacing (``lungs``)
``jpeg``   4000x3000 RGB JPEG dermoscopy photos, quality 90 (``isic2017``)

Outputs go to the same temporary folder and are deleted after each case.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scunext.deploy.stream import MAX_BATCH_SIZE, MAX_WORKERS
from scunext.hostinfo import cpu_name, package_version
from scunext.profiling import check_threads

__all__ = ["KINDS", "MAX_FILES", "EndToEndConfig", "baseline_predict", "generate_inputs", "run_end_to_end",
           "format_end_to_end"]

log = logging.getLogger(__name__)

#: input kind -> (size (H, W), released weights, sample folder)
KINDS: dict[str, tuple[tuple[int, int], str, str]] = {
    "png": ((2048, 2048), "lungs", "chest-xray-lungs"),
    "dicom": ((2048, 2048), "lungs", "chest-xray-lungs"),
    "jpeg": ((3000, 4000), "isic2017", "isic2017"),
}
#: the most files one case may generate and predict (disk: up to a few MB of outputs per full-size file)
MAX_FILES = 10_000


@dataclass
class EndToEndConfig:
    """What to measure; see the module docstring."""

    n: list[int] = field(default_factory=lambda: [100])
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    overlays: list[bool] = field(default_factory=lambda: [False, True])
    engine: str = "torch"
    batch_size: int = 8
    workers: int = 2
    threads: int = 2
    baseline: bool = True
    baseline_max_n: int = 20
    distinct: int = 8
    workdir: str | None = None

    def validate(self) -> EndToEndConfig:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"unknown input kind(s) {', '.join(bad) or '(none)'}; choose from {', '.join(KINDS)}")
        if not self.n or any(n < 1 for n in self.n):
            raise ValueError(f"numbers of files must be >= 1, got {self.n}")
        if max(self.n) > MAX_FILES:
            raise ValueError(f"numbers of files must be <= {MAX_FILES:,} (each case writes a full-size mask, and an "
                             f"overlay, per file into a temporary folder), got {max(self.n):,}")
        for name in ("batch_size", "workers", "baseline_max_n", "distinct"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, most in (("batch_size", MAX_BATCH_SIZE), ("workers", MAX_WORKERS)):  # checked before any input
            if getattr(self, name) > most:
                raise ValueError(f"{name} must be at most {most}, got {getattr(self, name)}")
        check_threads(self.threads)
        return self


# ------------------------------------------------------------------------------------------------ the inputs


def _source_images(sample: str, count: int) -> list[np.ndarray]:
    from scunext.data import read_image, sample_dir

    files = sorted((sample_dir(sample) / "images").iterdir())[:count]
    return [read_image(f) for f in files]


def _upscale(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = size
    planes = image[..., None] if image.ndim == 2 else image
    big = np.stack([np.asarray(Image.fromarray(planes[..., c]).resize((w, h), Image.Resampling.BILINEAR))
                    for c in range(planes.shape[2])], axis=2)  # fmt: skip
    noisy = big.astype(np.int16) + rng.integers(-3, 4, big.shape, dtype=np.int16)
    out = noisy.clip(0, 255).astype(np.uint8)
    return out[..., 0] if image.ndim == 2 else out


def _write_dicom(pixels8: np.ndarray, path: Path, index: int) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = f"BENCH{index}", "Benchmark^Generated", "DX"
    ds.Rows, ds.Columns = pixels8.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.2, 0.2]
    ds.PixelData = (pixels8.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate_inputs(kind: str, folder: Path, n: int, distinct: int = 8, seed: int = 0) -> list[Path]:
    """``n`` input files of ``kind`` in ``folder`` (``distinct`` different images, hard-linked to the other names)."""
    size, _, sample = KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = {"png": ".png", "dicom": ".dcm", "jpeg": ".jpg"}[kind]
    originals = []
    for i, image in enumerate(_source_images(sample, min(distinct, n))):
        big = _upscale(image, size, rng)
        path = folder / f"src{i:02d}{ext}"
        if kind == "png":
            Image.fromarray(big).save(path)
        elif kind == "jpeg":
            Image.fromarray(big).save(path, quality=90)
        else:
            _write_dicom(big, path, i)
        originals.append(path)
    files = []
    for i in range(n):
        path = folder / f"img{i:05d}{ext}"
        os.link(originals[i % len(originals)], path)
        files.append(path)
    for p in originals:
        p.unlink()
    return files


# ------------------------------------------------------------------------------------------------ the baseline


def baseline_predict(predictor: Any, files: list[Path], out: Path, overlay: bool = True) -> None:
    """``scunext predict`` as it was before streaming (commit 96ec791), kept as the benchmark's reference.

    Every image is read and decoded first; then ``Predictor.probabilities`` of that version: per batch of 8, the
    logits of each image bilinearly upsampled to its size and passed through a sigmoid, every float32 map kept in a
    list; then ``> threshold``; then each mask (and overlay) written with Pillow's default PNG settings. The run's
    intensity step (added after that version; ``none`` is that version's path exactly) is applied as today's
    preprocessing applies it, so that a ``percentile`` model is compared like with like.
    """
    from scunext.data import read_image, resize_pair
    from scunext.data.preprocess import convert_channels, model_input
    from scunext.visualize import overlay as make_overlay

    def prepare(image: np.ndarray) -> torch.Tensor:  # data/preprocess.py of that version, + the intensity step
        img = convert_channels(image, predictor.in_channels)  # added since (none: exactly that version's path)
        img, _ = resize_pair(img, np.zeros(img.shape[:2], np.uint8), (predictor.size, predictor.size))
        return model_input(img, predictor.intensity)

    images = [read_image(f) for f in files]
    probabilities = []
    with torch.inference_mode():
        for i in range(0, len(images), 8):
            chunk = images[i : i + 8]
            logits = predictor.logits(torch.stack([prepare(im) for im in chunk]))
            for im, lg in zip(chunk, logits):
                up = F.interpolate(lg[None, :1], size=im.shape[:2], mode="bilinear", align_corners=False)[0, 0]
                probabilities.append(torch.sigmoid(up).numpy())
    masks = [p > predictor.threshold for p in probabilities]
    out.mkdir(parents=True, exist_ok=True)
    for f, im, m in zip(files, images, masks):
        Image.fromarray((m * 255).astype(np.uint8)).save(out / f"{f.stem}_mask.png")
        if overlay:
            Image.fromarray(make_overlay(im, m)).save(out / f"{f.stem}_overlay.png")


# ------------------------------------------------------------------------------------------------- one case


def _case(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this (fresh) process; returns seconds and peak RSS. Called by :func:`run_end_to_end`."""
    from scunext.deploy.predictor import Predictor
    from scunext.deploy.stream import CSV_NAME, PredictionsCSV, plan_predictions, stream_predict
    from scunext.weights import weights_dir

    torch.set_num_threads(spec["threads"])
    predictor = Predictor.from_run(weights_dir(spec["weights"]), engine=spec["engine"])
    files = sorted(Path(spec["inputs"]).iterdir())[: spec["n"]]
    out = Path(spec["out"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    ok = len(files)
    if spec["method"] == "baseline":
        baseline_predict(predictor, files, out, overlay=spec["overlay"])
    else:
        jobs = plan_predictions(files, out, overlay=spec["overlay"])
        out.mkdir(parents=True, exist_ok=True)
        with PredictionsCSV(out / CSV_NAME) as table:
            for rec in stream_predict(predictor, jobs, batch_size=spec["batch_size"], workers=spec["workers"]):
                table.write(rec)
                ok -= not rec.ok
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": seconds, "images_per_s": len(files) / seconds, "ok": ok,
            "cpu_ms_per_image": 1e3 * cpu / len(files),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_model_load_mb": rss_before}  # fmt: skip


def _run_case(spec: dict[str, Any]) -> dict[str, Any]:
    code = "import json, sys; from scunext.deploy.stream_benchmark import _case; " \
           "print(json.dumps(_case(json.loads(sys.argv[1]))))"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    shutil.rmtree(spec["out"], ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"case {spec['method']} {spec['kind']} n={spec['n']} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_end_to_end(cfg: EndToEndConfig, progress: Any = None) -> dict[str, Any]:
    """Measure every case of ``cfg``; returns a JSON-able report (rows, context)."""
    cfg.validate()
    say = progress or (lambda msg: log.info("%s", msg))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scunext-e2e-", dir=cfg.workdir) as tmp:
        root = Path(tmp)
        for kind in cfg.kinds:
            size, weights, _ = KINDS[kind]
            inputs = root / f"in-{kind}"
            say(f"generating {max(cfg.n)} {kind} inputs of {size[1]}x{size[0]}")
            files = generate_inputs(kind, inputs, max(cfg.n), cfg.distinct)
            mb_per_file = sum(f.stat().st_size for f in files[: cfg.distinct]) / min(cfg.distinct, len(files)) / 2**20
            for overlay in cfg.overlays:
                base_n = min(max(cfg.n), cfg.baseline_max_n)
                base = None
                for n in cfg.n:
                    common = {"kind": kind, "weights": weights, "inputs": str(inputs), "overlay": overlay,
                              "engine": cfg.engine, "threads": cfg.threads, "batch_size": cfg.batch_size,
                              "workers": cfg.workers, "out": str(root / "out")}  # fmt: skip
                    if cfg.baseline and base is None:
                        say(f"{kind} overlay={overlay}: baseline on {base_n} files")
                        base = _run_case({**common, "method": "baseline", "n": base_n}) | {"n": base_n}
                    say(f"{kind} overlay={overlay}: streaming on {n} files")
                    res = _run_case({**common, "method": "streaming", "n": n})
                    row = {"kind": kind, "size": f"{size[1]}x{size[0]}", "file_mb": round(mb_per_file, 2),
                           "overlay": overlay, "n": n, "images_per_s": round(res["images_per_s"], 2),
                           "cpu_ms_per_image": round(res["cpu_ms_per_image"], 1),
                           "peak_rss_mb": round(res["peak_rss_mb"]), "ok": res["ok"], "status": "ok"}  # fmt: skip
                    if base is not None:
                        row |= {"baseline_n": base["n"], "baseline_images_per_s": round(base["images_per_s"], 2),
                                "baseline_peak_rss_mb": round(base["peak_rss_mb"]),
                                "baseline_cpu_ms_per_image": round(base["cpu_ms_per_image"], 1),
                                "speed_ratio": round(res["images_per_s"] / base["images_per_s"], 2),
                                "rss_ratio": round(res["peak_rss_mb"] / base["peak_rss_mb"], 2)}  # fmt: skip
                    rows.append(row)
            shutil.rmtree(inputs)
    return {"config": asdict(cfg), "rows": rows, "context": _context(cfg)}


def _context(cfg: EndToEndConfig) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"torch": torch.__version__, "onnxruntime": package_version("onnxruntime"),
            "pillow": package_version("PIL"), "pydicom": package_version("pydicom"),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu": cpu_name(), "engine": cfg.engine, "threads": cfg.threads,
            "workers": cfg.workers, "batch_size": cfg.batch_size, "load_avg_1min_at_end": round(load, 2),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}  # fmt: skip


def format_end_to_end(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`run_end_to_end`'s report."""
    head = f"{'input':<6} {'size':>9} {'MB/file':>7} {'overlay':>7} {'N':>5} {'img/s':>7} {'peak MB':>8} {'CPU ms':>7}"
    if any("baseline_n" in r for r in report["rows"]):  # (--no-baseline: no empty baseline columns)
        head += f" {'| base N':>8} {'img/s':>7} {'peak MB':>8} {'CPU ms':>7} {'| x speed':>9} {'x RSS':>6}"
    lines = [head]
    for r in report["rows"]:
        line = (f"{r['kind']:<6} {r['size']:>9} {r['file_mb']:>7.2f} {'yes' if r['overlay'] else 'no':>7} "
                f"{r['n']:>5} {r['images_per_s']:>7.2f} {r['peak_rss_mb']:>8} "
                f"{r['cpu_ms_per_image']:>7.1f}")  # fmt: skip
        if "baseline_n" in r:
            line += (f" {r['baseline_n']:>8} {r['baseline_images_per_s']:>7.2f} {r['baseline_peak_rss_mb']:>8} "
                     f"{r['baseline_cpu_ms_per_image']:>7.1f}"
                     f"{r['speed_ratio']:>9.2f} {r['rss_ratio']:>6.2f}")  # fmt: skip
        if r["ok"] != r["n"]:
            line += f"  ({r['n'] - r['ok']} failed)"
        lines.append(line)
    c = report["context"]
    lines.append("")
    ort = f", onnxruntime {c.get('onnxruntime')}" if str(c["engine"]).startswith("onnxruntime") else ""
    lines.append(f"engine {c['engine']}, {c['threads']} threads (torch{', onnxruntime' if ort else ''}), "
                 f"{c['workers']} workers, batch {c['batch_size']}, torch {c['torch']}{ort}, Pillow "
                 f"{c.get('pillow')}, pydicom {c.get('pydicom')}, {c['cpus']} CPUs ({c['cpu']}), OMP_WAIT_POLICY="
                 f"{c['omp_wait_policy']}, load average at the end {c['load_avg_1min_at_end']}")  # fmt: skip
    lines.append("peak MB: the process's peak resident memory (ru_maxrss), model and PyTorch included; CPU ms: "
                 "process CPU time (all threads) per image; baseline: pre-streaming predict on min(N, baseline_max_n) "
                 "files, measured in the same run")  # fmt: skip
    return "\n".join(lines)
