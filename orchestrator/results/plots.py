"""`ablate plot`: validation curves of every cell, grouped as in the summary tables, and a bar
chart of the main table. PNG or SVG, by the output's suffix."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # not pyplot: files only, no display backend, no global state
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from orchestrator.errors import ResultsError
from orchestrator.results.formats import label, percent, title, where_text
from orchestrator.results.tables import Results, Table
from orchestrator.results.trials import Trials
from orchestrator.store import arrays, records

SUFFIXES = (".png", ".svg")


def _cell_trials(trials: Trials, table: Table, r, c) -> tuple[str, ...]:
    """Ids of the trials behind a cell's value, of the completed trials of its table: its row and
    column, and the chosen reduced values."""
    point = {table.layout.rows: r, **({table.layout.cols: c} if table.layout.cols else {}), **table.cells[(r, c)].chosen}
    return trials.matching(point)["trial_id"]


def plot(results: Results, tables: list[Table], output: Path, notify=None) -> Figure:
    """Write the figure, and return it; with `notify`, a damaged epochs.parquet is noted and read
    past from the records."""
    if output.suffix.lower() not in SUFFIXES:
        raise ResultsError(f"{output}: the plot is written as PNG or SVG; use a .png or .svg name")
    done = results.trials.where([status == "completed" for status in results.trials["status"]])
    lost = results.trials.where([status == "diverged" for status in results.trials["status"]])
    wanted = []  # (table, cell, the ids of its trials drawn, what the legend adds to the cell's name)
    for table in tables:
        part, gone = done.matching(table.key), lost.matching(table.key)
        for key, cell in table.cells.items():
            if cell.status != "diverged":
                wanted.append((table, key, _cell_trials(part, table, *key), ""))
                continue
            # A cell that diverged in every trial has no value, but its epochs before it diverged
            # are a curve: drawn, and marked so. Nothing was chosen there: several settings are pooled.
            ids = _cell_trials(gone, table, *key)
            drawn = gone.where([i in set(ids) for i in gone["trial_id"]])
            pooled = [name for name in table.reduced if len(drawn.distinct(name)) > 1]
            wanted.append((table, key, ids, f" (diverged{', ' + ', '.join(pooled) + ' pooled' if pooled else ''})"))
    all_ids = sorted({i for _, _, ids, _ in wanted for i in ids})
    # Curves of the metric that chooses, over epochs or steps, or of what the table shows where
    # the trials reported only that.
    layout = tables[0].layout
    epochs = records.read_epochs(results.run, all_ids, ["epoch", "step", layout.by, layout.metric], notify) \
        if all_ids else None
    # Numbers only: a metric that a trial reported as text has no curve.
    columns = [f.name for f in epochs.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)] \
        if epochs is not None else []
    curve_metric = next((m for m in (layout.by, layout.metric) if m in columns), layout.by)
    x = "step" if "step" in columns and ("epoch" not in columns or not _every(epochs, curve_metric, "epoch")) \
        else "epoch"
    cells = [ids for _, _, ids, _ in wanted]
    curves = _curves(epochs, cells, x, curve_metric) if curve_metric in columns else [None] * len(cells)
    curve = layout.shown if curve_metric == layout.metric else results.objective.reported(curve_metric)
    panels = tables if any(line and line[0] for line in curves) else []
    if not panels and notify:  # a script that prints only final values
        notify(f"no curves: the trials reported no {curve_metric} per epoch or step; the plot is the bar chart alone")

    n = len(panels)
    fig = Figure(figsize=(10, 3.6 * (n + 1)))
    # A PNG canvas from the start: tight_layout then measures the texts with the renderer that
    # savefig draws with, which keeps their layouts, instead of one of its own.
    FigureCanvasAgg(fig)
    axes = fig.subplots(n + 1, 1, squeeze=False)
    scale = 100 if percent(curve) else 1
    # A cell keeps its colour and line style in every panel, and one legend names them all: the
    # same legend in each panel would cost a fifth of drawing a figure of four.
    labels = list(dict.fromkeys(_cell_label(table, key) for table, key, _, _ in wanted))
    style = {name: {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[i // 10 % 4]}
             for i, name in enumerate(labels)}
    drawn: dict[str, Line2D] = {}
    for ax, table in zip(axes[:, 0], panels):
        for (t, key, ids, suffix), line in zip(wanted, curves):
            if t is not table or line is None or not ids:
                continue
            steps, means = line
            name = _cell_label(table, key)
            shown = name + suffix
            # A line through one point draws nothing (one epoch, or one before it diverged): a dot.
            dot = {"marker": "o", "markersize": 4} if np.isfinite(means).sum() == 1 else {}
            (drawn[shown],) = ax.plot(steps, [m * scale for m in means], label=shown, linewidth=1.2, **dot,
                                      **style[name])
        where = where_text(table.key)
        chosen = f"; {', '.join(table.reduced)} as chosen for the table" if table.reduced else ""
        ax.set_title(f"{where + ': ' if where else ''}{curve_metric} per {x}, mean over seeds{chosen}",
                     fontsize=9, loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(placed := {p for line in ax.lines for p in line.get_xdata()}) == 1:  # else ticks at 0.96, 0.98, ...
            ax.set_xticks(list(placed))
        ax.set_xlabel(x)
        ax.set_ylabel(curve_metric + (" %" if scale == 100 else ""))
    if drawn:
        first = next(ax for ax in axes[:-1, 0] if ax.lines)
        named = ", ".join(a for a in (layout.rows, layout.cols) if a) + (" (in every panel)" if len(tables) > 1 else "")
        # In the cells' order, a cell's curve where it diverged beside its curve where it did not.
        order: dict[str, int] = {}
        for t, key, _, suffix in wanted:
            order.setdefault(_cell_label(t, key) + suffix, labels.index(_cell_label(t, key)))
        names = sorted((n for n in order if n in drawn), key=order.get)
        first.legend(handles=[drawn[name] for name in names], fontsize=7, ncol=4,
                     title=named, title_fontsize=7)
    _bars(axes[-1, 0], tables[0])
    fig.tight_layout()
    fig.savefig(output)
    return fig


def _cell_label(table: Table, key: tuple) -> str:
    """A cell's row and column values, as the tables label them (a missing one: not recorded)."""
    r, c = key
    return label(r) + (f" {label(c)}" if table.layout.cols else "")


def _every(epochs: pa.Table, metric: str, x: str) -> bool:
    """Whether every report of `metric` has an `x`: a script's val_loss every 100 steps beside its
    epochs' val_acc has no epoch, and its curve is over steps."""
    if metric not in epochs.column_names:
        return True
    return not np.any(~np.isnan(arrays.floats(epochs[metric])) & np.isnan(arrays.floats(epochs[x])))


def _continued(trial: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each row's x (rows of a trial in the order it reported), where a trial's count starts again
    (fine-tuning after pretraining, both from epoch 1) one past its x before, as the trackers log
    it: no point of a curve is the mean of two phases."""
    rows = np.arange(len(at))
    same = np.r_[False, trial[1:] == trial[:-1]]  # the row is of the trial of the row before
    first = np.maximum.accumulate(np.where(same, 0, rows))  # each row's trial's first row
    # The last row before each that has an x (a script's step rows have no epoch), of its trial.
    before = np.r_[-1, np.maximum.accumulate(np.where(np.isnan(at), -1, rows))][:len(at)]
    back = (before >= first) & (at < at[np.maximum(before, 0)])
    jump = np.where(back, at[np.maximum(before, 0)] + 1 - at, 0)
    total = np.cumsum(jump)
    return at + total - total[first]


def _curves(epochs: pa.Table, cells: list[list[str]], x: str, metric: str) -> list[tuple[list, list]]:
    """For each cell (the ids of its trials, each trial in one cell), the values of `x` its trials
    reported and the mean of `metric` over them at each (NaN where none has a value there)."""
    # Each row's cell and the place of its x among the distinct ones, by hashing in Arrow; the
    # sums by (cell, x) in NumPy (pyarrow's group_by imports pandas: see store/arrays.py).
    cell_of = {trial_id: n for n, ids in enumerate(cells) for trial_id in ids}
    ids = pc.dictionary_encode(epochs["trial_id"]).combine_chunks()
    cell = np.array([cell_of[i] for i in ids.dictionary.to_pylist()])[arrays.floats(ids.indices).astype(np.int64)]
    at = _continued(arrays.floats(ids.indices), arrays.floats(epochs[x]))
    steps = np.unique(at[~np.isnan(at)])
    place = np.where(np.isnan(at), np.nan, np.searchsorted(steps, at))
    values = arrays.floats(epochs[metric])
    rows = ~np.isnan(place)
    shape = (len(cells), len(steps))
    key, values = np.ravel_multi_index((cell[rows], place[rows].astype(np.int64)), shape), values[rows]
    valid = ~np.isnan(values)  # a NaN is left out of a mean, as a missing value is
    reported = np.bincount(key, minlength=shape[0] * shape[1]).reshape(shape) > 0
    counts = np.bincount(key[valid], minlength=shape[0] * shape[1]).reshape(shape)
    sums = np.bincount(key[valid], weights=values[valid], minlength=shape[0] * shape[1]).reshape(shape)
    means = np.divide(sums, counts, out=np.full(shape, np.nan), where=counts > 0)
    xs = steps.astype(np.int64)
    return [(xs[reported[n]].tolist(), means[n][reported[n]].tolist()) for n in range(len(cells))]


def _bars(ax, table: Table) -> None:
    metric = table.layout.metric
    scale = 100 if percent(table.layout.shown) else 1
    width = 0.8 / len(table.cols)
    x = np.arange(len(table.rows))
    for i, c in enumerate(table.cols):
        cells = [table.cells[(r, c)] for r in table.rows]
        # A mean of inf (a loss that blew up) has no bar either: its std is NaN.
        drawn = [cell.status == "completed" and math.isfinite(cell.mean) for cell in cells]
        means = [cell.mean * scale if bar else 0 for cell, bar in zip(cells, drawn)]
        errors = [(cell.std or 0) * scale if bar else 0 for cell, bar in zip(cells, drawn)]
        ax.bar(x + i * width, means, width, yerr=errors, label=label(c) if table.layout.cols else metric, capsize=2)
        for j, (cell, bar) in enumerate(zip(cells, drawn)):
            if not bar:  # no bar: say why
                why = cell.status if cell.status != "completed" else f"mean {cell.mean:g}"
                ax.text(x[j] + i * width, 0, why, rotation=90, ha="center", va="bottom", fontsize=7)
        refs = [(j, cell.reference * scale) for j, cell in enumerate(cells) if cell.reference is not None]
        if refs:
            ax.scatter([x[j] + i * width for j, _ in refs], [v for _, v in refs], marker="_", s=200, color="black",
                       label="paper" if i == 0 else None, zorder=3)
    ax.set_xticks(x + width * (len(table.cols) - 1) / 2, [label(r) for r in table.rows])
    ax.set_xlabel(table.layout.rows)
    ax.set_ylabel(metric + (" %" if scale == 100 else ""))
    ax.set_title("\n".join(textwrap.wrap(f"{title(table)}; error bars: ± std", 130)), fontsize=9,
                 loc="left")  # the panel's width
    ax.legend(fontsize=7, ncol=5, title=table.layout.cols, title_fontsize=7)
