"""The record of finished trials, and the two Parquet files users read.

    write_record(run, trial_schema(Config), trial_id, config, result, epochs)   # a trial is done
    read_trials(run)                                                   # every finished trial
    Publisher(run).publish(trial_id)                                   # into the two files

Whoever finishes a trial writes its record: the worker for a result, the driver for a trial that
ran out of retries or that a scheduler stopped. A record is one file, `records/<trial_id>.json`:
the trial's row, the types of its columns, and its epochs. Records are the truth about what is
done; one file per trial id, written whole, means a trial that runs again replaces its record
and is never recorded twice, and a record is never half there. They are JSON because each is
written once and read once, where a one-row Arrow file costs more to build than to write
(benchmarks/README.md); the driver turns the rows of many records into Arrow at once. Records
that older ablates wrote (Arrow IPC or Parquet) are still read.

The driver publishes records into `trials.parquet` and `epochs.parquet`, single files rewritten
whole and renamed into place: a reader sees every finished trial exactly once, and reading ten
thousand trials is one file, not ten thousand. Each file is rewritten as trials finish, paced so
that rewriting takes about 1/REWRITE_PACE of the driver's time (a growing file rewritten after
every one of 10,000 short trials would make the driver, not the trials, set the pace), and when
the run ends. A driver killed between a record and its publication loses nothing: readers merge
unpublished records in, and the next `ablate run` publishes them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
import typing
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from orchestrator.errors import DamagedFile, ResultsError
from orchestrator.store import arrays, columns
from orchestrator.store.rundir import RunDir
from workloads.base import RESULT_STATUSES

# Every status a row can have: the workload's results, a trial a Tune scheduler stopped early
# (a result too: it is not run again), and a trial that ran out of retries.
STOPPED = "stopped"
STATUSES = (*RESULT_STATUSES, STOPPED, "failed")

_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_TYPES = {str(t): t for t in (*_ARROW.values(), _TIMESTAMP)}
REWRITE_PACE = 100  # a published file is rewritten once 100x the time its writing takes has passed (see _Pace)


def _arrow_type_named(name: str) -> pa.DataType:
    if name.startswith("list<item: ") and name.endswith(">"):
        return pa.list_(_arrow_type_named(name[len("list<item: "):-1]))
    return _TYPES[name]


RESULT_COLUMNS = [(name, _arrow_type_named(kind)) for name, kind in columns.RESULT_COLUMNS]


def _arrow_type(t) -> pa.DataType:
    if typing.get_origin(t) is list:
        return pa.list_(_arrow_type(typing.get_args(t)[0]))
    return _ARROW.get(t, pa.string())


@functools.lru_cache(maxsize=None)
def trial_schema(config_type: type, results: tuple[tuple[str, type], ...] = ()) -> pa.Schema:
    """Columns of trials.parquet: id, status, every config parameter, the columns every row has,
    then the workload's declared `results` ((name, type) pairs). A record adds a column for any
    other value of its trial (write_record)."""
    hints = typing.get_type_hints(config_type)
    config = [(f.name, _arrow_type(hints[f.name])) for f in fields(config_type)]
    if clash := (columns.RESERVED | {name for name, _ in results}).intersection(hints):
        raise ValueError(f"{config_type.__name__}: parameter names {sorted(clash)} are taken by result columns")
    own = [(name, _arrow_type(kind)) for name, kind in results if name not in columns.RESERVED]
    return pa.schema([("trial_id", pa.string()), ("status", pa.string()), *config, *RESULT_COLUMNS, *own])


def _type_of(value) -> str | None:
    """The column type of a value no schema declares: a number, text or a flag; None for a
    missing value (another trial's record may type the column) or one of another kind."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (list, dict)):  # a NumPy or torch scalar
        try:
            value = item()
        except (ValueError, RuntimeError):  # an array of several values
            return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -2**63 <= value < 2**63 else "double"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return None


RECORD = ".json"
# Records of older ablates, read, never written: Arrow IPC files with the epochs nested in one more
# column, and before that Arrow or Parquet with the epochs in a file of their own.
OLD_RECORDS = (".arrow", ".parquet")
EPOCHS = "@epochs"  # an older record's column of the trial's epochs (list<struct>)


@dataclass
class Record:
    """A finished trial's record as read: its row, the columns it was written with, its epochs."""
    row: dict[str, Any]
    schema: pa.Schema
    epochs: list[dict[str, Any]] | None


def write_record(run: RunDir, schema: pa.Schema, trial_id: str, config: dict[str, Any], result: dict[str, Any],
                 epochs: list[dict[str, Any]] | None = None) -> None:
    """Write a finished trial's record: its row, its columns' types and its epochs (None: it has none).
    A value of `result` that `schema` has no column for gets one, typed by its value; a result
    named like a parameter does not replace the parameter's value. A value of another kind than
    its column (a script's metric named `error`, like ablate's column of a failure's message;
    text where the workload declared a number) is kept, typed as it is: readers of many records
    make such a column text (_concat). A value no column type holds (a list of per-class
    accuracies, a mapping, an array) is kept as its text."""
    row = {**result, **config, "trial_id": trial_id}
    types = dict(_type_names(schema))
    for name, value in row.items():
        if name in types and _fits(types[name], value):
            pass
        elif (kind := _type_of(value)) is not None:  # a new column, or one of another kind than declared
            types[name] = kind
        elif value is not None:
            types[name], row[name] = "string", str(value)
        if types.get(name) == "double" and isinstance(row[name], int):  # 2**64: JSON keeps it an int
            row[name] = float(row[name])
    body = {"row": {name: row.get(name) for name in types}, "types": types, "epochs": epochs}
    run.write_bytes(run.child("records", trial_id + RECORD), json.dumps(body, default=_json_default).encode())


def _fits(kind: str, value) -> bool:
    """Whether a column of the type named `kind` holds `value`."""
    if value is None or kind.startswith("list<"):  # lists are parameters, checked when the grid was read
        return True
    if kind == str(_TIMESTAMP):
        return isinstance(value, datetime)
    own = _type_of(value)
    return own == kind or (own, kind) == ("int64", "double")


@functools.lru_cache(maxsize=None)
def _type_names(schema: pa.Schema) -> dict[str, str]:
    return {field.name: str(field.type) for field in schema}


def _json_default(value):
    """What JSON takes for a value it has no form for: a time as ISO 8601, a NumPy or torch
    scalar as its number, anything else as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


@functools.lru_cache(maxsize=None)
def _schema(types: tuple[tuple[str, str], ...]) -> pa.Schema:
    return pa.schema([(name, _arrow_type_named(t)) for name, t in types])


def _read_record(run: RunDir, trial_id: str, notify=None) -> Record | None:
    """A finished trial's record; None if it has none. A damaged one (cut short by a bad copy)
    is a ResultsError, or with `notify`, a note and None: its trial counts as unfinished. One the
    disk cannot read is a ResultsError even so: its trial has finished, and would be trained again."""
    try:
        data = run.read_bytes(run.child("records", trial_id + RECORD))
    except OSError as e:  # the disk's fault (EIO), or a folder in the file's place: no damaged file
        raise ResultsError(f"{run.display('records', trial_id + RECORD)}: unreadable record ({e})") from None
    try:
        if data is None:
            return _read_old_record(run, trial_id)
        body, schema = _parsed(run, trial_id, data)
    except DamagedFile as e:  # an older ablate's record (Arrow, Parquet) too; not a fault of the disk's read
        if notify is None:
            raise
        notify(f"{e}; its trial counts as unfinished and runs again at the next `ablate run`")
        return None
    row = body["row"]
    for field in schema:
        if field.type == _TIMESTAMP and isinstance(row.get(field.name), str):
            row[field.name] = datetime.fromisoformat(row[field.name])
    return Record(row, schema, body["epochs"])


def _parsed(run: RunDir, trial_id: str, data: bytes) -> tuple[dict, pa.Schema]:
    """A JSON record's body and the schema of its row, or DamagedFile."""
    try:
        body = json.loads(data)
        return body, _schema(tuple(body["types"].items()))
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedFile(f"{run.display('records', trial_id + RECORD)}: unreadable record ({e!r})") from None


def read_record(run: RunDir, trial_id: str, notify=None) -> Record | None:
    """A finished trial's record (see _read_record)."""
    return _read_record(run, trial_id, notify)


def _read_old_record(run: RunDir, trial_id: str) -> Record | None:
    for suffix in OLD_RECORDS:
        table = run.read_table(run.child("records", trial_id + suffix))
        if table is None:
            continue
        if EPOCHS in table.column_names:
            nested = table[EPOCHS].combine_chunks()
            epochs = None if nested.null_count else nested.flatten().to_pylist()
            table = table.drop_columns([EPOCHS])
        else:  # the oldest: the epochs in a file of their own
            older = run.read_table(run.child("records", f"{trial_id}.epochs{suffix}"))
            epochs = older.drop_columns(["trial_id"]).to_pylist() if older is not None else None
        return Record(table.to_pylist()[0], table.schema, epochs)
    return None


def _trials_table(found: list[Record | None]) -> pa.Table | None:
    """The rows of records as one table, each under the columns it was written with."""
    rows: dict[pa.Schema, list[dict]] = {}
    for r in filter(None, found):
        rows.setdefault(r.schema, []).append(r.row)
    return _concat([pa.Table.from_pylist(group, schema) for schema, group in rows.items()])


def _epochs_table(found: list[Record | None]) -> pa.Table | None:
    """The epochs of records, a row each after its trial_id: `epoch` (or `step`) an integer, numeric metrics
    float64, anything else text, so that every trial's epochs share one schema."""
    rows = [{"trial_id": r.row["trial_id"], **epoch} for r in filter(None, found) for epoch in r.epochs or ()]
    if not rows:
        return None
    columns = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [row.get(key) for row in rows]
        if key in ("epoch", "step"):
            columns[key] = pa.array(values, pa.int64())
        elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            columns[key] = pa.array([None if v is None else float(v) for v in values], pa.float64())
        else:
            columns[key] = _as_text(values)
    return pa.table(columns)


def _as_text(values: list) -> pa.Array:
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _record_ids(run: RunDir) -> set[str]:
    names = run.names(run.child("records"))
    return {name.removesuffix(suffix) for name in names for suffix in (RECORD, *OLD_RECORDS)
            if name.endswith(suffix) and not name.endswith(".epochs" + suffix)}


def _without(table: pa.Table | None, ids) -> pa.Table | None:
    if table is None or not ids:
        return table
    import pyarrow.compute as pc  # see read_trials

    drop = pc.is_in(table["trial_id"], pa.array(sorted(ids), pa.string()))
    return table.filter(pc.invert(drop)) if pc.any(drop).as_py() else table  # a filter copies every column


def _concat(tables: list[pa.Table | None]) -> pa.Table | None:
    """The tables one under another, in one chunk (Parquet writes a table of many one-row chunks
    far slower). Schemas are unified only where they differ (an older run's file, a metric that
    came later): unifying many equal ones costs more than the concatenation itself. A column of
    numbers in one table and text or flags in another (one trial's metric that diverged as
    "nan?") becomes text, as in _epochs_table: every value is kept, and readers say it is not a
    number."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    try:
        return pa.concat_tables(tables).combine_chunks()
    except pa.ArrowInvalid:
        pass
    try:
        return pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables(_text_where_types_differ(tables), promote_options="permissive").combine_chunks()


def _text_where_types_differ(tables: list[pa.Table]) -> list[pa.Table]:
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            if field.type != pa.null():
                kinds.setdefault(field.name, set()).add(field.type)
    text = {name for name, found in kinds.items() if len(found) > 1 and not found <= {pa.int64(), pa.float64()}}
    out = []
    for table in tables:
        for name in text.intersection(table.column_names):
            table = table.set_column(table.schema.get_field_index(name), name, _as_text(table[name].to_pylist()))
        out.append(table)
    return out


def statuses(table: pa.Table | None) -> dict[str, str]:
    """trial_id -> status of every row of a trials table."""
    return {} if table is None else dict(zip(table["trial_id"].to_pylist(), table["status"].to_pylist()))


def trained(table: pa.Table | None) -> dict[str, int]:
    """trial_id -> the epochs of every row of a trials table that says them, or its steps where it
    has them (a script that reports every N steps)."""
    done: dict[str, int] = {}
    for column in ("epochs_completed", "steps_completed"):
        if table is not None and column in table.column_names:
            done.update((i, n) for i, n in zip(table["trial_id"].to_pylist(), table[column].to_pylist())
                        if n is not None)
    return done


def unpublished(run: RunDir, published: pa.Table | None) -> list[str]:
    """Records not in `published` yet, and records of published failures (a retry may have
    replaced them)."""
    status = statuses(published)
    return sorted(i for i in _record_ids(run) if status.get(i, "failed") == "failed")


def _published(run: RunDir, name: str, notify=None, columns: list[str] | None = None, **read) -> pa.Table | None:
    """trials.parquet or epochs.parquet as last published (`columns`: only those). A damaged one (a
    bad sync, a half copy) is a ResultsError, or with `notify`, a note and None: the records it was
    made from say the same."""
    try:
        return run.read_table(run.child(name), columns, **read)
    except ResultsError as e:
        if notify is None:
            raise
        notify(f"{e}: read from the trials' records instead")
        return None


def read_trials(run: RunDir, notify=None) -> pa.Table | None:
    """Every finished trial: trials.parquet, with records not published yet merged in. With
    `notify`, damaged files are noted and read past (see _published, _read_record)."""
    # pyarrow.compute is imported only where it is used (here: where records are merged in):
    # importing it builds a Python wrapper for each of its functions, and summarize and status
    # need none of them.
    published = _published(run, "trials.parquet", notify)
    ids = unpublished(run, published)
    return _concat([_without(published, ids), _trials_table([_read_record(run, i, notify) for i in ids])])


def read_epochs(run: RunDir, ids: list[str], columns: list[str] | None = None, notify=None) -> pa.Table | None:
    """The epochs of the trials `ids`: from epochs.parquet, or their records if not published yet;
    `columns`: only those of them the epochs have (a trial_id among them). With `notify`, a damaged
    file or record is noted and read past (see _published, _read_record)."""
    # The file read whole, then filtered: on S3, reading its footer and then its columns are
    # separate GETs, which can find two versions when the driver replaces the file in between.
    # Its trial ids are read as a dictionary (a few hundred rows of each): decoding every row's
    # id is most of reading the file. Each id of a dictionary is looked up once, and those kept
    # are decoded after the filter.
    import pyarrow.compute as pc  # see read_trials

    columns = None if columns is None else list(dict.fromkeys(["trial_id", *columns]))
    published = _published(run, "epochs.parquet", notify, columns, dictionary=["trial_id"])
    have: set[str] = set()
    if published is not None:
        wanted, masks = set(ids), []
        for chunk in published["trial_id"].chunks:
            names = chunk.dictionary.to_pylist()  # the ids its rows hold, each once
            have.update(i for i in names if i in wanted)
            keep = arrays.from_numpy(np.array([i in wanted for i in names], np.int8)).cast(pa.bool_())
            masks.append(pc.take(keep, chunk.indices))
        published = published.filter(pa.chunked_array(masks, pa.bool_()))
        published = published.set_column(published.schema.get_field_index("trial_id"), "trial_id",
                                          pc.cast(published["trial_id"], pa.string()))
    unpublished = _epochs_table([_read_record(run, i, notify) for i in ids if i not in have])
    if unpublished is not None and columns is not None:
        unpublished = unpublished.select([c for c in columns if c in unpublished.column_names])
    return _concat([published, unpublished])


class _Pace:
    """When a file that is rewritten whole is due again: once the time since it was last written
    is REWRITE_PACE times what writing it will take, estimated from the last write per trial in
    the file. The driver then spends about 1/REWRITE_PACE of its time rewriting it, however many
    trials came before: a file of 100 trials is rewritten as each trial finishes, one of 10,000
    short trials every few of them."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.written, self.cost_per_trial = clock(), 0.0

    def due(self, trials: int) -> bool:
        """Whether the file, to hold `trials` trials now, is due."""
        return self.clock() - self.written >= REWRITE_PACE * self.cost_per_trial * trials

    @contextlib.contextmanager
    def writing(self, trials: int):
        start = self.clock()
        yield
        self.written = self.clock()
        self.cost_per_trial = (self.written - start) / max(trials, 1)


class Publisher:
    """Keeps trials.parquet and epochs.parquet up to date with the records. Driver only."""

    def __init__(self, run: RunDir, notify=lambda message: None):
        self.run, self.notify = run, notify
        # As last written; a damaged file is written again from the records (catch_up).
        self.trials = _published(run, "trials.parquet", notify)
        self.epochs = _published(run, "epochs.parquet", notify)
        self.new_trials: dict[str, Record] = {}  # records not in trials.parquet yet
        self.new_epochs: dict[str, Record | None] = {}  # records whose epochs are not in epochs.parquet yet
        self.trials_pace, self.epochs_pace = _Pace(), _Pace()

    def publish(self, trial_id: str, columns=()) -> dict[str, Any] | None:
        """Put a finished trial's record in trials.parquet and its epochs in epochs.parquet, each
        when due; returns its status and `columns` of its row, or None if it has no record."""
        found = _read_record(self.run, trial_id, self.notify)
        if found is None:
            return None
        self.new_trials[trial_id] = self.new_epochs[trial_id] = found
        self.flush(force=False)
        return {name: found.row.get(name) for name in ("status", *columns)}

    def flush(self, force: bool = True) -> None:
        """Write what is not in the files yet: now, or (force=False) where the pace allows."""
        trials = len(self.new_trials) + (self.trials.num_rows if self.trials is not None else 0)
        if self.new_trials and (force or self.trials_pace.due(trials)):
            with self.trials_pace.writing(trials):
                new = _trials_table(list(self.new_trials.values()))
                self.trials = _concat([_without(self.trials, self.new_trials), new])
                self.run.write_table(self.run.child("trials.parquet"), self.trials)
            self.new_trials = {}
        if self.new_epochs and (force or self.epochs_pace.due(trials)):
            with self.epochs_pace.writing(trials):
                new, self.new_epochs = self.new_epochs, {}
                if (table := _epochs_table(list(new.values()))) is not None:
                    self.epochs = _concat([_without(self.epochs, new), table])
                    self.run.write_table(self.run.child("epochs.parquet"), self.epochs)

    def withdraw(self, trial_ids: list[str]) -> None:
        """Take trials out of both files now: trials that train on (--resume-stopped), whose records
        their new results replace. Until they are published again, readers and the next driver read
        their records, so a driver killed in between leaves the new result to them."""
        if not trial_ids:
            return
        self.trials, self.epochs = _without(self.trials, trial_ids), _without(self.epochs, trial_ids)
        for name, table in (("trials.parquet", self.trials), ("epochs.parquet", self.epochs)):
            if table is not None:
                self.run.write_table(self.run.child(name), table)

    def catch_up(self) -> None:
        """Publish whatever is not published yet (what a killed driver left, too), and write both
        files now."""
        import pyarrow.compute as pc  # see read_trials

        for trial_id in unpublished(self.run, self.trials):
            if trial_id not in self.new_trials:
                self.new_trials[trial_id] = self.new_epochs[trial_id] = _read_record(self.run, trial_id, self.notify)
        self.flush()
        # Trials in trials.parquet without their epochs in epochs.parquet: a driver killed between the two.
        have = set(self.epochs["trial_id"].to_pylist()) if self.epochs is not None else set()
        done = self.trials.filter(pc.not_equal(self.trials["status"], "failed")) if self.trials is not None else None
        for trial_id in set(done["trial_id"].to_pylist() if done is not None else []) - have:
            self.new_epochs[trial_id] = _read_record(self.run, trial_id, self.notify)
        self.flush()
