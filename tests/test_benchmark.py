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


def test_peak_memory_has_its_ratio_to_the_baseline(monkeypatch):
    """Every figure comes with its ratio to the baseline measured in the same run; peak memory had none."""
    measured = {("unext_s", "torch"): 8.0, ("sc_unext", "torch"): 6.0}
    monkeypatch.setattr("scunext.benchmark.peak_inference_memory_mb",
                        lambda model, engine, *a: measured[(model, engine)])  # fmt: skip
    report = run_benchmark(_tiny(memory=True))
    base, model = report["inference"]
    assert (base["peak_memory_mb_b8"], base["peak_memory_ratio"]) == (8.0, 1.0)
    assert (model["peak_memory_mb_b8"], model["peak_memory_ratio"]) == (6.0, 0.75)
    lines = format_report(report).splitlines()
    assert lines[0].endswith("mem MiB  x base") and lines[2].endswith("6.0   0.750"), lines[:3]
    ctx = report["context"]  # what each speed figure is a statistic of
    assert ctx["throughput_timing"] == "median over 1 rounds of the mean of 2 timed batches after 1 warm-up batch"
    assert ctx["training_timing"] == "median over 1 rounds x 2 steps after 2 warm-up steps"


def test_an_engine_that_cannot_take_the_size_is_refused_before_anything_runs(monkeypatch):
    """--size 32 with the onnxruntime engines measured the torch rows first and stopped partway."""
    monkeypatch.setattr("scunext.benchmark.make_runner", lambda *a: pytest.fail("built before the size check"))
    with pytest.raises(ValueError, match=r"^--size 32: the onnxruntime engines need H and W >= 64 for sc_unext"):
        run_benchmark(_tiny(engines=["torch", "onnxruntime"], size=32))


def test_a_batch_that_does_not_fit_in_memory_is_one_line(monkeypatch, capsys):
    """At a large --size the batch-32 throughput or the batch-8 training step failed with a 30-line traceback."""
    from scunext.benchmark import BenchmarkMemoryError

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 2147483648 bytes.")  # fmt: skip

    monkeypatch.setattr("scunext.benchmark._train_step_ms", no_memory)
    with pytest.raises(BenchmarkMemoryError, match=r"^the training step of unext_s \(a batch of 2\) at --size 64 "
                                                   r"does not fit in this machine's memory"):  # fmt: skip
        run_benchmark(_tiny())
    argv = ["benchmark", "--engines", "torch", "--size", "64", "--runs", "3", "--rounds", "1", "--no-memory"]
    assert main(argv) == 2
    err = capsys.readouterr().err  # (progress lines, then the error)
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("scunext benchmark: error: the training step of unext_s (a "
                                                      "batch of 8) at --size 64 does not fit")  # fmt: skip

    def bug(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr("scunext.benchmark._train_step_ms", bug)  # any other error is not called a memory problem
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_benchmark(_tiny())


@pytest.mark.parametrize("extra, flags", [(["--engines", "onnxruntime"], "--engines is an option"),
                                          (["--size", "8192", "--runs", "1"], "--size, --runs are options")])
def test_model_benchmark_options_are_refused_with_end_to_end(extra, flags, capsys, monkeypatch):
    """--end-to-end ignored them silently: --engines onnxruntime gave torch numbers, --size 8192 passed."""
    monkeypatch.setattr("scunext.cli.benchmark.run_end_to_end", lambda *a, **k: pytest.fail("ran"))
    assert main(["benchmark", "--end-to-end", "--n", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"scunext benchmark: error: {flags} of the model benchmark")


def test_end_to_end_report_names_its_libraries_and_has_no_empty_baseline_columns():
    from scunext.deploy.stream_benchmark import EndToEndConfig, _context, format_end_to_end

    row = {"kind": "png", "size": "2048x2048", "file_mb": 1.5, "overlay": False, "n": 2, "images_per_s": 3.0,
           "peak_rss_mb": 400, "cpu_ms_per_image": 500.0, "ok": 2, "status": "ok"}  # fmt: skip
    ctx = _context(EndToEndConfig(n=[2], kinds=["png"], engine="onnxruntime", threads=1, baseline=False))
    text = format_end_to_end({"rows": [row], "context": ctx})
    head, _, footer = text.splitlines()[0], None, text.splitlines()[-2]
    assert "base N" not in head and head.endswith("CPU ms")
    assert "1 threads (torch, onnxruntime)" in footer and f"onnxruntime {ctx['onnxruntime']}" in footer
    assert ctx["pillow"] and ctx["pydicom"] and f"Pillow {ctx['pillow']}, pydicom {ctx['pydicom']}" in footer
