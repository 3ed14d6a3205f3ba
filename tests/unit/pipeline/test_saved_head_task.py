"""A folder's saved head and the task asked for: a head loaded by class name (NAMED_HEADS) serves
its task the same way a head of one of the task's auto classes does."""

from __future__ import annotations

import pytest

from onnxspec.catalog.models import REGISTRY
from onnxspec.errors import UnsupportedTaskError
from onnxspec.pieces.tasks import NAMED_HEADS
from onnxspec.pipeline.core import _check_head, _task_heads

CASES = sorted(NAMED_HEADS)


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_a_named_head_is_among_the_heads_of_its_task(model_type: str, task: str) -> None:
    assert NAMED_HEADS[(model_type, task)] in _task_heads(task, model_type)
    assert NAMED_HEADS[(model_type, task)] not in _task_heads("feature-extraction", model_type)


def test_auto_class_heads_are_still_read_from_the_auto_classes() -> None:
    assert _task_heads("image-segmentation", "segformer") == {"SegformerForSemanticSegmentation"}
    assert _task_heads("text-classification", "bert") == {"BertForSequenceClassification"}


def test_a_saved_head_of_another_task_is_still_refused() -> None:
    config_json = {"model_type": "bert", "architectures": ["BertForMaskedLM"]}
    with pytest.raises(UnsupportedTaskError, match="'fill-mask' head"):
        _check_head(config_json, "text-classification", "bert", REGISTRY)
