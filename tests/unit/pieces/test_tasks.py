"""Tasks: synonyms, '-with-past', close-match suggestions, and task inference from a local
config.json (no network)."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.axes import names
from onnxspec.errors import ModelLoadError, UnknownNameError
from onnxspec.pieces.tasks import SYNONYMS, TASKS, TaskRequest, infer_task, parse_task, read_config_json, task_outputs
from tests.tiny import CONFIGS


@pytest.mark.parametrize(
    ("given_name", "canonical"),
    [
        ("causal-lm", "text-generation"),
        ("seq2seq-lm", "text2text-generation"),
        ("summarization", "text2text-generation"),
        ("translation", "text2text-generation"),
        ("masked-lm", "fill-mask"),
        ("sequence-classification", "text-classification"),
        ("default", "feature-extraction"),
        ("speech2seq-lm", "automatic-speech-recognition"),
    ],
)
def test_synonyms_map_to_canonical_tasks(given_name: str, canonical: str) -> None:
    assert parse_task(given_name) == TaskRequest(canonical, False)
    assert parse_task(given_name + "-with-past") == TaskRequest(canonical, True)


@given(task=st.sampled_from(sorted(TASKS)), with_past=st.booleans())
def test_canonical_names_parse_to_themselves_and_print_back(task: str, with_past: bool) -> None:
    text = task + ("-with-past" if with_past else "")
    parsed = parse_task(text)
    assert parsed == TaskRequest(task, with_past)
    assert str(parsed) == text
    assert parse_task(f"  {text.upper().replace('-', '_')} ") == parsed


def test_every_synonym_points_at_a_known_task() -> None:
    assert set(SYNONYMS.values()) <= set(TASKS)
    assert not set(SYNONYMS) & set(TASKS)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("text-clasification", "text-classification"),
        ("text-generaton-with-past", "text-generation-with-past"),
        ("feature-extracton", "feature-extraction"),
        ("casual-lm", "causal-lm"),
    ],
)
def test_unknown_tasks_suggest_close_matches(typo: str, suggestion: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_task(typo)
    assert suggestion in info.value.suggestions
    assert "Did you mean" in str(info.value) and repr(suggestion) in str(info.value) and repr(typo) in str(info.value)
    assert isinstance(info.value, KeyError)


def test_a_hopeless_task_name_gets_no_suggestion_but_a_hint() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_task("zzzz")
    assert info.value.suggestions == [] and "onnxspec tasks" in str(info.value)


def test_task_outputs_are_optimums_common_outputs() -> None:
    assert names(task_outputs("question-answering")) == ("start_logits", "end_logits")
    assert task_outputs("causal-lm-with-past")[0].dynamic_axes == {0: "batch_size", 1: "sequence_length"}
    assert task_outputs("text2text-generation")[0].dynamic_axes == {0: "batch_size", 1: "decoder_sequence_length"}
    assert task_outputs("text-classification")[0].dynamic_axes == {0: "batch_size"}
    assert task_outputs("multiple-choice")[0].dynamic_axes == {0: "batch_size", 1: "num_choices"}
    assert all(info.auto_classes for info in TASKS.values())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("task inference must not touch the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(
    ("model_type", "architecture", "overrides", "task"),
    [
        ("bert", "BertForMaskedLM", None, "fill-mask"),
        ("bert", "BertForSequenceClassification", None, "text-classification"),
        ("bert", "BertModel", None, "feature-extraction"),
        ("bert", "BertLMHeadModel", None, "text-generation"),
        ("gpt2", "GPT2LMHeadModel", None, "text-generation"),
        ("llama", "LlamaForCausalLM", None, "text-generation"),
        ("t5", "T5ForConditionalGeneration", None, "text2text-generation"),
        ("bart", "BartForQuestionAnswering", None, "question-answering"),
        ("vit", "ViTForImageClassification", None, "image-classification"),
        ("wav2vec2", "Wav2Vec2ForCTC", None, "automatic-speech-recognition"),
        ("wav2vec2", "Wav2Vec2ForSequenceClassification", {"ForSequenceClassification": "audio-classification"}, "audio-classification"),
        ("whisper", "WhisperForConditionalGeneration", {"ForConditionalGeneration": "automatic-speech-recognition"}, "automatic-speech-recognition"),
    ],
)
def test_infer_task_from_a_local_config_json(
    tmp_path, no_network: None, model_type: str, architecture: str, overrides: dict[str, str] | None, task: str
) -> None:
    data = {**CONFIGS[model_type]().to_dict(), "architectures": [architecture]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = read_config_json(tmp_path)
    assert config["model_type"] == model_type
    assert infer_task(config, overrides) == task


def test_infer_task_without_architectures_is_feature_extraction(no_network: None) -> None:
    assert infer_task({"model_type": "bert"}) == "feature-extraction"
    assert infer_task({"model_type": "bert", "architectures": None}) == "feature-extraction"
    assert infer_task({"model_type": "bert", "architectures": ["BertForPreTraining"]}) == "feature-extraction"


def test_infer_task_does_not_change_its_arguments() -> None:
    config = {"architectures": ["GPT2LMHeadModel"]}
    overrides = {"ForCausalLM": "feature-extraction"}
    infer_task(config, overrides)
    assert config == {"architectures": ["GPT2LMHeadModel"]} and overrides == {"ForCausalLM": "feature-extraction"}


def test_read_config_json_explains_what_is_wrong(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_config_json(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no config.json"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(ModelLoadError, match="no 'model_type'"):
        read_config_json(tmp_path)
