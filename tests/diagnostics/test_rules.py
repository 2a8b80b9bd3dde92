"""Each rule fires on a run built to break it, and a healthy run fires none."""
import time

import torch
from torch import nn

from binventory.diagnostics.rules import NOT_ENOUGH, RULE_NAMES, evaluate_rules
from tests.diagnostics.toy import issues, mlp, run, sleepy_loader, teacher_data


def test_healthy_run_fires_no_rule():
    data, findings, _ = run(mlp(), teacher_data(1024), teacher_data(512, seed=1), epochs=5)
    assert issues(findings) == set(), {k: f.evidence for k, f in findings.items()}
    assert set(findings) == set(RULE_NAMES)
    for name in ("vanishing_gradient", "exploding_tensor", "poor_weight_initialization",
                 "loss_not_decreasing", "overfit", "overtraining", "class_imbalance",
                 "dataloader_bottleneck", "step_time_outliers"):
        assert findings[name].status == "ok", name


def test_huge_learning_rate_is_an_exploding_tensor():
    _, findings, _ = run(mlp(), teacher_data(256), epochs=1, lr=1e6, sgd=True)
    assert "exploding_tensor" in issues(findings)
    assert "nan" in findings["exploding_tensor"].evidence or "grad_norm" in findings["exploding_tensor"].evidence


def test_deep_sigmoid_net_has_vanishing_gradients():
    _, findings, _ = run(mlp(depth=20, act=nn.Sigmoid), teacher_data(256), epochs=1, lr=1e-3)
    assert {"vanishing_gradient", "poor_weight_initialization"} <= issues(findings)


def test_tiny_initialization_is_poor_weight_initialization():
    _, findings, _ = run(mlp(depth=10, init_scale=0.01), teacher_data(256), epochs=1, lr=1e-3)
    assert {"poor_weight_initialization", "vanishing_gradient"} <= issues(findings)


def test_shuffled_labels_loss_not_decreasing():
    x, y = teacher_data(2048)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    _, findings, _ = run(mlp(), (x, y), teacher_data(256, seed=1), epochs=2, lr=1e-3)
    assert "loss_not_decreasing" in issues(findings)


def test_tiny_train_set_for_many_epochs_overfits_and_overtrains():
    _, findings, _ = run(mlp(width=256, depth=3), teacher_data(24, noise=0.3),
                         teacher_data(512, seed=1), epochs=60, batch_size=8)
    assert {"overfit", "overtraining"} <= issues(findings)
    assert "loss_not_decreasing" not in issues(findings)


def test_sleeping_dataset_is_a_dataloader_bottleneck_with_low_utilization():
    x, y = teacher_data(480)
    _, findings, _ = run(mlp(), (x, y), epochs=1, loader=sleepy_loader(x, y, 0.005))
    assert {"dataloader_bottleneck", "low_utilization"} <= issues(findings)
    assert findings["dataloader_bottleneck"].values["share"] > 0.5


def test_skewed_labels_are_a_class_imbalance():
    x, _ = teacher_data(512)
    y = torch.zeros(512, dtype=torch.long)
    y[:10] = 1
    y[10:14] = 2
    _, findings, _ = run(mlp(), (x, y), epochs=1)
    assert "class_imbalance" in issues(findings)


def test_occasional_slow_steps_are_step_time_outliers():
    model = mlp()
    calls = {"n": 0}

    def stall(module, inputs, output):
        calls["n"] += 1
        if calls["n"] % 8 == 0:  # a periodic stall inside the step, as a checkpoint write would be
            time.sleep(0.12)

    model[0].register_forward_hook(stall)
    _, findings, _ = run(model, teacher_data(1024), epochs=1)
    assert "step_time_outliers" in issues(findings)


def test_stop_on_issue_stops_the_toy_run_early():
    x, y = teacher_data(2048)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]
    data, _, diag = run(mlp(), (x, y), epochs=10, lr=1e-3, stop_on=("loss_not_decreasing",))
    assert diag.stopped_by == ["loss_not_decreasing"] and len(data["epochs"]) < 10


def test_no_data_means_not_enough_data():
    data = {"meta": {"every": 1, "cores": 1}, "steps": {k: [] for k in
            ("step", "epoch", "loss", "data_s", "compute_s")}, "samples": [], "epochs": [], "labels": []}
    assert {f.status for f in evaluate_rules(data)} == {NOT_ENOUGH}
