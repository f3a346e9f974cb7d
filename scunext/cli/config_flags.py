"""Command-line flags generated from :class:`~scunext.config.TrainConfig`'s fields: one source of truth for the
flag names, help texts, choices and type conversion of ``scunext train`` and the shared flags of
``scunext experiment``.

- a scalar field ``name`` -> ``--name`` (underscores as dashes, or the field's ``flag`` metadata), converted to the
  field's type by :mod:`scunext.config`;
- a bool field -> ``--name`` / ``--no-name`` (e.g. ``--no-amp``, ``--channels-last``);
- a mapping field (``model_args``, ``loss_args``) -> a repeatable ``--model-arg KEY=VALUE``, merged over the
  mapping of ``--config``;
- ``augment`` -> ``--augment`` / ``--no-augment`` (its other options through ``--set augment.KEY=VALUE``);
- ``--set KEY=VALUE`` reaches every key.

Flags left out default to ``None`` and do not override the ``--config`` file or the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

from scunext.config import (
    AugmentConfig,
    TrainConfig,
    apply_overrides,
    choices_of,
    config_from_mapping,
    field_types,
    parse_value,
    read_config_mapping,
)
from scunext.errors import ConfigError, UsageError

__all__ = ["add_config_flags", "config_from_args", "config_and_given_keys", "parse_kv", "flag_name", "given_flags"]


_ADDED = "_config_fields"  # the Namespace attribute listing the config fields that have a generated flag


def flag_name(f: dataclasses.Field) -> str | None:
    """The command-line flag of a config field (``None``: the field has no flag of its own)."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _converter(name: str, tp: Any):
    def convert(text: str) -> Any:
        try:
            return getattr(apply_overrides(TrainConfig(), {name: text}), name)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(tp, "__name__", "value")  # argparse names the type in its messages
    return convert


def _default_text(value: Any) -> str:
    return "on" if value is True else "off" if value is False else repr(value) if value == "" else str(value)


def add_config_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add one flag per config field (all, or only ``names``) to ``parser``; the dest is the field name."""
    wanted = None if names is None else set(names)
    types, defaults = field_types(), TrainConfig()
    added: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        flag = flag_name(f)
        if flag is None or (wanted is not None and f.name not in wanted):
            continue
        added.append(f.name)
        tp, default, text = types[f.name], getattr(defaults, f.name), f.metadata.get("help", "")
        if "default" not in text and typing.get_origin(tp) is not dict:
            on = default.enabled if tp is AugmentConfig else default
            text = f"{text} (default {_default_text(on)})"
        if tp is bool or tp is AugmentConfig:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        if typing.get_origin(tp) is dict:
            parser.add_argument(flag, dest=f.name, action="append", metavar=f.metadata.get("metavar", "KEY=VALUE"),
                                help=text)  # fmt: skip
            continue
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if tp is not str:
            kw["type"] = _converter(f.name, tp)
        choices = choices_of(f)
        if choices is not None:
            kw["choices"] = choices
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
            if choices is not None:  # the metavar hides the choices
                kw["help"] = f"{text}; one of {', '.join(str(c) for c in choices)}"
        parser.add_argument(flag, **kw)
    parser.set_defaults(**{_ADDED: tuple(added)})


def parse_kv(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=true"]`` -> ``{"a": 1, "b": True}`` (values parsed as YAML, plain data only). A text field keeps
    the text as written when YAML would read it as something else: ``split_column=010`` is ``"010"``, not 8 (an
    octal number), and ``data=null`` is the folder ``null``, not "no value" (which kept the default silently)."""
    text_fields = {k for k, tp in field_types().items() if tp is str}
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            parsed = parse_value(value, f"{flag} {key}")
        except ConfigError:
            if key not in text_fields:
                raise
            parsed = value  # a text field keeps any text as written (split_column=010, a column named 1:30)
        if parsed is None and key not in text_fields:  # `epochs=null` kept the default (400) silently
            raise UsageError(f"{flag} {key}={value}: an empty value; give one (or leave the key out for its "
                             "default)")  # fmt: skip
        out[key] = value if key in text_fields and not isinstance(parsed, str) else parsed
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated config of a command line: defaults <- ``--config`` file <- ``--set`` <- generated flags."""
    return config_and_given_keys(args)[0]


def config_and_given_keys(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """:func:`config_from_args`, and the config keys the command line gave (in the ``--config`` file, a ``--set``
    or a flag), whatever their value: a value equal to its default is still the user's."""
    config_file = getattr(args, "config", None)
    given: set[str] = set()
    if config_file is not None and not str(config_file).strip():  # --config "$UNSET" meant the defaults silently
        raise UsageError("--config is empty; give a YAML file")
    if config_file:
        data = read_config_mapping(config_file)
        given |= {str(k) for k in data}
        cfg = config_from_mapping(data, config_file)
    else:
        cfg = TrainConfig()
    sets = parse_kv(getattr(args, "set", None), "--set")
    given |= {k.split(".")[0] for k in sets}
    cfg = apply_overrides(cfg, sets)
    types = field_types()
    overrides: dict[str, Any] = {}
    generated = set(getattr(args, _ADDED, ()))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is None or f.name not in generated:
            continue
        given.add(f.name)
        tp = types[f.name]
        if tp is AugmentConfig:
            overrides["augment.enabled"] = value
        elif typing.get_origin(tp) is dict:
            overrides[f.name] = {**getattr(cfg, f.name), **parse_kv(value, flag_name(f))}
        else:
            overrides[f.name] = value
    return apply_overrides(cfg, overrides).validate(), given


def given_flags(args: argparse.Namespace, allowed: Iterable[str]) -> list[str]:
    """Flag names of the config fields set on the command line, except the fields in ``allowed``."""
    skip, generated, types = set(allowed), set(getattr(args, _ADDED, ())), field_types()
    names = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in generated and f.name not in skip and getattr(args, f.name, None) is not None:
            flag = flag_name(f) or f.name
            names.append(f"{flag}/--no-{flag[2:]}" if types[f.name] in (bool, AugmentConfig) else flag)
    return names

