"""Training configuration: one dataclass is the single source of truth; YAML files and CLI flags override it and
the resolved config is saved with every run (``config.yaml``).

Each field carries its help text, its allowed values (``choices``) and its command-line flag in the field's
metadata; ``scunext train`` (and the shared flags of ``scunext experiment``) are generated from them
(:mod:`scunext.cli.config_flags`), and values from YAML or flags are converted to the field's type here.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scunext.data.transforms import AugmentConfig
from scunext.errors import ConfigError, shown

__all__ = ["TrainConfig", "load_config", "apply_overrides", "ConfigError", "AugmentConfig", "parse_value", "MAX_SIZE",
           "MAX_NUM_WORKERS", "MAX_BATCH_SIZE", "MAX_CHANNELS", "read_config_mapping", "config_from_mapping",
           "MAX_CONFIG_BYTES"]


def _models() -> list[str]:
    from scunext.models import list_models

    return list_models()


def _losses() -> list[str]:
    from scunext.losses import list_losses

    return list_losses()


def _f(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
       **meta: Any) -> Any:  # fmt: skip
    """A dataclass field with its CLI metadata: ``help``, ``choices`` (a sequence or a callable giving one),
    ``flag`` (the flag name; default ``--field-name``; None: no generated flag), ``metavar``."""
    metadata = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


#: keys that older configs hold and that no longer do anything: accepted with the value they always had (the released
#: weights and every run record say ``hd95_in_val: false``), refused with any other, with the reason
RETIRED = {"hd95_in_val": (False, "never implemented (validation does not compute HD95; scunext evaluate reports "
                                  "it) and removed")}


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the paper's protocol (section 4.2) where it has one;
    ``channels_last`` is on because it is the fastest CPU path (docs/performance.md). Each field's meaning is its
    ``help`` metadata (``scunext train --help`` shows it)."""

    model: str = _f("sc_unext", "registered model name", choices=_models, metavar="NAME")
    model_args: dict[str, Any] = _f(
        factory=dict, help="model constructor override, repeatable (e.g. pfm=false)", flag="--model-arg",
        metavar="KEY=VALUE")  # fmt: skip
    data: str = _f("", "dataset folder with images/ and masks/ (default: the shipped ISIC 2017 sample)", metavar="DIR")
    in_channels: int = _f(0, "model input channels, 1 or 3 (default 0: from the data, 3 as soon as any image is "
                             "colour)", choices=(0, 1, 3))  # fmt: skip
    size: int = _f(256, "training and inference size (images resized to SIZE x SIZE)")
    split: str = _f("random", "random: a seeded held-out test part; kfold: fold k held out as the test part; csv: "
                    "a train/val/test column of a CSV file", choices=("random", "kfold", "csv"))  # fmt: skip
    test_fraction: float = _f(0.2, "held-out test part of a random split (paper: 0.2)")
    val_fraction: float = _f(0.1, "validation part for model selection, carved from the training side (never the "
                             "test part); also used by kfold, and by csv when the CSV has no val rows")  # fmt: skip
    folds: int = _f(5, "k of k-fold cross-validation")
    fold: int = _f(0, "which fold (0-based) is the held-out test part")
    split_csv: str = _f("", "CSV file for --split csv (default: DATA/splits.csv)", metavar="FILE")
    split_column: str = _f("isic2017_split", "CSV column holding train/val/test", metavar="NAME")
    split_id_column: str = _f("image_id", "CSV column holding the image ids (file names without the extension)",
                              metavar="NAME")  # fmt: skip
    max_images: int = _f(0, "use a seeded pick of N dataset images before splitting, 0 = all (paper's ablation: 120)",
                         metavar="N")  # fmt: skip
    max_train_images: int = _f(0, "cap the training images (seeded pick), 0 = all", metavar="N")
    seed: int = _f(0, "seeds the split, the weights, the data order and the augmentation")
    epochs: int = _f(400, "training epochs (the paper's 400)")
    batch_size: int = _f(8, "batch size (per process under DDP)")
    lr: float = _f(1e-4, "initial learning rate (Adam)")
    min_lr: float = _f(1e-5, "floor of the cosine annealing")
    beta1: float = _f(0.9, "Adam beta1")
    beta2: float = _f(0.999, "Adam beta2")
    weight_decay: float = _f(1e-4, "Adam weight decay (UNeXt's 1e-4)")
    loss: str = _f("bce_dice", "training loss", choices=_losses)
    loss_args: dict[str, Any] = _f(factory=dict, help="loss argument, repeatable (e.g. edge_weight=0.5)",
                                   flag="--loss-arg", metavar="KEY=VALUE")  # fmt: skip
    augment: AugmentConfig = _f(factory=AugmentConfig, help="training augmentation (albumentations; docs/data.md); "
                                "--no-augment turns it off, --set augment.KEY=VALUE sets one option")  # fmt: skip
    threshold_masks: bool = _f(False, "binarise masks with values other than 0/1/255 (>= 128) instead of refusing")
    num_workers: int = _f(0, "DataLoader workers")
    device: str = _f("auto", "training device (auto: CUDA, then MPS, then CPU)", choices=("auto", "cpu", "cuda", "mps"))
    amp: bool = _f(True, "mixed precision on CUDA (--no-amp: float32)")
    amp_dtype: str = _f("auto", "autocast dtype on CUDA (auto: bfloat16 where supported, else float16 with loss "
                        "scaling)", choices=("auto", "bfloat16", "float16"))  # fmt: skip
    cpu_amp: bool = _f(False, "bfloat16 autocast when training on the CPU: a step 1.1-1.4x (small networks) to 2.8x "
                       "(U-Net) faster where the CPU computes bfloat16 natively (AVX512-BF16 / AMX), slower where it "
                       "does not; off: float32, as every CPU run before it (docs/performance.md)")  # fmt: skip
    eval_every: int = _f(1, "validate every N epochs (the last epoch is always validated)", metavar="N")
    channels_last: bool = _f(True, "weights and batches in channels_last memory format: the same function, and "
                             "the fastest CPU training path (docs/performance.md); --no-channels-last: NCHW")
    intensity: str = _f("none", "per-image intensity step before normalisation: none (as before), percentile or "
                        "clahe (docs/data.md); the same step in training, evaluation, predict, export and serve",
                        choices=("none", "percentile", "clahe"))  # fmt: skip
    intensity_before_augment: bool = _f(False, "training only: apply the intensity step before the augmentation, "
                                        "so that the photometric augmentation perturbs the standardised image "
                                        "instead of being undone by it (inference is unchanged; "
                                        "docs/robustness.md)")  # fmt: skip

    def validate(self, saved: bool = False) -> TrainConfig:
        """Raise :class:`ConfigError` for an invalid value; return self.

        ``saved``: the config of an existing run (its ``config.yaml``). The upper bounds that guard new work against
        a typo (size, batch size, lr, workers, seed), some added after runs existed, are not applied to it: a run
        trained with ``seed: 3000000000`` or ``num_workers: 100`` must still evaluate, predict and resume (a resume
        may lower the workers with ``--num-workers``, checked as new)."""
        for f in dataclasses.fields(self):
            choices = choices_of(f)
            if choices is not None and getattr(self, f.name) not in choices:
                valid = ", ".join(str(c) for c in choices)
                got = shown(getattr(self, f.name))
                raise ConfigError(f"invalid config: {f.name} must be one of {valid}, got {got}")
        not_finite = [n for n in ("test_fraction", "val_fraction", "lr", "min_lr", "beta1", "beta2", "weight_decay")
                      if not math.isfinite(getattr(self, n))]  # fmt: skip
        checks = [
            (not not_finite, f"{' and '.join(not_finite)} must be finite, got "
                             f"{', '.join(str(getattr(self, n)) for n in not_finite)}"),
            (self.size >= 32 and (saved or self.size <= MAX_SIZE), f"size must be between 32 and {MAX_SIZE}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1 and (saved or self.batch_size <= MAX_BATCH_SIZE),
             f"batch_size must be between 1 and {MAX_BATCH_SIZE:,}"),
            (self.lr > 0 and self.min_lr >= 0 and self.min_lr <= self.lr, "need 0 <= min_lr <= lr and lr > 0"),
            (saved or self.lr <= MAX_LR, f"lr must be <= {MAX_LR:g} (larger steps overflow the optimiser's float32 "
                                         "state)"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 < self.test_fraction < 1, "test_fraction must be in (0, 1)"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (self.folds >= 2 and 0 <= self.fold < self.folds, "need folds >= 2 and 0 <= fold < folds"),
            (self.max_train_images >= 0 and self.max_images >= 0, "max_images/max_train_images must be >= 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (saved or self.num_workers <= MAX_NUM_WORKERS, f"num_workers must be <= {MAX_NUM_WORKERS} (each is a "
                                                           "process that imports PyTorch)"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.seed >= 0 and (saved or self.seed < 2**31), "seed must be in [0, 2**31)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"invalid config: {msg}")
        return self

    def check_split_settings(self) -> TrainConfig:
        """Refuse split settings that the chosen ``split`` would ignore (``--split-csv F`` without ``--split csv``
        trained on a random split; ``--fold 3`` without ``--split kfold`` likewise): checked for new runs, so that a
        run is never trained on another split than the one asked for. Old runs' configs are not re-checked."""
        default = TrainConfig()
        ignored = {
            "csv": [("split_csv", "--split-csv"), ("split_column", "--split-column"),
                    ("split_id_column", "--split-id-column")],
            "kfold": [("folds", "--folds"), ("fold", "--fold")],
        }
        for mode, settings in ignored.items():
            given = [flag for name, flag in settings if getattr(self, name) != getattr(default, name)]
            if given and self.split != mode:
                raise ConfigError(f"invalid config: {' and '.join(given)} apply only to --split {mode} (this run "
                                  f"splits {self.split!r}); add --split {mode} or drop them")  # fmt: skip
        if self.split in ("kfold", "csv") and self.test_fraction != default.test_fraction:
            held_out = "the held-out fold" if self.split == "kfold" else "the CSV's test rows"
            raise ConfigError(f"invalid config: --test-fraction does not apply to --split {self.split} ({held_out} "
                              "are the test part); drop it")  # fmt: skip
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (the augmentation settings as a mapping), as saved in ``config.yaml``."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The text of ``config.yaml``: :meth:`to_dict` as YAML that :func:`load_config` reads back unchanged."""
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from a mapping of its keys (missing keys keep their defaults); unknown keys are an error, and so
        is a key without a value (YAML ``size:`` or ``model: null`` kept the default silently). A key of
        :data:`RETIRED` with the value it always had is accepted and dropped (old runs still load)."""
        for key, value in data.items():
            if key in RETIRED and value != RETIRED[key][0]:
                raise ConfigError(f"{key}: {RETIRED[key][1]}; remove the key")
        data = {k: v for k, v in data.items() if k not in RETIRED}
        empty = sorted((k for k, v in data.items() if v is None), key=str)
        if empty:
            raise ConfigError(f"config key(s) {shown(empty)} without a value; give one, or leave the key out for its "
                              "default")  # fmt: skip
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=str)  # (YAML keys may be numbers: `1: 2`)
        if unknown:
            raise ConfigError(f"unknown config key(s) {shown(unknown)}; valid: {', '.join(sorted(known))}")
        return apply_overrides(cls(), dict(data))


#: the largest learning rate accepted: Adam with lr 1e38 overflows float32 inside its update (a traceback instead of
#: the non-finite-loss stop that a diverging lr such as 1e4 or 1e6 gets, which is kept: the user sees the run fail)
MAX_LR = 1e6
#: the largest input side (training size, profile/benchmark/export size): a 3 x 4096 x 4096 input and its
#: activations already take gigabytes
MAX_SIZE = 4096
#: the most DataLoader workers: each is a process that imports PyTorch (about 300 MB)
MAX_NUM_WORKERS = 64
#: the largest batch_size (a batch larger than the training part is one batch; 2**63 was a traceback after the run
#: folder was made)
MAX_BATCH_SIZE = 65_536
#: the most input channels / classes a profiled model may have (its first and last layers grow with them)
MAX_CHANNELS = 1024


def choices_of(f: dataclasses.Field) -> list[Any] | None:
    """The allowed values of a config field, or None when any value of its type is allowed."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def field_types() -> dict[str, Any]:
    """Field name -> its type (resolved annotations of :class:`TrainConfig`)."""
    return typing.get_type_hints(TrainConfig)


def parse_value(text: str, what: str) -> Any:
    """A command-line value parsed as a YAML scalar or flow collection (``1e-3``, ``true``, ``{a: 1}``); only
    plain data (YAML ``safe_load``: no Python objects). ``what`` names the flag and key in the error."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # (also 5,000-digit integers, nesting 20,000 deep)
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{what}: {shown(text)} is not a valid YAML value ({problem}); quote strings, write lists "
                          "as [a, b] and mappings as {a: 1}") from None  # fmt: skip


#: the most values (counted through nested lists and mappings) that ``model_args`` / ``loss_args`` may hold
MAX_ARG_ITEMS = 10_000


def _more_items_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds more than ``limit`` values, counted through nested lists and mappings; stops
    counting at the limit (the structure YAML aliases build can be too large to walk)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return False


def _coerce(name: str, value: Any, tp: Any, current: Any = None) -> Any:
    """Convert ``value`` (from YAML or a flag) to the field type ``tp``; ConfigError naming ``name`` if it cannot."""
    if tp is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {shown(value)}")
        return value
    if tp is AugmentConfig:
        if isinstance(value, AugmentConfig):
            return value
        if isinstance(value, bool):  # augment: false / true
            return AugmentConfig(enabled=value)
        if isinstance(value, str):
            value = parse_value(value, name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping of augmentation options, got {shown(value)}")
        try:
            return AugmentConfig.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if typing.get_origin(tp) is dict:
        if isinstance(value, str):
            value = parse_value(value, name)
        if value is None:
            value = {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name} must be a mapping of names to values, got {shown(value)}")
        if _more_items_than(value, MAX_ARG_ITEMS):
            raise ConfigError(f"{name} holds more than {MAX_ARG_ITEMS:,} values (YAML aliases can build millions "
                              f"in a few lines): {shown(value)}")
        return dict(value)
    if tp is str:
        if isinstance(value, Mapping | list | tuple | set) or value is None:
            raise ConfigError(f"{name} must be a string, got {shown(value)}")
        return str(value)
    try:
        if isinstance(value, bool) or isinstance(value, Mapping | list | tuple | set) or value is None:
            raise TypeError
        if tp is int:
            if isinstance(value, str):
                value = value.strip()
                number = float(value) if any(c in value for c in ".eE") else int(value)
            else:
                number = value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        if tp is float:
            return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be {'an integer' if tp is int else 'a number'}, got {shown(value)}") from None
    raise ConfigError(f"{name}: unsupported config type {tp!r}")  # pragma: no cover - a new field type


def apply_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with ``overrides`` applied (values converted to the field types); None values are skipped.

    A key ``augment.NAME`` sets one augmentation option and keeps the others; ``model_args.NAME`` and
    ``loss_args.NAME`` set one argument, to the value as given (``"true"`` stays text: the command line's
    ``--set model_args.act='"true"'`` was parsed a second time here, into True).
    """
    types = field_types()
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in RETIRED:  # an old run's settings: dropped with the value it always had
            if value != RETIRED[key][0]:
                raise ConfigError(f"{key}: {RETIRED[key][1]}; remove the key")
            continue
        head, dot, sub = str(key).partition(".")
        if dot and head == "augment":
            known = {f.name for f in dataclasses.fields(AugmentConfig)}
            if sub not in known:
                raise ConfigError(f"unknown augmentation option {shown(sub)}; valid: {', '.join(sorted(known))}")
            sub_type = typing.get_type_hints(AugmentConfig)[sub]
            merged = {**values["augment"].to_dict(), sub: _coerce(key, value, sub_type)}
            values["augment"] = _coerce("augment", merged, AugmentConfig)
            continue
        if dot and head in ("model_args", "loss_args") and sub:
            merged = {**values[head], sub: value}  # (as given: a --set value is parsed once, by parse_kv)
            values[head] = _coerce(head, merged, types[head])
            continue
        if key not in types:
            raise ConfigError(f"unknown config key {shown(key)}; valid: {', '.join(sorted(types))}")
        values[key] = _coerce(key, value, types[key])
    return TrainConfig(**values)


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading ``1e-3`` (no dot) as the number it is, as YAML 1.2 does: PyYAML follows YAML 1.1
    and read it as the *string* '1e-3', which typed config fields converted but ``model_args`` passed on as text
    (``--model-arg drop_path_rate=1e-1`` was a TypeError inside the model)."""


class _Dumper(yaml.SafeDumper):
    """YAML's safe dumper, quoting a text that :class:`_Loader` would read as a number (``split_column: '1e3'``):
    saved unquoted, the text '1e3' came back from config.yaml as the number 1000.0."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                               list("-+0123456789"))  # fmt: skip

#: YAML 1.1 numbers that read as something else than they look: ``010`` is the octal 8 (YAML 1.2 and the flag
#: ``--seed 010`` read 10), ``1:30`` and ``1:30.0`` are base 60 (90; ``--epochs 1:30`` is an error). Files and
#: ``--set`` keep PyYAML's YAML 1.1 reading, so that every config.yaml ever written reads back as it did (its
#: dumper quotes such text), but these forms are refused instead of silently becoming another number.
_AMBIGUOUS_NUMBER = re.compile(r"^0[0-9_]+$")  # (after the sign; 0x.. and 0b.. say what they are)


def _refuse_ambiguous(construct):
    def checked(loader: yaml.SafeLoader, node: yaml.ScalarNode):
        text = str(node.value)
        if ":" in text or _AMBIGUOUS_NUMBER.match(text.lstrip("+-")):
            raise yaml.constructor.ConstructorError(
                None, None, f"ambiguous number {text!r} (YAML 1.1 reads a leading 0 as octal and a ':' as base 60): "
                "write it without them, or quote it if it is text", node.start_mark)  # fmt: skip
        return construct(loader, node)

    return checked


_Loader.add_constructor("tag:yaml.org,2002:int", _refuse_ambiguous(yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", _refuse_ambiguous(yaml.SafeLoader.construct_yaml_float))


class _UniqueKeyLoader(_Loader):
    """YAML's safe loader, refusing a key given twice in one mapping (``lr: 0.5`` then ``lr: 0.0001`` silently
    trained with the second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` merges keys; an explicit one overrides
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKeyError(f"key {shown(key)} given twice (line {key_node.start_mark.line + 1}); "
                                             "keep one")  # fmt: skip
                seen.add(key)
            except TypeError:  # an unhashable key: the safe loader's own error follows
                pass
        return super().construct_mapping(node, deep=deep)


#: the largest config file read: a config holds a few dozen settings (a few kB); a large file given by mistake (a
#: CSV, a JSON dump) was parsed whole, in memory, before its first unknown key was named
MAX_CONFIG_BYTES = 1_000_000


def read_config_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file (read once: a pipe such as ``<(...)`` works), unchecked.

    Raises:
        ConfigError: a folder, a missing file, more than :data:`MAX_CONFIG_BYTES`, not UTF-8, not YAML, a duplicate
            key, or not a mapping.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder; --config takes a YAML file")
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.__class__.__name__})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_CONFIG_BYTES:,} bytes; a config file holds a few settings (is it "
                          "the right file?)")  # fmt: skip
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as exc:  # (before ValueError, of which it is one)
        raise ConfigError(f"{p}: cannot read the config file ({exc.__class__.__name__})") from None
    except _DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # (5,000-digit integers, nesting 20,000 deep)
        problem = getattr(exc, "problem", None)
        where = getattr(getattr(exc, "problem_mark", None), "line", None)
        detail = f"line {where + 1}: {problem}" if problem and where is not None else exc.__class__.__name__
        raise ConfigError(f"{p}: not valid YAML ({detail})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys")
    return data


def config_from_mapping(data: Mapping[str, Any], path: str | Path) -> TrainConfig:
    """:meth:`TrainConfig.from_dict` of a file's mapping, its errors naming the file."""
    try:
        return TrainConfig.from_dict(dict(data))
    except ConfigError as exc:
        raise ConfigError(f"{Path(path)}: {exc}") from None


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *, saved: bool = False
) -> TrainConfig:
    """Defaults <- YAML file <- overrides, validated (``saved``: an existing run's config, see
    :meth:`TrainConfig.validate`)."""
    cfg = config_from_mapping(read_config_mapping(path), path) if path else TrainConfig()
    return apply_overrides(cfg, overrides or {}).validate(saved=saved)
