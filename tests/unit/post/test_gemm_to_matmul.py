"""gemm_to_matmul: a Gemm with a constant weight becomes MatMul (+ Add) computing the same, so the
int4 quantizer (MatMul only) quantizes it; other Gemms are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxspec.post.agreement import cosine_similarity
from onnxspec.post.quantize import gemm_to_matmul, quantize_file

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 64)).astype(np.float32)


def _gemm_model(*, trans_b: int, bias: bool, alpha: float = 1.0, bias_shape: tuple[int, ...] = (48,)) -> tuple[onnx.ModelProto, np.ndarray]:
    w = RNG.normal(size=(48, 64) if trans_b else (64, 48)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.normal(size=bias_shape).astype(np.float32), "c"))
        inputs.append("c")
    graph = helper.make_graph(
        [helper.make_node("Gemm", inputs, ["y"], name="head", transB=trans_b, alpha=alpha)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), w


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds or {"x": X})[0]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("bias", "bias_shape"), [(False, (48,)), (True, (48,)), (True, (1, 48)), (True, (5, 48))])
def test_a_constant_weight_gemm_becomes_matmul_and_computes_the_same(trans_b: int, bias: bool, bias_shape: tuple[int, ...]) -> None:
    model, _ = _gemm_model(trans_b=trans_b, bias=bias, bias_shape=bias_shape)
    expected = _run(model)
    assert gemm_to_matmul(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops == (["MatMul", "Add"] if bias else ["MatMul"])
    matmul = model.graph.node[0]
    weight = next(t for t in model.graph.initializer if t.name == matmul.input[1])
    assert list(weight.dims) == [64, 48]  # [K, N], as MatMulNBits reads it
    assert [t.name for t in model.graph.initializer].count("w") == (0 if trans_b else 1)  # the transposed original is dropped
    np.testing.assert_allclose(_run(model), expected, rtol=1e-5, atol=1e-5)


def test_gemms_it_cannot_rewrite_are_left_alone() -> None:
    scaled, _ = _gemm_model(trans_b=1, bias=True, alpha=0.5)
    assert gemm_to_matmul(scaled) == 0 and [n.op_type for n in scaled.graph.node] == ["Gemm"]
    graph = helper.make_graph(  # the weight is an input, not a constant
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 64]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [64, 48])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 48])],
    )
    dynamic = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert gemm_to_matmul(dynamic) == 0 and [n.op_type for n in dynamic.graph.node] == ["Gemm"]


def test_a_weight_read_elsewhere_and_a_gemm_inside_if_branches() -> None:
    """The weight is an initializer of the outer graph, read by a Gemm in each If branch and by a
    Transpose outside: both Gemms are rewritten and the original weight stays for the Transpose."""
    w = RNG.normal(size=(48, 64)).astype(np.float32)

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y_" + name], transB=1)], name, [],
                                 [helper.make_tensor_value_info("y_" + name, TensorProto.FLOAT, ["batch", 48])])

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
         helper.make_node("Transpose", ["w"], ["wt"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48]), helper.make_tensor_value_info("wt", TensorProto.FLOAT, [64, 48])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    flag = np.array(True)
    expected = _run(model, x=X, flag=flag)
    assert gemm_to_matmul(model) == 2
    branches = [a.g for a in model.graph.node[0].attribute]
    assert all([n.op_type for n in g.node] == ["MatMul"] for g in branches)
    assert sorted(t.name for t in model.graph.initializer) == ["w", "w_transposed"]
    np.testing.assert_allclose(_run(model, x=X, flag=flag), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(X @ w.T, expected, rtol=1e-4, atol=1e-4)


def test_int4_quantizes_a_gemm_weight(tmp_path: Path) -> None:
    model, w = _gemm_model(trans_b=1, bias=False)
    onnx.save(model, tmp_path / "m.onnx")
    quantize_file(tmp_path / "m.onnx", tmp_path / "q.onnx", method="int4")
    quantized = onnx.load(tmp_path / "q.onnx")
    assert [n.op_type for n in quantized.graph.node] == ["MatMulNBits"]
    assert 0.98 < cosine_similarity(X @ w.T, _run(quantized)) < 1.0  # close, and really 4-bit


def test_a_weight_that_is_also_a_graph_input_is_not_a_constant() -> None:
    model, _ = _gemm_model(trans_b=1, bias=False)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [48, 64]))  # a caller may feed another
    assert gemm_to_matmul(model) == 0 and [n.op_type for n in model.graph.node] == ["Gemm"]
