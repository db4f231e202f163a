"""What a stage tells its user: plain aligned tables, and a stage's outcome.

Stage runners (``run_stage`` in :mod:`seremo.prepare`, :mod:`seremo.extract`,
:mod:`seremo.tune`, :mod:`seremo.train`, :mod:`seremo.evaluate`, :mod:`seremo.score`)
return an :class:`Outcome`: the figures a pipeline records in its step marker
and the text the command line prints. Neither the CLI nor the pipeline reaches
into the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    """A finished stage: ``result`` (small, JSON-able figures) and ``text`` (its printed summary)."""

    result: dict[str, Any]
    text: str


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_num(row[i]) for row in rows) if rows else False for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, numeric, strict=True))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *[line(r) for r in cells[1:]]])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def held_out(names: list[str], most: int = 4) -> str:
    """The groups a fold held out, as one short cell: a thousand dialogues make ten folds of a hundred."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"
