"""A tied lm_head is written once: the weight TorchScript's constant folding made as the
embedding's transposed view is dropped and the head's MatMul reads the table through a Gemm
with transB=1 (onnxspec.build.exporters.tie_transposed_weights), which reads the table in row
order: the pages given back while onnxruntime runs stay gone."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from onnxspec.build import exporters
from onnxspec.pipeline.core import export
from tests.tiny import tiny_model


def _matmul_graph(rows: int, width: int, reader: str = "MatMul", rank: int = 3) -> onnx.ModelProto:
    """``logits = MatMul(x, head)`` beside ``embedded = Gather(table, ids)``: the two weights
    are graph inputs, as the TorchScript exporter leaves them before they are attached."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embedded"])]
    if reader == "Transpose":  # streamed weights: no constant folding, the head transposes the table
        nodes += [helper.make_node("Transpose", ["table"], ["head"], perm=[1, 0]),
                  helper.make_node("MatMul", ["x", "head"], ["logits"], name="/lm_head/MatMul")]
    elif reader == "MatMul":
        nodes.append(helper.make_node("MatMul", ["x", "head"], ["logits"], name="/lm_head/MatMul"))
    else:  # the head read by another op: the pair is left as it is
        nodes.append(helper.make_node("Add", ["x", "head"], ["logits"], name="/lm_head/Add"))
    lead = [f"d{i}" for i in range(rank - 1)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, width]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, [rows, width]),
         *([] if reader == "Transpose" else [helper.make_tensor_value_info("head", TensorProto.FLOAT, [width, rows])])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*lead, rows]),
         helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["n", width])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _attached(model: onnx.ModelProto, weights: dict[str, torch.Tensor], folder: str) -> tuple[dict[str, str], ort.InferenceSession]:
    tied = exporters.tie_transposed_weights(model, weights)
    exporters._attach_weights(model, weights, folder, "model.onnx.data", give_back=False)
    path = os.path.join(folder, "model.onnx")
    onnx.save(model, path)
    onnx.checker.check_model(path)
    return tied, ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_a_square_tied_head_computes_x_times_the_table_transposed(tmp_path) -> None:
    """Square (rows = width): a Gemm without transB would run and be wrong, so the values tell."""
    torch.manual_seed(0)
    table = torch.randn(64, 64)
    tied, session = _attached(_matmul_graph(64, 64), {"table": table, "head": table.T}, os.fspath(tmp_path))
    assert tied == {"head": "table"}
    x = np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32)
    logits, embedded = session.run(None, {"x": x, "ids": np.array([5, 7])})
    expected = torch.from_numpy(x) @ table.T
    assert logits.shape == (2, 3, 64)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(embedded, table[[5, 7]].numpy())
    # written once: the data file holds the table alone
    assert os.path.getsize(tmp_path / "model.onnx.data") == table.numel() * 4


def test_a_transpose_node_of_the_table_is_removed_and_its_matmul_reads_the_table(tmp_path) -> None:
    torch.manual_seed(2)
    table = torch.randn(48, 48)
    tied, session = _attached(_matmul_graph(48, 48, reader="Transpose"), {"table": table}, os.fspath(tmp_path))
    assert tied == {"head": "table"}
    assert "Transpose" not in {n.op_type for n in onnx.load(os.fspath(tmp_path / "model.onnx")).graph.node}
    x = np.random.default_rng(2).standard_normal((2, 5, 48)).astype(np.float32)
    logits, _ = session.run(None, {"x": x, "ids": np.array([3])})
    np.testing.assert_allclose(logits, (torch.from_numpy(x) @ table.T).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(96,), (5, 96), (2, 3, 4, 96)])
def test_the_head_keeps_the_leading_dims_of_any_rank(tmp_path, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    table = torch.randn(40, 96)
    _, session = _attached(_matmul_graph(40, 96, rank=len(shape)), {"table": table, "head": table.T}, os.fspath(tmp_path))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    logits, _ = session.run(None, {"x": x, "ids": np.array([1])})
    np.testing.assert_allclose(logits, (torch.from_numpy(x) @ table.T).numpy(), rtol=1e-5, atol=1e-5)


def test_a_pair_read_otherwise_or_a_copy_is_written_twice(tmp_path) -> None:
    table = torch.randn(8, 8)
    os.mkdir(tmp_path / "add")
    tied, _ = _attached(_matmul_graph(8, 8, reader="Add"), {"table": table, "head": table.T}, os.fspath(tmp_path / "add"))
    assert tied == {}
    model, weights = _matmul_graph(8, 8), {"table": table, "head": table.T.contiguous()}  # equal values, its own memory
    assert exporters.tie_transposed_weights(model, weights) == {} and set(weights) == {"table", "head"}
    model, weights = _matmul_graph(8, 8), {"table": table, "head": table.T}
    model.opset_import[0].version = 10  # Gemm needs C below opset 11
    assert exporters.tie_transposed_weights(model, weights) == {}


def _logits(folder: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["logits"], feeds)[0]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_tied_model_writes_its_embedding_once_and_computes_the_same_logits(tmp_path, monkeypatch, model_type: str) -> None:
    model = tiny_model(model_type, "text-generation")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    vocab, hidden = model.get_input_embeddings().weight.shape
    once = export(model, os.fspath(tmp_path / "once"), task="text-generation", backend="torchscript", external_data_threshold=0)
    assert once.passed
    proto = onnx.load(os.fspath(tmp_path / "once" / "model.onnx"), load_external_data=False)
    (table,) = [t for t in proto.graph.initializer if sorted(t.dims) == sorted([vocab, hidden])]
    assert list(table.dims) == [vocab, hidden]
    (head,) = [n for n in proto.graph.node if n.input[1:2] == [table.name]]
    assert head.op_type == "Gemm" and helper.get_node_attr_value(head, "transB") == 1

    monkeypatch.setattr(exporters, "tie_transposed_weights", lambda model, weights: {})  # the head's copy written too
    twice = export(model, os.fspath(tmp_path / "twice"), task="text-generation", backend="torchscript", external_data_threshold=0)
    assert twice.passed
    data = [os.path.getsize(tmp_path / name / "model.onnx.data") for name in ("once", "twice")]
    assert data[1] - data[0] >= vocab * hidden * 4

    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, vocab, (2, 7)), "attention_mask": np.ones((2, 7), dtype=np.int64)}
    inputs = {i.name for i in proto.graph.input}
    if "position_ids" in inputs:
        feeds["position_ids"] = np.tile(np.arange(7), (2, 1))
    feeds = {k: v for k, v in feeds.items() if k in inputs}
    np.testing.assert_allclose(_logits(os.fspath(tmp_path / "once"), feeds), _logits(os.fspath(tmp_path / "twice"), feeds),
                               rtol=1e-5, atol=1e-5)


def test_streamed_weights_read_the_tied_table_without_a_transpose(tmp_path) -> None:
    model = tiny_model("llama", "text-generation")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tmp_path / "src")
    report = export(os.fspath(tmp_path / "src"), os.fspath(tmp_path / "out"), task="text-generation", stream_weights=True)
    assert report.passed
    proto = onnx.load(os.fspath(tmp_path / "out" / "model.onnx"), load_external_data=False)
    (table,) = [t.name for t in proto.graph.initializer if list(t.dims) == list(model.get_input_embeddings().weight.shape)]
    assert sorted(n.op_type for n in proto.graph.node if table in n.input) == ["Gather", "Gemm"]
