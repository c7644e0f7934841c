"""The CLI conventions (docs/cli.md), checked on every subcommand's parser: `--json` means one thing everywhere, and
an engines directory has one flag name (`--engines`; `verify` also `--reference-engines`); the old `--onnx` still
works, hidden from --help."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from edge.cli import build_parser, main
from edge.cli_util import JSON_HELP


def subcommands(parser=None, path=()):
    """(["calibrate", "intrinsics"], parser) for every leaf subcommand."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield list(path), parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from subcommands(sub, (*path, name))


ALL = list(subcommands())


def visible_options(parser) -> dict:
    return {o: a for a in parser._actions if a.help is not argparse.SUPPRESS for o in a.option_strings}


def test_the_walk_sees_every_package():
    names = {" ".join(p) for p, _ in ALL}
    assert {"infer", "run", "bench", "eval", "quantize", "build", "verify", "camera info", "arm check",
            "calibrate intrinsics", "recording export", "bundle"} <= names


@pytest.mark.parametrize("path, parser", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_json_is_the_same_flag_everywhere(path, parser):
    action = visible_options(parser).get("--json")
    if action is None:
        return
    assert action.nargs == 0 and action.const is True and action.dest == "json", \
        f"{' '.join(path)}: --json must be a flag (a file is written by --report FILE / --out)"
    assert action.help == JSON_HELP, f"{' '.join(path)}: --json help differs from the convention"


@pytest.mark.parametrize("path, parser", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_engines_directories_are_named_engines(path, parser):
    opts = visible_options(parser)
    assert "--onnx" not in opts, f"{' '.join(path)}: an engines directory is --engines (--onnx: hidden alias only)"
    for option, action in opts.items():  # an engines directory read (not --out, the one a command writes)
        text = (action.help or "").lower()
        if option not in ("--out",) and "engines directory" in text and "--engines" not in action.option_strings:
            assert option == "--reference-engines", f"{' '.join(path)}: {option} names an engines directory"


@pytest.mark.parametrize("command", [["quantize", "--precision", "int8", "--out", "o"], ["build", "--out", "o"],
                                     ["bundle", "--config", "c", "--prompts", "p", "--out", "o"]])
def test_old_onnx_flag_still_works_with_a_warning(command, capsys):
    args = build_parser().parse_args([*command, "--onnx", "engines/fp32"])
    assert args.engines == "engines/fp32"
    assert "--onnx is deprecated; use --engines" in capsys.readouterr().err
    assert build_parser().parse_args([*command, "--engines", "engines/fp32"]).engines == "engines/fp32"


def test_verify_names_both_directories():
    args = build_parser().parse_args(["verify", "--engines", "trt", "--reference-engines", "onnx"])
    assert (args.engines, args.reference_engines) == ("trt", "onnx")
    assert build_parser().parse_args(["verify", "--engines", "trt", "--onnx", "onnx"]).reference_engines == "onnx"


def test_report_writes_the_file_and_json_prints_one_object(tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert main(["eval", "--expert", "--kinematic", "--episodes", "2", "--json", "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(report.read_text())  # the one object on stdout, the same in the file
    assert err == ""  # --json: no progress lines


def test_bench_model_only_json_is_one_object():
    r = subprocess.run([sys.executable, "-m", "edge.cli", "bench", "--model-only", "--variant", "flux2-4b",
                        "--target", "orin-agx-64gb", "--precision", "int8", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), dict)


@pytest.mark.parametrize("command", [["doctor"], ["calibrate", "board", "--out", "{tmp}/board"],
                                     ["calibrate", "capture", "--sim", "--n-views", "6", "--out", "{tmp}/views"]],
                         ids=["doctor", "calibrate board", "calibrate capture --sim"])
def test_json_prints_one_object_and_no_progress(command, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    r = subprocess.run([sys.executable, "-m", "edge.cli", *argv, "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in (0, 1), r.stderr  # doctor: 1 when this machine is no Jetson
    assert isinstance(json.loads(r.stdout), dict) and r.stdout.count("\n") == 1, r.stdout[:500]
    assert r.stderr == "", r.stderr[:500]


def test_config_is_the_same_flag_everywhere():
    helps = {" ".join(p): visible_options(parser)["--config"].help for p, parser in ALL
             if "--config" in visible_options(parser)}
    assert {"run", "bundle"} <= set(helps)
    assert all(h.startswith("run config: one robot YAML") for h in helps.values()), helps


def test_the_old_json_file_spelling_is_refused_with_the_fix(capsys):
    """`bench --json FILE` (before the conventions) now fails at once, telling the user the new flag."""
    from edge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--engines", "@default", "--json", "out.json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--report out.json" in err
    with pytest.raises(SystemExit):
        main(["bench", "--engines", "@default", "--bogus"])
    assert "--report" not in capsys.readouterr().err  # no hint where it does not apply
