"""``scunext weights``: list the released weights shipped with the package, or show one card."""

from __future__ import annotations

import argparse
import json

from scunext.cli.paths import Once as _Once
from scunext.weights import list_weights, weights_card


def add_weights_option(p: argparse.ArgumentParser, help: str, repeatable: bool = False) -> None:
    """``--weights NAME`` for the commands that take a model (predict, export, serve, robustness, calibrate); the
    help lists the names. Not ``repeatable``: given twice it is an error."""
    more = {"action": "append", "default": []} if repeatable else {"action": _Once}
    p.add_argument("--weights", metavar="NAME", help=f"{help}: {', '.join(list_weights())}", **more)


def add_quality_option(p: argparse.ArgumentParser) -> None:
    """``--quality FILE``: a quality.json (e.g. ``scunext calibrate --site``) instead of the model's own."""
    p.add_argument("--quality", metavar="FILE",
                   help="review threshold and area prior from this quality.json instead of the model's own (e.g. a "
                   "site calibration: scunext calibrate --site DIR --out FILE)")  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list the released weights (use them with --weights NAME)",
        description="Released weights ship inside the package; each is a small run folder with a card (data, split, "
        "epochs, test metrics, command). Use them with predict/export/serve --weights NAME.",
    )
    p.add_argument("name", nargs="?", help="show this card in full (JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name:
        print(json.dumps(weights_card(args.name), indent=2))
        return 0
    print(f"{'name':16s} {'model':9s} {'params':>8s} {'data':17s} {'split':22s} {'epochs':>6s} {'test Dice':>9s}")
    for name in list_weights():
        c = weights_card(name)
        s, t = c["split"], c["test_metrics"]
        split = f"{s['kind']} {s['train']}/{s['val']}/{s['test']}"
        print(f"{name:16s} {c['model']:9s} {c['params']:8,d} {c['data']['dataset']:17s} {split:22s} "
              f"{c['training']['epochs']:6d} {t['dice']['per_image_mean']:9.4f}")  # fmt: skip
    return 0
