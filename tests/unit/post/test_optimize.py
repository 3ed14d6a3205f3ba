"""optimize_file on a small hand-built graph, and reading what an export folder records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxspec.errors import ModelLoadError, SpecError, UnknownNameError, ValidationError
from onnxspec.post.agreement import Thresholds, cosine_similarity
from onnxspec.post.folder import loosest, read_export_folder
from onnxspec.post.optimize import optimize_file


def _graph(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x -> (x @ w + b) * 1 + 0, with ops a basic level folds away."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y0"]),
        helper.make_node("Identity", ["y0"], ["y1"]),
        helper.make_node("Mul", ["y1", "one"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"onnxspec.contract": "{}"})
    onnx.save(model, path)
    return w, b


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_a_graph_level_writes_the_graph_onnxruntime_runs_and_it_computes_the_same(tmp_path: Path, level: str) -> None:
    w, b = _graph(tmp_path / "m.onnx")
    optimize_file(tmp_path / "m.onnx", tmp_path / "o.onnx", level=level)
    model = onnx.load(tmp_path / "o.onnx")
    assert "Identity" not in {n.op_type for n in model.graph.node}
    assert {p.key for p in model.metadata_props} >= {"onnxspec.contract"}
    x = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "o.onnx", x), x @ w + b, rtol=1e-5, atol=1e-5)


def test_fp16_converts_the_weights_and_keeps_float32_inputs_and_outputs(tmp_path: Path) -> None:
    w, b = _graph(tmp_path / "m.onnx")
    optimize_file(tmp_path / "m.onnx", tmp_path / "h.onnx", fp16=True, level="basic")
    model = onnx.load(tmp_path / "h.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    x = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    got = _run(tmp_path / "h.onnx", x)
    assert 0.999 < cosine_similarity(x @ w + b, got) and not np.array_equal(got, x @ w + b)


def test_refusals(tmp_path: Path) -> None:
    _graph(tmp_path / "m.onnx")
    with pytest.raises(SpecError, match="nothing to do"):
        optimize_file(tmp_path / "m.onnx", tmp_path / "o.onnx")
    with pytest.raises(UnknownNameError, match="'extended'"):
        optimize_file(tmp_path / "m.onnx", tmp_path / "o.onnx", level="extendd")
    with pytest.raises(UnknownNameError, match="bert"):
        optimize_file(tmp_path / "m.onnx", tmp_path / "o.onnx", fusions="berta")


def _report(folder: Path, **changes: object) -> None:
    report = {"passed": True, "model_type": "bert", "task": "text-classification", "seed": 3,
              "graphs": [{"filename": "model.onnx", "trace_shapes": {"batch_size": 2, "sequence_length": 16}}],
              "source": {"format": "transformers", "folder": "/models/bert"}, **changes}
    (folder / "onnxspec_report.json").write_text(json.dumps(report))


def test_reading_an_export_folder(tmp_path: Path) -> None:
    _graph(tmp_path / "model.onnx")
    (tmp_path / "onnxspec_contract.json").write_text(json.dumps(
        {"model.onnx": {"inputs": [{"name": "input_ids", "dtype": "int32"}], "outputs": [{"name": "logits", "dtype": "float16"}]}}))
    _report(tmp_path)
    info = read_export_folder(tmp_path)
    assert (info.model_type, info.task, info.graphs, info.seed) == ("bert", "text-classification", ("model.onnx",), 3)
    assert info.trace_shapes.sequence_length == 16 and info.model_folder == "/models/bert"
    assert (info.dtypes.int_dtype.value, info.dtypes.float_dtype.value) == ("int32", "fp16")
    assert info.lossy is None
    _report(tmp_path, passed=False)
    with pytest.raises(ValidationError, match="did not pass"):
        read_export_folder(tmp_path)
    (tmp_path / "onnxspec_report.json").unlink()
    with pytest.raises(ModelLoadError, match="onnxspec export"):
        read_export_folder(tmp_path)


def test_a_folder_written_by_quantize_remembers_its_thresholds(tmp_path: Path) -> None:
    _graph(tmp_path / "model.onnx")
    export = {"passed": True, "model_type": "bert", "task": "text-classification", "seed": 0,
              "graphs": [{"filename": "model.onnx", "trace_shapes": {}}], "source": {}, "earlier": []}
    post = {"passed": True, "export": export, "transformation": {"kind": "quantize", "method": "int4"}, "judged_by": "agreement",
            "thresholds": {"cosine": 0.95, "top1": 0.75, "greedy": 0.5, "greedy_steps": 8}}
    (tmp_path / "onnxspec_post.json").write_text(json.dumps(post))
    info = read_export_folder(tmp_path)
    assert info.lossy == Thresholds(cosine=0.95, top1=0.75, greedy=0.5)
    assert info.model_folder is None and info.export["earlier"][0]["method"] == "int4"
    assert loosest(Thresholds(cosine=0.9, top1=0.95), Thresholds(cosine=0.99, top1=0.8, greedy_steps=4)) == Thresholds(
        cosine=0.9, top1=0.8, greedy=0.75, greedy_steps=4)
