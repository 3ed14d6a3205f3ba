"""The TorchScript trace's memory: its graph-wide shape inference is run without the weights'
values (they made a copy of every weight), and the graph written stays the same."""

from __future__ import annotations

import os

import onnx
import pytest
import torch

from onnxspec.build import exporters
from onnxspec.pipeline.core import export
from tests.tiny import tiny_model


def _written(model: torch.nn.Module, task: str, out: str) -> tuple[bytes, bytes]:
    export(model, out, task=task, overwrite=True, validation_shapes=(), backend="torchscript")
    proto = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    data = os.path.join(out, "model.onnx.data")
    return proto.graph.SerializeToString(deterministic=True), open(data, "rb").read() if os.path.exists(data) else b""


@pytest.mark.parametrize(("model_type", "task"), [("llama", "text-generation-with-past"), ("gemma3_text", "text-generation-with-past")])
def test_shape_inference_without_the_weights_writes_the_same_graph(tmp_path, monkeypatch, model_type: str, task: str) -> None:
    model = tiny_model(model_type, task.removesuffix("-with-past"))
    seen: list[tuple[int, int]] = []
    infer = torch._C._jit_pass_onnx_graph_shape_type_inference

    def spy(graph, params, *rest):  # type: ignore[no-untyped-def]
        seen.append((len(params), sum(isinstance(v, torch.Tensor) and v.is_floating_point() for v in params.values())))
        return infer(graph, params, *rest)

    monkeypatch.setattr(torch._C, "_jit_pass_onnx_graph_shape_type_inference", spy)
    monkeypatch.setattr(exporters, "SHAPE_INFERENCE_KEEPS", 1 << 62)  # every weight given, as TorchScript does
    given = _written(model, task, os.fspath(tmp_path / "given"))
    assert seen and max(floats for _, floats in seen) > 0
    seen.clear()
    monkeypatch.setattr(exporters, "SHAPE_INFERENCE_KEEPS", 0)  # no floating-point weight given
    lean = _written(model, task, os.fspath(tmp_path / "lean"))
    assert seen and max(floats for _, floats in seen) == 0
    assert lean[0] == given[0]
    assert lean[1] == given[1]
