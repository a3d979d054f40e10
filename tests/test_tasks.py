"""Tasks own what differs between classification and regression: which losses and methods
fit, what the loop sums, the leaderboard's columns and the one-line summary."""
from types import SimpleNamespace

import pytest
import torch

from mixbench.components import LOSSES, METHODS, TASKS
from mixbench.errors import ConfigError
from mixbench.tasks import require_task, task_for

CLASSIFICATION_ONLY = ["alignmix", "attentivemix", "puzzlemix", "comixup", "snapmix", "transmix",
                       "rankmixup", "mixkd", "automix", "samix", "adautomix", "adamixup",
                       "dualmix"]


def task(name, dataset="some_data"):
    return task_for(SimpleNamespace(task=name, name=dataset))


def check(task_obj, loss, method_name):
    method = SimpleNamespace(**{k: getattr(METHODS.get(method_name), k)
                                for k in ("tasks", "task_hint")})
    task_obj.check(loss_fn=LOSSES.build({"name": loss}), method=method, loss_name=loss,
                   method_name=method_name)


def test_every_method_declares_the_tasks_it_is_for():
    declared = {name: METHODS.get(name).tasks for name in METHODS.names()}
    assert sorted(n for n, t in declared.items() if t == ("classification",)) == \
        sorted(CLASSIFICATION_ONLY)
    assert declared["cmixup"] == ("regression",)
    # the no-mixing baseline fits every task; Metrix mixes inside pair losses only
    assert declared["erm"] == ("classification", "regression", "retrieval")
    assert declared["metrix"] == ("retrieval",)
    assert all(t == ("classification", "regression") for n, t in declared.items()
               if n not in CLASSIFICATION_ONLY + ["cmixup", "erm", "metrix"])


@pytest.mark.parametrize("name", CLASSIFICATION_ONLY)
def test_classification_methods_are_refused_on_a_regression_task(name):
    with pytest.raises(ConfigError, match=f"method={name} is for classification, but "
                                          f"dataset=diabetes is a regression task"):
        check(task("regression", "diabetes"), "mse", name)


def test_cmixup_on_classification_says_what_to_use_instead():
    with pytest.raises(ConfigError, match="use a regression dataset. C-Mixup pairs samples") \
            as err:
        check(task("classification", "digits"), "soft_ce", "cmixup")
    assert "rotated_digits" in str(err.value) and "mixup" in str(err.value)
    check(task("regression"), "mse", "cmixup")
    check(task("regression"), "mse", "mixup")  # mixing the targets works for both


def test_a_loss_of_the_other_task_names_the_right_one():
    with pytest.raises(ConfigError, match="loss=soft_ce is a classification loss.*use loss=mse"):
        check(task("regression"), "soft_ce", "erm")
    with pytest.raises(ConfigError, match="use loss=soft_ce"):
        check(task("classification"), "mse", "erm")


def test_classification_counts_correct_predictions_of_the_labelled_rows():
    # a step may return logits for more rows than labels (clean and mixed halves)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0])
    (correct,) = task("classification").step_sums(logits, labels)
    assert correct.item() == 1
    assert task("regression").step_sums(logits, labels) == []


def test_each_task_leads_with_its_primary_metric_and_prints_a_summary():
    assert TASKS.get("classification").columns[0].key == "top1"
    assert TASKS.get("regression").columns[0].key == "rmse"
    line = TASKS.get("regression").summary({"test": {"rmse": 1.5, "mae": 1.0, "mape": 0.1,
                                                     "r2": 0.9}})
    assert line == "rmse=1.5 mae=1 mape=0.1 r2=0.9"


def test_analyses_for_one_kind_of_task_refuse_the_other():
    require_task(task("classification"), "classification", "geometry")
    with pytest.raises(ConfigError, match="geometry is for classification runs"):
        require_task(task("regression", "diabetes"), "classification", "geometry")
