"""The report's index page (Markdown): the tables and the pictures, with one line on what each shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_index(
    folder: Path,
    title: str,
    tables: Sequence[tuple[str, str]],
    pictures: Sequence[tuple[str, str, str]],
) -> Path:
    """Write ``folder/index.md``.

    tables: (heading, Markdown table text); pictures: (heading, caption, file name inside ``folder``).
    """
    lines = [f"# {title}", ""]
    for heading, table in tables:
        lines += [f"## {heading}", "", table.rstrip(), ""]
    for heading, caption, name in pictures:
        lines += [f"## {heading}", "", caption, "", f"![{heading}]({name})", ""]
    path = folder / "index.md"
    path.write_text("\n".join(lines))
    return path
