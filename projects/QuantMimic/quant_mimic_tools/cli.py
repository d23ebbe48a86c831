"""What the commands share: their main() with one-line errors, the JSON they write, and one flag vocabulary.

The vocabulary (tests/test_cli.py checks it on every command's ``--help``): ``--config-file FILE``;
``--weights FILE`` for the trained weights of the model the command runs (``--teacher-weights`` only for a
trained teacher checkpoint, ``--init-weights`` for an initialisation); trailing ``KEY VALUE`` config
overrides wherever a config is built; ``--output-dir DIR`` for folders; ``--json FILE`` for
machine-readable records; ``--seeds`` always a list of seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Callable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module's docstring as written, and each option's default (unless None, False or already said)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], "") or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def make_parser(prog: str, doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
    """A command's parser: ``--help`` prints ``doc`` (the module's docstring) whole and the defaults."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter, **kwargs)


def add_overrides(parser: argparse.ArgumentParser, what: str = "the config") -> None:
    """Trailing ``KEY VALUE`` config overrides, as train_net.py takes them."""
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY VALUE",
        help=f"overrides of {what}: KEY VALUE pairs at the end of the command line (e.g. MODEL.DEVICE cpu)",
    )


def add_seeds(
    parser: argparse.ArgumentParser, help: str, default: list[int] | None = None, flag: str = "--seeds"
) -> None:
    """A list of seeds (``--seeds 0 1 2``), the one meaning of ``--seeds`` in every command."""
    parser.add_argument(
        flag, type=int, nargs="+", default=[0] if default is None else default, metavar="SEED", help=help
    )


def add_model(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config-file`` (required) and ``--weights`` (default: the config's MODEL.WEIGHTS) of ``what``."""
    parser.add_argument("--config-file", required=True, metavar="FILE", help=f"{what}'s config")
    parser.add_argument(
        "--weights", metavar="FILE", help="its trained checkpoint (default: the config's MODEL.WEIGHTS)"
    )


def write_json(path: str, data: Any) -> None:
    """``data`` as indented JSON in ``path``, and a line saying so."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"written: {path}")


def run(
    prog: str,
    parser: argparse.ArgumentParser | Callable[[list[str] | None], argparse.Namespace],
    command: Callable[[argparse.Namespace], Any],
    argv: list[str] | None = None,
    *,
    errors: tuple[type[Exception], ...] = (),
    interrupted: str = "",
    write_advice: str = "free some space (or make the folder writable), then run the command again",
) -> Any:
    """Parse ``argv`` (with ``parser``, or a function of ``argv`` that returns the arguments) and return
    ``command(args)``, every command's main. A QuantMimicInputError (or one of ``errors``: one-sentence
    messages too) and a write that fails for want of space or permission (with ``write_advice``) end as one
    line ``PROG: error: ...``, exit 2; Ctrl-C as one line ``PROG: interrupted`` (``interrupted``: what to do
    then; an interruption that says more says it), exit 130."""
    # torch's deprecation notices about what detectron2 calls at import: noise around the one-line errors
    warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=FutureWarning)
    args = parser.parse_args(argv) if isinstance(parser, argparse.ArgumentParser) else parser(argv)
    try:
        return command(args)
    except KeyboardInterrupt as e:
        said = str(e) or "interrupted" + (f"; {interrupted}" if interrupted else "") + "."
        print(f"{prog}: {said}", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # imported here: a command that never imports the library (docs) does not import torch for it
        from quant_mimic.atomic import find_write_error, write_failure
        from quant_mimic.errors import QuantMimicInputError, one_line

        failed = find_write_error(e)
        if isinstance(e, (QuantMimicInputError, *errors)):
            message = one_line(e)
        elif failed is not None:
            message = one_line(write_failure(failed.filename or ".", failed, write_advice))
        else:
            raise
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)
