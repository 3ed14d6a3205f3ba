"""A tied embedding is written once, as the lm_head reads it ([H, V]): the [V, H] table that
TorchScript's constant folding left beside its transposed view is dropped and each Gather of it
reads the [H, V] weight along axis 1 (onnxspec.build.exporters.tie_transposed_weights)."""

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


def _tied_graph(rows: int, width: int, ids_rank: int = 2, reader: str = "Gather", transposed: bool = False) -> onnx.ModelProto:
    """``embedded = Gather(table, ids)`` beside ``logits = MatMul(x, head)``, ``head`` the table
    transposed: a weight of its own (constant folding's view) or, ``transposed``, a Transpose
    node of the table (streamed weights). The weights are graph inputs, as the TorchScript
    exporter leaves them before they are attached. ``reader="Add"``: the table is also added to."""
    lead = [f"d{i}" for i in range(ids_rank)]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embedded"], name="/embed/Gather")]
    if transposed:
        nodes.append(helper.make_node("Transpose", ["table"], ["head"], perm=[1, 0]))
    nodes.append(helper.make_node("MatMul", ["x", "head"], ["logits"], name="/lm_head/MatMul"))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", rows]),
               helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [*lead, width])]
    if reader == "Add":
        nodes.append(helper.make_node("Add", ["table", "table"], ["doubled"]))
        outputs.append(helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [rows, width]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", width]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, lead),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, [rows, width]),
         *([] if transposed else [helper.make_tensor_value_info("head", TensorProto.FLOAT, [width, rows])])],
        outputs,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _attached(model: onnx.ModelProto, weights: dict[str, torch.Tensor], folder: str,
              perms: dict[str, tuple[int, ...]] | None = None) -> tuple[dict[str, str], ort.InferenceSession]:
    tied = exporters.tie_transposed_weights(model, weights, perms)
    produce = None
    if perms is not None:  # as the streamed path writes: permuted, contiguous
        produce = lambda name, w: w.permute(perms[name]).contiguous() if name in perms else w  # noqa: E731
    exporters._attach_weights(model, weights, folder, "model.onnx.data", produce=produce, give_back=False)
    path = os.path.join(folder, "model.onnx")
    onnx.save(model, path)
    onnx.checker.check_model(path)
    return tied, ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _check(session: ort.InferenceSession, table: torch.Tensor, ids: np.ndarray, more: dict[str, np.ndarray] | None = None) -> None:
    x = np.random.default_rng(0).standard_normal((3, table.shape[1])).astype(np.float32)
    logits, embedded = session.run(["logits", "embedded"], {"x": x, "ids": ids, **(more or {})})
    np.testing.assert_allclose(logits, (torch.from_numpy(x) @ table.T).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(embedded, table[torch.from_numpy(ids)].numpy())


def test_a_square_tied_table_is_written_once_and_looked_up_right(tmp_path) -> None:
    """Square (rows = width): a lookup along the wrong axis or untransposed would run and be wrong."""
    torch.manual_seed(0)
    table = torch.randn(64, 64)
    tied, session = _attached(_tied_graph(64, 64), {"table": table, "head": table.T}, os.fspath(tmp_path))
    assert tied == {"table": "head"}
    _check(session, table, np.array([[5, 7, 63], [0, 5, 1]]))
    assert os.path.getsize(tmp_path / "model.onnx.data") == table.numel() * 4  # the [H, V] weight alone


@pytest.mark.parametrize("known", [True, False], ids=["rank-known", "rank-unknown"])
@pytest.mark.parametrize("ids", [np.array(3), np.array([4, 0, 39]), np.arange(24).reshape(2, 3, 4)])
def test_the_lookup_keeps_the_shape_of_the_ids(tmp_path, ids: np.ndarray, known: bool) -> None:
    torch.manual_seed(1)
    table = torch.randn(40, 96)
    model = _tied_graph(40, 96, ids_rank=ids.ndim)
    if not known:  # the ids reshaped to a shape of unknown length: flattened, gathered and reshaped back
        model.graph.node[0].input[1] = "unknown"
        model.graph.node.insert(0, helper.make_node("Reshape", ["ids", "ids_shape"], ["unknown"]))
        model.graph.input.append(helper.make_tensor_value_info("ids_shape", TensorProto.INT64, ["k"]))
    _, session = _attached(model, {"table": table, "head": table.T}, os.fspath(tmp_path))
    assert sum(n.op_type == "Reshape" for n in model.graph.node) == (0 if known else 3)
    _check(session, table, ids, {} if known else {"ids_shape": np.array(ids.shape, dtype=np.int64)})


def test_a_transpose_node_of_the_table_is_folded_into_the_written_weight(tmp_path) -> None:
    torch.manual_seed(2)
    table = torch.randn(48, 32)
    perms: dict[str, tuple[int, ...]] = {}
    tied, session = _attached(_tied_graph(48, 32, transposed=True), {"table": table}, os.fspath(tmp_path), perms)
    assert tied == {"table": "head"} and perms == {"head": (1, 0)}
    assert not [n for n in onnx.load(os.fspath(tmp_path / "model.onnx")).graph.node if n.op_type == "Transpose" and n.input[0] in ("table", "head")]
    _check(session, table, np.array([[1, 47]]))


def test_a_table_read_otherwise_or_a_copy_is_written_twice(tmp_path) -> None:
    table = torch.randn(8, 8)
    model, weights = _tied_graph(8, 8, reader="Add"), {"table": table, "head": table.T}
    assert exporters.tie_transposed_weights(model, weights) == {} and set(weights) == {"table", "head"}
    model, weights = _tied_graph(8, 8), {"table": table, "head": table.T.contiguous()}  # equal values, its own memory
    assert exporters.tie_transposed_weights(model, weights) == {} and set(weights) == {"table", "head"}
    model, weights = _tied_graph(8, 8, transposed=True), {"table": table}
    assert exporters.tie_transposed_weights(model, weights) == {}  # no perms: not the streamed path


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
    assert list(table.dims) == [hidden, vocab]  # as the head reads it
    readers = sorted((n.op_type, helper.get_node_attr_value(n, "axis") if n.op_type == "Gather" else None)
                     for n in proto.graph.node if table.name in n.input)
    assert readers == [("Gather", 1), ("MatMul", None)]

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


def test_streamed_weights_write_the_tied_table_once_transposed(tmp_path) -> None:
    model = tiny_model("llama", "text-generation")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tmp_path / "src")
    report = export(os.fspath(tmp_path / "src"), os.fspath(tmp_path / "out"), task="text-generation", stream_weights=True)
    assert report.passed
    proto = onnx.load(os.fspath(tmp_path / "out" / "model.onnx"), load_external_data=False)
    vocab, hidden = model.get_input_embeddings().weight.shape
    (table,) = [t.name for t in proto.graph.initializer if sorted(t.dims) == sorted([vocab, hidden])]
    assert sorted(n.op_type for n in proto.graph.node if table in n.input) == ["Gather", "MatMul"]
    assert "Transpose" not in {n.op_type for n in proto.graph.node if table in n.input}
