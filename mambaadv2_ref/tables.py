"""The one markdown table renderer: the book's tables and every study's `load_table` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                   formats: Mapping[str, str] | None = None, digits: int = 3) -> str:
    """Rows (flat dicts) as a markdown table (no trailing newline).

    Args:
        rows: the rows, at least one; a key missing in a row gives an empty cell.
        columns: columns in order (None: every key, in first-seen order).
        formats: column -> format spec (e.g. {"mAD": ".1%"}).
        digits: significant digits of the other float cells.
    """
    if not rows:
        raise ValueError("rows must hold at least one dict")
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    formats = formats or {}

    def cell(row: Mapping, key: str) -> str:
        value = row.get(key)
        if value is None:
            return ""
        if key in formats:
            return format(value, formats[key])
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, k) for k in columns) + " |" for r in rows]
    return "\n".join(lines)
