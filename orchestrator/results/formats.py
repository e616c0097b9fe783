"""Results as text: rich tables for the terminal, markdown, LaTeX, CSV and JSON.

Three things are rendered: the summary tables (tables.py), the study's claims checked under them
and the paired comparisons of `ablate compare` (compare.py). Each becomes a Sheet, a titled grid
of cells of lines, for the terminal, markdown and LaTeX, and flat rows for CSV and JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field

from rich.markup import escape
from rich.table import Table as RichTable

from orchestrator.plan.objective import Metric
from orchestrator.results.compare import ClaimCheck, Difference
from orchestrator.results.tables import Cell, Layout, Table, as_written

FORMATS = ("table", "markdown", "latex", "csv", "json")


def percent(metric: Metric | str) -> bool:
    """Whether a metric is shown as a percentage: as declared, else for a rate (an error, an accuracy)."""
    return (metric if isinstance(metric, Metric) else Metric(metric)).percent


def _num(value: float | None, metric: Metric | str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.2f}" if percent(metric) else f"{value:.4g}"


def _params(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _signed(value: float, metric: Metric | str) -> str:
    if math.isnan(value):  # inf - inf: shown as "-", as a missing value is
        return _num(value, metric)
    return ("+" if value >= 0 else "-") + _num(abs(value), metric)


def _interval(interval: tuple[float, float] | None, metric: Metric | str, signed: bool = False) -> str:
    if interval is None:
        return "95% CI: n too small"
    shown = (lambda v: _signed(v, metric)) if signed else (lambda v: _num(v, metric))
    return f"95% CI [{shown(interval[0])}, {shown(interval[1])}]"


def where_text(coords: dict) -> str:
    return ", ".join(f"{k}={as_written(v)}" if v is not None else f"{k} not recorded" for k, v in coords.items())


def label(value) -> str:
    """A row's, column's or compared value as a label: None is a parameter older rows lack."""
    return "not recorded" if value is None else as_written(value)


@dataclass
class Sheet:
    """A titled grid of text: a header, and rows of cells, each a list of lines."""
    title: str
    header: list[str]
    rows: list[list[list[str]]]
    styles: list[list[str | None]] = field(default_factory=list)  # per cell, for the terminal


# --- the summary tables ------------------------------------------------------------------------

def title(table: Table) -> str:
    metric = table.layout.metric + (" %" if percent(table.layout.shown) else "")
    what = f"{metric}, mean ± std over seeds (n) and its 95% t-interval"
    if table.layout.select == "all" and table.reduced:
        what = f"{metric}, mean ± std over trials (n), every {', '.join(table.reduced)} and seed pooled, " \
               "and its 95% t-interval"
    if table.layout.select == "best" and table.reduced:
        names = ", ".join(table.reduced)
        shown = [cell for cell in table.cells.values() if cell.status == "completed"]
        by = table.layout.by + (" (higher is better)" if table.layout.mode == "max" else "")
        if shown and not any(cell.chosen for cell in shown):  # no validation data: nothing was chosen
            what += f"; no {table.layout.by}: {names} pooled"
        elif table.layout.halving and any("stopped" in cell.counts for cell in table.cells.values()):
            what += f"; {names} {table.layout.halving.chosen(by)}"
        else:
            what += f"; {names} chosen by best {by} among settings with every seed finished"
    where = where_text(table.key)
    return (f"{where}: " if where else "") + what + (" (SYNTHETIC DATA)" if table.synthetic else "")


def cell_parts(cell: Cell, metric: Metric | str) -> list[str]:
    """The lines of one cell: value, interval, what was chosen, the published number."""
    if cell.status != "completed":
        total = sum(cell.counts.values())
        lines = [cell.status + (f" ({cell.counts[cell.status]}/{total})" if cell.status in cell.counts else "")]
        return lines + cell.notes + ([f"paper {_num(cell.reference, metric)}"] if cell.reference is not None else [])
    value = _num(cell.mean, metric) + (f" ± {_num(cell.std, metric)}" if cell.std is not None else "")
    lines = [f"{value} (n={cell.n})", _interval(cell.interval, metric)]
    extra = _chosen(cell) + ([_params(cell.params)] if cell.params else [])
    if extra:
        lines.append(", ".join(extra))
    lines += cell.notes
    if cell.reference is not None:
        versus = _signed(cell.difference, metric) if cell.comparable else "not comparable: " + ", ".join(cell.differs)
        lines.append(f"paper {_num(cell.reference, metric)} ({versus})")
    return lines


def _chosen(cell: Cell) -> list[str]:
    # None: the parameter is missing from the rows of the chosen setting (older rows lack it).
    return [f"{k} {label(v)}" for k, v in cell.chosen.items()]


STYLE = {"failed": "bold red", "diverged": "yellow", "dead_start": "yellow", "no_progress": "yellow", "missing": "dim",
         "pending": "dim", "no result yet": "dim", "not in the grid": "dim"}


def table_sheet(table: Table) -> Sheet:
    metric = table.layout.shown
    cells = [[table.cells[(r, c)] for c in table.cols] for r in table.rows]
    # A column says its axis (warmup=0), as the first says the rows'.
    header = [where_text({table.layout.cols: c}) for c in table.cols] if table.layout.cols else [metric.name]
    return Sheet(title(table), [table.layout.rows] + header,
                 [[[label(r)]] + [cell_parts(cell, metric) for cell in row] for r, row in zip(table.rows, cells)],
                 [[None] + [STYLE.get(cell.status) for cell in row] for row in cells])


# --- the study's claims ------------------------------------------------------------------------

VERDICT_STYLE = {"holds": "green", "fails": "bold red", "not enough seeds": "yellow", "not finite": "yellow",
                 "not checked": "yellow"}


def claims_sheet(checks: list[ClaimCheck]) -> Sheet:
    metric = checks[0].difference.metric
    rows, styles = [], []
    for check in checks:
        claim, d = check.claim, check.difference
        bound = _signed(claim.get("tolerance", 0.0) * (1 if claim["direction"] == "lower" else -1), metric)
        sign = "<" if claim["direction"] == "lower" else ">"
        rule = f"{as_written(d.value)} - {as_written(d.baseline_value)} {sign} {bound}"
        verdict = [check.verdict + (f" ({check.reason})" if check.reason else "")]
        if check.differs:
            verdict.append("not the published protocol: " + ", ".join(check.differs))
        rows.append([[claim["claim"], rule], [where_text(d.coords)], _difference_lines(d), verdict])
        styles.append([None, None, None, VERDICT_STYLE[check.verdict]])
    title = (f"The study's claims on these results: {metric}{' %' if percent(metric) else ''}, "
             f"paired by seed, 95% t-interval of the mean difference")
    return Sheet(title, ["claim", "cell", "difference", "seeds say"], rows, styles)


def _difference_lines(d: Difference, metric: Metric | str | None = None) -> list[str]:
    metric = metric or d.metric
    if d.mean is None:
        return [f"- (n={d.n})"]
    if d.verdict == "not finite":  # no interval around inf
        return [f"{_signed(d.mean, metric)} (n={d.n})"]
    return [f"{_signed(d.mean, metric)} (n={d.n})", _interval(d.interval, metric, signed=True)]


# --- `ablate compare` --------------------------------------------------------------------------

SEEDS_SAY = {"lower": "lower than {base}", "higher": "higher than {base}",
             "inconclusive": "interval includes 0", "n too small": "n too small",
             "not finite": "not finite: a seed's value is inf"}
BETTER = {True: " (better)", False: " (worse)", None: ""}


def comparison_sheet(differences: list[Difference], layout: Layout) -> Sheet:
    d0 = differences[0]
    metric = layout.shown
    # Axes with one value in every row go to the title, as the summary tables' do.
    shared = {a: v for a, v in d0.coords.items() if all(d.coords[a] == v for d in differences)}
    cell_axes = [a for a in d0.coords if a not in shared]
    rows, styles = [], []
    for d in differences:
        says = "; ".join(f"{d.axis}={label(v)} {status}" for v, status in d.unvalued.items()) if d.unvalued \
            else SEEDS_SAY[d.verdict].format(base=as_written(d.baseline_value)) + BETTER[d.better]
        shown = [_mean_lines(d.baseline, metric), _mean_lines(d.compared, metric), _difference_lines(d, metric), [says]]
        rows.append([[label(d.coords[a])] for a in cell_axes] + [[label(d.value)]] + shown)
        style = STYLE.get(next(iter(d.unvalued.values()))) if d.unvalued \
            else "dim" if d.verdict in ("inconclusive", "n too small") else None
        styles.append([None] * (len(cell_axes) + 4) + [style])
    base, names = as_written(d0.baseline_value), ", ".join(d0.reduced)
    title = (f"{metric.name}{' %' if percent(metric) else ''}: each {d0.axis} minus {d0.axis}={base}, "
             f"paired by seed; 95% t-interval of the mean difference"
             + ("" if not d0.reduced  # every axis is the table's: nothing chosen, nothing pooled
                else f"; {names} {layout.halving.chosen(layout.by)}" if layout.select == "best" and layout.halving
                and any("stopped" in cell.counts for d in differences for cell in (d.baseline, d.compared))
                else f"; {names} chosen for each side by best {layout.by} among settings with every seed finished"
                if layout.select == "best"
                else f"; {names} pooled and paired too"))
    return Sheet((f"{where_text(shared)}: " if shared else "") + title,
                 [*cell_axes, d0.axis, f"{d0.axis}={base}", "value", "difference", "seeds say"], rows, styles)


def _mean_lines(cell: Cell, metric: Metric | str) -> list[str]:
    if cell.status != "completed":
        return [cell.status]
    return [f"{_num(cell.mean, metric)} (n={cell.n})"] + _chosen(cell) + cell.notes


# --- sheets as text ----------------------------------------------------------------------------

def to_rich(sheet: Sheet) -> RichTable:
    out = RichTable(title=escape(sheet.title), title_justify="left", show_lines=True)
    for i, name in enumerate(sheet.header):
        # A column's axis over its value (variant= / convpool): as narrow as either, in a terminal's 80 columns.
        out.add_column(escape(name).replace("=", "=\n", 1), style="bold" if i == 0 else None,
                       justify="left" if i == 0 else "right")
    for i, row in enumerate(sheet.rows):
        texts = []
        for j, lines in enumerate(row):
            lines = [escape(line) for line in lines]
            style = sheet.styles[i][j] if sheet.styles else None
            if style:
                lines[0] = f"[{style}]{lines[0]}[/]"
            texts.append("\n".join(lines))
        out.add_row(*texts)
    return out


def to_markdown(sheets: list[Sheet]) -> str:
    def md(text: str) -> str:  # a value's `|` (an axis value "a|b") would end its table cell
        return text.replace("|", r"\|")

    out = []
    for sheet in sheets:
        out += [f"**{md(sheet.title)}**", "", "| " + " | ".join(map(md, sheet.header)) + " |",
                "|" + "---|" * len(sheet.header)]
        out += ["| " + " | ".join("<br>".join(map(md, lines)) for lines in row) + " |" for row in sheet.rows]
        out.append("")
    return "\n".join(out)


# LaTeX's special characters, and those that are text only in math mode, as text. Replaced in
# one pass: the braces of \textbackslash{} must not be escaped again.
TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%", "_": r"\_",
       "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "|": r"\textbar{}", "±": r"$\pm$", "<": "$<$",
       ">": "$>$"}


def _tex(text: str) -> str:
    return re.sub("|".join(map(re.escape, TEX)), lambda m: TEX[m.group()], text)


def _stack(lines: list[str]) -> str:
    return r"\shortstack{" + r" \\ ".join(_tex(line) for line in lines) + "}"


def to_latex(sheets: list[Sheet]) -> str:
    out = []
    for sheet in sheets:
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(sheet.title)}}}",
                r"\begin{tabular}{l" + "c" * (len(sheet.header) - 1) + "}", r"\toprule",
                " & ".join(_tex(h) for h in sheet.header) + r" \\", r"\midrule"]
        for first, *cells in sheet.rows:
            head = _tex(first[0]) if len(first) == 1 else _stack(first)  # a row label stays plain text
            out.append(" & ".join([head, *map(_stack, cells)]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


# --- flat rows, for CSV, JSON and scripts ----------------------------------------------------------

def table_rows(tables: list[Table], claims: list[ClaimCheck] = ()) -> list[dict]:
    """One flat row per cell (kind "cell"), then one per claim checked in a cell ("claim")."""
    out = []
    for table in tables:
        for (r, c), cell in table.cells.items():
            coords = {**table.key, table.layout.rows: r, **({table.layout.cols: c} if table.layout.cols else {})}
            chosen = {f"chosen_{k}": cell.chosen.get(k) for k in table.reduced} if table.layout.select == "best" else {}
            low, high = cell.interval or (None, None)
            out.append(_row(coords, {
                "metric": table.layout.metric, "status": cell.status, "mean": _round(cell.mean),
                "std": _round(cell.std), "n": cell.n, "ci_low": _round(low), "ci_high": _round(high),
                **chosen, "notes": "; ".join(cell.notes) or None, "params": cell.params,
                "reference": _round(cell.reference),
                "comparable": cell.comparable, "differs": "; ".join(cell.differs) or None,
                "difference": _round(cell.difference), "synthetic": table.synthetic}, kind="cell"))
    for check in claims:
        d = check.difference
        out.append(_row({**d.coords, d.axis: d.value}, {
            "metric": d.metric, "claim": check.claim["claim"], "baseline": d.baseline_value,
            "direction": check.claim["direction"], "tolerance": check.claim.get("tolerance", 0.0),
            **_difference_row(d), "verdict": check.verdict, "reason": check.reason or None,
            "comparable": check.comparable, "differs": "; ".join(check.differs) or None}, kind="claim"))
    return out


def comparison_rows(differences: list[Difference]) -> list[dict]:
    """One flat row per cell and compared value: both sides, their paired difference."""
    out = []
    for d in differences:
        chosen = {f"chosen_{k}": v for k, v in d.compared.chosen.items()}
        chosen |= {f"baseline_chosen_{k}": v for k, v in d.baseline.chosen.items()}
        out.append(_row({**d.coords, d.axis: d.value}, {
            "metric": d.metric, "baseline": d.baseline_value, "baseline_status": d.baseline.status,
            "baseline_mean": _round(d.baseline.mean), "baseline_n": d.baseline.n, "status": d.compared.status,
            "mean": _round(d.compared.mean), "value_n": d.compared.n,  # n: the seeds paired, as in the claims
            **_difference_row(d), "verdict": d.verdict, "better": d.better, **chosen,
            "baseline_notes": "; ".join(d.baseline.notes) or None, "notes": "; ".join(d.compared.notes) or None}))
    return out


def _row(coords: dict, columns: dict, kind: str | None = None) -> dict:
    """A flat row: its `kind`, each parameter under its own name, then the export's columns. One
    of those whose name a parameter has (an axis `n`, `metric` or `kind`) is written with a `_`
    before it, so that both are kept."""
    def free(name: str) -> str:
        while name in coords:
            name = "_" + name
        return name
    return {**({free("kind"): kind} if kind else {}), **coords, **{free(k): v for k, v in columns.items()}}


def _difference_row(d: Difference) -> dict:
    low, high = d.interval or (None, None)
    return {"difference": _round(d.mean), "ci_low": _round(low), "ci_high": _round(high), "n": d.n}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _plain(value):
    """A value as CSV and JSON write it: a NumPy scalar as its number, a tuple as a list."""
    if hasattr(value, "item"):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def to_json(rows: list[dict]) -> str:
    return json.dumps([{k: _finite(_plain(v)) for k, v in r.items()} for r in rows], indent=1)


def _finite(value):
    """JSON has no infinity or NaN (a loss that blew up, its std): Python writes them as
    Infinity and NaN, which strict readers refuse, so such a number is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else _plain(v)) for k, v in r.items()} for r in rows)
    return buffer.getvalue()
