"""Grids over commands (orchestrator/plan/script.py): any training script, run unchanged as trials.

The end-to-end tests run examples/digits.py and small scripts through the real `ablate` CLI on
local Ray; the rest check the grid format, the metrics read from output, and that no process of
a script outlives its trial, without Ray.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan.grid import load_grid
from orchestrator.run.session import StoredSession
from orchestrator.store.rundir import RunDir
from workloads.script.metrics import Metrics
from workloads.script.train import CommandFailed
from tests.conftest import ROOT, ablate
from tests.test_storage_s3 import s3  # noqa: F401 - a fixture
from workloads.base import FinalFailure, MemorySession

# The scripts' `python` is the one running the tests, with torch and scikit-learn.
PATH = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}

# Scripts that stand for what researchers bring. Each takes (and ignores) the same arguments.
SCRIPTS = {
    # Prints for humans only: its metrics are read with the grid's regular expressions.
    "plain.py": """\
        import os, sys
        for epoch in range(1, 4):
            print(f"epoch {epoch}: train loss {1 / epoch:.3f}")
            print(f"epoch {epoch}: val error {0.5 / epoch:.3f}")
        print("test error 0.125")
        with open(os.path.join(os.environ["ABLATE_TRIAL_DIR"], "who.txt"), "w") as f:
            f.write(os.environ["ABLATE_TRIAL_ID"])
        """,
    "fails.py": """\
        import sys
        print("loading data")
        print("ValueError: no such file: data.csv", file=sys.stderr)
        sys.exit(3)
        """,
    "silent.py": """\
        print("training... done")
        """,
}
PATTERNS = [r"^epoch (?P<epoch>\d+): train loss (?P<train_loss>[\d.]+)",
            r"^epoch (?P<epoch>\d+): val error (?P<val_error>[\d.]+)",
            r"^test error (?P<test_error>[\d.]+)"]


def script_grid(tmp_path: Path, scripts: dict[str, str], command: dict, name="scripts", **top) -> Path:
    for file, text in scripts.items():
        (tmp_path / file).write_text(textwrap.dedent(text))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "command": command, **top}, sort_keys=False))
    return path


def train_once(path: Path, session=None, **values):
    """One trial of the grid at `path`, without Ray."""
    grid = load_grid(path)
    session = session or MemorySession()
    config = grid.workload.config(**{**grid.trials[0].config, **values})
    return grid.workload.train(config, session), session


def processes_with(marker: str) -> list[int]:
    """PIDs of processes whose command line holds `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:  # it ended while we looked
                pass
    return pids


def none_left(marker: str, within: float = 30.0) -> list[int]:
    """Waits for every process with `marker` to end; ends those left after `within` seconds (by
    PID: they are this test's) and returns their PIDs."""
    deadline = time.monotonic() + within
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# -- the grid format -------------------------------------------------------------------------------

def test_plan_shows_the_command_line_of_every_trial():
    result = ablate("plan", "examples/script.yaml")
    assert result.returncode == 0, result.stderr
    assert "python digits.py --lr 0.3 --hidden 32 --epochs 10 --seed 0 --out $ABLATE_TRIAL_DIR" in result.stdout

    plan = json.loads(ablate("plan", "examples/script.yaml", "--json").stdout)
    trials = plan["trials"]
    assert len(trials) == 12 and len({t["trial_id"] for t in trials}) == 12
    first = trials[0]
    assert first["command_line"] == "python digits.py --lr 0.3 --hidden 32 --epochs 10 --seed 0 --out $ABLATE_TRIAL_DIR"
    assert {k: first["config"][k] for k in ("lr", "hidden", "epochs", "seed")} == {"lr": 0.3, "hidden": 32, "epochs": 10, "seed": 0}
    assert f"{first['trial_id']}  {first['command_line']}" in result.stdout  # the table view names each trial


def test_trial_ids_depend_on_the_command(tmp_path):
    text = (ROOT / "examples" / "script.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("--out {trial_dir}", "--out {trial_dir} --batch-size 32"))
    (tmp_path / "c.yaml").write_text(text.replace("  lr: [0.3, 0.1, 0.03]", "  lr: [0.1, 0.03, 0.3]"))
    ids = {name: {t.trial_id for t in load_grid(tmp_path / f"{name}.yaml").trials} for name in "abc"}
    assert ids["a"] == ids["c"] and not ids["a"] & ids["b"]


def test_shell_characters_quoted_or_escaped_are_text_to_pass_on(tmp_path):
    path = script_grid(tmp_path, {}, {"run": "python train.py --lr {lr} --sep '|' --expr \"a;b>c\" --pipe a\\|b",
                                      "parameters": {"lr": 0.1}})
    grid = load_grid(path)
    assert grid.workload.invocation(grid.workload.config(**grid.trials[0].config)) == \
        "python train.py --lr 0.1 --sep '|' --expr 'a;b>c' --pipe 'a|b'"


def test_values_become_arguments_as_argparse_reads_them(tmp_path):
    path = script_grid(tmp_path, {}, {
        "run": "python train.py --milestones {milestones} --tag=run-{tag} --name {name} --amp {amp} --lr {lr:.0e} --out {trial_dir}/x",
        "parameters": {"milestones": [30, 60], "tag": {"type": "list[str]", "default": ["a", "b"]},
                       "name": "two words", "amp": True, "lr": 0.001}})
    grid = load_grid(path)
    line = grid.workload.invocation(grid.workload.config(**grid.trials[0].config))
    assert line == ("python train.py --milestones 30 60 --tag=run-a,b --name 'two words' --amp true --lr 1e-03 "
                    "--out $ABLATE_TRIAL_DIR/x")


BAD = [
    ({"workload": "allcnn", "command": {"run": "python train.py"}}, "command: give either 'workload' (Python) or 'command' (a script to run), not both"),
    ({"command": {"parameters": {"lr": 0.1}}},
     "command.run: expected the command line to run, e.g. 'python train.py --lr {lr}', got null"),
    ({"command": {"run": "python train.py --lr {lr} --wd {wd}", "parameters": {"lr": 0.1}}},
     "command.run: unknown placeholder {wd} (parameters: lr, seed; or {trial_dir})"),
    ({"command": {"run": "python train.py --lr {lr", "parameters": {"lr": 0.1}}},
     "command.run: expected '}' before end of string in '{lr' (a literal brace is written {{ or }})"),
    ({"command": {"run": "python train.py --lr {lr} 2>&1 | tee train.log", "parameters": {"lr": 0.1}}},
     "command.run: '2>&1' is shell syntax, but no shell runs the command: the program would get it as an argument; "
     "put what needs a shell in a script (`workdir` says where the command runs, and each trial's output is kept in "
     "its trial.log), or quote it to pass it as text"),
    ({"command": {"run": "python train.py --lr {lr}", "resume": "--resume && echo resumed", "parameters": {"lr": 0.1}}},
     "command.resume: '&&' is shell syntax, but no shell runs the command: the program would get it as an argument; "
     "put what needs a shell in a script (`workdir` says where the command runs, and each trial's output is kept in "
     "its trial.log), or quote it to pass it as text"),
    # The program was `LR=0.1`, which `ablate run` could not find.
    ({"command": {"run": "LR={lr} python train.py", "parameters": {"lr": 0.1}}},
     "command.run: 'LR={lr}' sets an environment variable, as a shell would, but no shell runs the command: "
     "write 'env LR={lr} ...' to set it"),
    ({"command": {"run": "python train.py", "parameters": {"lr": 0.1}}},
     "command.parameters.lr: not used in command.run; a parameter the command never sees would only change "
     "trial ids (add {lr} to the command line)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1, "data": {"type": "str", "default": "/d",
                                                                                    "identity": False}}}},
     "command.parameters.data: not used in command.run; a parameter the command never sees would do nothing (add "
     "{data} to the command line)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": {"type": "double", "default": 0.1}}}},
     "command.parameters.lr.type: expected one of int, float, str, bool, list[int], list[float], list[str], got 'double'"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": "1e-3"}}, "axes": {"lr": [0.01, 0.001]}},
     "axes.lr[0]: expected str, got 0.01 (the default 1e-3 made lr a text parameter: YAML reads a bare 1e-3 as text; "
     "write 0.001 for a number)"),
    ({"command": {"run": "python train.py --x {x}", "parameters": {"x": {"type": ["int"], "default": 1}}}},
     "command.parameters.x.type: expected one of int, float, str, bool, list[int], list[float], list[str], got ['int']"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": {"type": "float", "default": -1, "gt": 0}}}},
     "command.parameters.lr.default: expected a finite float > 0, got -1.0"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": {"type": "float", "default": 0.1, "gt": 0}}},
      "axes": {"lr": [0.1, -0.1]}},
     "axes.lr[1]: expected a finite float > 0, got -0.1"),
    ({"command": {"run": "python train.py --opt {opt}",
                  "parameters": {"opt": {"type": "str", "default": "sgd", "choices": ["sgd", "adam"]}}},
      "axes": {"opt": ["sgd", "rmsprop"]}},
     "axes.opt[1]: unknown opt 'rmsprop' (known: sgd, adam)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "fixed": {"wd": 0.1}},
     "fixed.wd: unknown parameter of the command (known: lr, seed; declare another under command.parameters)"),
    ({"command": {"run": "python train.py --epochs {epochs:d}", "parameters": {"epochs": 0.5}}},
     "command.run: cannot write '{epochs:d}' (Unknown format code 'd' for object of type 'float') "
     "(in the trial seed=0)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "epochs": "lr"}},
     "command.epochs: expected the name of an int parameter (one of: seed), got 'lr'"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "metrics": {"patterns": ["val (?P<val_error"]}}},
     "command.metrics.patterns[0]: not a regular expression (missing >, unterminated name at position 8)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "metrics": {"patterns": [r"val ([\d.]+)"]}}},
     "command.metrics.patterns[0]: has no named group; (?P<val_error>[0-9.]+) makes a metric val_error"),
    ({"command": {"run": "python train.py --n {attempts}", "parameters": {"attempts": 1}}},
     "command.parameters.attempts: 'attempts' is taken (by a result column or the command itself); name it otherwise"),
    ({"command": {"run": "python train.py --lr {lr:.0e}", "parameters": {"lr": 0.1}}, "axes": {"lr": [0.1, 0.12]}},
     "command.run: trials with lr=0.1 and with lr=0.12 run the same command line (python train.py --lr 1e-01): it "
     "must tell their values apart (a format spec may round them to one)"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "metric": "error", "mode": "min"},
     "metric: 'error' is a column ablate writes for every trial, in words; name a metric its trials report (a "
     "trial's own 'error' is kept as 'reported_error')"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "report": ["val_loss", "host"]},
     "report[1]: 'host' is a column ablate writes for every trial, in words; name a metric its trials report (a "
     "trial's own 'host' is kept as 'reported_host')"),
    # A script's own status (and why) is the row's, not kept as reported_status: the line said it was.
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "report": ["val_loss", "status"]},
     "report[1]: 'status' is a column ablate writes for every trial, in words; name a metric its trials report"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "report": ["params"]},
     "report[0]: 'params' is the column of a Python workload's parameter count, empty for a command's trials; name a "
     "metric its trials report (a trial's own 'params' is kept as 'reported_params')"),
    ({"command": {"run": "python train.py", "metrics": {"show": ["loss", "params"]}}},
     "command.metrics.show[1]: 'params' is a column ablate writes for every trial; the script's own 'params' is kept "
     "as 'reported_params': show that"),
    ({"command": {"run": "python train.py", "metrics": {"files": ["/tmp/all_results.json"]}}},
     "command.metrics.files[0]: expected a path relative to the trial's directory ({trial_dir}), got '/tmp/all_results.json'"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "metric": "lr", "mode": "min"},
     "metric: 'lr' is a parameter of the command; name a metric its trials report (a trial's own 'lr' is kept as "
     "'reported_lr')"),
    # An older ablate's name of it, in a grid run again: every trial would end without it.
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}}, "report": ["val_loss", "script_lr"]},
     "report[1]: 'script_lr' is where an older ablate kept a script's own 'lr'; it is kept as 'reported_lr' now: name "
     "that"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "metrics": {"show": ["lr"]}}},
     "command.metrics.show[0]: 'lr' is a parameter of the command; the script's own 'lr' is kept as 'reported_lr': "
     "show that"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "epochs": "lr", "steps": "lr"}},
     "command.steps: give either epochs (a script that reports every epoch) or steps (every N steps), not both"),
    ({"command": {"run": "python train.py --lr {lr}", "parameters": {"lr": 0.1}, "resume": "--from {checkpoint}"}},
     "command.resume: unknown placeholder {checkpoint} (parameters: lr, seed; or {trial_dir})"),
]


@pytest.mark.parametrize("grid, message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_a_bad_command_grid_is_one_line(tmp_path, grid, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", **grid}, sort_keys=False))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {message}\n"


@pytest.mark.parametrize("run", ["python train.py --lr {lr}", "python train.py --lr {lr} --seed {seed}"])
def test_seeds_a_command_never_sees_are_said_to_run_the_same_command_line(tmp_path, run):
    # Three seeds of `python train.py --lr 0.1` are one run three times: a deterministic script's
    # table would show a std of 0.00 as if it rested on three seeds.
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump({"name": "seeds", "command": {"run": run, "parameters": {"lr": 0.1}},
                                    "seeds": [0, 1, 2]}))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.stderr
    said = ("note: the command never sees {seed}: each of its 3 seeds runs the same command line, so they differ "
            "only where the script is not deterministic (add {seed} to command.run to seed it)\n")
    assert result.stderr == (said if "{seed}" not in run else "")


# -- a trial, without Ray --------------------------------------------------------------------------

@pytest.mark.parametrize("command, message", [
    ({"run": "python trian.py --seed {seed}"}, "command.run: trian.py: the command's script is not found (in {dir})"),
    ({"run": "python3 -u scripts/train.py --seed {seed}"},
     "command.run: scripts/train.py: the command's script is not found (in {dir})"),
    ({"run": "./train --seed {seed}"}, "command.run: ./train: the command's program is not found (in {dir} or on PATH)"),
    ({"run": "python train.py --seed {seed}", "workdir": "src"},
     "command.workdir: {dir}/src: the command's working directory does not exist"),
])
def test_a_script_that_is_not_there_is_one_line_before_any_trial_runs(tmp_path, command, message):
    # It named the path alone (`error: trian.py: ...`), not the grid's file and key as every other grid error does.
    (tmp_path / "train.py").write_text("print(0)\n")  # in the grid's folder, not in scripts/ or src/
    path = script_grid(tmp_path, {}, command, seeds=[0, 1])
    result = CliRunner().invoke(app, ["run", str(path), "--storage", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {message.format(dir=tmp_path)}\n"
    # The refused grid is not the run's grid as last run: the readers of a run it was a typo away
    # from said that none of its trials had finished.
    assert not (tmp_path / "runs" / "scripts" / "grid.yaml").exists()


def test_metrics_from_regular_expressions(tmp_path):
    path = script_grid(tmp_path, SCRIPTS, {"run": [sys.executable, "plain.py", "{seed}"],
                                            "metrics": {"patterns": PATTERNS}})
    result, session = train_once(path)
    assert session.epochs == [{"epoch": e, "train_loss": round(1 / e, 3), "val_error": round(0.5 / e, 3)} for e in (1, 2, 3)]
    # Every metric the script printed, by its last value.
    assert result == {"status": "completed", "train_loss": 0.333, "val_error": 0.167, "test_error": 0.125}
    assert "| test error 0.125" in session.lines  # the output is in the trial's log


def test_a_script_printing_plain_json_lines_is_read_with_an_empty_prefix(tmp_path):
    # `print(json.dumps(metrics))`, unchanged: `prefix: ""` was refused, so such a script could not be
    # read without editing it to print "ABLATE " first.
    script = """\
        import json
        print("loading data")
        for epoch in (1, 2):
            print(json.dumps({"epoch": epoch, "neg_elbo": 1 / epoch}))
        print(json.dumps({"test_neg_elbo": 0.4}))
        print("{not json, said for people}")
        """
    path = script_grid(tmp_path, {"vae.py": script}, {"run": [sys.executable, "vae.py", "{seed}"],
                                                      "metrics": {"prefix": ""}}, metric="neg_elbo", mode="min")
    result, session = train_once(path)
    assert session.epochs == [{"epoch": 1, "neg_elbo": 1.0}, {"epoch": 2, "neg_elbo": 0.5}]
    assert result == {"status": "completed", "neg_elbo": 0.5, "test_neg_elbo": 0.4}
    blank = script_grid(tmp_path, {}, {"run": [sys.executable, "vae.py", "{seed}"], "metrics": {"prefix": " "}})
    result = CliRunner().invoke(app, ["plan", str(blank)])
    assert result.exit_code == 2 and result.stderr == (
        f"error: {blank}: command.metrics.prefix: expected the text before each JSON line of metrics "
        f"(\"\": a line that is a JSON object alone), got ' '\n")


def test_metrics_under_an_epoch_header_belong_to_that_epoch(tmp_path):
    # Keras prints `Epoch 3/10`, then the epoch's metrics on a line of their own, then the test's.
    script = """\
        for epoch in range(1, 4):
            print(f"Epoch {epoch}/3")
            print(f"1875/1875 [=====] - 3s 1ms/step - loss: {1 / epoch:.4f} - val_loss: {0.5 / epoch:.4f}")
        print('ABLATE {"test_loss": 0.125}')
        """
    patterns = [r" loss: (?P<loss>[\d.]+)", r"val_loss: (?P<val_loss>[\d.]+)", r"^Epoch (?P<epoch>\d+)/"]
    path = script_grid(tmp_path, {"keras.py": script}, {"run": [sys.executable, "keras.py", "{seed}"],
                                                        "metrics": {"patterns": patterns}})
    result, session = train_once(path)
    assert session.epochs == [{"epoch": e, "loss": round(1 / e, 4), "val_loss": round(0.5 / e, 4)} for e in (1, 2, 3)]
    assert result == {"status": "completed", "loss": 0.3333, "val_loss": 0.1667, "test_loss": 0.125}


def test_a_list_a_script_prints_is_part_of_its_result(tmp_path):
    script = """\
        print('ABLATE {"epoch": 1, "val_error": 0.5}')
        print('ABLATE {"per_class": [0.5, 0.25], "classes": {"cat": 0.5}}')
        """
    path = script_grid(tmp_path, {"lists.py": script}, {"run": [sys.executable, "lists.py", "{seed}"]})
    result, _ = train_once(path)
    assert result == {"status": "completed", "val_error": 0.5, "per_class": [0.5, 0.25], "classes": {"cat": 0.5}}


def test_an_epoch_among_steps_sits_at_the_step_before_it_and_a_value_after_the_last_step_is_final():
    patterns = [r"step (?P<step>\d+) loss (?P<loss>[\d.]+)", r"epoch (?P<epoch>\d+) val_error (?P<val_error>[\d.]+)",
                r"epoch (?P<epoch>\d+) val_loss (?P<val_loss>[\d.]+)", r"^test_error (?P<test_error>[\d.]+)"]
    metrics = Metrics(patterns=patterns)
    lines = ["step 100 loss 1.0", "step 200 loss 0.9", "epoch 1 val_error 0.4", "step 300 loss 0.8", "test_error 0.08"]
    rows = [row for line in lines for row in metrics.feed(line)] + metrics.end()
    assert rows == [{"step": 100, "loss": 1.0}, {"step": 200, "loss": 0.9}, {"epoch": 1, "val_error": 0.4, "step": 200},
                    {"step": 300, "loss": 0.8}]
    assert metrics.final["test_error"] == 0.08  # the test set's number: no step's row


def test_a_bar_s_epoch_whose_line_ends_is_recorded_at_a_pause_unless_a_bar_below_it_is_drawn():
    # Its line's end may be a bar below it beginning (Lightning's validation bar, drawn on the next
    # line and back up with "\x1b[A"): held through that bar's pauses, but not for ever without one.
    metrics = Metrics(patterns=[r"Epoch (?P<epoch>\d+):.*\| loss=(?P<loss>[\d.]+)"])
    assert metrics.feed("Epoch 1: 50%| loss=0.5", redrawn=True) == metrics.feed("Epoch 1: 100%| loss=0.4") == []
    assert metrics.feed("Validation: 10%|\x1b[A") == metrics.idle() == []  # a slow validation batch
    assert metrics.feed("Epoch 1: 100%| loss=0.4 val_loss=0.3", redrawn=True) == []
    assert metrics.feed("Epoch 1: 100%| loss=0.4 val_loss=0.3") == []
    assert metrics.idle() == [{"epoch": 1, "loss": 0.4}]


def test_a_line_written_over_a_cleared_bar_leaves_its_epoch_one_report():
    # tqdm.write (Lightning's `self.print`) clears the bar ("\r" + spaces + "\r"), writes its line and
    # draws the bar again: the blank part ended the epoch's report, and the bar drawn again made a
    # second report of the same epoch, which the trial counted as one more epoch.
    metrics = Metrics(patterns=[r"Epoch (?P<epoch>\d+):.*\| loss=(?P<loss>[\d.]+)"])
    assert metrics.feed("Epoch 1: 50%| loss=0.5", redrawn=True) == []
    assert metrics.feed(" " * 40, redrawn=True) == metrics.feed("saved checkpoint") == []
    assert metrics.feed("Epoch 1: 100%| loss=0.4", redrawn=True) == []
    assert metrics.feed("Epoch 2: 50%| loss=0.3", redrawn=True) == [{"epoch": 1, "loss": 0.4}]
    # A bar cleared for good (tqdm's leave=False) is recorded at a pause.
    assert metrics.feed(" " * 40, redrawn=True) == metrics.feed("evaluating") == []
    assert metrics.idle() == [{"epoch": 2, "loss": 0.3}]


def test_a_step_a_pattern_captures_is_complete_as_it_is_printed_not_when_the_next_is():
    # The script saved its checkpoint before printing step 300: a record that waits for step 400
    # is a step behind it, and lost if the attempt ends there.
    metrics = Metrics(patterns=[r"^step (?P<step>\d+) train loss: (?P<train_loss>[\d.]+) val loss: (?P<val_loss>[\d.]+)",
                                r"^step (?P<step>\d+) lr (?P<lr>[\d.]+)"])
    # The first step waits for a pause in the output, to see whether a JSON line for it follows.
    assert metrics.feed("step 200 train loss: 0.3 val loss: 0.4") == metrics.feed("step 200 lr 0.1") == []
    assert metrics.idle() == [{"step": 200, "train_loss": 0.3, "val_loss": 0.4, "lr": 0.1}]
    assert metrics.feed("step 300 train loss: 0.2 val loss: 0.3") == []  # its lr line is still to come
    assert metrics.feed("step 300 lr 0.1") == [{"step": 300, "train_loss": 0.2, "val_loss": 0.3, "lr": 0.1}]
    single = Metrics(patterns=[r"^step (?P<step>\d+) val loss: (?P<val_loss>[\d.]+)"])
    assert single.feed("step 200 val loss: 0.4") == []
    assert single.feed("step 300 val loss: 0.3") == [{"step": 200, "val_loss": 0.4}, {"step": 300, "val_loss": 0.3}]


def test_a_step_printed_for_people_and_as_json_is_one_report_with_the_metrics_of_both():
    # The grid's pattern reads the line for people; the line for ablate adds what it lacks. Each
    # report is complete once both are in, the first too.
    metrics = Metrics(patterns=[r"^step (?P<step>\d+) loss (?P<loss>[\d.]+)"])
    lines = ["step 100 loss 0.50", 'ABLATE {"step": 100, "acc@1": 0.25, "loss": 0.5012}',
             "step 200 loss 0.90", 'ABLATE {"step": 200, "acc@1": 0.5, "loss": 0.25}', "done"]
    assert [metrics.feed(line) for line in lines] == [
        [], [{"step": 100, "loss": 0.5012, "acc@1": 0.25}], [], [{"step": 200, "loss": 0.25, "acc@1": 0.5}], []]
    # Where both give a metric, the JSON line's value: the other rounds it (0.50), or says otherwise.
    assert metrics.problems == ["step 200: loss is 0.90 on a line its pattern matched and 0.25 in its JSON line; "
                                "the JSON line's value is kept"]

    # The JSON line first, of an epoch a pattern prints over two lines: one report all the same.
    metrics = Metrics(patterns=[r"^Epoch (?P<epoch>\d+) train loss (?P<loss>[\d.]+)",
                                r"^Epoch (?P<epoch>\d+) val error (?P<val_error>[\d.]+)"])
    lines = [f'ABLATE {{"epoch": {e}, "loss": {e / 10}}}\nEpoch {e} train loss {e / 10}\nEpoch {e} val error 0.{e}'
             for e in (1, 2)]
    assert [metrics.feed(line) for text in lines for line in text.splitlines()] == [
        [], [], [{"epoch": 1, "loss": 0.1, "val_error": 0.1}], [], [], [{"epoch": 2, "loss": 0.2, "val_error": 0.2}]]
    assert metrics.problems == []


def test_a_step_printed_both_ways_now_and_then_is_one_report_and_the_others_are_not_held_for_long():
    # The loss for people every step, the accuracy as JSON every other: a report complete by its
    # pattern waits for the next line (or a pause: idle) once the script has printed both ways.
    metrics = Metrics(patterns=[r"^step (?P<step>\d+) loss (?P<loss>[\d.]+)"])
    assert metrics.feed("step 1 loss 0.9") == [] and metrics.feed('ABLATE {"step": 1, "acc": 0.1}') == \
        [{"step": 1, "loss": 0.9, "acc": 0.1}]
    assert metrics.feed("step 2 loss 0.8") == [] and metrics.feed("saving a checkpoint") == [{"step": 2, "loss": 0.8}]
    assert metrics.feed("step 3 loss 0.7") == [] and metrics.idle() == [{"step": 3, "loss": 0.7}]
    assert metrics.feed("step 4 loss 0.6") == []
    assert metrics.feed('ABLATE {"step": 4, "acc": 0.4}') == [{"step": 4, "loss": 0.6, "acc": 0.4}]
    # Its epoch printed as JSON after the step is a report of its own, at that step.
    assert metrics.feed('ABLATE {"epoch": 1, "val_error": 0.3}') + metrics.end() == \
        [{"epoch": 1, "val_error": 0.3, "step": 4}]


def test_an_epoch_printed_in_json_lines_of_training_then_validation_is_one_report():
    # Each JSON line was a report: two rows an epoch, and `ablate status` at epoch 6/3. The first
    # epoch so printed is two, as that is seen only then; each later one is one report, complete at
    # its validation's line however long that takes (not at a pause), or at the next epoch's line.
    metrics = Metrics()
    said = []
    for e in (1, 2, 3):
        said.append(metrics.feed(f'ABLATE {{"epoch": {e}, "train_loss": {1 / e}}}'))
        said.append(metrics.feed("evaluating") + metrics.idle())
        said.append(metrics.feed(f'ABLATE {{"epoch": {e}, "val_loss": {2 / e}}}'))
    said.append(metrics.feed('ABLATE {"epoch": 4, "train_loss": 0.25}'))  # no validation this epoch
    said.append(metrics.feed('ABLATE {"epoch": 5, "train_loss": 0.2}') + metrics.end())
    assert said == [[{"epoch": 1, "train_loss": 1.0}], [], [{"epoch": 1, "val_loss": 2.0}],
                    [], [], [{"epoch": 2, "train_loss": 0.5, "val_loss": 1.0}],
                    [], [], [{"epoch": 3, "train_loss": 1 / 3, "val_loss": 2 / 3}],
                    [], [{"epoch": 4, "train_loss": 0.25}, {"epoch": 5, "train_loss": 0.2}]]


def test_a_resumed_script_printing_both_ways_repeats_each_step_once():
    metrics = Metrics(patterns=[r"^step (?P<step>\d+) loss (?P<loss>[\d.]+)"], resumed_at=200)
    rows = [row for step in (100, 200, 300)
            for line in (f"step {step} loss {100 / step}", f'ABLATE {{"step": {step}, "acc": {step / 400}}}')
            for row in metrics.feed(line)]
    assert rows == [{"step": 300, "loss": 100 / 300, "acc": 0.75}]
    assert metrics.repeats == [{"step": 100, "loss": 1.0, "acc": 0.25}, {"step": 200, "loss": 0.5, "acc": 0.5}]


def test_a_line_at_a_fraction_of_an_epoch_is_no_report_but_its_values_are_the_trials_last_saying_so():
    # Hugging Face's Trainer logs its training loss between evaluations at epoch 0.5.
    metrics = Metrics(patterns=[r"'loss': (?P<loss>[\d.]+).*'epoch': (?P<epoch>[\d.]+)",
                                r"'eval_loss': (?P<eval_loss>[\d.]+).*'epoch': (?P<epoch>[\d.]+)"])
    lines = ["{'loss': 0.9, 'learning_rate': 5e-05, 'epoch': 0.5}", "{'loss': 0.7, 'learning_rate': 4e-05, 'epoch': 1.0}",
             "{'eval_loss': 0.8, 'eval_runtime': 1.2, 'epoch': 1.0}", "{'loss': 0.6, 'learning_rate': 3e-05, 'epoch': 1.5}"]
    rows = [row for line in lines for row in metrics.feed(line)] + metrics.end()
    assert rows == [{"epoch": 1, "loss": 0.7, "eval_loss": 0.8}]
    assert metrics.final == {"loss": 0.6, "eval_loss": 0.8}
    assert metrics.problems == [f"not a report: epoch {e} is not a whole number; its values count only as the "
                                "trial's last values" for e in (0.5, 1.5)]
    # It logs one at every logging step: the trial's log says the first few, and how many more.
    for step in range(1000):
        metrics.feed(f"{{'loss': 0.5, 'learning_rate': 3e-05, 'epoch': {step + 0.25}}}")
    assert len(metrics.problems) == 3 and metrics.more_problems == 999


def test_a_script_that_evaluates_at_fractions_of_an_epoch_completes_with_its_last_values(tmp_path):
    # Hugging Face's eval_strategy="steps": every evaluation is at a fraction of an epoch. The
    # trial's metric is its last evaluation's, where it failed for printing none.
    path = script_grid(tmp_path, {"hf.py": "for i in range(1, 4):\n    print({'eval_loss': 1 / i, 'epoch': i / 4})\n"},
                       {"run": "python hf.py", "metrics": {
                           "patterns": [r"'eval_loss': (?P<eval_loss>[\d.]+).*'epoch': (?P<epoch>[\d.]+)"]}},
                       metric="eval_loss")
    result, session = train_once(path)
    assert (result["status"], result["eval_loss"], session.epochs) == ("completed", pytest.approx(1 / 3), [])
    assert any("not a report: epoch 0.25 is not a whole number" in line for line in session.lines)


class AnnouncingSession(MemorySession):
    """Writes each epoch it is given to `reported` in the trial directory, for the script to see."""

    def record(self, metrics, checkpoint=None, on_pause=None):
        super().record(metrics, checkpoint)
        with open(os.path.join(self.directory, "reported"), "a") as f:
            f.write(f"{metrics['epoch']}\n")
        return True


def test_epochs_on_a_line_redrawn_in_place_are_each_reported_as_they_are_printed(tmp_path):
    # A progress bar redraws its line after each "\r", then the epoch's metrics take its place;
    # the line ends only after training. Each epoch must reach the trial while it trains.
    script = """\
        import json, os, sys, time
        def wait_until_reported(epoch):
            path = os.path.join(os.environ["ABLATE_TRIAL_DIR"], "reported")
            for _ in range(600):
                if os.path.exists(path) and str(epoch) in open(path).read().split():
                    return
                time.sleep(0.05)
            sys.exit(f"epoch {epoch} was not reported while training")
        for epoch in range(1, 4):
            for batch in range(3):
                print(f"\\r epoch {epoch} batch {batch}/3", end="", flush=True)
            print("\\rABLATE " + json.dumps({"epoch": epoch, "val_error": 0.5 / epoch}), end="", flush=True)
            if epoch > 1:
                wait_until_reported(epoch - 1)
        print()
        print("done")
        """
    path = script_grid(tmp_path, {"redraws.py": script}, {"run": [sys.executable, "redraws.py", "{seed}"]})
    result, session = train_once(path, AnnouncingSession())
    assert session.epochs == [{"epoch": e, "val_error": 0.5 / e} for e in (1, 2, 3)]
    assert result == {"status": "completed", "val_error": 0.5 / 3}
    # The log keeps what a terminal shows: the line's last state.
    assert [line for line in session.lines if line.startswith("|")] == [
        f'| ABLATE {{"epoch": 3, "val_error": {0.5 / 3}}}', "| done"]


def test_a_progress_bar_redrawing_an_epochs_metrics_is_one_report_an_epoch_with_its_last_values(tmp_path):
    # A tqdm bar with the metrics in its postfix: one line redrawn after each "\r" for every batch,
    # "Epoch 1: ..." showing the last validation's metrics (the epoch before's until this one's
    # ends). It was a report a redraw: 25 rows for 3 epochs, most of them with the epoch before's values.
    script = """\
        import sys
        shown = "v_num=0"
        for epoch in range(3):
            for batch in range(8):
                sys.stderr.write(f"\\rEpoch {epoch}: {batch}/8 [00:00<00:00, {shown}]")
            shown = f"v_num=0, val_loss={1 / (epoch + 1):.3f}"
            sys.stderr.write(f"\\rEpoch {epoch}: 8/8 [00:00<00:00, {shown}]")
        sys.stderr.write("\\nfit stopped\\n")
        """
    path = script_grid(tmp_path, {"bar.py": script}, {"run": [sys.executable, "bar.py", "{seed}"], "metrics": {
        "patterns": [r"Epoch (?P<epoch>\d+):.*val_loss=(?P<val_loss>[\d.]+)"]}}, metric="val_loss")
    result, session = train_once(path)
    assert session.epochs == [{"epoch": 0, "val_loss": 1.0}, {"epoch": 1, "val_loss": 0.5},
                              {"epoch": 2, "val_loss": 0.333}]
    assert result == {"status": "completed", "val_loss": 0.333}


def test_pytorch_lightnings_bars_are_one_report_an_epoch_with_its_own_validation(tmp_path):
    # PyTorch Lightning's TQDMProgressBar, byte for byte as 2.6 writes it to a pipe: the training
    # bar redrawn after each "\r" with the epoch before's validation in its postfix; a "\n" to draw
    # the validation bar on the line below, which moves the cursor back up ("\x1b[A") after each
    # draw; then the training bar again, with this epoch's validation. The "\n" made two reports an
    # epoch, the first with the epoch before's val_loss (and a line matching both patterns, two more).
    script = """\
        import sys
        out, shown = sys.stdout, ""
        for epoch in range(3):
            for batch in range(1, 5):
                train = f"train_loss={1 / (epoch + batch):.3f}"
                out.write(f"\\rEpoch {epoch}: {batch * 25}%| | {batch}/4 [00:00<00:00, {train}{shown}]")
                out.flush()
            for batch in range(5):
                out.write(f"\\n\\rValidation DataLoader 0: {batch * 25}%| | {batch}/4 [00:00<00:00]\\x1b[A")
                out.flush()
            out.write("\\n\\r" + " " * 40 + "\\x1b[A")
            shown = f", val_loss={0.5 / (epoch + 1):.3f}, val_acc={0.5 + epoch / 10:.3f}"
            for _ in range(2):
                out.write(f"\\rEpoch {epoch}: 100%| | 4/4 [00:00<00:00, {train}{shown}]")
            out.flush()
        out.write("\\n")
        print("`Trainer.fit` stopped: `max_epochs=3` reached.", file=sys.stderr)
        """
    path = script_grid(tmp_path, {"lightning.py": script}, {"run": [sys.executable, "lightning.py", "{seed}"], "metrics": {
        "patterns": [r"Epoch (?P<epoch>\d+):.*train_loss=(?P<train_loss>[\d.]+)",
                     r"Epoch (?P<epoch>\d+):.*val_loss=(?P<val_loss>[\d.]+), val_acc=(?P<val_acc>[\d.]+)"]}},
        metric="val_loss")
    result, session = train_once(path)
    assert session.epochs == [{"epoch": e, "train_loss": round(1 / (e + 4), 3), "val_loss": round(0.5 / (e + 1), 3),
                               "val_acc": 0.5 + e / 10} for e in range(3)]
    assert result == {"status": "completed", **{k: v for k, v in session.epochs[-1].items() if k != "epoch"}}


def test_a_scripts_metrics_named_like_columns_ablate_writes_are_kept_beside_them(tmp_path):
    # A script's own `params` (a parameter count it prints), `epochs_completed` or `error` took
    # ablate's columns: the row said 7 epochs for 2 reported, and `error: none` on a completed trial.
    script = """\
        import json
        for epoch in (1, 2):
            print("ABLATE " + json.dumps({"epoch": epoch, "val_loss": 1 / epoch, "trial_id": "mine"}))
        print("ABLATE " + json.dumps({"params": 11935, "epochs_completed": 7, "train_seconds": 0.5, "error": "none"}))
        """
    path = script_grid(tmp_path, {"columns.py": script}, {"run": [sys.executable, "columns.py", "{seed}"]})
    result, session = train_once(path)
    assert session.epochs == [{"epoch": e, "val_loss": 1 / e, "reported_trial_id": "mine"} for e in (1, 2)]
    assert result == {"status": "completed", "val_loss": 0.5, "reported_trial_id": "mine", "reported_params": 11935,
                      "reported_epochs_completed": 7, "reported_train_seconds": 0.5, "reported_error": "none"}
    assert ("ablate writes columns named trial_id, params, epochs_completed, train_seconds, error: the script's own "
            "are kept as reported_trial_id, reported_params, reported_epochs_completed, reported_train_seconds, "
            "reported_error") in session.lines


def test_a_scripts_metrics_named_like_its_parameters_are_kept_beside_them(tmp_path):
    # A scheduler's current `lr` each epoch, an early stop's final `epochs`: the row kept the
    # parameter's value and dropped the script's without a word, while epochs.parquet had the
    # script's under the parameter's name (lr=0.05 at epoch 3 of the trial with lr=0.2).
    script = """\
        import json, sys
        lr = float(sys.argv[1])
        for epoch in (1, 2, 3):
            print("ABLATE " + json.dumps({"epoch": epoch, "lr": lr / 2 ** (epoch - 1), "val_loss": 1 / epoch}))
        print("ABLATE " + json.dumps({"epochs": 3}))
        """
    path = script_grid(tmp_path, {"sched.py": script}, {"run": [sys.executable, "sched.py", "{lr}", "{epochs}"],
                                                        "parameters": {"lr": 0.2, "epochs": 100}, "epochs": "epochs"})
    result, session = train_once(path)
    assert session.epochs == [{"epoch": e, "reported_lr": 0.2 / 2 ** (e - 1), "val_loss": 1 / e} for e in (1, 2, 3)]
    assert result == {"status": "completed", "reported_lr": 0.05, "val_loss": 1 / 3, "reported_epochs": 3}
    assert "ablate writes columns named lr, epochs: the script's own are kept as reported_lr, reported_epochs" \
        in session.lines


def test_a_missing_metrics_file_leaves_what_the_trials_log_says_of_its_output(tmp_path):
    # The failure for the file came before the log's lines on the script's output (a line with the
    # prefix and no JSON object, its names kept as script_<name>): the log had none of them.
    script = """\
        print("ABLATE not json")
        print('ABLATE {"epoch": 1, "error": "none"}')
        """
    path = script_grid(tmp_path, {"nofile.py": script}, {"run": [sys.executable, "nofile.py", "{seed}"],
                                                         "metrics": {"files": ["all_results.json"]}})
    session = MemorySession()
    with pytest.raises(FinalFailure, match="all_results.json: not in the trial's directory"):
        train_once(path, session)
    assert "not metrics: ABLATE not json" in session.lines
    assert "ablate writes columns named error: the script's own are kept as reported_error" in session.lines


def test_a_script_that_gives_its_status_gives_its_reason_too(tmp_path):
    # Its status_reason was kept as script_status_reason: the row of a trial it said diverged had none.
    script = """\
        import json
        print("ABLATE " + json.dumps({"epoch": 1, "val_loss": 2.5}))
        print("ABLATE " + json.dumps({"status": "diverged", "status_reason": "loss is inf at step 300"}))
        """
    path = script_grid(tmp_path, {"diverges.py": script}, {"run": [sys.executable, "diverges.py", "{seed}"]})
    result, _ = train_once(path)
    assert result == {"status": "diverged", "status_reason": "loss is inf at step 300", "val_loss": 2.5}


HF_SCRIPT = """\
    import json, os, sys
    out = os.path.join(os.environ["ABLATE_TRIAL_DIR"], "out")
    os.makedirs(out, exist_ok=True)
    print({"loss": 0.61, "epoch": 0.5})  # Hugging Face's Trainer logs for people, at fractions of an epoch
    if sys.argv[1] == "write":
        with open(os.path.join(out, "all_results.json"), "w") as f:
            json.dump({"epoch": 2.0, "eval_loss": 0.25, "train_loss": 0.4, "params": 5}, f)
    elif sys.argv[1] == "damage":
        with open(os.path.join(out, "all_results.json"), "w") as f:
            f.write('{"epoch": 2.0, "eval_lo')
    """


def test_metrics_a_script_writes_to_a_file_in_its_trial_directory_reach_its_row(tmp_path):
    # Hugging Face's Trainer writes its final metrics to all_results.json, not to its output.
    path = script_grid(tmp_path, {"hf.py": HF_SCRIPT}, {"run": [sys.executable, "hf.py", "write", "{seed}"],
                                                        "metrics": {"files": ["out/all_results.json"]}},
                       metric="eval_loss")
    result, session = train_once(path)
    assert session.epochs == []
    assert result == {"status": "completed", "eval_loss": 0.25, "train_loss": 0.4, "reported_params": 5}


@pytest.mark.parametrize("how, problem", [("nothing", "not in the trial's directory after the command ended"),
                                          ("damage", "not a JSON object (Unterminated string starting at: line 1 "
                                                     "column 16 (char 15))")])
def test_a_metrics_file_missing_or_damaged_fails_the_trial_in_one_line_naming_it(tmp_path, how, problem):
    from orchestrator.run.trial import run_trial
    from orchestrator.store import records

    path = script_grid(tmp_path, {"hf.py": HF_SCRIPT}, {"run": [sys.executable, "hf.py", how, "{seed}"],
                                                        "metrics": {"files": ["out/all_results.json"]}})
    grid = load_grid(path)
    trial = grid.trials[0]
    # Recorded failed without raising, so not retried: each retry would train it again to end the same way.
    run_trial({"trial": {"trial_id": trial.trial_id, "config": trial.config}}, run_uri=str(tmp_path / "runs"),
              workload_ref=grid.workload_ref, grid_name=grid.name, report=lambda metrics: None,
              objective=grid.objective)
    said = f"command.metrics.files: out/all_results.json: {problem}"
    (row,) = records.read_trials(RunDir(str(tmp_path / "runs"))).to_pylist()
    assert (row["status"], row["error"]) == ("failed", said)
    log = (tmp_path / "runs" / "trials" / trial.trial_id / "trial.log").read_text()
    assert log.endswith(f" failed: {said} (not retried: each retry would end the same way)\n")


def test_a_script_printing_both_ways_has_one_report_a_step(tmp_path):
    script = """\
        import json
        for step in (100, 200, 300):
            print(f"step {step} loss {100 / step:.4f}")
            print("ABLATE " + json.dumps({"step": step, "acc@1": step / 400}))
        """
    path = script_grid(tmp_path, {"both.py": script}, {"run": [sys.executable, "both.py", "{seed}"], "metrics": {
        "patterns": [r"^step (?P<step>\d+) loss (?P<loss>[\d.]+)"]}})
    result, session = train_once(path)
    assert session.epochs == [{"step": s, "loss": round(100 / s, 4), "acc@1": s / 400} for s in (100, 200, 300)]


def test_the_first_report_of_a_script_printing_for_people_is_recorded_while_it_trains(tmp_path):
    # It waits to see whether a JSON line for its epoch follows, but not for the next epoch.
    script = """\
        import os, sys, time
        path = os.path.join(os.environ["ABLATE_TRIAL_DIR"], "reported")
        for epoch in (1, 2):
            print(f"epoch {epoch} val error {0.5 / epoch}", flush=True)
            for _ in range(600):
                if os.path.exists(path) and str(epoch) in open(path).read().split():
                    break
                time.sleep(0.05)
            else:
                sys.exit(f"epoch {epoch} was not reported while training")
        """
    path = script_grid(tmp_path, {"people.py": script}, {"run": [sys.executable, "people.py", "{seed}"], "metrics": {
        "patterns": [r"^epoch (?P<epoch>\d+) val error (?P<val_error>[\d.]+)"]}})
    result, session = train_once(path, AnnouncingSession())
    assert session.epochs == [{"epoch": 1, "val_error": 0.5}, {"epoch": 2, "val_error": 0.25}]


def test_a_chatty_script_s_lines_reach_its_log_while_it_trains(tmp_path):
    # A long epoch printing a loss every 0.2 s: `ablate log` reads trial.log, beside its files.
    script = """\
        import os, sys, time
        log = os.path.join(os.environ["ABLATE_TRIAL_DIR"], os.pardir, "trial.log")
        for batch in range(1, 100):
            print(f"batch {batch} loss {1 / batch:.3f}", flush=True)
            if "| batch 1 loss 1.000" in open(log).read():
                break
            time.sleep(0.2)
        else:
            sys.exit("its lines never reached the log while it trained")
        print('ABLATE {"epoch": 1, "val_error": 0.5}')
        """
    path = script_grid(tmp_path, {"chatty.py": script}, {"run": [sys.executable, "chatty.py", "{seed}"]})
    session = StoredSession(RunDir(str(tmp_path / "runs" / "chatty")), "t1")
    session.start()
    result, _ = train_once(path, session)
    session.close()
    assert result["val_error"] == 0.5


def test_a_failing_script_says_its_exit_code_and_last_lines(tmp_path):
    path = script_grid(tmp_path, SCRIPTS, {"run": [sys.executable, "fails.py", "{seed}"]})
    with pytest.raises(CommandFailed, match=r"^the command exited with code 3; its last output: loading data \| "
                                            r"ValueError: no such file: data.csv$"):
        train_once(path)


# Trains its epochs (or its steps, reporting every 100), then crashes as it tears down (NCCL's
# destroy_process_group, a logger's last upload): exit code 3 after all, or `--crash-before` the last one.
TEARDOWN = """\
    import sys
    total, unit = int(sys.argv[1]), sys.argv[2]
    every = 100 if unit == "step" else 1
    for n in range(every, total + 1 - every * ("--crash-before" in sys.argv), every):
        print('ABLATE {"%s": %d, "val_error": %.3f}' % (unit, n, 0.5 * every / n))
    print("Segmentation fault (core dumped) in destroy_process_group", file=sys.stderr)
    sys.exit(3)
    """


@pytest.mark.parametrize("unit, total", [("epoch", 3), ("step", 300)])
def test_a_script_that_exits_non_zero_after_its_planned_training_keeps_it_and_says_so(tmp_path, unit, total):
    # It was retried and trained everything again (and failed the same way).
    path = script_grid(tmp_path, {"teardown.py": TEARDOWN}, {
        "run": [sys.executable, "teardown.py", "{total}", unit, "{seed}"], "parameters": {"total": total},
        "epochs" if unit == "epoch" else "steps": "total"})
    result, session = train_once(path)
    said = f"the command exited with code 3 after its last report ({unit} {total} of {total})"
    assert result["status"] == "completed" and result["status_reason"] == said
    assert result["val_error"] == 0.167 and [e["val_error"] for e in session.epochs] == [0.5, 0.25, 0.167]
    assert any(line.startswith(f"{said}: its reports are kept, and it is not trained again; its last output: ")
               and line.endswith("Segmentation fault (core dumped) in destroy_process_group") for line in session.lines)


def test_a_script_that_exits_non_zero_before_its_last_planned_epoch_still_fails_to_be_retried(tmp_path):
    path = script_grid(tmp_path, {"teardown.py": TEARDOWN}, {
        "run": [sys.executable, "teardown.py", "{epochs}", "epoch", "--crash-before", "{seed}"],
        "parameters": {"epochs": 3}, "epochs": "epochs"})
    with pytest.raises(CommandFailed, match=r"^the command exited with code 3; its last output: "):
        train_once(path)


def test_a_failure_s_message_ends_with_the_script_s_last_line_after_long_ones(tmp_path):
    # `print(args)` of a script with many options, then the error that ended it.
    script = """\
        print("Namespace(" + ", ".join(f"option_{i}=0.123456789" for i in range(60)) + ")")
        print("x" * 100_000)
        open("data/train.csv")
        """
    path = script_grid(tmp_path, {"crashes.py": script}, {"run": [sys.executable, "crashes.py", "{seed}"]})
    with pytest.raises(CommandFailed) as e:
        train_once(path)
    message = str(e.value)
    assert message.startswith("the command exited with code 1; its last output: ")
    assert message.endswith(" | FileNotFoundError: [Errno 2] No such file or directory: 'data/train.csv'")
    assert len(message) < 700


def test_a_json_line_naming_a_file_whose_name_is_not_utf8_is_recorded(tmp_path):
    # json.dumps writes the byte 0xff of such a name (os.listdir gives it as "\udcff") as \udcff.
    script = """\
        import json
        print("ABLATE " + json.dumps({"epoch": 1, "val_error": 0.5, "shard": "train-\\udcff.tar"}))
        """
    path = script_grid(tmp_path, {"files.py": script}, {"run": [sys.executable, "files.py", "{seed}"]})
    run = RunDir(str(tmp_path / "runs" / "files"))
    session = StoredSession(run, "t1")
    session.start()
    result, _ = train_once(path, session)
    session.close()
    assert result["shard"] == "train-\ufffd.tar" and session.epochs[0]["shard"] == "train-\ufffd.tar"
    assert "epoch=1 val_error=0.5 shard=train-\ufffd.tar" in Path(run.trial_file("t1", "trial.log")).read_text()


def test_a_killed_script_says_by_which_signal(tmp_path):
    script = """\
        import os, signal
        print('ABLATE {"epoch": 1, "val_error": 0.5}', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    path = script_grid(tmp_path, {"killed.py": script}, {"run": [sys.executable, "killed.py", "{seed}"]})
    with pytest.raises(CommandFailed, match=r'^the command was killed by SIGKILL; its last output: ABLATE {"epoch": 1'):
        train_once(path)


def test_a_script_that_prints_no_metric_says_what_was_expected(tmp_path):
    path = script_grid(tmp_path, SCRIPTS, {"run": [sys.executable, "silent.py", "{seed}"],
                                            "metrics": {"patterns": [r"^acc (?P<accuracy>\S+)"]}})
    with pytest.raises(CommandFailed) as e:
        train_once(path)
    assert str(e.value) == ("the command printed no metric (expected lines with 'ABLATE' and a JSON object, or matching "
                            "'^acc (?P<accuracy>\\\\S+)'); its last output: training... done")


def test_a_resumed_script_reports_only_epochs_not_reported_before(tmp_path):
    # An attempt that reported epochs 1-2 was lost; the script's own checkpoint was at epoch 1.
    script = """\
        for epoch in range(2, 5):
            print('ABLATE {"epoch": %d, "val_error": %f}' % (epoch, 1 / epoch))
        """
    path = script_grid(tmp_path, {"resumes.py": script}, {"run": [sys.executable, "resumes.py", "{seed}"]})
    session = MemorySession(epochs=[{"epoch": 1}, {"epoch": 2}], checkpoint={"epoch": 2})
    result, _ = train_once(path, session)
    assert [e["epoch"] for e in session.epochs] == [1, 2, 3, 4] and result["val_error"] == 0.25
    assert "not reported again: epoch 2 (the checkpoint this attempt resumed from is at 2)" in session.lines


def test_an_epoch_count_that_starts_again_loses_no_epoch(tmp_path):
    # Pretraining, then fine-tuning, each counting its epochs from 1.
    script = """\
        import json
        for phase in ("pretrain", "finetune"):
            for epoch in (1, 2):
                print("ABLATE " + json.dumps({"epoch": epoch, "phase": phase, "val_error": 0.5 / epoch}))
        """
    path = script_grid(tmp_path, {"phases.py": script}, {"run": [sys.executable, "phases.py", "{seed}"]})
    _, session = train_once(path)
    both = [{"epoch": e, "phase": p, "val_error": 0.5 / e} for p in ("pretrain", "finetune") for e in (1, 2)]
    assert session.epochs == both

    # Resumed after pretraining's epoch 1, by a script that starts over: only that one is a repeat.
    _, session = train_once(path, MemorySession(epochs=both[:1], checkpoint={"epoch": 1}))
    assert session.epochs == both
    assert "not reported again: epoch 1 (the checkpoint this attempt resumed from is at 1)" in session.lines


def test_epochs_among_steps_are_each_reported_at_their_step(tmp_path):
    # The training loss every 100 steps, the validation error after each epoch of 200 steps.
    script = """\
        import json
        for epoch in (1, 2):
            for step in (epoch * 200 - 100, epoch * 200):
                print("ABLATE " + json.dumps({"step": step, "loss": 100 / step}))
            print("ABLATE " + json.dumps({"epoch": epoch, "val_error": 0.5 / epoch}))
        """
    path = script_grid(tmp_path, {"mixed.py": script}, {"run": [sys.executable, "mixed.py", "{seed}"]})
    result, session = train_once(path)
    assert session.epochs == [{"step": 100, "loss": 1.0}, {"step": 200, "loss": 0.5},
                              {"epoch": 1, "step": 200, "val_error": 0.5},
                              {"step": 300, "loss": 1 / 3}, {"step": 400, "loss": 0.25},
                              {"epoch": 2, "step": 400, "val_error": 0.25}]
    assert result == {"status": "completed", "loss": 0.25, "val_error": 0.25}


# Saves its own checkpoint, then prints the step, as scripts do; resumes from it with --resume.
CHECKPOINTING = """\
    import json, os, sys, time
    mark = os.path.join(os.environ["ABLATE_TRIAL_DIR"], "step")
    start = int(open(mark).read()) if "--resume" in sys.argv else 0
    for step in range(start + 10, int(sys.argv[1]) + 1, 10):
        open(mark + ".tmp", "w").write(str(step))
        os.replace(mark + ".tmp", mark)
        print("ABLATE " + json.dumps({"step": step, "val_error": 1 / step}), flush=True)
        time.sleep(0.05)
    """


class WaitingSession(MemorySession):
    """Its announce waits, as Tune's report waits for the driver to take an epoch, here until the
    script's six steps are recorded (or 10 s): what the driver is slow to take is recorded meanwhile."""

    def announce(self):
        deadline = time.monotonic() + 10
        while len(self.epochs) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.waited = getattr(self, "waited", []) + [len(self.epochs)]


def test_a_script_s_steps_are_recorded_as_printed_while_the_driver_is_slow_to_take_them(tmp_path):
    path = script_grid(tmp_path, {"ckpt.py": CHECKPOINTING}, {"run": [sys.executable, "ckpt.py", "60", "{seed}"]})
    result, session = train_once(path, WaitingSession())
    assert session.waited[0] == 6  # the first wait saw every step recorded, not only the first
    assert [e["step"] for e in session.epochs] == [10, 20, 30, 40, 50, 60]


def test_a_script_paused_at_a_rung_is_stopped_before_it_trains_past_what_is_recorded(tmp_path):
    # A busy driver takes 0.5 s to take each step; the rung is 25. The script, killed at its step
    # 30, is resumed from its own checkpoint there: had it gone on to 40 meanwhile, the next
    # attempt would resume past a step the run never recorded.
    from orchestrator.run.session import Paused

    path = script_grid(tmp_path, {"ckpt.py": CHECKPOINTING},
                       {"run": [sys.executable, "ckpt.py", "{steps}", "{seed}"], "resume": "--resume", "steps": "steps",
                        "parameters": {"steps": 60}})
    grid = load_grid(path)
    run = RunDir(str(tmp_path / "runs"))
    session = StoredSession(run, "t", on_report=lambda metrics: time.sleep(0.5), until=25)
    session.start()
    with pytest.raises(Paused):
        grid.workload.train(grid.workload.config(**grid.trials[0].config), session)
    session.close()
    assert [e["step"] for e in session.epochs] == [10, 20, 30]
    with session.files() as files:
        assert open(os.path.join(files, "step")).read() == "30"


def test_a_retry_of_a_script_reporting_steps_says_the_step_it_resumes_after(tmp_path):
    # Its log said "after epoch 2" beside the script's own "resumed from step 20".
    path = script_grid(tmp_path, {"ckpt.py": CHECKPOINTING},
                       {"run": [sys.executable, "ckpt.py", "{steps}", "{seed}"], "resume": "--resume", "steps": "steps",
                        "parameters": {"steps": 40}})
    grid = load_grid(path)
    config = grid.workload.config(**grid.trials[0].config)
    run = RunDir(str(tmp_path / "runs"))
    def killed_after_step_20(metrics):  # as a lost node ends an attempt
        if metrics["step"] == 20:
            raise KeyboardInterrupt

    first = StoredSession(run, "t", on_report=killed_after_step_20)
    first.start()
    with pytest.raises(KeyboardInterrupt):
        grid.workload.train(config, first)
    first.close()
    retry = StoredSession(run, "t")
    retry.start()
    grid.workload.train(config, retry)
    retry.close()
    said = [line.split(" ", 2)[2] for line in (tmp_path / "runs" / "trials" / "t" / "trial.log").read_text().splitlines()]
    assert said[said.index("attempt 2 on " + socket.gethostname()) + 1] == "resumed from the checkpoint after step 20"


class StoppedSession(MemorySession):
    """Raises at the first epoch, as Ray Tune's report does in a trial it stops."""

    def announce(self):
        if self.epochs:
            raise SystemExit(0)


def test_no_process_of_a_script_outlives_its_trial(tmp_path):
    # The script starts a helper (a data-loading worker, say) and trains until stopped.
    script = """\
        import subprocess, sys, time
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
        for epoch in range(1, 10_000):
            print('ABLATE {"epoch": %d}' % epoch, flush=True)
            time.sleep(0.1)
        """
    marker = f"marker-{tmp_path.name}"
    path = script_grid(tmp_path, {"forever.py": script}, {"run": [sys.executable, "forever.py", marker + "-{seed}"]})
    try:
        with pytest.raises(SystemExit):
            train_once(path, StoppedSession())
    finally:
        left = none_left(marker, within=10)
    assert not left, "processes of a stopped trial were still running"

    # A script that exits leaving a process behind: that one is ended with the trial too.
    script = """\
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
        print('ABLATE {"val_error": 0.5}')
        """
    path = script_grid(tmp_path, {"leaves.py": script}, {"run": [sys.executable, "leaves.py", marker + "-{seed}"]})
    try:
        result, _ = train_once(path)
    finally:
        left = none_left(marker, within=10)
    assert result["val_error"] == 0.5 and not left


@pytest.mark.parametrize("stopped", [False, True])
def test_a_process_a_script_starts_in_a_session_of_its_own_ends_with_its_trial(tmp_path, stopped):
    # A daemon (start_new_session) leaves the script's process group, holding its output open: the
    # trial ends all the same, when the script exits or is stopped, and takes it along.
    script = """\
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]], start_new_session=True)
        print('ABLATE {"epoch": 1, "val_error": 0.5}', flush=True)
        time.sleep(float(sys.argv[2]))
        """
    marker = f"marker-{tmp_path.name}"
    path = script_grid(tmp_path, {"daemon.py": script},
                       {"run": [sys.executable, "daemon.py", marker + "-{seed}", "600" if stopped else "0"]})
    try:
        if stopped:
            with pytest.raises(SystemExit):
                train_once(path, StoppedSession())
        else:  # in a thread: a trial that waits for the daemon's end of its output would never end
            ended = []
            trial = threading.Thread(target=lambda: ended.append(train_once(path)), daemon=True)
            trial.start()
            trial.join(timeout=60)
            assert ended and ended[0][0]["val_error"] == 0.5, "the trial did not end when its script did"
    finally:
        left = none_left(marker, within=10)
    assert not left, "a process the script started in a session of its own was still running"


def test_a_process_that_clears_its_environment_escapes_but_its_trial_still_ends(tmp_path):
    # Nothing marks it as the trial's: the output it holds open is read for a while, then the trial ends.
    script = """\
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]], start_new_session=True,
                         env={})
        print('ABLATE {"epoch": 1, "val_error": 0.5}', flush=True)
        """
    marker = f"marker-{tmp_path.name}"
    path = script_grid(tmp_path, {"clears.py": script}, {"run": [sys.executable, "clears.py", marker + "-{seed}"]})
    ended = []
    trial = threading.Thread(target=lambda: ended.append(train_once(path)), daemon=True)
    try:
        trial.start()
        trial.join(timeout=60)
    finally:
        none_left(marker, within=0)  # it escaped: this test ends it, by PID
    assert ended and ended[0][0]["val_error"] == 0.5, "the trial did not end when its script did"


def test_trial_files_on_s3_reach_the_next_attempt(s3):  # noqa: F811 - the fixture
    _, query = s3
    run = RunDir(f"s3://results/runs/files?{query}")
    first = StoredSession(run, "t1")
    with first.files() as directory:
        Path(directory, "checkpoint.pt").write_bytes(b"epoch 1")
        first.report({"epoch": 1})  # sent with the report's files: the node may be lost before the attempt ends
        first.flush()
        assert run.read_bytes(run.trial_file("t1", "files", "checkpoint.pt")) == b"epoch 1"
        Path(directory, "logs").mkdir()
        Path(directory, "logs", "last.txt").write_text("bye")
    with StoredSession(run, "t1").files() as directory:
        assert Path(directory, "checkpoint.pt").read_bytes() == b"epoch 1"
        assert Path(directory, "logs", "last.txt").read_text() == "bye"


# -- through `ablate run`, on local Ray ------------------------------------------------------------

def test_a_grid_over_scripts_end_to_end(tmp_path):
    shutil.copy(ROOT / "examples" / "digits.py", tmp_path)
    path = script_grid(tmp_path, SCRIPTS, {
        "run": "python {script} --lr {lr} --epochs {epochs} --seed {seed} --out {trial_dir} --crash-once-at-epoch {crash_at}",
        "parameters": {"script": "digits.py", "lr": {"type": "float", "default": 0.1, "gt": 0},
                       "epochs": {"type": "int", "default": 3, "ge": 1}, "crash_at": {"type": "int", "default": 0, "ge": 0}},
        "epochs": "epochs",
        "metrics": {"patterns": PATTERNS}},
        axes={"script": ["digits.py", "plain.py", "fails.py", "silent.py"]},
        fixed={"crash_at": 2},  # digits.py SIGKILLs itself once at epoch 2; the others ignore it
        resources={"cpus": 1}, max_failures=1)
    storage = tmp_path / "runs"
    result = ablate("run", path, "--storage", storage, "--quiet", env=PATH)
    assert result.returncode == 1, result.stderr
    assert "scripts: 2 completed, 2 failed (4 run now, 0 already done)" in result.stdout

    run_dir = storage / "scripts"
    rows = pd.read_parquet(run_dir / "trials.parquet")
    by = {row.script: row for row in rows.itertuples()}
    digits, plain, fails, silent = by["digits.py"], by["plain.py"], by["fails.py"], by["silent.py"]
    assert digits.status == "completed" and digits.epochs_completed == 3
    assert 0 < digits.val_error < 0.5 and 0 < digits.test_error < 0.5  # it learned
    # Killed at epoch 2, retried, and resumed from the checkpoint it saved in its trial directory.
    assert digits.attempts == 2
    log = (run_dir / "trials" / digits.trial_id / "trial.log").read_text()
    assert "the command was killed by SIGKILL" in log and "resuming after epoch 1" in log
    assert (plain.status, plain.val_error, plain.test_error) == ("completed", 0.167, 0.125)
    assert (run_dir / "trials" / plain.trial_id / "files" / "who.txt").read_text() == plain.trial_id

    assert fails.status == silent.status == "failed" and fails.attempts == silent.attempts == 2
    assert fails.error == "the command exited with code 3; its last output: loading data | ValueError: no such file: data.csv"
    assert "the command printed no metric (expected lines with 'ABLATE' and a JSON object" in silent.error
    assert "ValueError: no such file: data.csv" in (run_dir / "trials" / fails.trial_id / "trial.log").read_text()

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert sorted(epochs[epochs["trial_id"] == digits.trial_id]["epoch"]) == [1, 2, 3]  # each once, across the retry
    assert list(epochs[epochs["trial_id"] == plain.trial_id]["val_error"]) == [0.5, 0.25, 0.167]

    summary = ablate("summarize", run_dir, "--rows", "script", "-f", "csv")
    assert summary.returncode == 0, summary.stderr
    assert "digits.py" in summary.stdout and "plain.py" in summary.stdout
    status = ablate("status", run_dir)
    assert status.returncode == 0 and "4 finished of 4: 2 completed, 2 failed" in status.stdout


def test_ctrl_c_leaves_no_process_of_the_script(tmp_path):
    script = """\
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
        for epoch in range(1, 10_000):
            print('ABLATE {"epoch": %d, "val_error": 0.5}' % epoch, flush=True)
            time.sleep(0.2)
        """
    marker = f"marker-{tmp_path.name}"
    path = script_grid(tmp_path, {"forever.py": script}, {"run": ["python", "forever.py", marker + "-{seed}"]},
                       seeds=[0, 1], resources={"cpus": 1})
    storage = tmp_path / "runs"
    driver = subprocess.Popen([str(Path(sys.executable).parent / "ablate"), "run", str(path), "--storage", str(storage)],
                              cwd=ROOT, env={**os.environ, **PATH}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                len(processes_with(marker)) >= 4 and any(storage.glob("scripts/trials/*/progress.jsonl"))):
            time.sleep(0.1)
        assert len(processes_with(marker)) >= 4, "the scripts never started"  # two trials, each with its helper
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
        left = none_left(marker)
    assert driver.returncode == 1, out
    assert "trials unfinished: run the same command again to resume them" in out
    # Said as Ctrl-C comes, not only once Tune has waited for the trials to end.
    assert "stopping: running trials end within about 15 s" in out, out
    assert not left, "processes of the script outlived `ablate run`"
    logs = [log.read_text() for log in storage.glob("scripts/trials/*/trial.log")]
    # A worker that unwinds before Ray ends it says why it stopped (one ended first cannot), not
    # that a scheduler stopped it.
    stops = [line for log in logs for line in log.splitlines() if " stopped " in line]
    assert all("stopped by the driver (a scheduler's decision, or the run stopping" in line for line in stops), logs


def test_a_script_that_prints_only_losses_end_to_end(tmp_path):
    """examples/losses.py prints `step 500 train loss: ... val loss: ... test loss: ...` and knows
    nothing of ablate; examples/losses.yaml reads those lines and judges trials by val_loss."""
    storage = tmp_path / "my runs"  # its trials' own directories, `--out {trial_dir}`, have a space too
    result = ablate("run", ROOT / "examples" / "losses.yaml", "--storage", storage, "--quiet", env=PATH)
    assert result.returncode == 0, result.stderr
    assert "losses: 12 completed (12 run now, 0 already done)" in result.stdout
    assert f"tables: ablate summarize '{storage / 'losses'}'\n" in result.stdout  # what to type next, to paste
    # Each finished trial's line names the value it shows: the first report metric, test_loss.
    assert re.search(r"completed: degree=3 lr=0.1 seed=0 -> test_loss 0\.\d+\n", result.stdout), result.stdout
    run_dir = storage / "losses"
    rows = pd.read_parquet(run_dir / "trials.parquet")
    assert {"train_loss", "val_loss", "test_loss"} <= set(rows.columns) and rows["test_loss"].notna().all()
    assert set(rows["steps_completed"]) == {1000} and set(rows["epochs_completed"]) == {11}  # a report every 100
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert epochs["step"].dtype == "int64" and sorted(set(epochs["step"])) == list(range(0, 1001, 100))

    summary = ablate("summarize", run_dir, "-f", "markdown")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("**test_loss, mean ± std over seeds (n) and its 95% t-interval**")
    assert "(n=2)" in summary.stdout and "(n=0)" not in summary.stdout
    compared = ablate("compare", run_dir, "--baseline", "degree=1", "-f", "json")
    assert compared.returncode == 0, compared.stderr
    differences = json.loads(compared.stdout)
    # A cubic fits sin(3x) better than a line at every learning rate: lower test loss, better.
    assert len(differences) == 3 and all(d["difference"] < 0 and d["better"] for d in differences)
    assert ablate("plot", run_dir, "-o", tmp_path / "losses.png").returncode == 0
    assert (tmp_path / "losses.png").stat().st_size > 10_000
    status = ablate("status", run_dir)
    assert status.returncode == 0 and "12 finished of 12: 12 completed" in status.stdout
    trial_id = rows.trial_id[(rows.degree == 3) & (rows.lr == 0.1) & (rows.seed == 0)].item()
    log = ablate("log", run_dir, "--trial", trial_id)
    assert log.returncode == 0, log.stderr
    assert log.stdout.splitlines()[-1].endswith(" finished: completed")  # the script's output, then its end
    assert "| step 1000 train loss: 0.0122 val loss: 0.0145 test loss: 0.0121\n" in log.stdout
    unknown = ablate("log", run_dir, "--trial", "nope")
    assert unknown.returncode == 1 and unknown.stderr.startswith(f"error: {run_dir}: no trial 'nope' has started "
                                                                 "(those that have: ")


def test_a_script_that_must_be_told_to_resume_is_told(tmp_path):
    # It starts over unless given --resume, and crashes once after its checkpoint at step 2.
    script = """\
        import argparse, os, sys
        parser = argparse.ArgumentParser()
        parser.add_argument("--out")
        parser.add_argument("--resume", action="store_true")
        args = parser.parse_args()
        checkpoint = os.path.join(args.out, "step")
        start = int(open(checkpoint).read()) if args.resume else 0
        for step in range(start, 5):
            with open(checkpoint, "w") as f:
                f.write(str(step + 1))
            print(f"step {step} loss {1 / (step + 1):.3f}", flush=True)
            if step == 2 and not os.path.exists(os.path.join(args.out, "crashed")):
                open(os.path.join(args.out, "crashed"), "w").close()
                sys.exit(1)
        """
    path = script_grid(tmp_path, {"resumable.py": script}, {
        "run": [sys.executable, "resumable.py", "--out", "{trial_dir}"], "resume": ["--resume"],
        "metrics": {"patterns": [r"^step (?P<step>\d+) loss (?P<loss>[\d.]+)"]}}, metric="loss", max_failures=1)
    storage = tmp_path / "runs"
    result = ablate("run", path, "--storage", storage, "--quiet")
    assert result.returncode == 0, result.stderr
    (row,) = pd.read_parquet(storage / "scripts" / "trials.parquet").itertuples()
    assert row.status == "completed" and row.attempts == 2 and row.loss == 0.2
    log = (storage / "scripts" / "trials" / row.trial_id / "trial.log").read_text()
    first, second = [line for line in log.splitlines() if " running " in line]
    assert not first.split(" (in ")[0].endswith("--resume") and second.split(" (in ")[0].endswith("--resume")
    epochs = pd.read_parquet(storage / "scripts" / "epochs.parquet")
    assert list(epochs["step"]) == [0, 1, 2, 3, 4]  # each once, across the crash


def test_a_script_that_failed_before_its_first_report_is_not_told_to_resume(tmp_path):
    # It writes its arguments first, as many scripts do, and fails once before its first epoch (a
    # flaky start): its retry has no checkpoint of its to resume from, only args.json.
    script = """\
        import argparse, json, os, sys
        parser = argparse.ArgumentParser()
        parser.add_argument("--out")
        parser.add_argument("--resume", action="store_true")
        parser.add_argument("seed")
        args = parser.parse_args()
        json.dump(vars(args), open(os.path.join(args.out, "args.json"), "w"))
        start = json.load(open(os.path.join(args.out, "last.json")))["epoch"] if args.resume else 0
        if not os.path.exists(os.path.join(args.out, "flaked")):
            open(os.path.join(args.out, "flaked"), "w").close()
            sys.exit("RuntimeError: NCCL error: unhandled system error")
        for epoch in range(start + 1, 4):
            json.dump({"epoch": epoch}, open(os.path.join(args.out, "last.json"), "w"))
            print('ABLATE {"epoch": %d, "val_error": %f}' % (epoch, 0.5 / epoch), flush=True)
            if epoch == 2 and not os.path.exists(os.path.join(args.out, "crashed")):
                open(os.path.join(args.out, "crashed"), "w").close()
                sys.exit("killed")
        """
    path = script_grid(tmp_path, {"flaky.py": script}, {
        "run": [sys.executable, "flaky.py", "--out", "{trial_dir}", "{seed}"], "resume": ["--resume"]})
    session = MemorySession()
    for message in ("NCCL error", "killed"):
        with pytest.raises(CommandFailed, match=message):
            train_once(path, session)
    result, _ = train_once(path, session)  # after a report, told to resume: each epoch once
    assert [e["epoch"] for e in session.epochs] == [1, 2, 3] and result["val_error"] == 0.166667
    first, second, third = [line for line in session.lines if line.startswith("running ")]
    assert " --resume " not in first + second and " --resume " in third


def test_a_retry_after_a_failure_before_any_report_is_shown_from_its_start(tmp_path):
    script = """\
        import os, sys
        marker = os.path.join(os.environ["ABLATE_TRIAL_DIR"], "flaked")
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit("RuntimeError: CUDA error: initialization error")
        print('ABLATE {"epoch": 1, "val_error": 0.5}')
        """
    path = script_grid(tmp_path, {"flaky.py": script}, {"run": [sys.executable, "flaky.py", "{seed}"]}, max_failures=1)
    result = ablate("run", path, "--storage", tmp_path / "runs", "--quiet")
    assert result.returncode == 0, result.stderr
    # Why, as its failure would say it: it said `retrying: after a failure`, which the log alone explained.
    assert re.search(r"\] \w+ retrying: the command exited with code 1; its last output: RuntimeError: CUDA error: "
                     r"initialization error, from its start\n", result.stdout), result.stdout


def test_a_script_that_crashes_in_its_teardown_after_its_training_runs_once_and_the_run_says_so(tmp_path):
    # Retried with max_failures, it trained both epochs again, then was recorded failed.
    path = script_grid(tmp_path, {"teardown.py": TEARDOWN}, {
        "run": [sys.executable, "teardown.py", "{epochs}", "epoch", "{seed}"], "parameters": {"epochs": 2},
        "epochs": "epochs"}, max_failures=1)
    result = ablate("run", path, "--storage", tmp_path / "runs", "--quiet")
    assert result.returncode == 0, result.stderr
    said = "the command exited with code 3 after its last report (epoch 2 of 2)"
    assert re.search(rf"\] \w+ completed: seed=0 -> val_error 0\.25; {re.escape(said)}\n", result.stdout), result.stdout
    assert "retrying" not in result.stdout and "scripts: 1 completed (1 run now, 0 already done)" in result.stdout
    row = pd.read_parquet(tmp_path / "runs" / "scripts" / "trials.parquet").iloc[0]
    assert (row.status, row.status_reason, row.attempts, row.epochs_completed) == ("completed", said, 1, 2)


def test_a_script_that_hangs_is_ended_at_its_trial_timeout_retried_and_leaves_no_process(tmp_path):
    # Seed 0 hangs after its first epoch (a data loader that never returns) while the flag file
    # exists; seed 1 finishes. Each start is logged, to count what ran.
    script = """\
        import os, subprocess, sys, time
        marker, seed, starts, flag = sys.argv[1:]
        with open(starts, "a") as f:
            f.write(seed + "\\n")
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])  # a helper in its group
        print('ABLATE {"epoch": 1, "val_error": 0.5}', flush=True)
        if seed == "0" and os.path.exists(flag):
            time.sleep(100_000)
        print('ABLATE {"epoch": 2, "val_error": 0.25}', flush=True)
        """
    marker = f"marker-{tmp_path.name}"
    starts, flag = tmp_path / "starts.log", tmp_path / "hang"
    flag.touch()
    path = script_grid(tmp_path, {"hangs.py": script},
                       {"run": [sys.executable, "hangs.py", marker + "-{seed}", "{seed}", str(starts), str(flag)]},
                       seeds=[0, 1], resources={"cpus": 1}, max_failures=1, trial_timeout=8)
    storage = tmp_path / "runs"
    try:
        result = ablate("run", path, "--storage", storage, "--quiet")
    finally:
        left = none_left(marker, within=10)
    assert result.returncode == 1, result.stderr
    assert not left, "processes of a timed-out trial outlived it"
    assert "scripts: 1 completed, 1 failed (2 run now, 0 already done)" in result.stdout
    assert "retrying: timed out after 8 s (trial_timeout), from its last checkpoint\n" in result.stdout
    rows = pd.read_parquet(storage / "scripts" / "trials.parquet").set_index("seed")
    assert rows.loc[0, "status"] == "failed" and rows.loc[0, "attempts"] == 2  # retried once, under max_failures
    assert rows.loc[0, "error"] == "timed out after 8 s (trial_timeout)"
    log = (storage / "scripts" / "trials" / rows.loc[0, "trial_id"] / "trial.log").read_text()
    assert log.count("failed: timed out after 8 s (trial_timeout); its worker was ended") == 2
    assert rows.loc[1, "status"] == "completed"

    flag.unlink()  # what hung is fixed: the failed trial runs again, the finished one does not
    again = ablate("run", path, "--storage", storage, "--quiet", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert "scripts: 2 completed (1 run now, 1 already done)" in again.stdout
    assert sorted(starts.read_text().split()) == ["0", "0", "0", "1"]  # two timed-out attempts, then one that finished
    assert not none_left(marker, within=10)


def test_a_completed_trial_without_a_metric_its_grid_declares_fails_saying_so(tmp_path):
    from orchestrator.run.trial import run_trial
    from orchestrator.store import records

    path = script_grid(tmp_path, SCRIPTS, {"run": [sys.executable, "plain.py", "{seed}"], "metrics": {"patterns": PATTERNS}},
                       metric="val_loss")
    grid = load_grid(path)
    trial = grid.trials[0]
    # Recorded failed without raising, so not retried: each retry would train it again to end the
    # same way (a name the grid got wrong). Its log says so in one line, without ablate's traceback.
    run_trial({"trial": {"trial_id": trial.trial_id, "config": trial.config}}, run_uri=str(tmp_path / "runs"),
              workload_ref=grid.workload_ref, grid_name=grid.name, report=lambda metrics: None,
              objective=grid.objective)
    said = "no value of val_loss in its output (it gave: test_error, train_loss, val_error)"
    (row,) = records.read_trials(RunDir(str(tmp_path / "runs"))).to_pylist()
    assert (row["status"], row["error"]) == ("failed", said)
    log = (tmp_path / "runs" / "trials" / trial.trial_id / "trial.log").read_text()
    assert log.endswith(f" failed: {said} (not retried: each retry would end the same way)\n")
    assert "Traceback" not in log


def test_a_failed_script_s_log_says_why_in_one_line_without_ablate_s_traceback(tmp_path):
    from orchestrator.run.trial import run_trial

    path = script_grid(tmp_path, SCRIPTS, {"run": [sys.executable, "fails.py", "{seed}"]})
    grid = load_grid(path)
    trial = grid.trials[0]
    with pytest.raises(CommandFailed):
        run_trial({"trial": {"trial_id": trial.trial_id, "config": trial.config}}, run_uri=str(tmp_path / "runs"),
                  workload_ref=grid.workload_ref, grid_name=grid.name, report=lambda metrics: None)
    log = (tmp_path / "runs" / "trials" / trial.trial_id / "trial.log").read_text()
    assert log.endswith(" failed: the command exited with code 3; its last output: loading data | "
                        "ValueError: no such file: data.csv\n")
    assert "Traceback" not in log and "orchestrator" not in log


@pytest.mark.parametrize("name, last, declared", [("val_loss", "nan", True), ("val_loss", "inf", True),
                                                   ("val_error", "nan", False)])  # the interface's default metric
def test_a_script_whose_metric_is_not_finite_is_diverged_not_completed(tmp_path, name, last, declared):
    from orchestrator.run.trial import run_trial
    from orchestrator.store import records

    script = f"""\
        print("epoch 1: {name} 2.3")
        print("epoch 2: {name} {last}")
        """
    path = script_grid(tmp_path, {"blows_up.py": script},
                       {"run": [sys.executable, "blows_up.py", "{seed}"],
                        "metrics": {"patterns": [rf"^epoch (?P<epoch>\d+): {name} (?P<{name}>\S+)"]}},
                       **({"metric": name} if declared else {}))
    grid = load_grid(path)
    trial = grid.trials[0]
    run_trial({"trial": {"trial_id": trial.trial_id, "config": trial.config}}, run_uri=str(tmp_path / "runs"),
              workload_ref=grid.workload_ref, grid_name=grid.name, report=lambda metrics: None,
              objective=grid.objective)
    row = records.read_trials(RunDir(str(tmp_path / "runs"))).to_pylist()[0]
    assert (row["status"], row["status_reason"], row["epochs_completed"]) == ("diverged", f"{name} is {last}", 2)


def test_a_script_that_prints_only_final_values_runs_without_tunes_own_lines(tmp_path):
    path = script_grid(tmp_path, {"final.py": 'print("final accuracy: 0.9125")\n'},
                       {"run": [sys.executable, "final.py", "{seed}"],
                        "metrics": {"patterns": [r"^final accuracy: (?P<accuracy>[\d.]+)"]}},
                       metric="accuracy", mode="max", resources={"cpus": 1})
    storage = tmp_path / "runs"
    result = ablate("run", path, "--storage", storage, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Last result" not in result.stdout  # Tune's "Trial X completed. Last result: " for a trial that reported nothing
    (row,) = pd.read_parquet(storage / "scripts" / "trials.parquet").itertuples()
    assert row.status == "completed" and row.accuracy == 0.9125
