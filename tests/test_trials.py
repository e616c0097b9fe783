"""The trials as the readers hold them (results/trials.py): values as Python compares them, rows
chosen and grouped as pandas would, and no pandas on the way."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa

from orchestrator.results.trials import Trials, concat
from tests.conftest import ROOT
from tests.results_fixture import write_fixture

TABLE = pa.table({
    "trial_id": ["c", "a", "b", "d"],
    "model": ["A", "C", "A", None],
    "lr": [0.1, float("nan"), 0.01, None],
    "lr_milestones": [[200, 250], [200, 250], [], None],
    "seed": pa.array([0, 1, None, 0], pa.int64()),
})


def test_a_missing_value_is_none_and_a_list_a_tuple():
    trials = Trials(TABLE)
    assert trials["lr"] == (0.1, None, 0.01, None)  # NaN and null alike
    assert trials["lr_milestones"] == ((200, 250), (200, 250), (), None)
    assert trials["seed"] == (0, 1, None, 0)  # an integer column with a gap stays integers
    assert trials.distinct("lr_milestones") == ((200, 250), (), None)


def test_rows_are_chosen_sorted_and_grouped():
    trials = Trials(TABLE).sorted("trial_id")
    assert trials["trial_id"] == ("a", "b", "c", "d")
    assert trials.matching({"model": "A"})["trial_id"] == ("b", "c")
    assert trials.matching({"model": None})["trial_id"] == ("d",)
    assert trials.where([True, False, False, True])["model"] == ("C", None)
    # As pandas' groupby: in the order groups first appear, without missing keys unless asked.
    assert {k: v["trial_id"] for k, v in trials.groups(["model"]).items()} == {("C",): ("a",), ("A",): ("b", "c")}
    assert list(trials.groups(["model"], dropna=False)) == [("C",), ("A",), (None,)]
    both = concat([trials.matching({"model": "C"}), trials.matching({"model": "A"})])
    assert both["trial_id"] == ("a", "b", "c") and len(both) == 3 and not both.empty


def test_a_dataframe_for_scripts():
    frame = Trials(TABLE).sorted("trial_id").matching({"model": "A"}).to_pandas()
    assert list(frame["trial_id"]) == ["b", "c"] and list(frame["lr_milestones"]) == [(), (200, 250)]


def test_summarize_status_compare_and_plot_do_not_import_pandas(tmp_path):
    # pyarrow imports pandas the first time it converts a Python value; the import alone took longer
    # than reading 10,000 trials (benchmarks/README.md). Records read again (of failed trials, or
    # not published yet) are still merged into the table by pyarrow: these trials all completed.
    write_fixture(tmp_path / "fixture", trials={(model, variant, lr, seed): ("completed", 0.2 + lr, 0.1 + seed / 100)
                                                for model in "AC" for variant in ("base", "all")
                                                for lr in (0.1, 0.01) for seed in range(3)})
    script = ("import sys\nfrom orchestrator.cli import app\n"
              "for args in (['summarize', sys.argv[1]], ['status', sys.argv[1]], ['compare', sys.argv[1], '--baseline', "
              "'variant=base'], ['plot', sys.argv[1], '-o', sys.argv[2]]):\n"
              "    try:\n        app(args)\n    except SystemExit as e:\n        assert e.code == 0, args\n"
              "print('pandas' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fixture"), str(tmp_path / "plot.png")],
                            capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_arrow_numbers_reach_numpy_with_a_null_as_nan():
    from orchestrator.store.arrays import floats, from_numpy

    column = pa.array([1, None, 3, 4, None, 6, 7, 8, 9, None, 11], pa.int64())
    sliced = pa.chunked_array([column.slice(1, 3), column.slice(9)])  # chunks that start inside their buffers
    assert np.array_equal(floats(sliced), [np.nan, 3, 4, np.nan, 11], equal_nan=True)
    assert np.array_equal(floats(pa.array([None, None])), [np.nan, np.nan], equal_nan=True)
    assert floats(pa.chunked_array([], pa.float64())).size == 0
    assert from_numpy(np.arange(10)[::3]).to_pylist() == [0, 3, 6, 9]
