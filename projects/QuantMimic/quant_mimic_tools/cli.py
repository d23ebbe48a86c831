"""What the evaluation commands share: their main() with one-line errors, and the JSON they write."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Callable


def write_json(path: str, data: Any) -> None:
    """``data`` as indented JSON in ``path``, and a line saying so."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"written: {path}")


def run(
    prog: str, parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], Any], argv=None
) -> None:
    """Parse ``argv`` and run ``command``; a QuantMimicInputError ends as one line ``PROG: error: ...``, exit 2."""
    # torch's deprecation notices about what detectron2 calls at import: noise around the one-line errors
    warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=FutureWarning)
    from quant_mimic.errors import QuantMimicInputError, one_line

    args = parser.parse_args(argv)
    try:
        command(args)
    except QuantMimicInputError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
