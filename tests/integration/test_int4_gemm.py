"""int4 on a tiny BERT classifier: its pooler and classifier are Gemms with constant weights, which
the 4-bit quantizer (MatMul only) would leave in float32; rewritten as MatMul + Add they are
quantized too, and the result still passes its agreement check against PyTorch."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnxspec import export
from onnxspec.post.quantize import quantize
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration


def test_int4_quantizes_the_gemm_weights_of_a_bert_classifier(tmp_path: Path) -> None:
    bert = tiny_folder("bert", "text-classification", tmp_path / "bert")
    export(bert, tmp_path / "onnx", task="text-classification")
    before = onnx.load(tmp_path / "onnx" / "model.onnx")
    constants = {t.name for t in before.graph.initializer}
    gemms = [n for n in before.graph.node if n.op_type == "Gemm" and n.input[1] in constants]
    matmuls = [n for n in before.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    assert len(gemms) == 2  # pooler dense and classifier

    report = quantize(tmp_path / "onnx", tmp_path / "int4", method="int4")
    assert report.passed, report
    after = onnx.load(tmp_path / "int4" / "model.onnx")
    ops = [n.op_type for n in after.graph.node]
    assert "Gemm" not in ops
    assert ops.count("MatMulNBits") == len(matmuls) + len(gemms)
    floats = {t.name for t in after.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert not any(g.input[1] in floats or g.input[1] + "_transposed" in floats for g in gemms)  # no float copy of their weights left
    logits = [m for m in report.graphs[0].measures if m.output == "logits" and m.metric == "cosine"]
    assert logits and all(m.passed for m in logits)
