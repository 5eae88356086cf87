"""HTML building blocks of the report: numbers formatted for readers and scrolling tables."""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["fmt", "html_table", "fmt_interval"]


def fmt(v: Any, digits: int = 2) -> str:
    """A number as a reader wants it: integers without decimals, floats rounded, NaN as a dash."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) < 0.01:
            return f"{v:.1e}" if v != 0 else "0"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def html_table(rows: Sequence[Mapping[str, Any]], text_columns: Iterable[str] = ()) -> str:
    """A table inside a scrolling box (never wider than the page)."""
    if not rows:
        return "<p class='note'>(none)</p>"
    cols = list(rows[0])
    text = set(text_columns) | {c for c in cols if all(isinstance(r.get(c), str) for r in rows)}
    cls = {c: " class='t'" if c in text else "" for c in cols}
    head = "".join(f"<th{cls[c]}>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td{cls[c]}>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class='wrap'><table><tr>{head}</tr>{body}</table></div>"



def fmt_interval(value: Any, low: Any, high: Any, digits: int = 2) -> str:
    """``value [low, high]`` (the interval left out when it is missing)."""
    numbers = [value, low, high]
    if all(v is not None and np.isfinite(float(v)) and float(v).is_integer() for v in numbers):
        value, low, high = (int(float(v)) for v in numbers)           # counts stay counts: 6 [6, 6]
    text = fmt(value, digits)
    if low is None or high is None or not np.isfinite([float(low), float(high)]).all():
        return text
    return f"{text} [{fmt(low, digits)}, {fmt(high, digits)}]"
