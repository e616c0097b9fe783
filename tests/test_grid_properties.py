"""Whatever a grid file holds, `ablate plan` answers with a plan or one `error:` line, quickly.

Generated files are mostly near-valid (a valid grid with random values put at random keys, so the
checks of every parameter are reached), then broken at the text or byte level (duplicated lines,
anchors and aliases, deep nesting, other encodings, truncation), plus fully random YAML and bytes.
Examples are derandomized, so CI sees the same 200 every time; the deadline shows each finishes
in well under a second.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan.execution import RESOURCE_KEYS
from orchestrator.plan.grid import TOP_KEYS
from workloads.allcnn import Config

PARAMS = [f.name for f in dataclasses.fields(Config)]
VALID = {"name": "t", "axes": {"model": ["A", "C"], "lr": [0.1, 0.01]},
         "fixed": {"dataset": "synthetic", "epochs": 2, "lr_milestones": [1], "train_size": 1000, "val_size": 100},
         "seeds": [0, 1], "resources": {"cpus": 1}, "max_failures": 1}

keys = st.sampled_from([*TOP_KEYS, *RESOURCE_KEYS, *PARAMS]) | st.text(max_size=6) | st.integers(-2, 2) | st.none()
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 400), st.integers(), st.floats(),
    st.sampled_from(["A", "C", "all", "synthetic", "cifar10", "cpu", "cuda:1", "auto", "off", "[/]", "", "1.5"]),
    st.text(max_size=10))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=10)


def mostly(likely, other, percent=80):
    """`likely` in about `percent` % of draws: most mutations must hit real keys to reach the checks."""
    return st.integers(0, 99).flatmap(lambda n: likely if n < percent else other)


def typed(key):
    """Values of the parameter's own type, in and out of its constraints, so that those are reached."""
    default = getattr(Config(), key, None) if isinstance(key, str) else None
    if isinstance(default, bool) or key not in PARAMS + ["repeats", "max_trials", "max_failures", *RESOURCE_KEYS]:
        return scalars
    if isinstance(default, float) or key in ("cpus", "gpus"):
        return st.floats() | st.integers(-2, 3) | st.sampled_from([0.0, 0.5, 0.99, 1.0, 1.5, 2.0, 16.0])
    if isinstance(default, str):
        choices = next(f for f in dataclasses.fields(Config) if f.name == key).metadata.get("choices", ())
        return st.sampled_from([*choices, "cpu", "cuda:0", "cuda:x", "quantum", ""]) | st.text(max_size=6)
    if isinstance(default, list):
        return st.lists(st.integers(-2, 400), max_size=4)
    return st.integers(-5, 70_000) | st.integers() | st.sampled_from([0, 1, 2, 100_000_000])


@st.composite
def near_valid(draw) -> dict:
    grid = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([None, "axes", "fixed", "fixed", "fixed", "resources", "include", "exclude"]))
        key = draw(mostly(st.sampled_from(PARAMS), keys))
        if section is None:
            key = draw(mostly(st.sampled_from(TOP_KEYS), keys))
            grid[key] = draw(mostly(typed(key), values, 60))
        elif section == "axes" and isinstance(grid.get(section), dict):
            grid[section][key] = draw(mostly(st.lists(typed(key), min_size=1, max_size=3), values))
        elif section in ("include", "exclude"):
            grid[section] = [{"model": "C", "lr": 0.1, key: draw(mostly(typed(key), values))}]
        elif isinstance(grid.get(section), dict):
            if section == "resources":
                key = draw(mostly(st.sampled_from(RESOURCE_KEYS), keys))
            grid[section][key] = draw(mostly(typed(key), values))
        if draw(st.integers(0, 9)) == 0 and grid:
            grid.pop(draw(st.sampled_from(sorted(grid, key=str))), None)
    return grid


@st.composite
def broken_text(draw, text: str) -> str:
    lines = text.splitlines()
    how = draw(mostly(st.just("as is"), st.sampled_from(["duplicate a line", "alias", "nest", "cut"]), 60))
    if how == "duplicate a line" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif how == "alias":
        depth = draw(st.integers(1, 8))
        lines += ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, depth)]
    elif how == "nest":
        depth = draw(st.integers(1, 3000))
        lines += ["fixed: " + "[" * depth + "]" * depth]
    elif how == "cut":
        return text[:draw(st.integers(0, len(text)))]
    return "\n".join(lines) + "\n"


near_valid_files = near_valid().map(lambda g: yaml.safe_dump(g, allow_unicode=True)).flatmap(broken_text).flatmap(
    lambda text: mostly(st.just("utf-8"), st.sampled_from(["utf-16", "latin-1"]), 90).map(
        lambda encoding: text.encode(encoding, errors="replace")))
random_files = st.one_of(values.map(lambda v: yaml.safe_dump(v).encode()), st.text(max_size=200).map(str.encode),
                         st.binary(max_size=200))
grid_files = mostly(near_valid_files, random_files, 85)


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "grid.yaml"
    path.write_text(yaml.safe_dump(VALID))
    assert CliRunner().invoke(app, ["plan", str(path)]).exit_code == 0  # imports torch once, before the clock runs
    return path


@settings(max_examples=200, deadline=1000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=grid_files)
def test_plan_gives_a_plan_or_one_error_line(grid_path, raw):
    grid_path.write_bytes(raw)
    result = CliRunner().invoke(app, ["plan", str(grid_path)])
    assert result.exit_code in (0, 2), (result.exception, result.stderr)
    # `pytest --hypothesis-show-statistics` shows which checks the examples reached.
    event("plan" if result.exit_code == 0 else result.stderr.removeprefix(f"error: {grid_path}: ")[:40])
    if result.exit_code == 0:
        assert re.search(r" trials? of workload ", result.stdout) and result.stderr == ""
    else:
        assert result.stderr.startswith(f"error: {grid_path}: ") and result.stderr.count("\n") == 1, result.stderr
