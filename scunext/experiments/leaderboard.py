"""The leaderboard of the lightest segmentation networks under one protocol, with paired statistics.

Every model gets the same split, epochs, optimiser, augmentation and size; the checkpoint is chosen on the
validation part only and scored once on the held-out test part (per-image Dice/IoU, pooled Dice, HD95). Each row is
compared with SC-UNeXt on the same test images (:mod:`scunext.metrics.paired`). Efficiency columns: exact parameters,
GMACs, and batch-1 CPU latency on the fastest fp32 engine (:mod:`scunext.deploy.runtimes`), measured on the machine
that writes the report, with its threads and versions.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from scunext.config import TrainConfig, apply_overrides
from scunext.experiments.plan import PlannedRun, check_count
from scunext.experiments.records import RecordError, read_json
from scunext.experiments.report import (
    budget_line,
    mean_sd,
    pct,
    per_image_dice,
    protocol_differences,
    run_in_channels,
    write_csv,
)
from scunext.hostinfo import cpu_name, package_version
from scunext.metrics.paired import paired_comparison
from scunext.models import create_model, list_models
from scunext.profiling import MAC_COUNTER, count_macs, count_params
from scunext.runs.durable import atomic_write_text

__all__ = ["LEADERBOARD_MODELS", "PUBLISHED", "default_models", "leaderboard_plan", "engine_latency",
           "summarize_leaderboard", "pareto_front", "LATENCY_ENGINES"]  # fmt: skip

log = logging.getLogger(__name__)

#: the default rows: the sub-million-parameter networks for the ISIC task and two references
LEADERBOARD_MODELS = ("unext_s", "sc_unext", "malunet", "egeunet", "unext", "unet")
#: fp32 engines compared for the latency column (int8 changes the numbers, so it is not a candidate)
LATENCY_ENGINES = ("torch", "torch-fused", "onnxruntime")
REFERENCE = "sc_unext"

#: Published numbers: model -> [(dataset, Dice %, IoU % or None, source)]. Each paper's own protocol (see the
#: report text): not comparable with ours, shown for orientation only.
PUBLISHED: dict[str, list[tuple[str, float, float | None, str]]] = {
    "sc_unext": [("ISIC 2018", 87.12, 79.13, "SC-UNeXt paper, Table 1")],
    "unext_s": [("ISIC 2018", 86.64, 78.71, "SC-UNeXt paper, Table 1 ('UNeXt' row = UNeXt-S)")],
    "unet": [("ISIC 2018", 84.84, 76.37, "SC-UNeXt paper, Table 1")],
    "unext": [("ISIC 2018", 89.70, None, "Valanarasu & Patel, UNeXt, MICCAI 2022 (arXiv 2203.04967), ISIC 2018 F1 "
               "(= Dice) of the base UNeXt")],
    "malunet": [("ISIC 2017", 88.13, 78.78, "Ruan et al., MALUNet, BIBM 2022 (arXiv 2211.01784), ISIC 2017 table"),
                ("ISIC 2018", 89.04, None, "Ruan et al., MALUNet, BIBM 2022, ISIC 2018 table")],
    "egeunet": [("ISIC 2017", 88.77, 79.81, "Ruan et al., EGE-UNet, MICCAI 2023 (arXiv 2307.08473), Table 1 "
                 "(ISIC 2017 values not yet read in the paper itself; a rerun of the official code posted in "
                 "JCruan519/EGE-UNet issue #21 got 88.70 / 79.69)"),
                ("ISIC 2018", 89.46, None, "Ruan et al., EGE-UNet, MICCAI 2023, Table 1")],
}  # fmt: skip

WHY_PUBLISHED_DIFFER = (
    "Published numbers follow each paper's own protocol and are not comparable with ours: MALUNet's and EGE-UNet's "
    "official code keeps the checkpoint with the lowest loss on the very test images it then reports, and pools "
    "Dice/IoU over all test pixels (one confusion matrix) instead of averaging per image, on its own 7:3 split and "
    "300 epochs; UNeXt's official code keeps the checkpoint that scores best on the split it reports and derives "
    "Dice from an IoU pooled over each batch; the UNeXt and SC-UNeXt papers report ISIC 2018 after 400 epochs. Here "
    "the checkpoint is chosen on a validation part only, the test part is scored once, per image, under one budget "
    "for every model."
)


def default_models() -> tuple[str, ...]:
    """The six leaderboard models when all are registered, else the registered ones (with a log line)."""
    known = set(list_models())
    avail = tuple(m for m in LEADERBOARD_MODELS if m in known)
    missing = [m for m in LEADERBOARD_MODELS if m not in known]
    if missing:
        log.info("leaderboard: %s not registered in this install; using %s", ", ".join(missing), ", ".join(avail))
    return avail


def leaderboard_plan(base: TrainConfig, seeds: int = 3, models: tuple[str, ...] | None = None) -> list[PlannedRun]:
    """Every model x ``seeds`` seeds under one protocol.

    With a random split, seed ``s`` is both the split seed and the training seed (as Table 1); with a CSV split
    (``--split csv``, e.g. the official ISIC 2017 split) every seed trains on the same split, so all runs are
    scored on the same test images.
    """
    check_count(seeds, "--seeds", 1)
    models = default_models() if models is None else models
    if not models:
        raise ValueError("no models to compare")
    for m in models:
        create_model(m)  # an unknown name fails here, listing the valid ones
    if len(set(models)) != len(models):
        raise ValueError(f"a model is listed twice in --models: {', '.join(models)}")
    plan = []
    for seed in range(seeds):
        for m in models:
            cfg = apply_overrides(base, {"model": m, "seed": seed, "model_args": {}}).validate()
            plan.append(PlannedRun(m, f"seed {seed}", f"{m}-seed-{seed}", cfg, subsets=("test",), hd95=True))
    return plan


def engine_latency(
    model_name: str, in_channels: int, size: int = 256, threads: int = 2, runs: int = 20, rounds: int = 3,
    engines: tuple[str, ...] = LATENCY_ENGINES,
) -> dict[str, Any]:  # fmt: skip
    """Batch-1 latency of an untrained ``model_name`` on each fp32 engine (median ms over interleaved rounds).

    Returns ``{"engines": {engine: median_ms}, "fastest": engine, "latency_ms": ms, "threads", "torch",
    "onnxruntime", "cpu", "input"}``; an engine that cannot run here (e.g. onnxruntime not installed) is left out.
    """
    import torch

    from scunext.deploy.runtimes import make_runner

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = create_model(model_name, in_channels=in_channels).eval()
        runners = {}
        for e in engines:
            try:
                runners[e] = make_runner(model, e, threads=threads)
            except (ImportError, ValueError, RuntimeError) as exc:
                log.info("latency: %s on %s skipped (%s)", model_name, e, str(exc).splitlines()[0])
        x = torch.randn(1, in_channels, size, size)
        times: dict[str, list[float]] = {e: [] for e in runners}
        for _ in range(rounds):
            for e, run in runners.items():
                for _ in range(3):
                    run(x)
                for _ in range(runs):
                    t0 = time.perf_counter()
                    run(x)
                    times[e].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    med = {e: round(statistics.median(t), 3) for e, t in times.items()}
    fastest = min(med, key=med.get)
    return {"engines": med, "fastest": fastest, "latency_ms": med[fastest], "threads": threads,
            "torch": torch.__version__, "onnxruntime": package_version("onnxruntime"),
            "cpu": cpu_name(), "input": f"1x{in_channels}x{size}x{size}",
            "timing": f"median of {rounds} interleaved rounds x {runs} runs"}  # fmt: skip


def latencies(models: list[str], in_ch: int, cache: Path, *, measure: bool = True, **kwargs) -> dict[str, Any]:
    """Latency per model, read from ``cache`` (``latency.json``) or measured and added to it."""
    data = read_json(cache) if cache.is_file() else {}
    key = f"{in_ch}x{kwargs.get('size', 256)}, {kwargs.get('threads', 2)} threads"
    changed = False
    for m in models:
        entry = data.get(f"{m} @ {key}")
        if entry is not None:
            ms = entry.get("latency_ms") if isinstance(entry, dict) else None
            if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 0 < ms < float("inf"):
                raise RecordError(f"{cache}: the entry '{m} @ {key}' has no positive latency_ms ({entry!r:.60}); "
                                  "delete the entry to measure it again")  # fmt: skip
        elif measure:
            data[f"{m} @ {key}"] = engine_latency(m, in_ch, **kwargs)
            changed = True
    if changed:
        try:
            atomic_write_text(cache, json.dumps(data, indent=2) + "\n")
        except OSError as exc:  # a read-only records checkout: the table still gets the numbers just measured
            log.warning("%s: latencies not cached (%s); they are measured again next time", cache, exc.strerror or exc)
    return {m: data.get(f"{m} @ {key}") for m in models}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated (lower or equal cost and higher or equal score, one strictly), by cost."""
    front = []
    for i, (c, s) in enumerate(points):
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _plot(path: Path, names: list[str], dice: list[float], latency: list[float | None], params: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], latency, "CPU batch-1 latency, ms (fastest engine, log)", lambda v: f"{v:.1f} ms",
               lambda v: f"{v:g}"),
              (axes[1], params, "parameters (log)", lambda v: f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k",
               lambda v: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"))  # fmt: skip
    for ax, cost, label, fmt, tick in panels:
        idx = [i for i in range(len(names)) if cost[i] is not None]
        pts = [(float(cost[i]), dice[i]) for i in idx]
        front = [idx[k] for k in pareto_front(pts)]
        for i in idx:
            ax.scatter(cost[i], 100 * dice[i], color="#c44e52" if i in front else "#4a7ab5", zorder=3)
            ax.annotate(f"{names[i]} ({fmt(cost[i])})", (cost[i], 100 * dice[i]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
        if len(front) > 1:
            ax.step([cost[i] for i in front], [100 * dice[i] for i in front], where="post", color="#c44e52",
                    alpha=0.6, label="Pareto front")  # fmt: skip
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, tick=tick: tick(v)))
        ax.set_xlabel(label)
        ax.set_ylabel("test Dice % (per-image mean over seeds)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _published(model: str, data_name: str) -> tuple[str, str | None]:
    entries = PUBLISHED.get(model, [])
    if not entries:
        return "–", None
    want = "ISIC 2017" if "2017" in data_name else ("ISIC 2018" if "2018" in data_name else None)
    d = next((e for e in entries if e[0] == want), entries[0])
    iou = f" / {d[2]:.2f}" if d[2] is not None else ""
    return f"{d[1]:.2f}{iou} ({d[0]})", d[3]


def _hd95_excluded(results: list[dict[str, Any]]) -> str:
    """How many scored test images had no HD95 (exactly one mask empty), over every finished run of the table."""
    undefined = total = 0
    for r in results:
        m = r.get("metrics", {}).get("test") if r.get("dice") is not None else None
        if m and isinstance(m.get("hd95"), dict):
            undefined += int(m["hd95"].get("n_undefined") or 0)
            total += int(m["n_images"])
    return (f"images where exactly one mask is empty excluded: {undefined} of {total} test predictions over all "
            "runs")


def summarize_leaderboard(
    results: list[dict[str, Any]],
    out_dir: Path,
    base: TrainConfig,
    *,
    latency: dict[str, Any] | None = None,
    cross_site: dict[str, tuple[float, int]] | None = None,
    n_boot: int = 10_000,
) -> str:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard_paired.csv`` and ``leaderboard.png``."""
    rows = list(dict.fromkeys(r["row"] for r in results))
    columns = list(dict.fromkeys(r["column"] for r in results))
    by = {(r["row"], r["column"]): r for r in results}
    in_ch = base.in_channels or run_in_channels(results)
    latency = latency or {}
    cross_site = cross_site or {}
    data_name = Path(base.data).name
    lat_any = next((v for v in latency.values() if v), None)
    how = "one fixed split, seed = training seed" if base.split == "csv" else "seed = split and training seed"
    md = [f"Data: `{data_name}`; split: {base.split} ({how}); "
          f"seeds: {len(columns)}; checkpoint chosen on the validation part, test part scored once (per-image Dice "
          f"at native resolution).",
          budget_line(base, results),
          "",
          "| model | params | GMACs @256 | CPU latency ms (engine) | train min (device) | Dice % mean ± sd | "
          "IoU % mean ± sd | pooled Dice % | HD95 px | cross-site Dice % | Δ Dice vs SC-UNeXt [95 % CI] | "
          "Wilcoxon p | verdict | published Dice / IoU % | runs |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    differs = {(r["row"], r["column"]): protocol_differences(base, r) for r in results}
    deviating: dict[str, list[str]] = {}  # row -> the settings any of its runs did not follow
    csv_rows, paired_rows, sources = [], [], []
    names, dmeans, lats, params_l = [], [], [], []
    for row in rows:
        done = [by[(row, c)] for c in columns if by.get((row, c), {}).get("dice") is not None]
        model = create_model(row, in_channels=in_ch)
        params, gmacs = count_params(model), count_macs(model, (1, in_ch, 256, 256)) / 1e9
        dm, ds = mean_sd([r["dice"] for r in done])
        im, isd = mean_sd([r["iou"] for r in done])
        pooled = mean_sd([r["dice_pooled"] for r in done])[0]
        hd = mean_sd([r["hd95"] for r in done if r.get("hd95") is not None])[0]
        secs = [r["train_seconds"] for r in done if r.get("train_seconds")]
        devs = sorted({str(r["device"]) for r in done if r.get("device")})
        mins = f"{statistics.mean(secs) / 60:.1f} ({', '.join(devs)})" if secs else "–"
        row_diff = list(dict.fromkeys(d for c in columns for d in differs.get((row, c), [])))
        if row_diff:
            deviating[row] = row_diff
            mins += " ‡"
        lat = latency.get(row)
        lat_s = f"{lat['latency_ms']:.1f} ({lat['fastest']})" if lat else "–"
        xs = cross_site.get(row)
        xs_s = f"{100 * xs[0]:.2f} (n={xs[1]})" if xs else "–"
        pub, src = _published(row, data_name)
        if src and src not in sources:
            sources.append(src)
        pub = pub if not src else f"{pub} [{sources.index(src) + 1}]"
        cmp_s, p_s, verdict = "–", "–", "–"
        if row != REFERENCE and REFERENCE in rows:
            both = [c for c in columns if by.get((row, c), {}).get("dice") is not None
                    and by.get((REFERENCE, c), {}).get("dice") is not None]  # fmt: skip
            if both:
                a = [per_image_dice(by[(row, c)]) for c in both]
                b = [per_image_dice(by[(REFERENCE, c)]) for c in both]
                pr = paired_comparison(a, b, row, REFERENCE, n_boot=n_boot, seed=0, group_names=both)
                cmp_s = (f"{100 * pr.mean_difference:+.2f} [{100 * pr.ci_low:+.2f}, {100 * pr.ci_high:+.2f}]")
                p_s, verdict = f"{pr.p_value:.3g}", pr.verdict
                paired_rows.append({"model": row, "reference": REFERENCE, "seeds": ";".join(both),
                                    "n_images": pr.n_images, "mean_difference": pr.mean_difference,
                                    "ci_low": pr.ci_low, "ci_high": pr.ci_high, "wilcoxon_p": pr.p_value,
                                    "per_seed_differences": ";".join(f"{d:.6f}" for d in pr.per_group),
                                    "wins": pr.wins, "losses": pr.losses, "ties": pr.ties,
                                    "verdict": pr.verdict})  # fmt: skip
        elif row == REFERENCE:
            cmp_s = "reference"
        md.append(f"| `{row}` | {params:,} | {gmacs:.3f} | {lat_s} | {mins} | {pct(dm)} ± {pct(ds)} | "
                  f"{pct(im)} ± {pct(isd)} | {pct(pooled)} | {'–' if hd is None else f'{hd:.1f}'} | {xs_s} | "
                  f"{cmp_s} | {p_s} | {verdict} | {pub} | {len(done)}/{len(columns)} |")  # fmt: skip
        if dm is not None:  # a row without all its seeds says so in the plot (its mean is not the others' kind)
            names.append(row if len(done) == len(columns) else f"{row}, {len(done)}/{len(columns)} seeds")
            dmeans.append(dm)
            lats.append(lat["latency_ms"] if lat else None)
            params_l.append(params)
        for c in columns:
            r = by.get((row, c), {})
            csv_rows.append({"model": row, "seed": c, "params": params, "gmacs": round(gmacs, 4),
                             "latency_ms": lat["latency_ms"] if lat else None,
                             "latency_engine": lat["fastest"] if lat else None, "dice": r.get("dice"),
                             "iou": r.get("iou"), "dice_pooled": r.get("dice_pooled"), "hd95": r.get("hd95"),
                             "train_seconds": r.get("train_seconds"), "device": r.get("device"),
                             "differs_from_budget": ";".join(differs.get((row, c), [])),
                             "cross_site_dice": xs[0] if xs else None,
                             "run": r.get("run") if r.get("dice") is not None else None})  # fmt: skip
    md.append("")
    md.append("Δ Dice: per-image difference (row − SC-UNeXt) on the same test images, mean over seeds of each seed's "
              f"mean; 95 % CI by a stratified bootstrap ({n_boot} resamples, seed 0); Wilcoxon signed-rank p over all "
              "pairs. The verdict says \"A beats B\" only when the CI excludes 0 and p < 0.05 "
              "(docs/experiments.md). Per-seed differences: leaderboard_paired.csv.")  # fmt: skip
    for row, diff in deviating.items():
        md.append(f"‡ `{row}`: trained with {', '.join(diff)} (the budget line above holds for every other setting; "
                  "docs/experiments.md).")  # fmt: skip
    if lat_any:
        md.append(f"Latency: batch 1, {lat_any['input']}, untrained weights, fp32, {lat_any['threads']} threads, "
                  f"fastest of {', '.join(LATENCY_ENGINES)} ({lat_any['timing']}); torch {lat_any['torch']}, "
                  f"onnxruntime {lat_any['onnxruntime']}, CPU {lat_any['cpu']}. MACs: {MAC_COUNTER}, "
                  f"1x{in_ch}x256x256. "
                  f"HD95 in pixels at native resolution ({_hd95_excluded(results)}).")  # fmt: skip
    if cross_site:
        md.append("Cross-site Dice: mean per-image Dice on the other site's images over every direction and seed of "
                  "the cross-site experiment (docs/experiments.md).")  # fmt: skip
    md.append("")
    md.append(WHY_PUBLISHED_DIFFER)
    for k, s in enumerate(sources, 1):
        md.append(f"[{k}] {s}.")
    write_csv(out_dir / "leaderboard.csv", csv_rows)
    write_csv(out_dir / "leaderboard_paired.csv", paired_rows)
    text = "\n".join(md) + "\n"
    atomic_write_text(out_dir / "leaderboard.md", text)
    if names:
        _plot(out_dir / "leaderboard.png", names, dmeans, lats, params_l)
    return text
