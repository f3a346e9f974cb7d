"""``scunext benchmark`` report structure (no speed assertions: speed belongs in the benchmark's own output)."""

from __future__ import annotations

import json

import pytest

from scunext.benchmark import BenchmarkConfig, format_report, matmul_gflops, peak_inference_memory_mb, run_benchmark
from scunext.cli.main import main


def _tiny(**kw) -> BenchmarkConfig:
    base = dict(engines=["torch"], size=64, latency_runs=3, rounds=1, throughput_batches=(2,), train_batch=2,
                train_steps=2, memory=False)  # fmt: skip
    return BenchmarkConfig(**{**base, **kw})


def test_report_has_every_figure_and_ratio():
    report = run_benchmark(_tiny())
    base, model = report["inference"]
    assert (base["model"], base["engine"]) == ("unext_s", "torch") and base["latency_ratio_to_baseline"] == 1.0
    assert model["model"] == "sc_unext"
    for key in ("latency_ms_median", "latency_ms_p90", "latency_ratio_to_baseline", "throughput_b2_img_s",
                "throughput_b2_ratio", "compute_floor_ms", "fraction_of_floor", "params", "gmacs"):  # fmt: skip
        assert model[key] > 0, key
    assert model["latency_ms_p90"] >= model["latency_ms_median"]
    assert {t["model"] for t in report["training"]} == {"unext_s", "sc_unext"}
    ctx = report["context"]
    assert ctx["threads"] == 2 and ctx["torch"] and ctx["matmul_gflops"] > 0
    text = format_report(report)
    assert "unext_s" in text and "nan" not in text  # memory was not measured: '-', not nan
    assert all(line.endswith(" -") for line in text.splitlines()[1:3])


@pytest.mark.parametrize("native_bf16", [False, True])
def test_training_rows_add_bfloat16_only_where_the_cpu_has_it(monkeypatch, native_bf16):
    monkeypatch.setattr("scunext.benchmark.cpu_has_native_bf16", lambda: native_bf16)
    report = run_benchmark(_tiny(engines=["torch"]))
    engines = {(t["model"], t["engine"]) for t in report["training"]}
    kinds = ["torch", "torch channels_last"] + (["torch channels_last bf16"] if native_bf16 else [])
    assert engines == {(m, k) for m in ("unext_s", "sc_unext") for k in kinds}
    base = next(t for t in report["training"] if (t["model"], t["engine"]) == ("unext_s", "torch"))
    assert base["train_ratio_to_baseline"] == 1.0
    assert all(t["train_img_s"] > 0 for t in report["training"])


def test_memory_and_floor_measurements():
    assert matmul_gflops(1, n=256, repeats=3) > 0
    # activations of 8 images at 128x128 (UNeXt-S's first feature map alone is 8 x 8 x 128 x 128 float32 = 4 MiB)
    # must show, and grow with the pixels: 16x the pixels of 2 images at 64x64 (a clamped 0 fails both)
    small = peak_inference_memory_mb("unext_s", "torch", 3, 64, 2, 1)
    large = peak_inference_memory_mb("unext_s", "torch", 3, 128, 8, 1)
    assert large > 4 and large > 2 * small, (small, large)


@pytest.mark.parametrize("kw", [{"engines": ["nope"]}, {"engines": []}, {"size": 250}, {"threads": 0},
                                {"threads": 100000}])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        _tiny(**kw).validate()


def test_cli_json(capsys):
    argv = ["benchmark", "--engines", "torch", "--size", "64", "--runs", "3", "--rounds", "1", "--no-memory", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inference"][0]["model"] == "unext_s"
    assert main(["benchmark", "--engines", "warp-drive", "--no-memory"]) == 2
    assert "available" in capsys.readouterr().err
