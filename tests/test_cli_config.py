"""Flags generated from TrainConfig, typed augmentation settings, and which errors the CLI reports as one line."""

from __future__ import annotations

import argparse
import dataclasses
import re

import numpy as np
import pytest
import yaml

from scunext.cli import config_flags
from scunext.cli import weights as weights_cli
from scunext.cli.main import build_parser, main
from scunext.config import AugmentConfig, ConfigError, TrainConfig, load_config
from scunext.errors import MissingDependencyError


def _train_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def _cfg(*argv: str) -> TrainConfig:
    return config_flags.config_from_args(_train_args(*argv))


# ------------------------------------------------------------------------------------------- generated flags


def test_every_config_field_has_a_flag_with_help():
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in by_dest, f"no flag for config field {f.name}"
        assert f.metadata.get("help"), f"config field {f.name} has no help text"
        assert by_dest[f.name].help, f.name


@pytest.mark.parametrize(
    ("argv", "expected"),
    [  # the flag names of the hand-written parser keep working
        (["--model", "unext_s", "--epochs", "3", "--batch-size", "2", "--lr", "1e-3"],
         {"model": "unext_s", "epochs": 3, "batch_size": 2, "lr": 1e-3}),
        (["--split", "kfold", "--folds", "4", "--fold", "3", "--val-fraction", "0.2"],
         {"split": "kfold", "folds": 4, "fold": 3, "val_fraction": 0.2}),
        (["--split", "csv", "--split-csv", "s.csv", "--split-column", "c", "--split-id-column", "file"],
         {"split": "csv", "split_csv": "s.csv", "split_column": "c", "split_id_column": "file"}),
        (["--test-fraction", "0.3", "--max-images", "20", "--max-train-images", "9", "--seed", "2"],
         {"test_fraction": 0.3, "max_images": 20, "max_train_images": 9, "seed": 2}),
        (["--min-lr", "1e-6", "--size", "128", "--loss", "joint", "--in-channels", "1"],
         {"min_lr": 1e-6, "size": 128, "loss": "joint", "in_channels": 1}),
        (["--device", "cpu", "--num-workers", "2", "--no-amp", "--amp-dtype", "float16"],
         {"device": "cpu", "num_workers": 2, "amp": False, "amp_dtype": "float16"}),
        (["--threshold-masks", "--no-augment"], {"threshold_masks": True, "augment": AugmentConfig(enabled=False)}),
        (["--model-arg", "pfm=false", "--model-arg", "cbam=0", "--loss-arg", "edge_weight=0.5"],
         {"model_args": {"pfm": False, "cbam": 0}, "loss_args": {"edge_weight": 0.5}}),
        (["--set", "weight_decay=0", "--set", "beta1=0.8", "--set", "eval_every=2", "--set", "threshold_masks=yes"],
         {"weight_decay": 0.0, "beta1": 0.8, "eval_every": 2, "threshold_masks": True}),
        (["--set", "model_args.pfm=false", "--set", "loss_args={edge_weight: 0.2}", "--set", "augment.vflip_p=0"],
         {"model_args": {"pfm": False}, "loss_args": {"edge_weight": 0.2}, "augment": AugmentConfig(vflip_p=0.0)}),
        ([], {"channels_last": True, "augment": AugmentConfig(), "amp": True, "cpu_amp": False}),  # defaults
        (["--cpu-amp"], {"cpu_amp": True}),
        (["--no-channels-last", "--channels-last"], {"channels_last": True}),  # the last of the pair wins
        (["--no-channels-last"], {"channels_last": False}),
        (["--epochs", "1e3"], {"epochs": 1000}),  # integral floats are accepted as ints
    ],
)  # fmt: skip
def test_flags_set_config_fields(argv, expected):
    cfg = _cfg(*argv)
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    untouched = {f.name for f in dataclasses.fields(TrainConfig)} - set(expected)
    for key in untouched:
        assert getattr(cfg, key) == getattr(TrainConfig(), key), key


def test_set_keeps_the_text_of_text_fields():
    """``--set split_column=010`` was the column "8" (YAML reads 010 as an octal number) and ``--set data=null`` kept
    the default data silently; text fields keep what was written unless it is YAML text (quotes)."""
    cfg = _cfg("--set", "split_column=010", "--set", "data=null", "--set", "lr=1e-3", "--set", "epochs=0x10")
    assert (cfg.split_column, cfg.data, cfg.lr, cfg.epochs) == ("010", "null", 1e-3, 16)
    assert _cfg("--set", 'data="my data"').data == "my data"


def test_precedence_defaults_config_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.01\nmodel_args: {pfm: false}\naugment: {hflip_p: 0.25}\n")
    cfg = _cfg("--config", str(path), "--set", "lr=0.02", "--model-arg", "cbam=false", "--no-augment")
    assert cfg.epochs == 7 and cfg.lr == 0.02  # file, then --set
    assert cfg.model_args == {"pfm": False, "cbam": False}  # --model-arg merges over the file's mapping
    assert cfg.augment == AugmentConfig(enabled=False, hflip_p=0.25)  # --no-augment keeps the file's options
    assert _cfg("--config", str(path), "--set", "epochs=3", "--epochs", "4").epochs == 4  # a flag beats --set


def test_augment_is_typed_and_old_config_files_load(tmp_path):
    old = tmp_path / "old.yaml"
    data = TrainConfig().to_dict()
    for augment, expected in [({}, AugmentConfig()), ({"enabled": False}, AugmentConfig(enabled=False)),
                              ({"vflip_p": 0.0}, AugmentConfig(vflip_p=0.0))]:  # fmt: skip
        old.write_text(yaml.safe_dump({**data, "augment": augment}, sort_keys=False))  # as written before
        assert load_config(old).augment == expected
    cfg = load_config(None, {"augment.rotate90_p": 0})
    assert isinstance(cfg.augment, AugmentConfig) and cfg.augment.rotate90_p == 0.0
    assert cfg.to_dict()["augment"]["rotate90_p"] == 0.0  # saved as plain data
    cfg.dump(tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg
    with pytest.raises(ConfigError, match="unknown augmentation option 'flip'"):
        load_config(None, {"augment.flip": 1})


def test_experiment_shares_the_generated_training_flags():
    args = build_parser().parse_args(["experiment", "table1", "--data", "d", "--out", "o", "--epochs", "2",
                                      "--no-channels-last", "--amp-dtype", "bfloat16"])  # fmt: skip
    cfg = config_flags.config_from_args(args)
    assert (cfg.epochs, cfg.channels_last, cfg.amp_dtype) == (2, False, "bfloat16")
    assert cfg.data == "" and cfg.split == "random"  # the experiment's own --data/--split are not config flags here
    for not_shared in (["--model", "unet"], ["--fold", "1"], ["--seed", "3"]):  # set per run by the experiment
        with pytest.raises(SystemExit):
            build_parser().parse_args(["experiment", "table1", "--data", "d", "--out", "o", *not_shared])


# ------------------------------------------------------------------------------------------- user error or bug


def _raising(monkeypatch, exc: BaseException):
    def run(args):
        raise exc

    monkeypatch.setattr(weights_cli, "run", run)


def _numpy_value_error() -> ValueError:
    try:
        np.zeros(3).reshape(2, 2)
    except ValueError as exc:
        return exc
    raise AssertionError("numpy accepted the reshape")


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (ConfigError("invalid config: epochs must be >= 1"), 2, "epochs must be >= 1"),
        (MissingDependencyError("x needs onnx: pip install 'scunext[onnx]'"), 2, "pip install"),
        (ModuleNotFoundError("No module named 'flask'", name="flask"), 2, "pip install 'scunext[serve]'"),
        (FileNotFoundError(2, "No such file or directory", "a.png"), 2, "a.png"),
        (IsADirectoryError(21, "Is a directory", "out"), 2, "out"),
        (OSError(28, "No space left on device", "out/x.png"), 2, "No space left"),
    ],
)
def test_user_errors_are_one_line(exc, code, needle, monkeypatch, capsys):
    _raising(monkeypatch, exc)
    assert main(["weights"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scunext weights: error: ") and needle in lines[0]


def test_a_long_message_is_cut_on_its_one_line(monkeypatch, capsys):
    _raising(monkeypatch, ConfigError("epochs must be an integer, got " + "x" * 100_000))
    assert main(["weights"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("scunext weights: error: epochs must be") and "\n" not in line
    assert len(line) < 2200 and line.endswith("(message cut at 2,000 of 100,031 characters)")


#: anchors and aliases in one flow list: its last item holds 9**8 = 43 million strings, in about 250 characters
BOMB = "[" + ", ".join(f"&{c} [" + ", ".join([f"*{p}" if p else '"x"'] * 9) + "]"
                       for p, c in zip(["", *"abcdefg"], "abcdefgh")) + "]"


@pytest.mark.parametrize("key", ["epochs", "model", "augment", "model_args"])
def test_a_config_value_built_from_yaml_aliases_is_shown_cut_short(key, tmp_path, capsys):
    """YAML anchors and aliases build a list of 43 million items in a few lines; echoed whole it was a 254 MB
    "one-line" error. Each message shows a few items and nests of it, the whole line stays short, nothing is
    written."""
    value = f"{{x: {BOMB}}}" if key == "model_args" else BOMB
    (tmp_path / "c.yaml").write_text(f"{key}: {value}\n")
    argv = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1500 and "[[" in err, err[:300]
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_a_model_too_large_to_build_is_a_config_error(monkeypatch, tmp_path, capsys):
    """``--model-arg conv_widths=[100000,100000,100000]`` asks for 360 GB of weights: the allocation error is one
    line naming model_args, not a traceback (simulated: on a machine that overcommits memory the real allocation
    would wake the OOM killer, so the test does not make it)."""
    from scunext.engine import trainer

    def too_large(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 360000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(trainer, "create_model", too_large)
    argv = ["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--size", "64", "--no-progress",
            "--model-arg", "conv_widths=[100000,100000,100000]"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and "cannot be built in memory" in err[0] and "360000000000 bytes" in err[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("model", "arg", "said"), [
    ("sc_unext", "depths=[100000000,1]", "depths must be at most 64"),
    ("unext_s", "depths=[1,65]", "depths must be at most 64"),
    ("unet", "depth=100000", "depth must be at most 12"),
])
def test_a_count_of_layers_past_its_ceiling_is_refused_before_the_build(model, arg, said, tmp_path, capsys):
    """No allocation error stops 100 million small blocks: they were built one by one until the machine ran out
    of memory. Counts of layers have a ceiling, checked before anything is built; one line, nothing written."""
    argv = ["train", "--model", model, "--out", str(tmp_path / "r"), "--epochs", "1", "--size", "64",
            "--no-progress", "--model-arg", arg]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "r").exists()


def test_training_failure_exits_1(monkeypatch, capsys):
    from scunext.engine.trainer import TrainingError

    _raising(monkeypatch, TrainingError("loss became nan at epoch 2, step 0; stopped"))
    assert main(["weights"]) == 1
    assert capsys.readouterr().err.strip() == "scunext weights: error: loss became nan at epoch 2, step 0; stopped"


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("rng_numpy"),  # a library bug must not look like a user mistake
        ModuleNotFoundError("No module named 'scunext.nothere'", name="scunext.nothere"),
        ImportError("cannot import name 'x' from 'scunext.models'", name="scunext.models"),
        TypeError("unsupported operand"),
        RuntimeError("size mismatch"),
        _numpy_value_error(),  # a ValueError raised inside numpy, not by this package's checks
    ],
    ids=["KeyError", "ModuleNotFoundError", "ImportError", "TypeError", "RuntimeError", "numpy-ValueError"],
)
def test_bugs_keep_their_traceback(exc, monkeypatch):
    _raising(monkeypatch, exc)
    with pytest.raises(type(exc)):
        main(["weights"])


def test_a_plain_value_error_from_this_package_is_a_user_error(monkeypatch, capsys):
    from scunext.data import random_split

    def run(args):
        random_split(["a", "b"], test_fraction=2.0)

    monkeypatch.setattr(weights_cli, "run", run)
    assert main(["weights"]) == 2
    assert "test_fraction must be in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "needle"), [
    ("lr: 0.5\nepochs: 2\nlr: 0.0001\n", "key 'lr' given twice (line 3)"),
    ("size:\n", "['size'] without a value"),
    ("model: null\n", "['model'] without a value"),
    ("hd95_in_val: true\n", "hd95_in_val: never implemented"),
])  # fmt: skip
def test_config_files_that_silently_meant_something_else_are_refused(tmp_path, text, needle):
    """A key given twice kept the second value, an empty value the default, and hd95_in_val did nothing at all."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(path)


def test_old_configs_with_the_retired_key_still_load_and_set_null_is_refused(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("hd95_in_val: false\nepochs: 3\n")  # every run before 2026-11-30, and the released weights
    assert load_config(path).epochs == 3
    assert "hd95_in_val" not in TrainConfig().to_dict()
    assert main(["train", "--set", "epochs=null", "--out", str(tmp_path / "r")]) == 2
    assert "--set epochs=null: an empty value" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_yaml_merge_keys_still_load(tmp_path):
    """The duplicate-key check refused YAML merge keys (`<<: *defaults`) as "not valid YAML"; an explicit key after
    a merge overrides it and is not a duplicate."""
    path = tmp_path / "m.yaml"
    path.write_text("model: unext_s\naugment:\n  <<: {hflip_p: 0.1, vflip_p: 0.3}\n  vflip_p: 0.9\n")
    cfg = load_config(path)
    assert (cfg.augment.hflip_p, cfg.augment.vflip_p) == (0.1, 0.9)
    path.write_text("model: unext_s\naugment:\n  <<: [{hflip_p: 0.1}, {vflip_p: 0.3}]\n")
    assert load_config(path).augment.vflip_p == 0.3


def test_ctrl_c_or_sigterm_during_start_up_is_one_line(monkeypatch, capsys):
    """The sub-commands import torch (~3 s): Ctrl+C in that time printed a 40-line traceback from inside an import,
    because the imports ran at module level, before main's handling. They now run inside it."""
    import importlib

    from scunext.cli import main as cli_main

    real = importlib.import_module

    def interrupted(name, *args):
        if name.startswith("scunext.cli."):
            raise cli_main.Terminated() if name.endswith("evaluate") else KeyboardInterrupt()
        return real(name, *args)

    monkeypatch.setattr(cli_main.importlib, "import_module", interrupted)
    assert cli_main.main(["weights"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    monkeypatch.setattr(cli_main, "COMMANDS", ["evaluate"])
    assert cli_main.main(["evaluate", "x"]) == 143
    assert capsys.readouterr().err == "terminated\n"


def test_importing_the_command_line_does_not_import_torch():
    """What the ``scunext`` script imports before main() runs must be light (no torch), see the test above."""
    import subprocess
    import sys

    code = ("import sys, scunext.cli.main, scunext; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules)); "
            "print(scunext.models.__name__, scunext.create_model.__name__, 'create_model' in dir(scunext))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "scunext.models create_model True"], out.stdout  # and still there


def test_a_text_that_reads_as_a_number_survives_config_yaml(tmp_path):
    """``1e3`` without a dot is a number on reading (YAML 1.2); a text field holding '1e3' must then be written
    quoted, or the saved config.yaml would give it back as 1000.0."""
    cfg = load_config(None, {"split_column": "1e3", "model_args": {"drop_path_rate": 0.1}})
    cfg.dump(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.split_column == "1e3" and again == cfg
    assert "split_column: '1e3'" in (tmp_path / "config.yaml").read_text()


def test_a_config_from_a_pipe_is_read(tmp_path):
    """`--config <(...)` (a pipe under /dev/fd) was refused as "config file not found": only regular files passed."""
    import os
    import threading

    from scunext.config import read_config_mapping

    fifo = tmp_path / "cfg"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("epochs: 3\nlr: 1e-3\n"))
    writer.start()
    assert read_config_mapping(fifo) == {"epochs": 3, "lr": 0.001}
    writer.join(timeout=10)


@pytest.mark.parametrize("text", ["010", "0100", "1:30", "1:30.5", "00"])
def test_numbers_yaml_1_1_would_read_as_another_number_are_refused(tmp_path, text):
    """YAML 1.1 read '010' as 8 (octal) and '1:30' as 90 (base 60) in --set and --config, while the flag read 10
    (or refused it): refused in both, with the reason; a text field keeps such text given with --set."""
    from scunext.cli.config_flags import parse_kv
    from scunext.config import read_config_mapping

    with pytest.raises(ConfigError, match=rf"--set seed: '{re.escape(text)}' is not a valid YAML value \(ambiguous "
                                          r"number"):  # fmt: skip
        parse_kv([f"seed={text}"], "--set")
    (tmp_path / "c.yaml").write_text(f"epochs: 3\nseed: {text}\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: not valid YAML \(line 2: ambiguous number '{re.escape(text)}'"):
        read_config_mapping(tmp_path / "c.yaml")
    assert parse_kv([f"split_column={text}"], "--set") == {"split_column": text}
    (tmp_path / "q.yaml").write_text(f"split_column: '{text}'\n")  # quoted in a file: the text
    assert read_config_mapping(tmp_path / "q.yaml") == {"split_column": text}


def test_every_config_the_dumper_writes_reads_back_the_same():
    """The files of every run: text that YAML would read as a number is quoted, numbers read back exactly."""
    from scunext.config import _Dumper, _UniqueKeyLoader

    texts = ["010", "09", "1:30", "1_000", "1e-3", "1.5e3", "0o17", "0x10", ".inf", "yes", "null", "2024-01-01", "~"]
    numbers = [0, 7, -3, 1e-05, 0.001, -0.5, 1e16, 5e-324, float("inf"), -0.0, 3_000_000_000]
    data = {f"t{i}": t for i, t in enumerate(texts)} | {f"n{i}": v for i, v in enumerate(numbers)}
    back = yaml.load(yaml.dump(data, Dumper=_Dumper), Loader=_UniqueKeyLoader)
    assert back == data and all(type(back[k]) is type(v) for k, v in data.items())


def test_a_set_model_arg_is_parsed_once():
    """`--set model_args.act='"true"'` (quoted: the text) became True, and `'010'` (quoted) the octal 8: the value
    parsed by --set was parsed again when applied. --model-arg always kept the text."""
    from scunext.cli.config_flags import parse_kv
    from scunext.config import apply_overrides

    for text, want in (('"true"', "true"), ("'010'", "010"), ("true", True), ("[1, 2]", [1, 2])):
        cfg = apply_overrides(TrainConfig(), parse_kv([f"model_args.act={text}"], "--set"))
        assert cfg.model_args == {"act": want}, text
