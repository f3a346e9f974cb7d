"""The docs match the code: README commands are the ones CI runs, and documented counts are the pinned ones."""

from __future__ import annotations

import re

from conftest import REPO


def _ci_command() -> str:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if "README test command" in line)
    return lines[marker + 1].strip()


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert _ci_command() in readme


def test_readme_models_table_matches_registry():
    import scunext

    readme = (REPO / "README.md").read_text()
    for name in scunext.list_models():
        assert f"`{name}`" in readme


def test_architecture_doc_counts_match_pins():
    from test_models import PINNED

    doc = (REPO / "docs" / "architecture.md").read_text()
    for name, (params, macs) in PINNED.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"{params:,}" in row, name
        assert re.search(rf"\b{macs / 1e9:.3f}\b", row), name


def test_readme_released_weights_commands_run(tmp_path, monkeypatch, capsys):
    """The README's `scunext predict --weights ...` lines work as written on a fresh install (no training)."""
    import shlex

    from scunext.cli.main import main

    readme = (REPO / "README.md").read_text()
    lines = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("scunext predict --weights")]
    assert len(lines) >= 2
    monkeypatch.chdir(REPO)
    for line in lines:
        argv = shlex.split(line.split("#")[0])[1:]
        argv[argv.index("--out") + 1] = str(tmp_path / "masks")
        assert main(argv) == 0, line
    assert "px (" in capsys.readouterr().out


def test_released_weights_table_in_readme_matches_cards():
    from scunext.weights import list_weights, weights_card

    readme = (REPO / "README.md").read_text()
    for name in list_weights():
        card = weights_card(name)
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"{100 * card['test_metrics']['dice']['per_image_mean']:.2f}" in row, name


def _option_strings(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _subcommands(parser) -> dict:
    import argparse

    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def documented_flags() -> list[tuple[str, str, str, set[str]]]:
    """Every ``--flag`` written after ``scunext COMMAND [SUBCOMMAND]`` in the README and docs/ (continuation lines
    joined; a command ends at a shell separator, a backtick or a table bar), with the flags that command accepts.
    ``scunext experiment ... --flag`` accepts the flags of any experiment."""
    from scunext.cli.main import build_parser

    commands = _subcommands(build_parser())
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for m in re.finditer(r"scunext[ \t]+([a-z][a-z0-9-]*)([^\n`|;&#]*)", text):
            if m.group(1) not in commands:
                continue
            parser, words = commands[m.group(1)], m.group(2).split()
            subs = _subcommands(parser)
            if subs and words and words[0] in subs:
                accepted = _option_strings(subs[words[0]])
            else:
                accepted = _option_strings(parser).union(*(_option_strings(p) for p in subs.values()))
            for w in words:
                flag = re.match(r"[\[(]*(--[a-z0-9][a-z0-9-]*)", w)
                if flag:
                    found.append((doc.name, m.group(0).strip()[:90], flag.group(1), accepted))
    return found


def test_every_documented_flag_exists():
    """A flag renamed or removed in the code, still shown in a doc, is a user's first error."""
    flags = documented_flags()
    assert len(flags) > 300  # the scan reads the docs' commands (a broken pattern would pass vacuously)
    wrong = [f"{doc}: {flag} in `{cmd}`" for doc, cmd, flag, accepted in flags if flag not in accepted]
    assert not wrong, "\n".join(wrong)


#: dotted names in the docs that are not Python objects (an ONNX metadata key)
NOT_PYTHON = {"scunext.preprocessing"}


def test_every_documented_python_name_exists():
    """``scunext.module.name`` written in the README or docs/ imports (a module moved or a function renamed in the
    code, still named in a doc, sends a researcher to nothing)."""
    import importlib

    names = {m for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
             for m in re.findall(r"\bscunext(?:\.[A-Za-z_]\w*)+", doc.read_text())} - NOT_PYTHON  # fmt: skip
    assert len(names) > 30
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ImportError:
                continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        if obj is None:
            missing.append(name)
    assert not missing, missing
