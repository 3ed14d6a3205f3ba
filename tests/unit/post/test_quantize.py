"""The agreement measures a quantized graph is judged by, on arrays; and quantize_file on a small graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxspec.errors import ExportError, SpecError, UnknownNameError
from onnxspec.post.agreement import (
    DEFAULTS,
    Thresholds,
    cosine_similarity,
    greedy_agreement,
    greedy_ids,
    measure,
    top1_agreement,
)
from onnxspec.post.quantize import quantize_file


def test_cosine_is_one_for_scaled_copies_and_falls_for_disagreeing_arrays() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 50)).astype(np.float32)
    assert cosine_similarity(a, 2 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    noisy = a + 0.5 * rng.normal(size=a.shape)
    assert 0.5 < cosine_similarity(a, noisy) < 0.99
    assert cosine_similarity(a, rng.normal(size=a.shape)) < 0.5
    assert cosine_similarity(np.zeros(4), np.zeros(4)) == 1.0
    assert cosine_similarity(np.zeros(4), np.ones(4)) == 0.0
    with pytest.raises(SpecError):
        cosine_similarity(np.ones(3), np.ones(4))


def test_top1_counts_rows_whose_argmax_differs_and_honours_the_mask() -> None:
    expected = np.array([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    assert top1_agreement(expected, expected + 0.01) == (1.0, 4)
    got = expected.copy()
    got[0, 1] = [0.0, 2.0, 0.0]  # one row of four picks another class
    assert top1_agreement(expected, got) == (0.75, 4)
    keep = np.array([[True, False], [True, True]])
    assert top1_agreement(expected, got, keep) == (1.0, 3)  # the differing row is masked out
    assert top1_agreement(expected, got, ~keep) == (0.0, 1)
    with pytest.raises(SpecError):
        top1_agreement(expected, expected[:1])


def test_greedy_agreement_is_the_agreeing_prefix_per_row() -> None:
    a = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    assert greedy_agreement(a, a) == 1.0
    b = a.copy()
    b[0, 1] = 9  # row 0 diverges at step 1: later matches do not count
    b[1, 3] = 0  # row 1 at step 3
    assert greedy_agreement(a, b) == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert greedy_agreement(a, np.zeros_like(a)) == 0.0
    with pytest.raises(SpecError):
        greedy_agreement(a, a[:, :2])


def test_greedy_ids_feeds_the_cache_back_and_picks_the_argmax() -> None:
    calls = []

    def step(feed):  # a fake decoder: the next token is the last token + 1 + past length
        calls.append({k: v.shape for k, v in feed.items()})
        past = feed["past_key_values.0.key"]
        logits = np.zeros((2, feed["input_ids"].shape[1], 20), np.float32)
        nxt = feed["input_ids"][:, -1] + 1 + past.shape[2]
        logits[np.arange(2), -1, nxt % 20] = 1.0
        grown = np.concatenate([past, np.zeros((2, 1, feed["input_ids"].shape[1], 4), np.float32)], axis=2)
        return {"logits": logits, "present.0.key": grown}

    names = ("input_ids", "attention_mask", "position_ids", "past_key_values.0.key")
    ids = greedy_ids(step, np.array([[1, 2, 3], [4, 5, 6]]), {"past_key_values.0.key": np.zeros((2, 1, 0, 4), np.float32)}, names, 3)
    assert ids.tolist() == [[4, 8, 13], [7, 11, 16]]
    assert calls[1] == {"input_ids": (2, 1), "attention_mask": (2, 4), "position_ids": (2, 1), "past_key_values.0.key": (2, 1, 3, 4)}
    with pytest.raises(SpecError, match="token_type_ids"):
        greedy_ids(step, np.ones((2, 3), np.int64), {}, ("input_ids", "token_type_ids"), 1)


def test_measure_fails_below_its_threshold_and_on_nan() -> None:
    assert measure("g", "logits", "small", "cosine", 0.995, 0.99, 10).passed
    low = measure("g", "logits", "small", "cosine", 0.98, 0.99, 10)
    assert not low.passed and "below the threshold" in low.problem
    assert not measure("g", "logits", "small", "cosine", float("nan"), 0.0, 10).passed
    assert DEFAULTS["int4"].cosine < DEFAULTS["int8"].cosine
    with pytest.raises(SpecError):
        Thresholds(cosine=1.5)
    with pytest.raises(SpecError):
        Thresholds(greedy_steps=0)


def _matmul_graph(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 48)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, {"onnxspec.contract": "{}"})
    onnx.save(model, path)
    return w


@pytest.mark.parametrize(("method", "op", "least"), [("int8", "MatMulNBits", 0.9999), ("int4", "MatMulNBits", 0.98), ("int8-dynamic", "MatMulInteger", 0.999)])
def test_quantize_file_writes_a_smaller_graph_that_computes_nearly_the_same(tmp_path: Path, method: str, op: str, least: float) -> None:
    w = _matmul_graph(tmp_path / "m.onnx")
    quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method=method)
    model = onnx.load(tmp_path / "q.onnx")
    assert op in {n.op_type for n in model.graph.node}
    assert {p.key for p in model.metadata_props} >= {"onnxspec.contract"}  # the contract travels with the graph
    assert (tmp_path / "q.onnx").stat().st_size < (tmp_path / "m.onnx").stat().st_size / 2
    x = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    got = onnxruntime.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert least < cosine_similarity(x @ w, got) < 1.0  # close, and really quantized


def _mlp_graph(path: Path, width: int = 64, hidden: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One SwiGLU-like MLP of block 5 of 10: ``up_proj``, then ``down_proj`` reading activations whose first
    channel is far larger than the rest (as a trained decoder's are) and whose weight row for that channel
    is small. Returns the two weights and an input."""
    rng = np.random.default_rng(0)
    w_up = rng.normal(size=(width, hidden)).astype(np.float32) / 8
    w_down = rng.normal(size=(hidden, width)).astype(np.float32)
    w_down[0] *= 1e-3  # the huge channel barely moves the output: the small ones carry it
    nodes = [helper.make_node("MatMul", ["x", "w_up"], ["u"], name="/model/layers.5/mlp/up_proj/MatMul"),
             helper.make_node("Add", ["u", "spike"], ["h"]),
             helper.make_node("MatMul", ["h", "w_down"], ["y"], name="/model/layers.5/mlp/down_proj/MatMul")]
    spike = np.zeros(hidden, np.float32)
    spike[0] = 3000.0
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(w_up, "w_up"), numpy_helper.from_array(w_down, "w_down"), numpy_helper.from_array(spike, "spike")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    # blocks 0 and 9 too: ten blocks, so block 5 is not among the first tenth int8 keeps in float
    for k in (0, 9):
        extra = rng.normal(size=(width, width)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(extra, f"w{k}"))
        model.graph.node.append(helper.make_node("MatMul", ["x", f"w{k}"], [f"z{k}"], name=f"/model/layers.{k}/self_attn/q_proj/MatMul"))
        model.graph.output.append(helper.make_tensor_value_info(f"z{k}", TensorProto.FLOAT, ["batch", width]))
    onnx.save(model, path)
    x = rng.normal(size=(8, width)).astype(np.float32)
    return w_up, w_down, x


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_int8_computes_with_int8_activations_but_keeps_a_down_proj_beside_an_outlier_channel_in_float(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trained decoder's down_proj inputs hold a few channels far larger than the rest: int8 computes the
    other layers with int8 activations (integer kernels, one scale per block of 32), which would round the
    small channels of such an input away, so it keeps down_proj in float32."""
    from onnxspec.post import quantize as q

    w_up, w_down, x = _mlp_graph(tmp_path / "m.onnx")
    spike = np.zeros(w_up.shape[1], np.float32)
    spike[0] = 3000.0
    expected = (x @ w_up + spike) @ w_down
    quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method="int8")
    nodes = {n.name: n for n in onnx.load(tmp_path / "q.onnx").graph.node}
    up = nodes["/model/layers.5/mlp/up_proj/MatMul_Q8"]
    assert up.op_type == "MatMulNBits" and {a.name: a.i for a in up.attribute}["accuracy_level"] == q.ACCURACY_LEVEL
    assert nodes["/model/layers.5/mlp/down_proj/MatMul"].op_type == "MatMul"
    assert cosine_similarity(expected, _run(tmp_path / "q.onnx", x)) > 0.999
    # the same graph with down_proj at int8 activations too loses the small channels: what the rule prevents
    monkeypatch.setattr(q, "FLOAT_LAYERS", ())
    quantize_file(tmp_path / "m.onnx", tmp_path / "all.onnx", method="int8")
    assert cosine_similarity(expected, _run(tmp_path / "all.onnx", x)) < 0.99


def test_int8_keeps_down_proj_attention_the_first_tenth_of_the_blocks_and_a_tied_head_in_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"/model/model/layers.{k}/{part}/MatMul" for k in range(30) for part in ("self_attn/q_proj", "mlp/up_proj", "mlp/down_proj")]
    names += ["/model/lm_head/MatMul", "/model/other_head/MatMul"]
    weights = [f"w{k}" for k in range(len(names))]
    weights[-2] = "table"  # the head reads the embedding table the lookup reads: a tied embedding
    nodes = [helper.make_node("MatMul", ["x", w], [f"y{k}"], name=name) for k, (name, w) in enumerate(zip(names, weights))]
    nodes.append(helper.make_node("Gather", ["table", "ids"], ["e"], axis=1, name="/model/embed_tokens/Gather"))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32]), helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["batch", 32]) for k in range(len(names))]
        + [helper.make_tensor_value_info("e", TensorProto.FLOAT, [32, 3])],
        [numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), w) for w in dict.fromkeys(weights)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method="int8")
    floats = {n.name for n in onnx.load(tmp_path / "q.onnx").graph.node if n.op_type == "MatMul"}
    first = {name for name in names if any(f"layers.{k}/" in name for k in range(3))}  # 3: a tenth of 30 blocks
    assert floats == first | {n for n in names if "down_proj" in n or "self_attn" in n} | {"/model/lm_head/MatMul"}
    quantize_file(tmp_path / "m.onnx", tmp_path / "q4.onnx", method="int4")  # int4 quantizes them all
    assert "MatMul" not in {n.op_type for n in onnx.load(tmp_path / "q4.onnx").graph.node}
    # the tied head as the export writes it: a Gemm by the [V, H] table, transB=1, is left as it is
    tied = onnx.load(tmp_path / "m.onnx")
    for node in tied.graph.node:
        if node.name == "/model/lm_head/MatMul":
            node.op_type = "Gemm"
            node.attribute.append(helper.make_attribute("transB", 1))
    onnx.save(tied, tmp_path / "gemm.onnx")
    quantize_file(tmp_path / "gemm.onnx", tmp_path / "gemm-q.onnx", method="int8")
    done = onnx.load(tmp_path / "gemm-q.onnx").graph
    assert [n.op_type for n in done.node if n.name == "/model/lm_head/MatMul"] == ["Gemm"]
    assert not [t.name for t in done.initializer if t.name.startswith("table")][1:]  # no transposed or int8 copy of the table
    # a model of one block keeps none for being first: its MLP is quantized
    single = onnx.load(tmp_path / "m.onnx")
    kept = [n for n in single.graph.node if n.name == "/model/model/layers.0/mlp/up_proj/MatMul"]
    single.graph.ClearField("node")
    single.graph.node.extend(kept)
    single.graph.ClearField("output")
    single.graph.output.append(helper.make_tensor_value_info(kept[0].output[0], TensorProto.FLOAT, ["batch", 32]))
    onnx.save(single, tmp_path / "one.onnx")
    quantize_file(tmp_path / "one.onnx", tmp_path / "one-q.onnx", method="int8")
    assert [n.op_type for n in onnx.load(tmp_path / "one-q.onnx").graph.node] == ["MatMulNBits"]


def test_quantize_file_refuses_an_unknown_method(tmp_path: Path) -> None:
    _matmul_graph(tmp_path / "m.onnx")
    with pytest.raises(UnknownNameError, match="int8"):
        quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method="int3")


def _if_graph(path: Path) -> None:
    """A merged-decoder-like graph: one If whose branches multiply by an outer weight."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 48)).astype(np.float32), "w")
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])]

    def branch(name: str, extra: list) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h_" + name]), *extra(name)], name, [],
                                 [helper.make_tensor_value_info("y_" + name, TensorProto.FLOAT, ["batch", 48])])

    then = branch("then", lambda n: [helper.make_node("Relu", ["h_" + n], ["y_" + n])])
    other = branch("else", lambda n: [helper.make_node("Neg", ["h_" + n], ["y_" + n])])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])],
        out, [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_weights_used_inside_if_branches_are_quantized(tmp_path: Path, method: str) -> None:
    _if_graph(tmp_path / "m.onnx")
    quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method=method)
    branches = [a.g for n in onnx.load(tmp_path / "q.onnx").graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    assert all("MatMul" not in {n.op_type for n in g.node} for g in branches)


def test_a_graph_with_nothing_to_quantize_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="nothing to quantize"):
        quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method="int4")
