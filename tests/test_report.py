"""`ablate summarize`, `status` and `plot` against Parquet results the tests write."""
from __future__ import annotations

import csv
import io
import re
import json
import math
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan.grid import load_grid
from orchestrator.results.select import where
from orchestrator.results.tables import Layout, layout_for, load, summarize
from orchestrator.run.lock import DriverLock
from orchestrator.run.trial import write_failed
from orchestrator.store import records
from orchestrator.store.rundir import RunDir, now
from tests.results_fixture import (FULL_DATA, PAPER_PROTOCOL, QUARTER_WIDTH, RULES_GRID, SUBSET, TRIALS, grid_text,
                                  rules_result, write_fixture, write_run)
from workloads.allcnn import REFERENCES, RESULTS

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    write_fixture(tmp_path / "fixture")
    return tmp_path / "fixture"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("fmt, suffix", [("markdown", "md"), ("latex", "tex"), ("csv", "csv"), ("json", "json")])
def test_exports_match_golden_files(run_dir, tmp_path, fmt, suffix):
    result = invoke("summarize", run_dir, "--format", fmt)
    assert result.exit_code == 0
    assert result.stdout.rstrip("\n") == (GOLDEN / f"summary.{suffix}").read_text().rstrip("\n")
    out = tmp_path / f"out.{suffix}"
    assert invoke("summarize", run_dir, "--format", fmt, "--output", out).exit_code == 0
    assert out.read_text().rstrip("\n") == (GOLDEN / f"summary.{suffix}").read_text().rstrip("\n")


def cells(run_dir, **layout):
    results = load(RunDir(str(run_dir)))
    (table,) = summarize(results, Layout(rows="model", cols="variant", **layout), REFERENCES)
    return table.cells


def test_learning_rate_is_chosen_on_validation_never_on_test(run_dir):
    a_base = cells(run_dir)[("A", "base")]
    # lr 0.01 has the lower test error (10.0) but the worse validation error: 0.1 is chosen.
    assert a_base.chosen == {"lr": 0.1}
    assert a_base.mean == pytest.approx(0.125) and a_base.n == 2
    assert a_base.std == pytest.approx(0.00707107, rel=1e-4)


def test_learning_rates_tied_on_validation_are_said_to_tie_not_split_by_rounding(tmp_path):
    # Both average 16.5% on validation; in floats 0.15 and 0.18 average 0.16499999999999998, a hair below 0.165.
    tied = {("A", "base", 0.1, 0): ("completed", 0.15, 0.13), ("A", "base", 0.1, 1): ("completed", 0.18, 0.12),
            ("A", "base", 0.01, 0): ("completed", 0.165, 0.10), ("A", "base", 0.01, 1): ("completed", 0.165, 0.10)}
    write_fixture(tmp_path / "fixture", trials=tied)
    a_base = cells(tmp_path / "fixture")[("A", "base")]
    assert a_base.chosen == {"lr": 0.01} and a_base.notes == ["lr 0.01 and 0.1 tie on val_error: the first taken"]
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "lr 0.01, 839k<br>lr 0.01 and 0.1 tie on val_error: the first taken<br>paper" in markdown


def test_a_diverged_learning_rate_leaves_the_others(run_dir):
    a_all = cells(run_dir)[("A", "all")]
    assert a_all.chosen == {"lr": 0.01} and a_all.mean == pytest.approx(0.105)
    assert a_all.counts == {"completed": 2, "diverged": 2}


# C-base, lr 0.1: two of three seeds diverged, and the third has the best validation error of all.
SURVIVOR = {("C", "base", 0.1, 0): ("diverged", None, None), ("C", "base", 0.1, 1): ("diverged", None, None),
            ("C", "base", 0.1, 2): ("completed", 0.080, 0.090),
            **{("C", "base", 0.01, s): ("completed", 0.085 + s * 0.001, 0.095 + s * 0.001) for s in range(3)}}


def test_a_setting_is_judged_on_all_its_seeds_not_on_those_that_survived(tmp_path):
    write_fixture(tmp_path / "fixture", trials=SURVIVOR)
    c_base = cells(tmp_path / "fixture")[("C", "base")]
    assert c_base.chosen == {"lr": 0.01} and c_base.n == 3 and c_base.mean == pytest.approx(0.096)
    assert c_base.notes == []
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "; lr chosen by best val_error among settings with every seed finished**" in markdown
    assert "| C | 9.60 ± 0.10 (n=3)<br>95% CI [9.35, 9.85]<br>lr 0.01, 1.37M<br>paper 9.74" in markdown


def test_where_every_setting_lost_a_seed_the_cell_says_how_many_did_not_finish(tmp_path):
    trials = {**SURVIVOR, ("C", "base", 0.1, 1): ("failed", None, None), ("C", "base", 0.01, 2): ("failed", None, None)}
    write_fixture(tmp_path / "fixture", trials=trials)
    c_base = cells(tmp_path / "fixture")[("C", "base")]
    assert c_base.chosen == {"lr": 0.1} and c_base.n == 1
    assert c_base.counts == {"completed": 3, "diverged": 1, "failed": 2}
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert ("| C | 9.00 (n=1)<br>95% CI: n too small<br>lr 0.1, 1.37M<br>2 of 3 seeds did not finish (1 diverged, "
            "1 failed)<br>no lr had every seed finish<br>paper 9.74") in markdown
    rows = json.loads(invoke("summarize", tmp_path / "fixture", "-f", "json").stdout)
    (row,) = [r for r in rows if r.get("model") == "C" and r.get("variant") == "base" and r["dataset"] == "cifar10"
              and r["augmentation"] == "none"]
    assert row["notes"] == "2 of 3 seeds did not finish (1 diverged, 1 failed); no lr had every seed finish"


def test_a_metric_some_seeds_did_not_report_is_shown_for_the_setting_the_grids_metric_chose(tmp_path):
    # A-base, lr 0.1 wins on val_error (0.21 < 0.25) with both seeds, one of which gave no test_error:
    # every table shows lr 0.1, not lr 0.01 for having a test_error on both seeds.
    write_fixture(tmp_path / "fixture", trials={**TRIALS, ("A", "base", 0.1, 1): ("completed", 0.22, None)})
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert ("| A | 13.00 (n=1)<br>95% CI: n too small<br>lr 0.1, 839k<br>1 of 2 seeds gave no test_error "
            "(completed without it)<br>paper 12.47 (+0.53) |") in markdown
    assert "| A | 21.00 ± 1.41 (n=2)<br>95% CI [8.29, 33.71]<br>lr 0.1, 839k |" in invoke(
        "summarize", tmp_path / "fixture", "--metric", "val_error", "-f", "markdown").stdout


def test_a_setting_with_a_seed_not_run_yet_is_chosen_only_where_every_setting_lacks_one(tmp_path):
    # A-base: lr 0.1 is best on val_error (0.20) on seed 0, its seed 1 not run yet; lr 0.01 has both.
    not_run = {key: value for key, value in TRIALS.items() if key != ("A", "base", 0.1, 1)}
    write_fixture(tmp_path / "fixture", trials=not_run)
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "| A | 10.00 ± 0.00 (n=2)<br>95% CI [10.00, 10.00]<br>lr 0.01, 839k<br>paper 12.47 (-2.47) |" in markdown
    # Now lr 0.01 lacks one too: lr 0.1 is chosen, and the cell says its seed 1 is not there.
    del not_run[("A", "base", 0.01, 0)]
    write_fixture(tmp_path / "lacking", trials=not_run)
    markdown = invoke("summarize", tmp_path / "lacking", "-f", "markdown").stdout
    assert ("| A | 13.00 (n=1)<br>95% CI: n too small<br>lr 0.1, 839k<br>1 of 2 seeds did not finish "
            "(no result yet)<br>no lr had every seed finish<br>paper 12.47 (+0.53) |") in markdown


def test_a_parameter_older_rows_lack_is_a_setting_of_its_own(tmp_path):
    run = write_fixture(tmp_path / "fixture")
    # The rows of lr 0.1 were written before the workload had a split_seed: theirs is missing.
    table = run.read_table(run.child("trials.parquet"))
    split_seed = pa.array([None if lr == 0.1 else 0 for lr in table["lr"].to_pylist()], pa.int64())
    run.write_table(run.child("trials.parquet"),
                    table.set_column(table.schema.get_field_index("split_seed"), "split_seed", split_seed))
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    # No axis varies it, so it is never a choice: the rows without it are a table of their own,
    # neither pooled with the others nor dropped.
    assert "augmentation=none, split_seed not recorded: test_error %" in markdown
    assert "augmentation=none, split_seed=0: test_error %" in markdown  # an integer, as the other rows hold it
    assert "| A | 12.50 ± 0.71 (n=2)<br>95% CI [6.15, 18.85]<br>lr 0.1, 839k<br>paper 12.47 (+0.03) |" in markdown
    assert "| A | 10.00 ± 0.00 (n=2)<br>95% CI [10.00, 10.00]<br>lr 0.01, 839k<br>paper 12.47 (-2.47) |" in markdown


def test_without_validation_values_nothing_is_chosen_and_the_table_says_so(tmp_path):
    # As with val_size 0: no trial has a validation error to choose a learning rate by.
    write_fixture(tmp_path / "fixture", trials={key: (status, None, test) for key, (status, _, test) in TRIALS.items()})
    c = cells(tmp_path / "fixture")
    assert c[("A", "base")].chosen == {} and c[("A", "base")].n == 4
    assert c[("A", "base")].mean == pytest.approx(0.1125) and c[("A", "base")].notes == ["no val_error: lr pooled"]
    assert c[("A", "all")].notes == ["2 of 4 trials did not finish (diverged)", "no val_error: lr pooled"]
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "95% t-interval; no val_error: lr pooled**" in markdown and "chosen by" not in markdown


def test_learning_rates_pooled_for_want_of_validation_values_are_not_set_against_the_paper(tmp_path):
    # Every trial ran the paper's protocol, but A-base pools lr 0.1 and 0.01: the paper's number is of one.
    write_fixture(tmp_path / "fixture", trials={key: (status, None, test) for key, (status, _, test) in TRIALS.items()})
    a_base = cells(tmp_path / "fixture")[("A", "base")]
    assert a_base.comparable is False and a_base.differs == ["lr pooled"] and a_base.difference is None
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "no val_error: lr pooled<br>paper 12.47 (not comparable: lr pooled) |" in markdown


def test_failed_and_missing_cells_are_shown_as_such(run_dir):
    c = cells(run_dir)
    assert c[("C", "base")].status == "failed" and c[("C", "base")].mean is None
    assert c[("C", "all")].status == "no result yet"  # the grid plans it


def test_a_run_under_the_papers_protocol_shows_its_difference_to_the_paper(run_dir):
    # The fixture's rows say: width 1.0, 350 epochs, the paper's schedule, ZCA, real CIFAR-10 in full.
    c = cells(run_dir)
    assert c[("A", "base")].reference == pytest.approx(0.1247)
    assert c[("A", "base")].comparable is True and c[("A", "base")].differs == []
    assert c[("A", "base")].difference == pytest.approx(0.0003)
    table = invoke("summarize", run_dir).stdout
    assert "paper 12.47 (+0.03)" in table and "failed (2/2)" in table and "no result yet" in table


def test_a_quarter_width_run_shows_the_paper_number_without_a_difference_and_says_why(tmp_path):
    # The issue: quarter width, 40 epochs, a 4,000-image subset, set against the paper's full protocol.
    write_fixture(tmp_path / "fixture", fixed=QUARTER_WIDTH, data=SUBSET)
    a_base = cells(tmp_path / "fixture")[("A", "base")]
    assert a_base.reference == pytest.approx(0.1247) and a_base.difference is None
    assert a_base.comparable is False
    assert a_base.differs == ["width 0.25", "epochs 40", "lr_milestones [20, 30]", "3,000 training examples"]
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert ("paper 12.47 (not comparable: width 0.25, epochs 40, lr_milestones [20, 30], "
            "3,000 training examples)") in markdown
    assert "(+0.03)" not in markdown
    assert markdown.rstrip("\n") == (GOLDEN / "summary-quarter-width.md").read_text().rstrip("\n")
    (record, *_) = json.loads(invoke("summarize", tmp_path / "fixture", "-f", "json").stdout)
    assert record["comparable"] is False and record["difference"] is None and record["reference"] == 0.1247
    assert record["differs"] == "width 0.25; epochs 40; lr_milestones [20, 30]; 3,000 training examples"


def test_every_published_number_states_a_protocol_the_workload_can_run():
    # A misspelt parameter would make every cell "not recorded": each must be a Config field, and
    # the workload's defaults with the paper's preprocessing must be the protocol itself.
    from dataclasses import asdict

    from workloads.allcnn import CLAIMS, Config, check
    from workloads.allcnn.paper import PROTOCOL

    for stated in (*REFERENCES, *CLAIMS):
        config = Config(**{"dataset": stated.get("dataset", "cifar10"), **stated["protocol"]})
        check(config)
        assert {k: v for k, v in asdict(config).items() if k in stated["protocol"]} == stated["protocol"]
        assert set(stated["data"]) <= set(RESULTS)  # columns the workload's rows have
    assert {k: v for k, v in asdict(Config(preprocessing="zca")).items() if k in PROTOCOL} == PROTOCOL


@pytest.mark.parametrize("data, differs", [
    ({**FULL_DATA, "synthetic_data": True}, ["synthetic data"]),
    ({**FULL_DATA, "test_examples": 2_000}, ["2,000 test examples"]),
    # Results from before trials recorded their data: nothing says the data was the paper's.
    ({}, ["real data not recorded", "training examples not recorded", "test examples not recorded"]),
])
def test_other_or_unrecorded_data_is_not_compared_with_the_paper(tmp_path, data, differs):
    write_fixture(tmp_path / "fixture", data=data)
    a_base = cells(tmp_path / "fixture")[("A", "base")]
    assert a_base.comparable is False and a_base.differs == differs and a_base.difference is None


def test_intervals_over_seeds_match_a_hand_computation(tmp_path):
    trials = {("C", "all", 0.01, seed): ("completed", 0.2, error) for seed, error in enumerate([0.10, 0.12, 0.14])}
    trials[("C", "base", 0.01, 0)] = ("completed", 0.2, 0.15)
    write_fixture(tmp_path / "fixture", trials=trials)
    c = cells(tmp_path / "fixture")
    # mean 0.12, std 0.02, n 3: 0.12 ± t(0.975, 2) · 0.02 / √3 = 0.12 ± 4.302653 · 0.011547 = 0.12 ± 0.049683
    assert c[("C", "all")].interval == pytest.approx((0.070317, 0.169683), abs=1e-6)
    assert c[("C", "base")].n == 1 and c[("C", "base")].interval is None
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "12.00 ± 2.00 (n=3)<br>95% CI [7.03, 16.97]" in markdown
    assert "15.00 (n=1)<br>95% CI: n too small" in markdown
    records = {r["variant"]: r for r in json.loads(invoke("summarize", tmp_path / "fixture", "-f", "json").stdout)
               if r["kind"] == "cell"}
    assert (records["all"]["ci_low"], records["all"]["ci_high"]) == (0.070317, 0.169683)
    assert records["base"]["ci_low"] is None and records["base"]["ci_high"] is None


# Two learning rates, four seeds; seeds 2 and 3 were added after the grid's checkpoint_every
# changed from 1 to 5, which the trial id does not depend on.
LATER_SEEDS = {("C", variant, lr, seed): ("completed", 0.2 + (lr == 0.01) * 0.01 + seed * 0.001, 0.1 + seed * 0.01)
               for variant in ("base", "all") for lr in (0.1, 0.01) for seed in range(4)}
CHECKPOINT_EVERY = {key: {"checkpoint_every": 5} for key in LATER_SEEDS if key[3] >= 2}


def test_a_setting_the_trial_id_does_not_depend_on_is_never_a_choice(tmp_path):
    write_fixture(tmp_path / "fixture", trials=LATER_SEEDS, settings=CHECKPOINT_EVERY)
    c_all = cells(tmp_path / "fixture")[("C", "all")]
    assert c_all.chosen == {"lr": 0.1} and c_all.n == 4 and sorted(c_all.values) == [(0,), (1,), (2,), (3,)]
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "; lr chosen by best val_error" in markdown and "checkpoint_every" not in markdown


def test_select_all_pools_every_learning_rate(run_dir):
    a_base = cells(run_dir, select="all")[("A", "base")]
    assert a_base.n == 4 and a_base.mean == pytest.approx((0.13 + 0.12 + 0.10 + 0.10) / 4) and a_base.chosen == {}


def test_select_all_says_what_it_pooled_and_does_not_set_the_pool_against_the_paper(run_dir):
    result = invoke("summarize", run_dir, "--select", "all", "-f", "markdown")
    assert result.exit_code == 0
    assert result.stdout.startswith("**dataset=cifar10, augmentation=none: test_error %, mean ± std over trials (n), "
                                    "every lr and seed pooled, and its 95% t-interval**")
    # A-base pools two learning rates; A-all has the trials of one left (the other diverged).
    assert "| A | 11.25 ± 1.50 (n=4)<br>95% CI [8.86, 13.64]<br>839k<br>paper 12.47 (not comparable: lr pooled) |" \
        in result.stdout
    assert "2 of 4 trials did not finish (diverged)<br>paper 10.30 (+0.20) |" in result.stdout
    rows = json.loads(invoke("summarize", run_dir, "--select", "all", "-f", "json").stdout)
    assert [(r["comparable"], r["differs"], r["difference"]) for r in rows if r["kind"] == "cell"][:2] == [
        (False, "lr pooled", None), (True, None, 0.002)]


def test_generic_rows_cols_metric_and_where(run_dir):
    result = invoke("summarize", run_dir, "--rows", "lr", "--cols", "model", "--metric", "val_error",
                    "--where", "variant=base", "--tables", "", "--format", "json")
    assert result.exit_code == 0
    records = {(r["lr"], r["model"]): r for r in json.loads(result.stdout)}
    assert records[(0.1, "A")]["mean"] == pytest.approx(0.21) and records[(0.1, "A")]["n"] == 2
    assert records[(0.01, "C")]["status"] == "failed"


def test_where_can_exclude(run_dir):
    results = where(load(RunDir(str(run_dir))), ["model!=A"])
    assert set(results.trials["model"]) == {"C"}


def test_results_the_workload_marks_as_synthetic_data_are_labelled(tmp_path):
    run = write_fixture(tmp_path / "fixture")
    assert "SYNTHETIC" not in invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    table = run.read_table(run.child("trials.parquet"))
    table = table.set_column(table.schema.get_field_index("synthetic_data"), "synthetic_data",
                             pa.array([True] * table.num_rows))
    run.write_table(run.child("trials.parquet"), table)
    assert "(SYNTHETIC DATA)" in invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout


def test_records_not_yet_published_are_included(tmp_path):
    # A driver killed after a trial wrote its record but before trials.parquet was rewritten.
    run = write_fixture(tmp_path / "fixture")
    table = run.read_table(run.child("trials.parquet"))
    run.write_table(run.child("trials.parquet"), table.slice(0, table.num_rows - 3))
    assert len(load(run).trials) == table.num_rows
    assert invoke("summarize", tmp_path / "fixture", "-f", "csv").stdout == (GOLDEN / "summary.csv").read_text()


def test_a_grid_file_names_its_run_under_storage(run_dir, tmp_path):
    grid = tmp_path / "fixture.yaml"
    grid.write_text((run_dir / "grid.yaml").read_text())
    result = invoke("summarize", grid, "--storage", tmp_path, "--format", "csv")
    assert result.exit_code == 0 and result.stdout == (GOLDEN / "summary.csv").read_text()


@pytest.mark.parametrize("args, message", [
    (["--where", "colour=red"], "--where 'colour=red': unknown column 'colour' (columns: "),
    (["--where", "model"], "--where 'model': expected column=value or column!=value"),
    (["--where", "model=Z"], ": no trial matches --where model=Z"),
    (["--rows", "colour"], "error: --rows: unknown column 'colour' (columns: "),
    (["--tables", "model,colour"], "error: --tables: unknown column 'colour' (columns: "),
    # The layout's columns are variant: rows of variant too would be a diagonal, the rest 'no result yet'.
    (["--rows", "variant"], "variant is both the rows and the columns: give --rows, --cols and --tables a column each"),
    (["--tables", "model"], "model is both the rows and the tables: give --rows, --cols and --tables a column each"),
])
def test_bad_options_are_one_line_errors(run_dir, args, message):
    result = invoke("summarize", run_dir, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1


def test_a_folder_in_place_of_a_results_file_is_read_past_from_the_records(tmp_path):
    # A dataset written where trials.parquet or epochs.parquet is (pandas' partition_cols, Spark) was
    # a traceback, and from `plot` an error blaming its --output.
    write_fixture(tmp_path / "run")
    for name in ("trials.parquet", "epochs.parquet"):
        (tmp_path / "run" / name).unlink()
        (tmp_path / "run" / name).mkdir()
    for command in ("summarize", "status", "plot"):
        result = invoke(command, tmp_path / "run", *(["-o", tmp_path / "p.png"] if command == "plot" else []))
        assert result.exit_code == 0, result.stderr
        notes = result.stderr.splitlines()
        assert notes[0] == (f"note: {tmp_path / 'run' / 'trials.parquet'}: unreadable Parquet (Expected file path, "
                            f"but {tmp_path / 'run' / 'trials.parquet'} is a directory): read from the trials' records instead")
        if command == "plot":
            assert notes[1].startswith(f"note: {tmp_path / 'run' / 'epochs.parquet'}: unreadable Parquet (")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_rows_asked_for_leave_the_workloads_tables(run_dir):
    # All-CNN's layout splits tables by dataset and augmentation: --rows dataset takes dataset from them.
    result = invoke("summarize", run_dir, "--rows", "dataset", "-f", "markdown")
    assert result.exit_code == 0
    assert result.stdout.startswith("**augmentation=none: test_error %")
    assert "\n| dataset | variant=base | variant=all |\n|---|---|---|\n| cifar10 | " in result.stdout


def test_missing_empty_and_unreadable_runs(tmp_path):
    result = invoke("summarize", tmp_path / "nope")
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope'}: no such run directory (expected <storage>/<grid name> or a grid file)\n"
    (tmp_path / "empty").mkdir()
    result = invoke("summarize", tmp_path / "empty")
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'empty'}: no results yet (no {tmp_path / 'empty' / 'trials.parquet'})\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trials.parquet").write_bytes(b"not parquet")
    # A damaged trials.parquet is read past from the records (store/records.py): here there are none.
    for command in ("summarize", "status", "plot"):
        result = invoke(command, tmp_path / "bad", *(["-o", tmp_path / "p.png"] if command == "plot" else []))
        assert result.exit_code == 1
        note, error = result.stderr.splitlines()
        assert note.startswith(f"note: {tmp_path / 'bad' / 'trials.parquet'}: unreadable Parquet (")
        assert error in (f"error: {tmp_path / 'bad'}: no results yet (no readable trials.parquet, no record)",
                         f"error: {tmp_path / 'bad'}: nothing there yet: no results, no running trials, no grid")


def test_status_never_shows_an_earlier_grid_versions_unfinished_trials_as_to_resume(tmp_path):
    # An interrupted run, then its grid edited and run again: the earlier version's unfinished trials
    # were listed as interrupted ("resume from their checkpoints at the next `ablate run`"), which
    # they never do, and counted beside the grid's own ("10 finished of 16: ..., 2 interrupted").
    earlier = write_fixture(tmp_path / "fixture")
    finished = records.statuses(records.read_trials(earlier))
    unfinished = [t.trial_id for t in load_grid(tmp_path / "fixture" / "grid.yaml").trials if t.trial_id not in finished]
    for trial_id, updated in zip(unfinished, (now(), now() - timedelta(hours=2))):
        earlier.write_progress(trial_id, {"attempt": 1, "epoch": 2, "metrics": {"val_error": 0.5}, "seconds": 60.0,
                                          "train_seconds": 120.0, "updated_at": updated.isoformat()})
    write_fixture(tmp_path / "fixture", fixed={**PAPER_PROTOCOL, "epochs": 40, "lr_milestones": [20, 30]})
    status = invoke("status", tmp_path / "fixture").stdout
    assert status.startswith(f"{tmp_path / 'fixture'}: 10 finished of 16: 6 completed, 2 diverged, 2 failed, "
                             "6 pending\n")
    assert "running" not in status and "interrupted" not in status
    assert "compute used: 10.00 CPU-hours" in status  # the grid's 10 finished trials, 1 h each


def test_status_of_a_half_finished_run(run_dir):
    run = RunDir(str(run_dir))
    finished = records.statuses(records.read_trials(run))
    first, second = [t.trial_id for t in load_grid(run_dir / "grid.yaml").trials if t.trial_id not in finished][:2]
    fresh, stale = now(), now() - timedelta(hours=2)
    run.write_progress(first, {"attempt": 1, "epoch": 2, "metrics": {"val_error": 0.5}, "seconds": 60.0,
                               "train_seconds": 120.0, "updated_at": fresh.isoformat()})
    run.write_progress(second, {"attempt": 1, "epoch": 1, "metrics": {"val_error": 0.7}, "seconds": 60.0,
                                "train_seconds": 60.0, "updated_at": stale.isoformat()})
    result = invoke("status", run_dir)
    assert result.exit_code == 0
    out = result.stdout
    assert f"{run_dir}: 10 finished of 16: 6 completed, 2 diverged, 2 failed, 1 running, 1 interrupted, 4 pending" in out
    assert re.search(rf"{first}  running +2/350  0.5000", out)
    assert f"{second}  interrupted  1/350  0.7000" in out
    assert "compute used: 10.05 CPU-hours" in out  # 10 finished trials x 1 h + 3 epochs x 60 s
    assert "ETA: " in out and "ETA: -" not in out
    assert "interrupted trials resume from their checkpoints" in out


def steps_grid(steps: int, rest: str) -> str:
    """A grid over a script that reports every N steps, as examples/losses.yaml, then `rest`."""
    return ("name: steps\ncommand:\n  run: python losses.py --lr {lr} --steps {steps} --seed {seed}\n"
            f"  parameters:\n    lr: 0.1\n    steps: {steps}\n  steps: steps\nmetric: val_loss\n{rest}")


HALVED_STEPS = "axes:\n  lr: [0.1, 0.5]\nhalving: {over: [lr], rungs: [20], keep: 0.5}\n"


def running_at(run, trial_id: str, step: int, reports: int) -> None:
    """A trial training now, at `step`, its `reports`-th report, each 2 s after the one before."""
    run.write_progress(trial_id, {"attempt": 1, "epoch": reports, "metrics": {"step": step, "val_loss": 0.6},
                                  "seconds": 2.0, "train_seconds": 2.0 * reports, "reports": reports,
                                  "updated_at": now().isoformat()})


def test_status_eta_of_a_script_that_reports_every_100_steps(tmp_path):
    # As examples/losses.yaml: progress in steps, a report every 100 of them, 2 s each.
    run = write_run(tmp_path / "run", steps_grid(1001, "axes:\n  lr: [0.3, 0.1, 0.03]\nseeds: [0, 1]\n"),
                    lambda t: None)
    for trial in load_grid(tmp_path / "run" / "grid.yaml").trials[:2]:
        running_at(run, trial.trial_id, step=300, reports=3)
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 0
    # 6 x 1001 steps less the 600 done, at 0.02 s a step, two at once: 54 s, not 100 times that.
    assert "ETA: 0:54" in result.stdout


def test_status_times_a_trial_by_its_average_report_not_a_burst(tmp_path):
    # A script printed its validation report just after its training report: the last was timed at
    # 0.01 s, after 3 reports in 15 minutes. Its trial is not taken for interrupted 11 minutes after
    # its last report (less than 3 reports' time), and the ETA is not a few seconds.
    run = write_run(tmp_path / "run", steps_grid(1000, "axes:\n  lr: [0.1]\n"), lambda t: None)
    trial = load_grid(tmp_path / "run" / "grid.yaml").trials[0]
    run.write_progress(trial.trial_id, {"attempt": 1, "epoch": 3, "metrics": {"step": 300, "val_loss": 0.6},
                                        "seconds": 0.01, "train_seconds": 900.0, "reports": 3,
                                        "updated_at": (now() - timedelta(minutes=11)).isoformat()})
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 0
    assert "1 running" in result.stdout
    assert "ETA: 35:00" in result.stdout  # 700 steps left at 3 s a step


def test_status_eta_with_halving_counts_the_steps_a_stopped_script_trained(tmp_path):
    # Halving trains at most 2 x 20 + 80 = 120 steps; lr 0.5 was stopped at step 20, its second report.
    stopped = {"status": "stopped", "epochs_completed": 2, "steps_completed": 20}
    run = write_run(tmp_path / "run", steps_grid(100, HALVED_STEPS), lambda t: stopped if t.config["lr"] == 0.5 else None)
    kept = next(t for t in load_grid(tmp_path / "run" / "grid.yaml").trials if t.config["lr"] == 0.1)
    running_at(run, kept.trial_id, step=40, reports=4)
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 0
    # 120 - 20 - 40 steps left at 0.2 s a step: 12 s, not the 15.6 s of taking its 2 reports for 2 steps.
    assert "ETA: 0:12" in result.stdout


def test_status_eta_with_halving_counts_the_steps_a_failed_script_trained(tmp_path):
    # As the stopped one above, but lr 0.5 ran out of retries at step 20: the driver writes its row.
    run = write_run(tmp_path / "run", steps_grid(100, HALVED_STEPS), lambda t: None)
    grid = load_grid(tmp_path / "run" / "grid.yaml")
    kept, failed = sorted(grid.trials, key=lambda t: t.config["lr"])
    write_failed(run, grid.workload, grid.name, failed.trial_id, failed.config, "RuntimeError: boom",
                 {"attempt": 2, "epoch": 2, "metrics": {"step": 20, "val_loss": 0.9}, "reports": 2})
    records.Publisher(run).catch_up()
    running_at(run, kept.trial_id, step=40, reports=4)
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 0
    assert "1 finished of 2: 1 failed, 1 running" in result.stdout
    # 120 - 20 - 40 steps left at 0.2 s a step: 12 s, not the 15.6 s of taking its 2 reports for 2 steps.
    assert "ETA: 0:12" in result.stdout


def test_summarize_of_a_halved_script_that_reports_steps_says_its_rung_is_a_step(tmp_path):
    halved = "axes:\n  lr: [0.1, 0.5]\n  steps: [100, 200]\nhalving: {over: [lr], rungs: [20], keep: 0.5}\n"

    def result(trial):
        if trial.config["lr"] == 0.5:
            return {"status": "stopped", "epochs_completed": 2, "steps_completed": 20, "val_loss": 0.9}
        return {"status": "completed", "epochs_completed": 10, "steps_completed": trial.config["steps"], "val_loss": 0.5}

    write_run(tmp_path / "run", steps_grid(100, halved), result)
    shown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "lr chosen by successive halving on val_loss at step 20**" in shown
    assert "| 100 | 0.5 (n=1)<br>95% CI: n too small<br>lr 0.1<br>stopped early: lr 0.5 at 20 |" in shown


def test_summarize_of_a_run_partly_done_is_laid_out_by_the_grid_s_axes_not_by_seed(tmp_path):
    # Mid-run only width=16 lr=0.3 has finished: its cell, of both its seeds; not a row per seed
    # whose "seeds that did not finish" are the other cells' trials.
    grid = ("name: part\ncommand:\n  run: python t.py --width {width} --lr {lr} --seed {seed}\n  parameters:\n"
            "    width: 16\n    lr: 0.1\nmetric: val_loss\naxes:\n  width: [16, 32]\n  lr: [0.3, 0.1]\nseeds: [0, 1]\n")
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": 0.5 + t.config["seed"] / 10}
              if (t.config["width"], t.config["lr"]) == (16, 0.3) else None)
    shown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "| width | lr=0.3 |" in shown
    assert "| 16 | 0.55 ± 0.07071 (n=2)<br>95% CI [-0.08531, 1.185] |" in shown


def test_summarize_of_one_cell_whose_lr_halving_chose_is_its_mean_over_seeds_not_a_row_per_seed(tmp_path):
    # Only the halved axis varies: the table is the grid's one cell, both seeds in its mean.
    def result(trial):
        if trial.config["lr"] == 0.5:
            return {"status": "stopped", "epochs_completed": 2, "steps_completed": 20, "val_loss": 0.9, "grid": "steps"}
        return {"status": "completed", "epochs_completed": 10, "steps_completed": 100,
                "val_loss": 0.4 + trial.config["seed"] / 10, "grid": "steps"}

    write_run(tmp_path / "run", steps_grid(100, HALVED_STEPS + "seeds: [0, 1]\n"), result)
    shown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "| steps | 0.45 ± 0.07071 (n=2)<br>95% CI [-0.1853, 1.085]<br>lr 0.1<br>stopped early: lr 0.5 at 20 |" in shown


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")])
def test_plot_writes_an_image(run_dir, tmp_path, suffix, magic):
    out = tmp_path / f"plot.{suffix}"
    result = invoke("plot", run_dir, "--output", out)
    assert result.exit_code == 0
    assert out.read_bytes().startswith(magic)
    if suffix == "png":
        import matplotlib.image

        height, width, _ = matplotlib.image.imread(out).shape
        assert (width, height) == (1000, 720)  # one curve panel per table, plus the bar chart
    else:
        assert "val_error per epoch" in out.read_text()


def test_plot_gives_a_cell_one_style_in_every_panel_and_names_them_in_one_legend(tmp_path):
    from orchestrator.results import plots

    # model C has no `base`: its panel draws one line, in the style `all` has in A's
    write_fixture(tmp_path / "fixture", trials={(model, variant, 0.1, seed): ("completed", 0.2, 0.1)
                                                for model in "AC" for variant in ("base", "all") for seed in (0, 1)
                                                if (model, variant) != ("C", "base")})
    results = load(RunDir(str(tmp_path / "fixture")))
    tables = summarize(results, Layout(rows="variant", tables=["model"]))
    fig = plots.plot(results, tables, tmp_path / "p.png")
    first, second, bars = fig.axes
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["base", "all"]
    assert first.get_legend().get_title().get_text() == "variant (in every panel)" and second.get_legend() is None
    styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in first.lines}
    assert len(set(styles.values())) == 2
    assert [(line.get_label(), (line.get_color(), line.get_linestyle())) for line in second.lines] == \
        [("all", styles["all"])]


def test_plot_of_a_count_that_starts_again_goes_on_after_its_last_epoch_not_a_mean_of_both_phases(tmp_path):
    # Pretraining then fine-tuning, both from epoch 1: epoch 1 of the curve is not (1.0 + 0.1) / 2.
    from orchestrator.results import plots

    grid = "name: ft\ncommand:\n  run: python t.py --seed {seed}\nmetric: val_loss\n"
    run = write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "epochs_completed": 4, "val_loss": 0.05},
                    lambda t: [{"epoch": e, "val_loss": phase / e} for phase in (1.0, 0.1) for e in (1, 2)])
    results = load(run)
    curves, _ = plots.plot(results, summarize(results, layout_for(results)), tmp_path / "p.png").axes
    (line,) = curves.lines
    assert (list(line.get_xdata()), list(line.get_ydata())) == ([1, 2, 3, 4], [1.0, 0.5, 0.1, 0.05])


def test_plot_of_a_metric_reported_every_n_steps_beside_epochs_is_over_steps(tmp_path):
    # val_loss every 10 steps, val_acc at each epoch's end: the curve of val_loss is over steps, not
    # an empty panel over the epochs its reports do not have.
    from orchestrator.results import plots

    grid = ("name: mix\ncommand:\n  run: python t.py --steps {steps} --seed {seed}\n  parameters:\n    steps: 40\n"
            "  steps: steps\nmetric: val_loss\n")
    epochs = [{"step": 10, "val_loss": 0.4}, {"step": 20, "val_loss": 0.3}, {"step": 20, "epoch": 1, "val_acc": 0.5}]
    run = write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": 0.3}, lambda t: epochs)
    results = load(run)
    curves, _ = plots.plot(results, summarize(results, layout_for(results)), tmp_path / "p.png").axes
    (line,) = curves.lines
    assert (list(line.get_xdata()), list(line.get_ydata())) == ([10, 20], [0.4, 0.3])
    assert curves.get_xlabel() == "step"


def test_plot_of_trials_of_one_epoch_draws_each_cell_s_point(tmp_path):
    # A line through one point draws nothing: the panel was empty but for its legend, over ticks
    # 0.96, 0.98, ... of epochs no trial has.
    from orchestrator.results import plots

    grid = ("name: one\ncommand:\n  run: python t.py --lr {lr} --seed {seed}\n  parameters:\n    lr: 0.1\n"
            "metric: val_loss\naxes:\n  lr: [0.1, 0.01]\n")
    run = write_run(tmp_path / "run", grid,
                    lambda t: {"status": "completed", "epochs_completed": 1, "val_loss": t.config["lr"]},
                    lambda t: [{"epoch": 1, "val_loss": t.config["lr"]}])
    results = load(run)
    curves, _ = plots.plot(results, summarize(results, layout_for(results)), tmp_path / "p.png").axes
    assert [(list(line.get_xdata()), line.get_marker()) for line in curves.lines] == [([1], "o"), ([1], "o")]
    assert list(curves.get_xticks()) == [1]


def test_the_bar_chart_names_its_column_axis_and_what_its_error_bars_are(run_dir, tmp_path):
    from orchestrator.results import plots

    results = load(RunDir(str(run_dir)))
    *_, bars = plots.plot(results, summarize(results, Layout(rows="model", cols="variant")), tmp_path / "p.png").axes
    assert bars.get_legend().get_title().get_text() == "variant"
    assert bars.get_title(loc="left").replace("\n", " ").endswith("; error bars: ± std")


def test_plot_of_trials_that_reported_only_final_values_is_the_bar_chart_and_says_so(tmp_path):
    grid = "name: final\ncommand:\n  run: python t.py --lr {lr}\n  parameters:\n    lr: 0.1\nmetric: val_loss\n" \
           "axes:\n  lr: [0.1, 0.01]\n"
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": t.config["lr"] * 2})
    result = invoke("plot", tmp_path / "run", "--output", tmp_path / "p.png")
    assert result.exit_code == 0
    assert result.stderr == "note: no curves: the trials reported no val_loss per epoch or step; " \
                            "the plot is the bar chart alone\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(tmp_path / "p.png").shape
    assert (width, height) == (1000, 360)  # the bar chart alone, no empty panel of curves


def test_a_metric_named_as_a_script_prints_it_with_a_slash_is_the_grids_metric(tmp_path):
    # A Lightning-style script prints `ABLATE {"val/loss": ...}`: the grid refused that name.
    grid = ("name: slash\ncommand:\n  run: python t.py --lr {lr} --seed {seed}\n  parameters:\n    lr: 0.1\n"
            "metric: val/loss\nreport: [test/acc]\naxes:\n  lr: [0.1, 0.01]\nseeds: [0, 1]\n")
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val/loss": t.config["lr"] + t.config["seed"],
                                                 "test/acc": 0.5 if t.config["lr"] == 0.1 else 0.75})
    shown = invoke("summarize", tmp_path / "run", "-f", "csv")
    assert shown.exit_code == 0, shown.stderr
    assert "cell,0.01,test/acc,completed,0.75,0.0,2," in shown.stdout


def test_plot_refuses_other_formats(run_dir, tmp_path):
    result = invoke("plot", run_dir, "--output", tmp_path / "plot.pdf")
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'plot.pdf'}: the plot is written as PNG or SVG; use a .png or .svg name\n"


def test_plot_with_unreadable_epochs_reads_the_records_and_says_so(run_dir, tmp_path):
    (run_dir / "epochs.parquet").write_bytes(b"not parquet")
    result = invoke("plot", run_dir, "--output", tmp_path / "p.png")
    assert result.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 10_000
    assert result.stderr.startswith(f"note: {run_dir / 'epochs.parquet'}: unreadable Parquet (")
    assert result.stderr.count("\n") == 1


def test_exports_escape_what_markdown_and_latex_would_read_in_an_axis_value(tmp_path):
    grid = ("name: esc\ncommand:\n  run: python t.py --opt {opt} --seed {seed}\n  parameters:\n    opt: sgd\n"
            'metric: val_loss\naxes:\n  opt: ["a|b", "x_y%z", "$^~{}#&\\\\"]\n')
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": 0.5})
    markdown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "| a\\|b | 0.5 (n=1)<br>95% CI: n too small |" in markdown
    latex = invoke("summarize", tmp_path / "run", "-f", "latex").stdout
    assert r"a\textbar{}b & \shortstack{0.5 (n=1)" in latex
    assert r"x\_y\%z & " in latex
    assert r"\$\textasciicircum{}\textasciitilde{}\{\}\#\&\textbackslash{} & " in latex


def test_a_maximized_metric_flips_the_choice_among_settings(tmp_path):
    # mode: max: the learning rate with the highest val_error now wins (0.01 in A-base: 0.25 > 0.21).
    write_fixture(tmp_path / "fixture", objective="mode: max")
    assert cells(tmp_path / "fixture")[("A", "base")].chosen == {"lr": 0.1}  # a Layout of its own minimizes
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "lr chosen by best val_error (higher is better) among settings with every seed finished" in markdown
    assert "| A | 10.00 ± 0.00 (n=2)<br>95% CI [10.00, 10.00]<br>lr 0.01, 839k" in markdown


def test_a_metric_taken_where_the_grids_metric_was_best(tmp_path):
    # Each fixture trial reports val_error falling over its 3 epochs and train_loss 1/epoch: at the best
    # val_error, epoch 3, train_loss is 1/3; the row holds the last of every metric.
    write_fixture(tmp_path / "fixture", objective="report: [{name: train_loss, summary: at_best, format: number}]")
    rows = json.loads(invoke("summarize", tmp_path / "fixture", "-f", "json").stdout)
    (a_base,) = [r for r in rows if (r["model"], r["variant"]) == ("A", "base")]
    assert a_base["metric"] == "train_loss" and a_base["mean"] == pytest.approx(1 / 3, abs=1e-6)
    assert a_base["chosen_lr"] == 0.1
    assert "**dataset=cifar10, augmentation=none: train_loss, mean" in invoke(
        "summarize", tmp_path / "fixture", "-f", "markdown").stdout  # a number, not a percentage


def test_an_accuracy_a_script_printed_in_percent_is_not_multiplied_by_100_again(tmp_path):
    # As pytorch/examples' mnist prints it: `Accuracy: 9081/10000 (91%)`, captured as 90.81.
    grid = ("name: pct\ncommand:\n  run: python mnist.py --lr {lr} --seed {seed}\n  parameters:\n    lr: 0.1\n"
            "metric: accuracy\nmode: max\naxes:\n  lr: [0.1, 1.0]\nseeds: [0, 1]\n")
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "accuracy": 90.0 + t.config["lr"] + t.config["seed"],
                                                 "epochs_completed": 1})
    shown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "| 1.0 | 91.5 ± 0.7071 (n=2)<br>95% CI [85.15, 97.85] |" in shown  # not 9150.00
    assert "accuracy, mean" in shown and "accuracy %" not in shown


def test_a_metric_asked_for_is_a_percentage_only_where_its_values_are_fractions(tmp_path):
    # Neither is the grid's: an accuracy printed in percent, and a count of errors.
    write_run(tmp_path / "run", SCRIPT_GRID + "metric: val_loss\n",
              lambda t: {"status": "completed", "val_loss": 0.5, "test_accuracy": 90.0 + t.config["seed"],
                         "train_error": 10 + t.config["seed"]})
    shown = invoke("summarize", tmp_path / "run", "--metric", "test_accuracy", "-f", "markdown").stdout
    assert "| 0.1 | 90.5 ± 0.7071 (n=2)<br>95% CI [84.15, 96.85] |" in shown  # not 9050.00
    assert "test_accuracy, mean" in shown
    shown = invoke("summarize", tmp_path / "run", "--metric", "train_error", "-f", "markdown").stdout
    assert "| 0.1 | 10.5 ± 0.7071 (n=2)<br>95% CI [4.147, 16.85] |" in shown  # not 1050.00


def test_a_metric_no_trial_has_is_one_line_naming_those_it_has(run_dir):
    result = invoke("summarize", run_dir, "--metric", "test_loss")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {run_dir}: no trial has a value of test_loss (metrics: synthetic_data, "
                             "test_error, test_examples, train_examples, val_error)\n")  # not the text ones


def test_a_script_s_run_whose_grid_names_no_metric_says_which_it_looked_for_and_why(tmp_path):
    # It said only "no trial has a value of test_error", a name the grid never gave.
    write_run(tmp_path / "run", SCRIPT_GRID, lambda t: {"status": "completed", "loss": 0.5, "test_loss": 0.4})
    for command in (["summarize"], ["compare", "--baseline", "lr=0.1"]):
        result = invoke(*command, tmp_path / "run")
        assert result.exit_code == 1
        assert result.stderr == (f"error: {tmp_path / 'run'}: no trial has a value of test_error (metrics: loss, "
                                 "test_loss); the grid names no metric, and test_error is the default: give "
                                 "--metric (summarize, compare), or name the grid's (metric:, report:) and `ablate "
                                 "run` it again, which trains nothing more\n")


def test_a_run_where_every_trial_failed_shows_its_cells_as_failed(tmp_path):
    # As a partly failed run's failed cells show; the script's rows have no val_loss column at all.
    write_run(tmp_path / "run", steps_grid(100, "axes:\n  lr: [0.1, 0.5]\nseeds: [0, 1]\n"),
              lambda t: {"status": "failed", "error": "RuntimeError: boom"})
    result = invoke("summarize", tmp_path / "run", "-f", "markdown")
    assert result.exit_code == 0
    assert "| 0.1 | failed (2/2) |\n| 0.5 | failed (2/2) |" in result.stdout
    compared = invoke("compare", tmp_path / "run", "--baseline", "lr=0.1", "-f", "markdown")
    assert "| 0.5 | failed | failed | - (n=0) | lr=0.1 failed; lr=0.5 failed |" in compared.stdout
    # A metric that is not the grid's is still one line: no trial could have reported it.
    assert invoke("summarize", tmp_path / "run", "--metric", "typo").stderr == \
        f"error: {tmp_path / 'run'}: no trial has a value of typo (metrics: none)\n"


SCRIPT_GRID = """name: script
command:
  run: python train.py --lr {lr} --seed {seed}
  parameters:
    lr: 0.1
axes:
  lr: [0.1, 0.01]
seeds: [0, 1]
"""
NOT_NUMERIC = "is not numeric (values such as '{}'), so it has no mean over seeds"


def test_a_metric_that_is_not_a_number_is_one_line_naming_it(run_dir, tmp_path):
    for metric, value in [("data_fingerprint", "c1f4a2b7d9e03a65"), ("status", "completed")]:
        result = invoke("summarize", run_dir, "--metric", metric)
        assert result.exit_code == 1
        assert result.stderr == f"error: {run_dir}: {metric} {NOT_NUMERIC.format(value)}\n"
    # A script that prints its metrics as text (ABLATE {"val_loss": "0.4321"}); a grid judged by status
    # (refused at plan now, but an older ablate ran it).
    write_run(tmp_path / "text", SCRIPT_GRID + "metric: val_loss\nreport: [test_loss]\n",
              lambda t: {"status": "completed", "val_loss": "0.4321", "test_loss": "0.5321"})
    write_run(tmp_path / "status", SCRIPT_GRID, lambda t: {"status": "completed", "val_error": 0.2, "test_error": 0.3})
    (tmp_path / "status" / "grid.yaml").write_text(SCRIPT_GRID + "metric: status\nmode: min\n")
    for command in (["summarize", tmp_path / "text"], ["compare", tmp_path / "text", "--baseline", "lr=0.1"]):
        result = invoke(*command)
        assert result.exit_code == 1
        assert result.stderr == f"error: {tmp_path / 'text'}: test_loss {NOT_NUMERIC.format('0.5321')}\n"
    result = invoke("summarize", tmp_path / "status")
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'status'}: status {NOT_NUMERIC.format('completed')}\n"


def test_where_on_a_result_says_how_many_trials_it_leaves_out_for_having_none(tmp_path):
    # A seed that failed before its data was recorded has no synthetic_data: --where
    # synthetic_data=false leaves it out, so its cell rests on the other seed without a word.
    write_run(tmp_path / "run", SCRIPT_GRID, lambda t: {"status": "failed", "error": "boom"} if t.config["seed"] else
              {"status": "completed", "val_error": 0.2, "test_error": 0.3, "synthetic_data": False})
    result = invoke("summarize", tmp_path / "run", "--where", "synthetic_data=false", "-f", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "note: --where synthetic_data=false leaves out 2 trials without a synthetic_data (2 failed)\n"
    assert invoke("summarize", tmp_path / "run", "--where", "lr=0.1", "-f", "csv").stderr == ""


def test_a_text_value_a_grid_also_reports_is_left_out_with_a_note(tmp_path):
    write_run(tmp_path / "run", SCRIPT_GRID + "report: [val_error, best_checkpoint]\n",
              lambda t: {"status": "completed", "val_error": 0.2 + 0.01 * t.config["seed"], "test_error": 0.3,
                         "best_checkpoint": "ckpt-3.pt"})
    result = invoke("summarize", tmp_path / "run", "-f", "csv")
    assert result.exit_code == 0
    assert result.stderr == f"note: {tmp_path / 'run'}: best_checkpoint is not numeric: no table of it\n"
    assert [(c["metric"], c["lr"], c["mean"], c["n"]) for c in csv.DictReader(io.StringIO(result.stdout))] == [
        ("val_error", "0.1", "0.205", "2"), ("val_error", "0.01", "0.205", "2")]


def test_trials_that_predate_an_axis_are_shown_as_not_recorded(tmp_path):
    # The grid gained the wd axis after its first trials finished: their rows have no wd.
    grid = SCRIPT_GRID.replace("--seed", "--wd {wd} --seed").replace("lr: 0.1\n", "lr: 0.1\n    wd: 0.0\n")
    run = write_run(tmp_path / "run", grid.replace("axes:\n", "axes:\n  wd: [0.0, 0.001]\n"),
                    lambda t: {"status": "completed", "val_error": 0.2, "test_error": 0.3 + 0.01 * t.config["seed"]})
    schema = pa.schema([("trial_id", pa.string()), ("status", pa.string()), ("lr", pa.float64()),
                        ("seed", pa.int64()), ("command", pa.string()), *records.RESULT_COLUMNS])
    for lr in (0.1, 0.01):
        for seed in (0, 1):
            records.write_record(run, schema, f"old-{lr}-{seed}",
                                 {"lr": lr, "seed": seed, "command": "python train.py --lr {lr} --seed {seed}"},
                                 {"status": "completed", "val_error": 0.25, "test_error": 0.35 + 0.01 * seed})
    records.Publisher(run).catch_up()

    summary = invoke("summarize", tmp_path / "run", "--all-trials", "--rows", "wd", "--cols", "lr", "-f", "markdown")
    assert summary.exit_code == 0
    assert "| not recorded | 35.50 ± 0.71 (n=2)<br>95% CI [29.15, 41.85] | 35.50 ± 0.71 (n=2)" in summary.stdout
    compared = invoke("compare", tmp_path / "run", "--all-trials", "--baseline", "lr=0.1", "-f", "csv")
    assert compared.exit_code == 0
    assert [(c["wd"], c["baseline_mean"], c["mean"], c["n"]) for c in csv.DictReader(io.StringIO(compared.stdout))] \
        == [("", "0.355", "0.355", "2"), ("0.0", "0.305", "0.305", "2"), ("0.001", "0.305", "0.305", "2")]


def test_plot_labels_trials_that_predate_an_axis_as_not_recorded(tmp_path):
    from orchestrator.results import plots

    grid = SCRIPT_GRID.replace("--seed", "--wd {wd} --seed").replace("lr: 0.1\n", "lr: 0.1\n    wd: 0.0\n")
    run = write_run(tmp_path / "run", grid.replace("axes:\n", "axes:\n  wd: [0.0, 0.001]\n"),
                    lambda t: {"status": "completed", "val_error": 0.2, "test_error": 0.3})
    schema = pa.schema([("trial_id", pa.string()), ("status", pa.string()), ("lr", pa.float64()),
                        ("seed", pa.int64()), ("command", pa.string()), *records.RESULT_COLUMNS])
    for seed in (0, 1):
        records.write_record(run, schema, f"old-{seed}", {"lr": 0.1, "seed": seed, "command": "python train.py"},
                             {"status": "completed", "val_error": 0.25, "test_error": 0.35},
                             [{"epoch": e, "val_error": 0.25 + 0.1 / e} for e in (1, 2, 3)])
    records.Publisher(run).catch_up()
    results = load(run, all_trials=True)
    fig = plots.plot(results, summarize(results, Layout(rows="wd")), tmp_path / "p.png")
    curves, bars = fig.axes
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["0.0", "0.001", "not recorded"]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["0.0", "0.001", "not recorded"]


def test_json_is_strict_where_a_loss_blew_up(tmp_path):
    # One seed's loss went to inf, and the script exited 0: the table says so, and JSON readers that
    # refuse Infinity and NaN read the export, with null for those numbers.
    write_run(tmp_path / "run", SCRIPT_GRID + "metric: val_loss\nreport: [test_loss]\n",
              lambda t: {"status": "completed", "val_loss": 0.5,
                         "test_loss": float("inf") if (t.config["lr"], t.config["seed"]) == (0.1, 1) else 0.6})
    result = invoke("summarize", tmp_path / "run", "-f", "json")
    assert result.exit_code == 0

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    rows = json.loads(result.stdout, parse_constant=refuse)
    assert [(r["lr"], r["status"], r["mean"], r["std"], r["n"]) for r in rows] == [
        (0.1, "completed", None, None, 2), (0.01, "completed", 0.6, 0.0, 2)]
    assert "| 0.1 | inf ± - (n=2)" in invoke("summarize", tmp_path / "run", "-f", "markdown").stdout


def test_a_loss_that_blew_up_shows_as_inf_without_a_warning_from_numpy(tmp_path, recwarn):
    write_run(tmp_path / "run", SCRIPT_GRID + "metric: val_loss\nreport: [test_loss]\n",
              lambda t: {"status": "completed", "val_loss": 0.5,
                         "test_loss": float("inf") if (t.config["lr"], t.config["seed"]) == (0.1, 1) else 0.6})
    result = invoke("summarize", tmp_path / "run", "-f", "markdown")
    assert result.exit_code == 0 and "| 0.1 | inf ± - (n=2)<br>95% CI [-, -] |" in result.stdout
    assert [str(w.message) for w in recwarn] == []


def test_the_grid_as_last_run_is_what_readers_show(tmp_path):
    # The same grid run at 350 epochs, then edited to 40: the run directory holds both versions' trials.
    write_fixture(tmp_path / "fixture")
    write_fixture(tmp_path / "fixture", fixed={**PAPER_PROTOCOL, "epochs": 40, "lr_milestones": [20, 30]})
    result = invoke("summarize", tmp_path / "fixture", "-f", "markdown")
    assert result.exit_code == 0
    assert result.stderr == (f"note: {tmp_path / 'fixture'} also holds 10 trials of an earlier version of its grid, "
                             "left out; --all-trials shows them too\n")
    assert "epochs" not in result.stdout.split("\n\n")[0]  # one protocol, nothing chosen among epochs
    status = invoke("status", tmp_path / "fixture").stdout
    assert status.startswith(f"{tmp_path / 'fixture'}: 10 finished of 16: ")  # of the grid as it is now
    assert "and 10 finished trials of an earlier version of the grid, not counted" in status
    # Every trial: each protocol a table of its own, never a choice between them.
    every = invoke("summarize", tmp_path / "fixture", "-f", "markdown", "--all-trials").stdout
    assert "augmentation=none, epochs=350, lr_milestones=[200, 250, 300]: test_error %" in every
    assert "augmentation=none, epochs=40, lr_milestones=[20, 30]: test_error %" in every
    assert "epochs chosen" not in every and "epochs, " not in every.split("chosen by")[0]
    # Asked for as the rows, a parameter edited between the versions is the rows, not also the tables.
    by_epochs = invoke("summarize", tmp_path / "fixture", "-f", "csv", "--all-trials", "--rows", "epochs")
    assert by_epochs.exit_code == 0, by_epochs.stderr
    assert {"40", "350"} <= {row["epochs"] for row in csv.DictReader(io.StringIO(by_epochs.stdout))}


@pytest.mark.parametrize("command", [["summarize"], ["compare", "--baseline", "lr=0.1"], ["plot", "-o", "p.png"]])
def test_a_grid_edited_since_its_run_says_so_not_that_no_trial_matches(tmp_path, command, monkeypatch):
    # Run at 350 epochs, then the grid file edited to 40 (as `ablate run` saves it) and not run again.
    run = write_fixture(tmp_path / "fixture")
    run.write_bytes(run.child("grid.yaml"), grid_text(TRIALS, {**PAPER_PROTOCOL, "epochs": 40}).encode())
    monkeypatch.chdir(tmp_path)
    result = invoke(command[0], tmp_path / "fixture", *command[1:])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'fixture'}: none of the trials of its grid as it is now has finished; "
                             "--all-trials shows the 10 trials of an earlier version of the grid\n")
    assert invoke("summarize", tmp_path / "fixture", "--all-trials").exit_code == 0


def test_status_never_shows_an_earlier_grid_versions_finished_trials_as_running(tmp_path):
    # Finished trials keep their progress files; after the grid is edited, those of its earlier
    # version are neither the grid's finished trials nor running ones.
    earlier = write_fixture(tmp_path / "fixture")
    for trial_id in records.statuses(records.read_trials(earlier)):
        earlier.write_progress(trial_id, {"attempt": 1, "epoch": 3, "metrics": {"val_error": 0.2}, "seconds": 1200.0,
                                          "train_seconds": 3600.0, "updated_at": now().isoformat()})
    write_fixture(tmp_path / "fixture", fixed={**PAPER_PROTOCOL, "epochs": 40, "lr_milestones": [20, 30]})
    status = invoke("status", tmp_path / "fixture").stdout
    assert status.startswith(f"{tmp_path / 'fixture'}: 10 finished of 16: 6 completed, 2 diverged, 2 failed, "
                             "6 pending\n")
    assert "running" not in status
    assert "and 10 finished trials of an earlier version of the grid, not counted" in status
    assert "compute used: 10.00 CPU-hours" in status  # the grid's 10 finished trials, 1 h each


UNREGISTERED = """
import os
from dataclasses import dataclass

from workloads.base import Workload

if os.environ.get("IMPORTED"):  # where it is imported, it leaves a mark
    open(os.environ["IMPORTED"], "a").write("imported\\n")


@dataclass
class Config:
    lr: float = 0.1
    seed: int = 0


def train(config, session):
    with open(os.environ["STARTS"], "a") as f:
        f.write(f"{config.lr}\\n")
    session.report({"epoch": 1, "val_error": config.lr})
    return {"status": "completed", "val_error": config.lr, "test_error": config.lr / 2}


WORKLOAD = Workload(name="mine", config=Config, train=train, layout={"rows": "seed", "cols": "lr"})
"""


def test_readers_of_a_run_do_not_import_a_module_its_grid_names_unless_asked(tmp_path):
    """A run directory's grid.yaml is written by whoever can write the run (a shared bucket, a
    teammate's folder): summarize, status, compare and plot must not run the module it names."""
    from tests.conftest import ablate

    (tmp_path / "mywork.py").write_text(UNREGISTERED)
    (tmp_path / "mine.yaml").write_text("name: mine\nworkload: mywork:WORKLOAD\naxes:\n  lr: [0.1, 0.5]\n")
    starts, imported = tmp_path / "starts.log", tmp_path / "imported.log"
    env = {"STARTS": str(starts)}
    first = ablate("run", "mine.yaml", "--quiet", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr

    env["IMPORTED"] = str(imported)
    note = (f"note: {tmp_path / 'runs' / 'mine' / 'grid.yaml'}: workload 'mywork:WORKLOAD' is not a registered "
            "workload, so it was not imported (--trust-workload imports it, running its code)")
    summary = ablate("summarize", "runs/mine", "-f", "csv", cwd=tmp_path, env=env)
    assert summary.returncode == 0, summary.stderr
    assert summary.stderr == note + "; the tables are laid out by the axes that vary, without its published numbers and claims\n"
    cells = list(csv.DictReader(io.StringIO(summary.stdout)))  # by lr, the axis that varies
    assert [(c["lr"], c["mean"]) for c in cells] == [("0.1", "0.05"), ("0.5", "0.25")] and "seed" not in cells[0]
    status = ablate("status", "runs/mine", cwd=tmp_path, env=env)
    assert status.returncode == 0 and "2 finished: 2 completed" in status.stdout
    assert status.stderr == note + "; shown without the grid: no pending trials, no ETA\n"
    assert ablate("compare", "runs/mine", "--baseline", "lr=0.1", cwd=tmp_path, env=env).returncode == 0
    assert ablate("plot", "runs/mine", "-o", tmp_path / "p.png", cwd=tmp_path, env=env).returncode == 0
    # track needs the workload (its config names what is sent): refused, not imported.
    track = ablate("track", "runs/mine", "--to", "tensorboard", cwd=tmp_path, env=env)
    assert track.returncode == 1, track.stderr
    assert track.stderr == "error: " + note.removeprefix("note: ") + "; track needs it to send the trials\n"
    assert not imported.exists()

    trusted = ablate("summarize", "runs/mine", "-f", "csv", "--trust-workload", cwd=tmp_path, env=env)
    assert trusted.returncode == 0 and trusted.stderr == ""
    assert imported.read_text() == "imported\n"  # asked for: imported, and its layout (rows by seed) used
    assert [(c["seed"], c["lr"]) for c in csv.DictReader(io.StringIO(trusted.stdout))] == [("0", "0.1"), ("0", "0.5")]

    again = ablate("run", "mine.yaml", "--quiet", cwd=tmp_path, env={"STARTS": str(starts)})
    assert again.returncode == 0 and "mine: 2 completed (0 run now, 2 already done)" in again.stdout
    assert sorted(starts.read_text().split()) == ["0.1", "0.5"]  # each trained once


def test_a_metric_an_unimported_workload_returned_is_not_taken_for_a_parameter(tmp_path):
    # Every trial also returned train_loss, a value of its own: without the workload's config, the
    # parameters are those grid.yaml names, and each cell is the mean over its three seeds.
    run = RunDir(str(tmp_path / "mine"))
    run.write_bytes(run.child("grid.yaml"), b"name: mine\nworkload: mywork:WORKLOAD\n"
                                            b"axes:\n  lr: [0.1, 0.5]\n  width: [1, 2]\nseeds: [0, 1, 2]\n")
    schema = pa.schema([("trial_id", pa.string()), ("status", pa.string()), ("lr", pa.float64()),
                        ("width", pa.int64()), ("seed", pa.int64()), *records.RESULT_COLUMNS])
    for i, (width, lr, seed) in enumerate((w, lr, s) for w in (1, 2) for lr in (0.1, 0.5) for s in (0, 1, 2)):
        val = (0.1 if lr == 0.1 else 0.2) + 0.01 * seed
        records.write_record(run, schema, f"t{i:02d}", {"lr": lr, "width": width, "seed": seed},
                             {"status": "completed", "val_error": val, "test_error": val + 0.05 * width,
                              "train_loss": 0.3 + 0.001 * i, "epochs_completed": 3})
    records.Publisher(run).catch_up()
    result = invoke("summarize", tmp_path / "mine", "-f", "csv")
    assert result.exit_code == 0
    assert [(c["lr"], c["width"], c["mean"], c["n"]) for c in csv.DictReader(io.StringIO(result.stdout))] == [
        ("0.1", "1", "0.16", "3"), ("0.1", "2", "0.21", "3"), ("0.5", "1", "0.26", "3"), ("0.5", "2", "0.31", "3")]
    assert "train_loss chosen" not in invoke("summarize", tmp_path / "mine").stdout


def test_readers_read_an_unimported_workloads_grid_yaml_once(tmp_path, monkeypatch):
    # Its grid.yaml was read up to three times a command (the grid, its objective, its parameters):
    # a GET each on S3, and three files where it changed meanwhile.
    run = RunDir(str(tmp_path / "mine"))
    run.write_bytes(run.child("grid.yaml"), b"name: mine\nworkload: mywork:WORKLOAD\naxes:\n  lr: [0.1, 0.5]\n"
                                            b"metric: val_loss\nreport: [val_loss]\n")
    schema = pa.schema([("trial_id", pa.string()), ("status", pa.string()), ("lr", pa.float64()),
                        ("seed", pa.int64()), *records.RESULT_COLUMNS])
    for i, lr in enumerate((0.1, 0.5)):
        records.write_record(run, schema, f"t{i}", {"lr": lr, "seed": 0}, {"status": "completed", "val_loss": lr},
                             [{"epoch": 1, "val_loss": lr}])
    records.Publisher(run).catch_up()
    reads = []
    read_bytes = RunDir.read_bytes
    monkeypatch.setattr(RunDir, "read_bytes", lambda self, path: (
        reads.append(path) if path.endswith("grid.yaml") else None, read_bytes(self, path))[1])
    for command in (["summarize", "-f", "csv"], ["status"], ["compare", "--baseline", "lr=0.1"],
                    ["plot", "-o", tmp_path / "p.png"]):
        reads.clear()
        result = invoke(command[0], tmp_path / "mine", *command[1:])
        assert result.exit_code == 0, result.output
        assert len(reads) == 1, command[0]
    assert [c["mean"] for c in csv.DictReader(io.StringIO(invoke("summarize", tmp_path / "mine", "-f", "csv").stdout))] \
        == ["0.1", "0.5"]  # by val_loss, as its grid.yaml declares


def test_plot_curves_are_the_mean_over_seeds_at_each_epoch_leaving_out_missing_values():
    import math

    import pyarrow as pa

    from orchestrator.results import plots

    epochs = pa.table({"trial_id": ["a", "a", "b", "b", "c", "c"], "epoch": [1, 2, 1, 2, 1, 2],
                       "val_error": [0.5, 0.4, 0.3, None, float("nan"), 0.2]})
    (a_b, c) = plots._curves(epochs, [["a", "b"], ["c"]], "epoch", "val_error")
    assert a_b == ([1, 2], [0.4, 0.4])
    assert c[0] == [1, 2] and math.isnan(c[1][0]) and c[1][1] == 0.2


def test_plot_of_a_count_that_starts_again_after_a_row_without_an_epoch_goes_on_after_its_last_epoch():
    # A script's step rows have no epoch: fine-tuning's epoch 1 after one is still a count that
    # starts again, not pretraining's epoch 1 to average with.
    from orchestrator.results import plots

    epochs = pa.table({"trial_id": ["a"] * 6, "epoch": [1, 2, None, 1, None, 2],
                       "val_loss": [1.0, 0.5, None, 0.1, None, 0.05]})
    assert plots._curves(epochs, [["a"]], "epoch", "val_loss") == [([1, 2, 3, 4], [1.0, 0.5, 0.1, 0.05])]


def test_an_unimported_workloads_run_is_judged_by_what_its_grid_declares(tmp_path):
    from orchestrator.plan.grid import read_saved_grid, saved_objective
    from orchestrator.plan.objective import INTERFACE

    run = RunDir(str(tmp_path))
    (tmp_path / "grid.yaml").write_text("name: mine\nworkload: mywork:WORKLOAD\nmetric: val_bleu\nmode: max\n"
                                        "report: [{name: test_bleu, summary: at_best}]\n")
    found = saved_objective(run, read_saved_grid(run))
    assert (found.metric.name, found.metric.mode, found.report[0].name, found.report[0].summary) == \
        ("val_bleu", "max", "test_bleu", "at_best")
    # `ablate status` shows a running trial's value of that metric, not of the interface's val_error
    run.write_progress("t1", {"attempt": 1, "epoch": 2, "metrics": {"val_error": 0.5, "val_bleu": 31.25},
                              "seconds": 60.0, "train_seconds": 120.0, "updated_at": now().isoformat()})
    result = invoke("status", tmp_path)
    assert result.exit_code == 0
    assert re.search(r"trial +state +epoch +val_bleu", result.stdout)
    assert re.search(r"t1 +running +2/\? +31\.25", result.stdout)
    (tmp_path / "grid.yaml").write_text("name: mine\nworkload: mywork:WORKLOAD\nmode: sideways\n")
    assert saved_objective(run, read_saved_grid(run)) == INTERFACE


def test_a_parameter_named_like_an_export_column_keeps_its_values_beside_the_statistics(tmp_path):
    # A script's axes named n and kind, as the export's seed count and row kind are named.
    grid = """name: clash
command:
  run: python train.py --n {n} --kind {kind} --seed {seed}
  parameters:
    n: 2
    kind: a
axes:
  n: [2, 8]
  kind: [a, b]
seeds: [0, 1, 2]
"""
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_error": 0.2,
                                                 "test_error": 0.1 * t.config["n"] + 0.001 * t.config["seed"]})
    summary = invoke("summarize", tmp_path / "run", "-f", "csv")
    assert summary.exit_code == 0
    assert summary.stdout.splitlines()[0].startswith("_kind,n,kind,metric,status,mean,std,_n,")
    assert [(r["_kind"], r["n"], r["kind"], r["mean"], r["_n"]) for r in csv.DictReader(io.StringIO(summary.stdout))] \
        == [("cell", "2", "a", "0.201", "3"), ("cell", "2", "b", "0.201", "3"),
            ("cell", "8", "a", "0.801", "3"), ("cell", "8", "b", "0.801", "3")]
    compared = invoke("compare", tmp_path / "run", "--baseline", "n=2", "-f", "json")
    assert compared.exit_code == 0
    assert [(r["kind"], r["n"], r["baseline"], r["difference"], r["_n"]) for r in json.loads(compared.stdout)] \
        == [("a", 8, 2, 0.6, 3), ("b", 8, 2, 0.6, 3)]


def test_where_takes_a_value_as_a_grid_file_writes_it(run_dir):
    result = invoke("summarize", run_dir, "--where", "synthetic_data=false", "--where", "lr=1e-1", "-f", "json")
    assert result.exit_code == 0
    # The trials of model C failed before they recorded their data.
    assert [(r["model"], r["variant"], r["status"], r["mean"]) for r in json.loads(result.stdout) if r["kind"] == "cell"] \
        == [("A", "base", "completed", 0.125), ("A", "all", "diverged", None)]
    result = invoke("summarize", run_dir, "--where", "model=A", "--where", "lr=0.5")
    assert result.exit_code == 1
    assert result.stderr == f"error: {run_dir}: no trial matches --where model=A --where lr=0.5 (lr values: 0.1, 0.01)\n"


def test_a_list_valued_axis_is_written_and_matched_as_in_the_grid(tmp_path):
    grid = SCRIPT_GRID.replace("--seed", "--milestones {milestones} --seed").replace(
        "lr: 0.1\n", "lr: 0.1\n    milestones: [20, 30]\n").replace("axes:\n", "axes:\n  milestones: [[20, 30], [10, 20]]\n")
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_error": 0.2,
                                                 "test_error": 0.3 + 0.01 * t.config["milestones"][0]})
    summary = invoke("summarize", tmp_path / "run", "--cols", "lr", "-f", "markdown").stdout
    assert "| [20, 30] | 50.00 ± 0.00 (n=2)" in summary and "| [10, 20] | 40.00 ± 0.00 (n=2)" in summary
    assert summary.index("[20, 30]") < summary.index("[10, 20]")  # the grid's order
    result = invoke("summarize", tmp_path / "run", "--where", "milestones=[10, 20]", "-f", "csv")
    assert result.exit_code == 0
    assert [(r["lr"], r["mean"]) for r in csv.DictReader(io.StringIO(result.stdout))] == [("0.1", "0.4"), ("0.01", "0.4")]
    compared = invoke("compare", tmp_path / "run", "--baseline", "milestones=[20, 30]", "-f", "markdown").stdout
    assert "each milestones minus milestones=[20, 30]," in compared and "lower than [20, 30] (better)" in compared


WIDTHS = ("name: widths\ncommand:\n  run: python train.py --width {width} --lr {lr} --seed {seed}\n"
          "  parameters:\n    width: 16\n    lr: 0.1\nmetric: val_loss\n"
          "axes:\n  width: [16, 64]\n  lr: [0.1, 0.01]\nseeds: [0, 1, 2]\n")


def test_a_seed_not_run_yet_in_any_setting_of_a_cell_is_said(tmp_path):
    # An interrupted run: width 64 has seeds 0 and 1 of 3, in both learning rates; width 16 all three.
    def result_of(trial):
        if trial.config["width"] == 64 and trial.config["seed"] == 2:
            return None
        return {"status": "completed", "val_loss": trial.config["lr"] + trial.config["seed"] / 100}

    write_run(tmp_path / "run", WIDTHS, result_of)
    results = load(RunDir(str(tmp_path / "run")))
    for select, note in [("best", "1 of 3 seeds did not finish (no result yet)"),
                         ("all", "2 of 6 trials did not finish (no result yet)")]:  # pooled: each trial not run
        cells = summarize(results, Layout(rows="width", metric="val_loss", by="val_loss", select=select))[0].cells
        assert (cells[(64, None)].n, cells[(64, None)].notes) == (4 if select == "all" else 2, [note])
        assert cells[(16, None)].notes == []
    # Each cell of width and lr, with nothing to choose, says it as well; so does --where, of what it keeps.
    both = invoke("summarize", tmp_path / "run", "--rows", "width", "--cols", "lr", "-f", "csv").stdout
    notes = {(row["width"], row["lr"]): row["notes"] for row in csv.DictReader(io.StringIO(both))}
    assert notes[("64", "0.1")] == notes[("64", "0.01")] == "1 of 3 seeds did not finish (no result yet)"
    assert notes[("16", "0.1")] == ""
    kept = invoke("summarize", tmp_path / "run", "--rows", "width", "--where", "lr=0.1", "-f", "csv").stdout
    assert {row["width"]: row["notes"] for row in csv.DictReader(io.StringIO(kept))}["64"] == \
        "1 of 3 seeds did not finish (no result yet)"
    compared = invoke("compare", tmp_path / "run", "--baseline", "width=16", "-f", "json").stdout
    assert [d["n"] for d in json.loads(compared)] == [2, 2]
    assert "1 of 3 seeds did not finish (no result yet)" in invoke(
        "compare", tmp_path / "run", "--baseline", "width=16", "-f", "markdown").stdout


@pytest.mark.parametrize("resume, then", [
    # A script given no `command.resume` was said to "resume from its checkpoint": it runs its command again.
    ("", "interrupted trials run their command again at the next `ablate run`: from its start, unless the script "
         "loads its own checkpoint from its trial directory"),
    ("  resume: --resume\n", "interrupted trials resume from their checkpoints at the next `ablate run`"),
])
def test_status_says_a_trial_of_a_run_no_driver_holds_is_not_running(tmp_path, resume, then):
    # `ablate run` stopped with Ctrl-C a few seconds after the trial's last report: it released its
    # lock, and nothing trains; the trial runs again at the next run. Not "running", and no ETA.
    grid = steps_grid(1000, "axes:\n  lr: [0.1]\n").replace("  steps: steps\n", "  steps: steps\n" + resume)
    run = write_run(tmp_path / "run", grid, lambda t: None)
    trial = load_grid(tmp_path / "run" / "grid.yaml").trials[0]
    running_at(run, trial.trial_id, step=300, reports=3)
    with DriverLock(run).acquire():
        held = invoke("status", tmp_path / "run").stdout
    assert "1 running" in held and "ETA: -" not in held
    released = invoke("status", tmp_path / "run").stdout
    assert "1 interrupted" in released and "ETA: -" in released and "running" not in released
    assert then in " ".join(released.split()), released


def test_status_names_a_damaged_lock_record_and_what_it_means(tmp_path):
    # A lock record cut short (a bad copy) was read past in silence: a trial of a run that nobody
    # drives was shown running, for up to 10 minutes after its last report.
    run = write_run(tmp_path / "run", steps_grid(1000, "axes:\n  lr: [0.1]\n"), lambda t: None)
    trial = load_grid(tmp_path / "run" / "grid.yaml").trials[0]
    running_at(run, trial.trial_id, step=300, reports=3)
    DriverLock(run).acquire().release()
    (tmp_path / "run" / "lock" / "1").write_bytes(b'{"token": "ab')
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 0
    assert result.stderr == (
        f"note: {tmp_path / 'run' / 'lock' / '1'}: unreadable lock record (JSONDecodeError: Unterminated string "
        "starting at: line 1 column 11 (char 10)); if no `ablate run` is running this run, delete it and run again; "
        "until then whether a driver runs it cannot be told, and a trial that reported in the last 10 minutes "
        "(3 of its epochs, if longer) is shown running\n")


def test_a_cell_the_grid_excludes_reads_apart_from_one_not_run_yet(tmp_path):
    write_run(tmp_path / "run", RULES_GRID, rules_result)
    (table,) = summarize(load(RunDir(str(tmp_path / "run"))), Layout(rows="width", cols="warmup", metric="val_loss"))
    c = {key: cell.status for key, cell in table.cells.items()}
    assert c == {(16, 0): "completed", (16, 100): "diverged", (32, 0): "completed", (32, 100): "no result yet",
                 (64, 0): "completed", (64, 100): "not in the grid", (128, 0): "completed", (128, 100): "not in the grid"}
    markdown = invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "| 32 | 0.03625 ± 0.007071 (n=2)<br>95% CI [-0.02728, 0.09978] | no result yet |" in markdown
    assert "| 64 | 0.02063 ± 0.007071 (n=2)<br>95% CI [-0.04291, 0.08416] | not in the grid |" in markdown
    latex = invoke("summarize", tmp_path / "run", "-f", "latex").stdout
    assert r"\shortstack{no result yet}" in latex and r"\shortstack{not in the grid}" in latex
    table = invoke("summarize", tmp_path / "run").stdout
    assert "no result yet" in table and "not in the grid" in table and "missing" not in table
    for fmt in ("csv", "json"):
        text = invoke("summarize", tmp_path / "run", "-f", fmt).stdout
        rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else json.loads(text)
        assert {(str(r["width"]), str(r["warmup"])): r["status"] for r in rows if r["status"] != "completed"} == {
            ("16", "100"): "diverged", ("32", "100"): "no result yet", ("64", "100"): "not in the grid",
            ("128", "100"): "not in the grid"}


def test_each_column_names_its_axis_in_every_format_that_has_a_header(tmp_path):
    write_run(tmp_path / "run", RULES_GRID, rules_result)
    assert "| width | warmup=0 | warmup=100 |\n" in invoke("summarize", tmp_path / "run", "-f", "markdown").stdout
    assert "width & warmup=0 & warmup=100 \\\\\n" in invoke("summarize", tmp_path / "run", "-f", "latex").stdout
    # In a terminal the axis is over the value: a header no wider than either (variant= / convpool).
    assert re.search(r"┃ +┃ +warmup= ┃ +warmup= ┃\n┃ width ┃ +0 ┃ +100 ┃", invoke("summarize", tmp_path / "run").stdout)
    compared = invoke("compare", tmp_path / "run", "--baseline", "warmup=0", "-f", "markdown").stdout
    assert "| width | warmup | warmup=0 | value | difference | seeds say |" in compared


def test_plot_draws_a_diverged_cell_up_to_where_it_diverged_and_says_so(tmp_path):
    from orchestrator.results import plots

    # Every seed of `all` diverged, its val_error finite in each epoch it reported.
    write_fixture(tmp_path / "fixture", trials={("A", variant, 0.1, seed): (
        ("completed", 0.2, 0.1) if variant == "base" else ("diverged", None, None))
        for variant in ("base", "all") for seed in (0, 1)})
    results = load(RunDir(str(tmp_path / "fixture")))
    curves, bars = plots.plot(results, summarize(results, Layout(rows="variant")), tmp_path / "p.png").axes
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["base", "all (diverged)"]
    diverged = curves.lines[1]
    assert list(diverged.get_xdata()) == [1, 2, 3]
    assert list(diverged.get_ydata()) == pytest.approx([100 * (0.9 + 0.1 / e) for e in (1, 2, 3)])
    # Where every lr of a cell diverged, nothing was chosen: its curve pools them, and says so.
    write_fixture(tmp_path / "lrs", trials={("A", variant, lr, seed): (
        ("completed", 0.2 + lr, 0.1) if variant == "base" else ("diverged", None, None))
        for variant in ("base", "all") for lr in (0.1, 0.01) for seed in (0, 1)})
    results = load(RunDir(str(tmp_path / "lrs")))
    curves, bars = plots.plot(results, summarize(results, Layout(rows="variant")), tmp_path / "q.png").axes
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["base", "all (diverged, lr pooled)"]


def test_plot_of_a_mean_that_blew_up_to_inf_says_so_where_its_bar_would_be(tmp_path):
    from orchestrator.results import plots

    grid = "name: inf\ncommand:\n  run: python t.py --opt {opt}\n  parameters:\n    opt: sgd\nmetric: val_loss\n" \
           "axes:\n  opt: [sgd, adam]\nseeds: [0, 1]\n"
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": math.inf if
                                                 (t.config["opt"], t.config["seed"]) == ("adam", 1) else 0.3})
    results = load(RunDir(str(tmp_path / "run")))
    (bars,) = plots.plot(results, summarize(results, layout_for(results)), tmp_path / "p.png").axes
    assert [t.get_text() for t in bars.texts] == ["mean inf"]
    assert [p.get_height() for p in bars.patches] == [pytest.approx(0.3), 0]
