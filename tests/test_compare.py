"""`ablate compare` (differences paired by seed), the study's claims under `ablate summarize`, and
the t-interval they rest on."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.results import stats
from orchestrator.results.compare import check_claims, compare
from orchestrator.results.tables import Layout, load
from orchestrator.store.rundir import RunDir
from tests.results_fixture import QUARTER_WIDTH, RULES_GRID, SUBSET, rules_result, write_fixture, write_run
from workloads.allcnn import CLAIMS

LAYOUT = Layout(rows="model", cols="variant", tables=["dataset", "augmentation"])


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def results_of(tmp_path, trials, **kwargs):
    write_fixture(tmp_path / "fixture", trials=trials, **kwargs)
    return load(RunDir(str(tmp_path / "fixture")))


@pytest.mark.parametrize("df, t", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157), (29, 2.045230)])
def test_t_quantiles_are_the_published_table(df, t):
    assert stats.t_quantile(df) == pytest.approx(t, abs=1e-6)


# Seed-to-seed spread (1.6 points) swamps the half-point gain of "all", but every seed gains it.
BASE = [0.10, 0.12, 0.14, 0.11, 0.13]
GAIN = [-0.005, -0.0045, -0.0055, -0.0052, -0.0048]
PAIRED = {**{("C", "base", 0.01, s): ("completed", 0.2, e) for s, e in enumerate(BASE)},
          **{("C", "all", 0.01, s): ("completed", 0.2, e + g) for s, (e, g) in enumerate(zip(BASE, GAIN))}}


def test_differences_are_paired_by_seed(tmp_path):
    (d,) = compare(results_of(tmp_path, PAIRED), LAYOUT, "variant", "base")
    # By hand: the gains average -0.005 with std 0.00038079 (squares sum to 5.8e-7, over 4);
    # -0.005 ± t(0.975, 4) · 0.00038079 / √5 = -0.005 ± 2.776445 · 0.00017029 = -0.005 ± 0.00047281.
    assert d.n == 5 and d.mean == pytest.approx(-0.005)
    assert d.interval == pytest.approx((-0.0054728, -0.0045272), abs=1e-7)
    assert d.verdict == "lower"
    # Unpaired, the same numbers show nothing: the difference of means ± t(0.975, 8) · its standard error.
    all_ = [e + g for e, g in zip(BASE, GAIN)]
    se = math.sqrt(_variance(BASE) / 5 + _variance(all_) / 5)
    assert abs(d.mean) < stats.t_quantile(8) * se


def _variance(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def test_seeds_run_on_one_side_only_are_left_out(tmp_path):
    trials = {k: v for k, v in PAIRED.items() if not (k[1] == "base" and k[3] >= 3)}
    (d,) = compare(results_of(tmp_path, trials), LAYOUT, "variant", "base")
    assert d.n == 3 and d.compared.n == 5 and d.baseline.n == 3


def test_seeds_that_ran_with_another_checkpoint_every_are_paired_too(tmp_path):
    # checkpoint_every changed between seeds 0-1 and 2-4; the trial id, and what a trial computes,
    # do not depend on it.
    later = {key: {"checkpoint_every": 5} for key in PAIRED if key[3] >= 2}
    (d,) = compare(results_of(tmp_path, PAIRED, settings=later), LAYOUT, "variant", "base")
    assert d.n == 5 and d.mean == pytest.approx(-0.005) and d.verdict == "lower"
    assert d.baseline.chosen == d.compared.chosen == {}


def test_an_interval_that_includes_zero_and_a_single_seed_are_said_as_such(tmp_path):
    trials = {("C", "base", 0.01, 0): ("completed", 0.2, 0.10), ("C", "base", 0.01, 1): ("completed", 0.2, 0.12),
              ("C", "all", 0.01, 0): ("completed", 0.2, 0.11), ("C", "all", 0.01, 1): ("completed", 0.2, 0.10),
              ("A", "base", 0.01, 0): ("completed", 0.2, 0.10), ("A", "all", 0.01, 0): ("completed", 0.2, 0.05)}
    by_model = {d.coords["model"]: d for d in compare(results_of(tmp_path, trials), LAYOUT, "variant", "base")}
    assert by_model["C"].verdict == "inconclusive" and by_model["C"].interval[0] < 0 < by_model["C"].interval[1]
    assert by_model["A"].verdict == "n too small" and by_model["A"].mean == pytest.approx(-0.05)
    markdown = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "markdown").stdout
    # The grid plans seeds 0 and 1 for every model: A's seed 1 is not run yet, on either side.
    assert ("| A | all | 10.00 (n=1)<br>1 of 2 seeds did not finish (no result yet) | 5.00 (n=1)<br>1 of 2 seeds did "
            "not finish (no result yet) | -5.00 (n=1)<br>95% CI: n too small | n too small |") in markdown
    assert "interval includes 0 |" in markdown


def test_a_value_that_blew_up_to_inf_is_said_not_finite_not_inconclusive(tmp_path):
    trials = {**{("C", "base", 0.01, s): ("completed", 0.2, 0.10) for s in range(3)},
              **{("C", "all", 0.01, s): ("completed", 0.2, math.inf if s == 1 else 0.11) for s in range(3)}}
    results = results_of(tmp_path, trials)
    (d,) = compare(results, LAYOUT, "variant", "base")
    assert d.verdict == "not finite" and d.interval is None and d.better is None
    assert {(c.verdict, c.reason) for c in check_claims(results, LAYOUT, CLAIMS)} == {("not finite", "a seed's value is inf")}
    markdown = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "markdown").stdout
    assert "| all | 10.00 (n=3) | inf (n=3) | +inf (n=3) | not finite: a seed's value is inf |" in markdown
    (record,) = json.loads(invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "json").stdout)
    assert record["verdict"] == "not finite" and record["ci_low"] is None and record["ci_high"] is None


def test_compare_command_in_every_format(tmp_path):
    write_fixture(tmp_path / "fixture", trials=PAIRED)
    table = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base")
    assert table.exit_code == 0
    assert "lower than base" in table.stdout and "paired by seed" in table.stdout
    markdown = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "markdown").stdout
    # What every row shares (one dataset, augmentation and model here) goes to the title.
    assert markdown.startswith("**dataset=cifar10, augmentation=none, model=C: test_error %: each variant minus "
                               "variant=base, paired by seed")
    assert "| all | 12.00 (n=5) | 11.50 (n=5) | -0.50 (n=5)<br>95% CI [-0.55, -0.45] | lower than base (better) |" in markdown
    assert r"\caption{dataset=cifar10" in invoke("compare", tmp_path / "fixture", "--baseline", "variant=base",
                                                 "-f", "latex").stdout
    (record,) = json.loads(invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "json").stdout)
    assert record == {"dataset": "cifar10", "augmentation": "none", "model": "C", "variant": "all",
                      "metric": "test_error", "baseline": "base", "baseline_status": "completed",
                      "baseline_mean": 0.12, "baseline_n": 5, "status": "completed", "mean": 0.115, "value_n": 5,
                      "difference": -0.005, "ci_low": -0.005473, "ci_high": -0.004527, "n": 5, "verdict": "lower",
                      "better": True, "baseline_notes": None, "notes": None}
    csv = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "csv").stdout
    assert csv.splitlines()[1] == ("cifar10,none,C,all,test_error,base,completed,0.12,5,completed,0.115,5,"
                                   "-0.005,-0.005473,-0.004527,5,lower,True,,")


def test_the_exports_say_what_each_side_rests_on_as_the_table_does(tmp_path):
    # all is 0.5 points better on every seed it has, but two of its five seeds diverged.
    trials = {k: (("diverged", None, None) if k[1] == "all" and k[3] >= 3 else v) for k, v in PAIRED.items()}
    write_fixture(tmp_path / "fixture", trials=trials)
    markdown = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "markdown").stdout
    assert "| all | 12.00 (n=5) | 11.50 (n=3)<br>2 of 5 seeds did not finish (diverged) | -0.50 (n=3)" in markdown
    (record,) = json.loads(invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "json").stdout)
    assert (record["baseline_n"], record["value_n"], record["n"]) == (5, 3, 3)
    assert record["notes"] == "2 of 5 seeds did not finish (diverged)" and record["baseline_notes"] is None


def test_each_side_keeps_its_learning_rate_chosen_on_validation(tmp_path):
    write_fixture(tmp_path / "fixture")  # A-base: lr 0.1 wins on validation, lr 0.01 on test
    records = json.loads(invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "json").stdout)
    a = next(r for r in records if r["model"] == "A")
    assert (a["baseline_chosen_lr"], a["chosen_lr"]) == (0.1, 0.01)
    assert a["baseline_mean"] == 0.125 and a["mean"] == 0.105 and a["difference"] == pytest.approx(-0.02)


@pytest.mark.parametrize("baseline, message", [
    ("variant", "error: --baseline 'variant': expected axis=value, e.g. variant=base\n"),
    ("colour=red", "error: --baseline 'colour=red': unknown axis 'colour' (axes: variant)\n"),
    ("seed=0", "error: --baseline 'seed=0': differences are paired by seed; compare another axis (axes: variant)\n"),
    ("variant=strided", "error: --baseline 'variant=strided': no trial has variant=strided (values: base, all)\n"),
])
def test_bad_baselines_are_one_line_errors(tmp_path, baseline, message):
    write_fixture(tmp_path / "fixture", trials=PAIRED)
    result = invoke("compare", tmp_path / "fixture", "--baseline", baseline)
    assert result.exit_code == 1 and result.stderr == message


# The paper's claims (workloads/allcnn/paper.py): All-CNN no worse than base for B and C, and no
# worse than ConvPool, each within half a point. Three seeds per cell, all under the paper's protocol.
def _seeds(model, variant, errors):
    return {(model, variant, 0.01, s): ("completed", 0.2, e) for s, e in enumerate(errors)}


CLAIMED = {**_seeds("B", "base", [0.100, 0.110, 0.105]),
           **_seeds("B", "all", [0.090, 0.099, 0.096]),  # 1 point better: holds
           **_seeds("B", "convpool", [0.088, 0.091, 0.091]),  # all - convpool = +0.2, +0.8, +0.5: can't tell yet
           **_seeds("C", "base", [0.100, 0.110, 0.105]),
           **_seeds("C", "all", [0.120, 0.131, 0.124]),  # 2 points worse: fails
           **_seeds("C", "convpool", [0.123, 0.133, 0.128])}  # all 0.3 better: holds


def test_claims_hold_fail_or_need_more_seeds(tmp_path):
    checks = check_claims(results_of(tmp_path, CLAIMED), LAYOUT, CLAIMS)
    verdicts = {(c.claim["baseline"], c.difference.coords["model"]): c.verdict for c in checks}
    # Model A is not in these results: its ConvPool claim is not asked.
    assert verdicts == {("base", "B"): "holds", ("base", "C"): "fails",
                        ("convpool", "B"): "not enough seeds", ("convpool", "C"): "holds"}
    assert all(c.comparable for c in checks)
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    claims = markdown[markdown.index("**The study's claims"):]
    assert ("| All-CNN no worse than the base network<br>all - base < +0.50 | "
            "dataset=cifar10, augmentation=none, model=C | +2.00 (n=3)<br>95% CI [+1.75, +2.25] | fails |") in claims
    assert "| not enough seeds (the interval reaches both sides of the tolerance) |" in claims
    records = [r for r in json.loads(invoke("summarize", tmp_path / "fixture", "-f", "json").stdout)
               if r["kind"] == "claim"]
    assert [(r["model"], r["baseline"], r["verdict"]) for r in records] == [
        ("B", "base", "holds"), ("C", "base", "fails"), ("B", "convpool", "not enough seeds"),
        ("C", "convpool", "holds")]


def test_a_claim_with_one_seed_has_not_enough_seeds(tmp_path):
    trials = {k: v for k, v in CLAIMED.items() if k[3] == 0}
    checks = check_claims(results_of(tmp_path, trials), LAYOUT, CLAIMS)
    assert {(c.verdict, c.reason) for c in checks} == {("not enough seeds", "n=1")}


def test_claims_checked_off_the_published_protocol_say_so(tmp_path):
    checks = check_claims(results_of(tmp_path, CLAIMED, fixed=QUARTER_WIDTH, data=SUBSET), LAYOUT, CLAIMS)
    assert checks and all(c.comparable is False for c in checks)
    assert checks[0].differs == ["width 0.25", "epochs 40", "lr_milestones [20, 30]", "3,000 training examples"]
    markdown = invoke("summarize", tmp_path / "fixture", "-f", "markdown").stdout
    assert "holds<br>not the published protocol: width 0.25, epochs 40" in markdown


def test_a_maximized_metric_turns_lower_into_worse(tmp_path):
    # mode: max: the same paired difference (all 0.5 points below base) is now the worse side.
    write_fixture(tmp_path / "fixture", trials=PAIRED, objective="mode: max")
    markdown = invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "markdown").stdout
    assert "| all | 12.00 (n=5) | 11.50 (n=5) | -0.50 (n=5)<br>95% CI [-0.55, -0.45] | lower than base (worse) |" in markdown
    (record,) = json.loads(invoke("compare", tmp_path / "fixture", "--baseline", "variant=base", "-f", "json").stdout)
    assert record["verdict"] == "lower" and record["better"] is False


def test_a_loss_is_lower_is_better_and_an_accuracy_higher_whichever_way_the_grids_metric_goes(tmp_path):
    # Judged by an accuracy (mode: max); its test loss, and a train loss it never declared, are losses.
    grid = ("name: acc\ncommand:\n  run: python t.py --opt {opt} --seed {seed}\n  parameters:\n    opt: sgd\n"
            "metric: val_accuracy\nmode: max\nreport: [test_loss]\naxes:\n  opt: [sgd, adam]\nseeds: [0, 1, 2]\n")
    adam = {"val_accuracy": 0.1, "test_loss": -0.1, "train_loss": -0.1}  # adam: lower losses, by 0.1 or so, every seed
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", **{
        name: 0.5 + 0.01 * t.config["seed"] ** 2 + (gain if t.config["opt"] == "adam" else 0) for name, gain in adam.items()}})
    for metric in ("test_loss", "train_loss"):
        (record,) = json.loads(invoke("compare", tmp_path / "run", "--baseline", "opt=sgd", "--metric", metric,
                                      "-f", "json").stdout)
        assert (record["verdict"], record["better"]) == ("lower", True)
    # Judged by a loss (min); an accuracy it never declared is better higher.
    write_run(tmp_path / "loss", grid.replace("val_accuracy\nmode: max", "val_loss").replace("name: acc", "name: loss"),
              lambda t: {"status": "completed", "val_loss": 0.5, "test_accuracy": 0.5 + 0.01 * t.config["seed"] ** 2
                         + (0.1 if t.config["opt"] == "adam" else 0), "test_loss": 0.5})
    markdown = invoke("compare", tmp_path / "loss", "--baseline", "opt=sgd", "--metric", "test_accuracy",
                      "-f", "markdown").stdout
    assert "| adam | 51.67 (n=3) | 61.67 (n=3) | +10.00 (n=3)<br>95% CI [+10.00, +10.00] | higher than sgd (better) |" \
        in markdown


def test_a_side_with_no_value_is_said_as_why_not_as_too_few_seeds(tmp_path):
    # More seeds would not help: warmup=100 diverged at width 16, has not run at 32, is excluded at 64,
    # and at 128 only an include rule gives warmup=0.
    write_run(tmp_path / "run", RULES_GRID, rules_result)
    markdown = invoke("compare", tmp_path / "run", "--baseline", "warmup=0", "-f", "markdown").stdout
    assert [line.split(" | ")[-1] for line in markdown.splitlines()[4:]] == [
        "warmup=100 diverged |", "warmup=100 no result yet |", "warmup=100 not in the grid |",
        "warmup=100 not in the grid |"]
    rows = json.loads(invoke("compare", tmp_path / "run", "--baseline", "width=64", "-f", "json").stdout)
    # width=64 and width=128 at warmup=100: the grid plans neither, so no row.
    assert [(r["warmup"], r["width"], r["verdict"], r["better"]) for r in rows] == [
        (0, 16, "higher", False), (0, 32, "higher", False), (0, 128, "lower", True),
        (100, 16, "not in the grid, diverged", None), (100, 32, "not in the grid, no result yet", None)]


def test_the_title_names_the_axes_chosen_for_each_side_and_none_where_every_axis_is_the_table_s(tmp_path):
    grid = ("name: opt\ncommand:\n  run: python t.py --opt {opt} --lr {lr} --seed {seed}\n  parameters:\n"
            "    opt: sgd\n    lr: 0.1\nmetric: val_loss\naxes:\n  opt: [sgd, adam]\n  lr: [0.1, 0.01]\nseeds: [0, 1]\n")
    write_run(tmp_path / "run", grid, lambda t: {"status": "completed", "val_loss": t.config["lr"] + t.config["seed"]})
    first = invoke("compare", tmp_path / "run", "--baseline", "opt=sgd", "-f", "markdown").stdout.splitlines()[0]
    # lr is the table's rows: each side is every lr, none chosen.
    assert first == "**val_loss: each opt minus opt=sgd, paired by seed; 95% t-interval of the mean difference**"
    write_run(tmp_path / "three", grid.replace("lr: [0.1, 0.01]", "lr: [0.1, 0.01]\n  wd: [0, 1]").replace(
        "lr: 0.1\n", "lr: 0.1\n    wd: 0\n").replace("--seed", "--wd {wd} --seed"),
        lambda t: {"status": "completed", "val_loss": t.config["lr"] + t.config["seed"] + t.config["wd"]})
    first = invoke("compare", tmp_path / "three", "--baseline", "opt=sgd", "-f", "markdown").stdout.splitlines()[0]
    assert first == ("**val_loss: each opt minus opt=sgd, paired by seed; 95% t-interval of the mean difference; "
                     "wd chosen for each side by best val_loss among settings with every seed finished**")
