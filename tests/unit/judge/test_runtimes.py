"""The runtimes that load an export folder: the task tables are consistent with onnxspec's tasks,
the choice follows the folder's files, and the onnxruntime snippet runs as printed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxspec.judge.runtimes import (
    GENAI_TASKS, OPTIMUM, OPTIMUM_GENERATES, OPTIMUM_OUTPUTS, TRANSFORMERS_JS, main_graph, runtimes_for,
)
from onnxspec.pieces.tasks import TASKS

SEQ2SEQ = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")


def _by_name(task: str, graphs=("model.onnx",), inputs=("input_ids",), folder="/data/out"):  # type: ignore[no-untyped-def]
    return {r.name: r for r in runtimes_for(task, folder, graphs, inputs)}


def test_tables_name_only_onnxspec_tasks() -> None:
    for table in (OPTIMUM, TRANSFORMERS_JS):
        assert set(table) <= set(TASKS), set(table) - set(TASKS)
    assert all(cls.startswith("ORTModelFor") for cls in OPTIMUM.values())
    assert set(OPTIMUM_OUTPUTS) <= set(OPTIMUM.values())
    assert {t.removesuffix("-with-past") for t in GENAI_TASKS} <= set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_onnxruntime_always_last_and_ready(task: str) -> None:
    found = runtimes_for(task, "/data/out", ["model.onnx"], ["input_ids"])
    assert found[-1].name == "onnxruntime" and found[-1].needs == ""
    assert len(found[-1].snippet.splitlines()) == 3
    assert all(len(r.snippet.splitlines()) == 3 for r in found)
    optimum = [r for r in found if r.name == "optimum"]
    assert bool(optimum) == (task in OPTIMUM), task


def test_optimum_class_by_task_and_files() -> None:
    assert _by_name("text-classification")["optimum"].loader == "ORTModelForSequenceClassification"
    assert _by_name("text2text-generation-with-past", SEQ2SEQ)["optimum"].loader == "ORTModelForSeq2SeqLM"
    assert _by_name("automatic-speech-recognition-with-past", SEQ2SEQ)["optimum"].loader == "ORTModelForSpeechSeq2Seq"
    assert _by_name("automatic-speech-recognition", inputs=("input_values",))["optimum"].loader == "ORTModelForCTC"
    monolith = _by_name("text2text-generation")["optimum"]  # one model.onnx: not what the seq2seq class loads
    assert "--monolith" in monolith.needs
    assert "optimum" not in _by_name("sentence-similarity")  # its output is not the last_hidden_state Optimum reads


def test_optimum_needs_the_outputs_its_class_reads() -> None:
    def optimum(task: str, outputs: tuple[str, ...]):  # type: ignore[no-untyped-def]
        return {r.name: r for r in runtimes_for(task, "/data/out", ["model.onnx"], ("input_ids",), outputs)}["optimum"]

    assert optimum("feature-extraction", ("last_hidden_state",)).needs == ""
    dual = optimum("feature-extraction", ("text_embeds", "image_embeds"))  # a dual encoder's feature extraction
    assert "last_hidden_state" in dual.needs and "text_embeds" in dual.needs
    assert optimum("question-answering", ("start_logits", "end_logits")).needs == ""
    assert "end_logits" in optimum("question-answering", ("start_logits",)).needs
    assert optimum("text-classification", ("logits",)).needs == ""
    assert optimum("text-classification", ()).needs == ""  # outputs not given: not checked


def test_optimum_snippet_loads_the_folder_with_or_without_cache() -> None:
    cached = _by_name("text-generation-with-past")["optimum"]
    plain = _by_name("text-generation")["optimum"]
    assert cached.loader in OPTIMUM_GENERATES
    assert 'ORTModelForCausalLM.from_pretrained("/data/out")' in cached.snippet and "generate" in cached.snippet
    assert 'from_pretrained("/data/out", use_cache=False)' in plain.snippet
    classify = _by_name("text-classification")["optimum"]
    assert "use_cache" not in classify.snippet and "model(**inputs)" in classify.snippet


def test_transformers_js_and_genai_say_what_the_folder_lacks() -> None:
    js = _by_name("feature-extraction", inputs=("pixel_values",))["transformers.js"]
    assert js.loader == "pipeline('image-feature-extraction')" and "--layout transformers.js" in js.needs
    assert "env.localModelPath = \"/data/\"" in js.snippet and "\"out\"" in js.snippet
    # without the merged decoder --layout transformers.js refuses the folder, so it is not offered
    assert "transformers.js" not in _by_name("text2text-generation-with-past", SEQ2SEQ[:3])
    assert "--layout genai" in _by_name("text-generation-with-past")["onnxruntime-genai"].needs
    assert "onnxruntime-genai" not in _by_name("text-generation")  # it runs decoders with a cache only
    assert "transformers.js" not in _by_name("audio-xvector")


def test_session_opens_the_graph_that_runs_first() -> None:
    assert main_graph(SEQ2SEQ) == "encoder_model.onnx"
    assert main_graph(["decoder_model_merged.onnx", "model.onnx"]) == "model.onnx"
    session = _by_name("text2text-generation-with-past", SEQ2SEQ)["onnxruntime"]
    assert "encoder_model.onnx" in session.snippet and "one session per graph (4 graphs)" == session.needs


def test_onnxruntime_snippet_runs_as_printed(tmp_path) -> None:
    """The snippet's text, executed: it opens the folder's graph and runs it on ``inputs``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"])], "square", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    snippet = _by_name("feature-extraction", folder=str(tmp_path))["onnxruntime"].snippet
    namespace = {"inputs": {"x": np.array([1.5, -2.0, 3.0], dtype=np.float32)}}
    exec(compile(snippet, "onnxruntime snippet", "exec"), namespace)
    np.testing.assert_array_equal(namespace["outputs"][0], np.array([2.25, 4.0, 9.0], dtype=np.float32))


def test_sams_split_files_are_not_offered_to_transformers_js() -> None:
    """transformers.js' SamModel reads these two files, but --layout transformers.js does not lay
    them out (it refuses the folder), so no runtime entry points to it."""
    found = {r.name: r for r in runtimes_for(
        "feature-extraction", "/out/sam", ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"], ["pixel_values"], ["image_embeddings"]
    )}
    assert "transformers.js" not in found
    assert "image_embeddings" in found["optimum"].needs  # ORTModelForFeatureExtraction reads last_hidden_state
