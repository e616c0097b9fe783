"""Summary tables as text: rich tables for the terminal, markdown, LaTeX, CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
import math

from rich.markup import escape
from rich.table import Table as RichTable

from orchestrator.report import Cell, Table

FORMATS = ("table", "markdown", "latex", "csv", "json")


def percent(metric: str) -> bool:
    return metric.endswith("error") or metric.endswith("accuracy")


def _num(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.2f}" if percent(metric) else f"{value:.4g}"


def _params(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def title(table: Table) -> str:
    where = ", ".join(f"{k}={v}" for k, v in table.key.items())
    metric = table.layout.metric + (" %" if percent(table.layout.metric) else "")
    what = f"{metric}, mean ± std over seeds"
    if table.layout.select == "best" and table.reduced:
        what += f"; {', '.join(table.reduced)} chosen by best {table.layout.by}"
    return (f"{where}: " if where else "") + what + (" (SYNTHETIC DATA)" if table.synthetic else "")


def cell_parts(cell: Cell, metric: str) -> list[str]:
    """The lines of one cell: value, what was chosen, the published number."""
    if cell.status != "completed":
        total = sum(cell.counts.values())
        lines = [cell.status + (f" ({cell.counts.get(cell.status, total)}/{total})" if total else "")]
        return lines + ([f"paper {_num(cell.reference, metric)}"] if cell.reference is not None else [])
    value = _num(cell.mean, metric) + (f" ± {_num(cell.std, metric)}" if cell.std is not None else "")
    lines = [f"{value} (n={cell.n})"]
    extra = [f"{k} {v}" for k, v in cell.chosen.items()] + ([_params(cell.params)] if cell.params else [])
    if extra:
        lines.append(", ".join(extra))
    if cell.reference is not None:
        lines.append(f"paper {_num(cell.reference, metric)} ({_signed(cell.difference, metric)})")
    return lines


def _signed(value: float, metric: str) -> str:
    text = _num(abs(value), metric)
    return ("+" if value >= 0 else "-") + text


STYLE = {"failed": "bold red", "diverged": "yellow", "dead_start": "yellow", "no_progress": "yellow", "missing": "dim",
         "pending": "dim"}


def to_rich(table: Table) -> RichTable:
    out = RichTable(title=title(table), title_justify="left", show_lines=True)
    out.add_column(table.layout.rows, style="bold")
    for c in table.cols:
        out.add_column(str(c) if c is not None else table.layout.metric, justify="right")
    for r in table.rows:
        cells = [table.cells[(r, c)] for c in table.cols]
        texts = []
        for cell in cells:
            lines = [escape(line) for line in cell_parts(cell, table.layout.metric)]
            if cell.status in STYLE:
                lines[0] = f"[{STYLE[cell.status]}]{lines[0]}[/]"
            texts.append("\n".join(lines))
        out.add_row(escape(str(r)), *texts)
    return out


def to_markdown(tables: list[Table]) -> str:
    out = []
    for table in tables:
        header = [table.layout.rows] + [str(c) if c is not None else table.layout.metric for c in table.cols]
        out += [f"**{title(table)}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in table.rows:
            out.append("| " + " | ".join([str(r)] + ["<br>".join(cell_parts(table.cells[(r, c)], table.layout.metric))
                                                     for c in table.cols]) + " |")
        out.append("")
    return "\n".join(out)


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("±", r"$\pm$")):
        text = text.replace(a, b)
    return text


def to_latex(tables: list[Table]) -> str:
    out = []
    for table in tables:
        cols = [str(c) if c is not None else table.layout.metric for c in table.cols]
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(title(table))}}}",
                r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
                " & ".join(_tex(h) for h in [table.layout.rows, *cols]) + r" \\", r"\midrule"]
        for r in table.rows:
            cells = [r"\shortstack{" + r" \\ ".join(_tex(p) for p in cell_parts(table.cells[(r, c)], table.layout.metric)) + "}"
                     for c in table.cols]
            out.append(" & ".join([_tex(str(r)), *cells]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def records(tables: list[Table]) -> list[dict]:
    """One flat record per cell: for CSV, JSON and scripts."""
    out = []
    for table in tables:
        for (r, c), cell in table.cells.items():
            record = {**table.key, table.layout.rows: r}
            if table.layout.cols:
                record[table.layout.cols] = c
            chosen = {f"chosen_{k}": cell.chosen.get(k) for k in table.reduced} if table.layout.select == "best" else {}
            record.update({"metric": table.layout.metric, "status": cell.status, "mean": _round(cell.mean),
                           "std": _round(cell.std), "n": cell.n, **chosen, "params": cell.params,
                           "reference": _round(cell.reference), "difference": _round(cell.difference),
                           "synthetic": table.synthetic})
            out.append(record)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def to_json(tables: list[Table]) -> str:
    return json.dumps([{k: _plain(v) for k, v in r.items()} for r in records(tables)], indent=1)


def to_csv(tables: list[Table]) -> str:
    rows = records(tables)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else _plain(v)) for k, v in r.items()} for r in rows)
    return buffer.getvalue()
