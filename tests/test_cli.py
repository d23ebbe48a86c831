"""One flag vocabulary across train_net.py, demo.py and every command (quant_mimic_tools/cli.py): each
``--help`` exits 0 without a warning, prints the module's docstring, documents every option, and names the
shared concepts the same way: ``--config-file``, ``--weights``, ``--output-dir``, ``--json``, trailing
``KEY VALUE`` overrides, and ``--seeds`` as a list."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import warnings

import pytest
from conftest import PROJECT

# command -> the shared concepts it has (checked present; the others absent where they would mislead)
COMMANDS = {
    "train_net": {"config", "overrides"},  # the weights: detectron2's MODEL.WEIGHTS override
    "demo": {"config", "weights", "output_dir", "overrides"},
    "quant_mimic_tools.pipeline": {"output_dir", "json", "overrides", "seeds"},
    "quant_mimic_tools.study": {"output_dir", "overrides", "seeds"},
    "quant_mimic_tools.benchmark": {"json"},
    "quant_mimic_tools.deploy": {"config", "weights", "output_dir", "overrides"},
    "quant_mimic_tools.evaluate_deployed": {"config", "weights", "json", "overrides"},
    "quant_mimic_tools.feature_stats": {"config", "weights", "json", "overrides"},
    "quant_mimic_tools.convert": {"config"},
    "quant_mimic_tools.voc_eval": {"json"},
    "quant_mimic_tools.wider_face_eval": {"json"},
    "quant_mimic_tools.docs": set(),
    "quant_mimic_tools.collect_env": set(),
}
FLAGS = {"config": "--config-file", "weights": "--weights", "output_dir": "--output-dir", "json": "--json"}
RETIRED = ["--output-folder", "--out", "--model-weights", "--num-seeds"]


def load(name: str):
    if name in ("train_net", "demo"):
        sys.path.insert(0, str(PROJECT))
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(PROJECT))
    return importlib.import_module(name)


def help_of(name: str, monkeypatch, capsys) -> tuple[argparse.ArgumentParser, str, str]:
    """Run the command's ``--help`` in this process: (its parser, stdout, stderr)."""
    parsers = []
    parse = argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return parse(self, *args, **kwargs)

    module = load(name)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    entry = module.cli if name == "train_net" else module.main
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with pytest.raises(SystemExit) as exit_:
            entry(["--help"])
    out, err = capsys.readouterr()
    assert exit_.value.code in (0, None), err
    assert not [w for w in caught if "deprecat" not in str(w.message)], [str(w.message) for w in caught]
    return parsers[0], out, err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_documents_every_option_with_the_shared_vocabulary(name, monkeypatch, capsys):
    parser, out, err = help_of(name, monkeypatch, capsys)
    assert "Warning" not in err and "warning" not in err.lower(), err
    doc = (load(name).__doc__ or "").strip()
    assert doc.splitlines()[0] in out and doc.splitlines()[-1].strip() in out  # the whole docstring
    options = {s: a for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), (
            f"{name}: {action.option_strings or action.dest} has no help"
        )
    concepts = COMMANDS[name]
    for concept, flag in FLAGS.items():
        assert (flag in options) == (concept in concepts), f"{name}: {flag}"
    remainder = [a for a in parser._actions if not a.option_strings and a.nargs == argparse.REMAINDER]
    assert bool(remainder) == ("overrides" in concepts), f"{name}: trailing KEY VALUE overrides"
    assert ("--seeds" in options) == ("seeds" in concepts)
    if "--seeds" in options:
        assert options["--seeds"].nargs == "+" and options["--seeds"].type is int
    if "--output-dir" in options:
        assert "--output" not in options or name == "demo", f"{name}: --output beside --output-dir"
    assert "--teacher-weights" not in options or name == "quant_mimic_tools.benchmark"  # a trained teacher
    assert not set(RETIRED) & set(options)


def test_seeds_take_a_list_and_demo_overrides_follow_its_images():
    from quant_mimic_tools import pipeline, study

    assert pipeline.get_parser().parse_args(["--seeds", "0", "3"]).seeds == [0, 3]
    assert pipeline.get_parser().parse_args(["--estimate", "--seeds", "0", "1", "2"]).seeds == [0, 1, 2]
    assert study.get_parser().parse_args(["--seeds", "1", "2"]).seeds == [1, 2]
    demo = load("demo")
    args = demo.parse_args(["--config-file", "c.yaml", "--input", "a.png", "MODEL.DEVICE", "cpu",
                            "--weights", "w.pth"])  # fmt: skip
    assert args.input == ["a.png"] and args.opts == ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "w.pth"]
    args = demo.parse_args(["--config-file", "c.yaml", "--weights", "w.pth", "--input", "a.png", "b.png",
                            "--opts", "MODEL.DEVICE", "cpu"])  # fmt: skip
    assert args.input == ["a.png", "b.png"] and args.opts == ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "w.pth"]


def test_a_command_run_as_a_script_prints_its_help_without_warnings():
    """A fresh interpreter: the warnings that imports give (torch.jit.script) are filtered there too."""
    run = subprocess.run([sys.executable, str(PROJECT / "demo.py"), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "Warning" not in run.stderr, run.stderr


def test_run_ends_input_errors_interruptions_and_full_disks_in_one_line(capsys, tmp_path):
    """``cli.run``, every command's main: one line on stderr and exit 2 (bad input, a full disk) or 130
    (Ctrl-C); other errors keep their traceback."""
    import errno

    from quant_mimic.errors import QuantMimicInputError
    from quant_mimic_tools.cli import make_parser, run
    from quant_mimic_tools.runner import StageInterrupted

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f"))
    saving = RuntimeError("torch.save failed")
    saving.__cause__ = full
    cases = [
        (QuantMimicInputError("Bad input: fix it."), {}, 2, "prog: error: Bad input: fix it."),
        (ValueError("A damaged folder: deploy again."), {"errors": (ValueError,)}, 2,
         "prog: error: A damaged folder: deploy again."),
        (KeyboardInterrupt(), {"interrupted": "run it again"}, 130, "prog: interrupted; run it again."),
        (StageInterrupted("teacher", "at iteration 5"), {}, 130, "prog: interrupted in stage teacher (at iteration "
         "5); run the same command again to continue: finished stages are reused and teacher resumes from its "
         "last checkpoint."),
        (saving, {"write_advice": "free some space"}, 2, f"prog: error: Cannot write {tmp_path / 'f'}: the disk of "
         f"{tmp_path} is full"),
    ]  # fmt: skip
    for error, options, code, line in cases:

        def command(args, error=error):
            raise error

        with pytest.raises(SystemExit) as exit_:
            run("prog", make_parser("prog", "doc"), command, [], **options)
        (said,) = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == code and said.startswith(line), said
    assert said.endswith(": free some space.")
    with pytest.raises(ValueError):  # not a user's mistake: the traceback stays
        run("prog", make_parser("prog", "doc"), lambda args: int("x"), [])
    assert run("prog", make_parser("prog", "doc"), lambda args: 7, []) == 7
