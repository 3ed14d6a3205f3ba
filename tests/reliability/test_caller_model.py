"""The pipeline never changes a model it is given.

``export(model, ...)`` puts the model in eval mode, may switch its attention implementation,
and converts an fp16 export's weights: a model passed in must come back with the same training
flag on every submodule, the same attention implementation, the same dtypes and bit-identical
weights and buffers, after an fp32 export, an fp16 export, and a failed one.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

from onnxspec.errors import ExportError
from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import export
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes, FloatDtype
from tests.reliability.conftest import TASK
from tests.tiny import tiny_model


def _as_given() -> torch.nn.Module:
    """A tiny BERT in training mode, one submodule left in eval mode, with sdpa attention."""
    model = tiny_model("bert", TASK).train()
    model.bert.pooler.eval()
    model.set_attn_implementation("sdpa")
    return model


def _fingerprint(model: torch.nn.Module) -> dict[str, object]:
    """Everything an export might change on ``model``: flags, attention, dtypes, exact bytes."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "attention": model.config._attn_implementation,
        "dtypes": {k: v.dtype for k, v in tensors.items()},
        "tensors": tensors,
    }


def _same(before: dict[str, object], model: torch.nn.Module) -> None:
    after = _fingerprint(model)
    assert after["training"] == before["training"]
    assert after["attention"] == before["attention"]
    assert after["dtypes"] == before["dtypes"]
    tensors_before, tensors_after = before["tensors"], after["tensors"]
    assert tensors_after.keys() == tensors_before.keys()  # type: ignore[union-attr]
    for name, tensor in tensors_before.items():  # type: ignore[union-attr]
        assert torch.equal(tensors_after[name].view(torch.uint8), tensor.view(torch.uint8)), name  # type: ignore[index]


def _eager_spec():
    """BERT's registered spec, asking for eager attention (so the pipeline switches it)."""
    return attrs.evolve(spec_for(REGISTRY, "bert", TASK), attn_implementation="eager")


@pytest.mark.parametrize("float_dtype", [FloatDtype.FP32, FloatDtype.FP16])
def test_export_leaves_the_model_as_it_was(float_dtype: FloatDtype, tmp_path: Path) -> None:
    model = _as_given()
    before = _fingerprint(model)
    assert before["training"]["bert.pooler"] is False and before["training"][""] is True  # type: ignore[index]
    during: list[str] = []

    def look(stage: str, detail: str) -> None:
        if stage == "trace":
            during.append(model.config._attn_implementation)

    report = export(model, tmp_path / "out", spec=_eager_spec(), dtypes=DTypes(float_dtype=float_dtype), _fault=look)
    assert report.passed
    # fp32 traces the model given, switched to eager attention while the export runs; fp16 a copy
    assert during == (["eager"] if float_dtype is FloatDtype.FP32 else ["sdpa"])
    _same(before, model)


def test_failed_export_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = _as_given()
    before = _fingerprint(model)

    def fail(stage: str, detail: str) -> None:
        if stage == "validate":
            raise RuntimeError("injected")

    with pytest.raises(ExportError):
        export(model, tmp_path / "out", spec=_eager_spec(), _fault=fail)
    _same(before, model)


def test_fp16_export_traces_a_copy(tmp_path: Path) -> None:
    """An fp16 export converts a copy: the model given stays fp32 even while stages run."""
    model = _as_given()
    seen: list[torch.dtype] = []

    def look(stage: str, detail: str) -> None:
        if stage == "trace":
            seen.append(model.classifier.weight.dtype)

    export(model, tmp_path / "out", task=TASK, dtypes=DTypes(float_dtype=FloatDtype.FP16), _fault=look)
    assert seen == [torch.float32]
