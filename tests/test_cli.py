"""The command line as a user meets it: help, plan, models."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.conftest import ROOT, ablate

GRIDS = sorted((ROOT / "grids").glob("*.yaml")) + [ROOT / "examples" / "toy.yaml"]
COMMANDS = ["plan", "run", "summarize", "compare", "status", "plot", "models", "visualize"]


def test_help_lists_every_command():
    result = ablate("--help")
    assert result.returncode == 0
    # The rows of the Commands panel, "│ plan       Show what ...", not words of the description.
    commands = result.stdout[result.stdout.index("Commands"):]
    assert re.findall(r"^│ ([a-z]+) {2,}\S", commands, re.M) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 5


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_plan_json_lists_every_trial_with_its_resolved_config(grid):
    result = CliRunner().invoke(app, ["plan", str(grid), "--json"])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["grid"] == grid.stem
    ids = [t["trial_id"] for t in plan["trials"]]
    assert len(ids) == len(set(ids)) > 0
    assert all(len(i) == 12 and "seed" in t["config"] for i, t in zip(ids, plan["trials"]))


def test_plan_json_in_a_real_process_is_one_json_object():
    result = ablate("plan", "grids/paper.yaml", "--json")
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert len(plan["trials"]) == 192
    assert plan["trials"][0]["config"]["epochs"] == 350


def test_plan_shows_axes_trials_and_compute():
    result = CliRunner().invoke(app, ["plan", str(ROOT / "grids" / "paper.yaml")])
    assert result.exit_code == 0
    out = result.stdout
    assert "paper: 192 trials" in out
    assert "base, strided, convpool, all" in out
    assert "0.25, 0.1, 0.05, 0.01" in out
    # 192 trials x 350 epochs x 45,000 training images (5,000 held out), whole batches of 128.
    assert "training images: 3.02 Gimages" in out
    assert "compute: 3.75 EFLOP" in out
    assert "0.25 GPU" in out


def test_models_json_has_the_paper_parameter_counts():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 24
    assert {"model": "C", "variant": "all", "classes": 10, "params": 1369738} in rows
    assert {"model": "C", "variant": "all", "classes": 100, "params": 1387108} in rows


def test_models_table():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert "Models of workload 'allcnn'" in result.stdout
    assert "1,369,738" in result.stdout and "839,242" in result.stdout


def test_models_of_a_workload_without_a_table_is_one_line():
    result = CliRunner().invoke(app, ["models", "tests.probe:WORKLOAD"])
    assert result.exit_code == 1
    assert result.stderr == "error: workload 'probe' has no table of models\n"
    result = CliRunner().invoke(app, ["models", "nope"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown workload 'nope' (known: allcnn; ")


def test_importing_ablate_changes_no_process_wide_state(tmp_path):
    # Environment variables, matplotlib's backend, the import path: a library must not touch them
    # (`-P`: the working directory is not on sys.path to begin with; the repository is, by PYTHONPATH).
    # Ray and matplotlib are imported first: what they do on import is theirs, not ablate's.
    code = ("import os, sys, ray, matplotlib; env = dict(os.environ); "
            "import orchestrator.cli, orchestrator.run.runner, orchestrator.results.plots, workloads; "
            "workloads.get('tests.probe:WORKLOAD'); "
            "print(dict(os.environ) == env, os.getcwd() not in sys.path, matplotlib.rcParams._get_backend_or_none())")
    result = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["True", "True", "None"], result.stderr
