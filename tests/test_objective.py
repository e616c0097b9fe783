"""What a grid's trials are judged by (orchestrator/plan/objective.py): which way a metric without
a mode of its own is better, by its name."""
from __future__ import annotations

import pytest

from pathlib import Path

from orchestrator.errors import GridError
from orchestrator.plan.objective import INTERFACE, Metric, Objective, declared, implied_mode

LOSS, ACCURACY = Metric("val_loss", "min"), Metric("val_accuracy", "max")


@pytest.mark.parametrize("name", ["test_acc", "val/acc1", "acc@1", "acc@5", "top1", "top5", "top-1", "val/top 5",
                                  "top1_acc", "val_acc1", "f1", "val_f1_score", "macro_f1", "f1_macro", "acc_mean", "auc", "test/auroc", "mAP",
                                  "mAP50-95", "bleu", "valacc", "val_accuracy"])
def test_an_accuracy_beside_a_loss_is_higher_is_better(name):
    assert implied_mode(name, LOSS) == "max"
    assert implied_mode(name, ACCURACY) == "max"


@pytest.mark.parametrize("name", ["test_loss", "trainloss", "val/loss", "test_error", "err", "error_rate", "loss_avg", "ppl",
                                  "val_perplexity", "wer", "test/cer", "nll", "mse", "eval_rmse", "mae"])
def test_a_loss_beside_an_accuracy_is_lower_is_better(name):
    assert implied_mode(name, ACCURACY) == "min"
    assert implied_mode(name, LOSS) == "min"


@pytest.mark.parametrize("name", ["lr", "learning_rate", "epoch_time", "top", "val_top", "acc_std", "loss_scale",
                                  "score", "precision", "grad_norm", "lower", "power", "answer"])
def test_a_name_that_says_no_kind_takes_the_grids_mode(name):
    assert implied_mode(name, LOSS) == "min"
    assert implied_mode(name, ACCURACY) == "max"


def test_a_grids_report_metrics_go_the_way_their_names_say_unless_given_a_mode():
    metric, report = declared("g.yaml", {"metric": "val_loss", "report": [
        "test_loss", "test/acc@1", "top5", "test_ppl", "throughput", {"name": "val_bleu", "mode": "min"}]}, INTERFACE)
    assert metric.mode == "min"
    assert [m.mode for m in report] == ["min", "max", "max", "min", "min", "min"]


def test_the_workloads_own_metric_restated_without_a_mode_goes_the_way_the_workload_says():
    # A grid that asks for the workload's metric summarized by its best: the workload says max.
    workload = Objective(Metric("reward", "max"), (Metric("reward", "max"),))
    metric, _ = declared(Path("g.yaml"), {"metric": {"name": "reward", "summary": "best"}}, workload)
    assert (metric.mode, metric.summary) == ("max", "best")
    assert declared(Path("g.yaml"), {"metric": "reward"}, workload)[0].mode == "max"
    with pytest.raises(GridError, match="mode: missing"):  # another metric the name says nothing of
        declared(Path("g.yaml"), {"metric": "score"}, workload)
