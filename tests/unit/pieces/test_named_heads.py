"""Heads in none of their task's auto classes (NAMED_HEADS): each names a real transformers class
of its model type that those auto classes do not load, and head_classes tries it after them."""

from __future__ import annotations

import pytest
import transformers as T

from onnxspec.catalog.models import REGISTRY
from onnxspec.pieces.tasks import NAMED_HEADS, TASKS, head_classes, infer_task

CASES = sorted(NAMED_HEADS)


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_each_named_head_is_a_class_of_its_model_type_that_no_auto_class_of_the_task_loads(model_type: str, task: str) -> None:
    head = getattr(T, NAMED_HEADS[(model_type, task)])
    config_class = T.AutoConfig.for_model(model_type).__class__
    assert head.config_class is config_class
    assert not any(config_class in getattr(T, auto)._model_mapping for auto in TASKS[task].auto_classes)
    assert task in TASKS


@pytest.mark.parametrize("model_type", ["patchtst", "patchtsmixer"])
def test_forecasting_heads_are_registered_and_tried_after_the_auto_classes(model_type: str) -> None:
    assert "time-series-forecasting" in REGISTRY[model_type].tasks
    classes = head_classes("time-series-forecasting", model_type)
    assert classes[:-1] == TASKS["time-series-forecasting"].auto_classes
    assert classes[-1] == NAMED_HEADS[(model_type, "time-series-forecasting")]


def test_a_pair_without_a_named_head_gets_the_task_auto_classes_only() -> None:
    assert head_classes("time-series-forecasting", "bert") == TASKS["time-series-forecasting"].auto_classes
    assert head_classes("feature-extraction", "patchtst") == TASKS["feature-extraction"].auto_classes


@pytest.mark.parametrize("architecture", ["PatchTSTForPrediction", "PatchTSMixerForPrediction"])
def test_a_saved_forecasting_head_implies_the_forecasting_task(architecture: str) -> None:
    assert infer_task({"architectures": [architecture]}) == "time-series-forecasting"
    assert infer_task({"architectures": [architecture.replace("ForPrediction", "Model")]}) == "feature-extraction"
