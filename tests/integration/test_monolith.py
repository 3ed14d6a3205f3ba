"""The monolith option: an encoder-decoder model exported as one graph instead of the
encoder / decoder / decoder-with-past split, validated like any other."""

from __future__ import annotations

import onnx
import pytest

from onnxspec.errors import SpecError
from onnxspec.pipeline.core import export
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("model_type", "task", "inputs"),
    [
        ("t5", "text2text-generation", ["input_ids", "attention_mask", "decoder_input_ids"]),
        ("bart", "feature-extraction", ["input_ids", "attention_mask", "decoder_input_ids"]),
        ("whisper", "automatic-speech-recognition", ["input_features", "decoder_input_ids"]),
    ],
)
def test_seq2seq_exports_as_one_graph(tmp_path, model_type: str, task: str, inputs: list[str]) -> None:
    folder = tiny_folder(model_type, task, tmp_path / "model")
    out = tmp_path / "onnx"
    report = export(folder, out, task=task, monolith=True)
    assert report.passed, report.failures
    assert [g.filename for g in report.graphs] == ["model.onnx"]
    graph = onnx.load(out / "model.onnx").graph
    assert [i.name for i in graph.input] == inputs
    assert not (out / "encoder_model.onnx").exists()


def test_monolith_with_a_cache_is_refused_with_the_reason(tmp_path) -> None:
    folder = tiny_folder("t5", "text2text-generation", tmp_path / "model")
    with pytest.raises(SpecError, match="cache"):
        export(folder, tmp_path / "onnx", task="text2text-generation-with-past", monolith=True)
