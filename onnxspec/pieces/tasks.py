"""Tasks: Optimum's task names and synonyms, each task's common outputs and model heads, and
task inference from a local ``config.json`` (no network).

A task name may end in ``-with-past``: that asks for the same task exported with a KV cache.
:func:`parse_task` splits it into a canonical name and a flag; unknown names raise with close
matches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from onnxspec.pieces.axes import TensorSpec, spec
from onnxspec.errors import ModelLoadError, UnknownNameError

__all__ = [
    "SYNONYMS",
    "TASKS",
    "TaskInfo",
    "TaskRequest",
    "NAMED_HEADS",
    "head_classes",
    "infer_task",
    "parse_task",
    "read_config_json",
    "task_outputs",
]

_B = {0: "batch_size"}
_BS = {0: "batch_size", 1: "sequence_length"}


@attrs.frozen(kw_only=True)
class TaskInfo:
    """A task: its common outputs and the auto classes that load its head, tried in order."""

    name: str
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    auto_classes: tuple[str, ...] = attrs.field(converter=tuple)


def _task(name: str, outputs: tuple[TensorSpec, ...], *auto: str) -> tuple[str, TaskInfo]:
    return name, TaskInfo(name=name, outputs=outputs, auto_classes=auto)


TASKS: Mapping[str, TaskInfo] = MappingProxyType(
    dict(
        [
            # a model type with no bare model is read from its causal LM (TrOCR) or its pre-training model (ColPali's
            # retrieval model, whose features are its multi-vector embeddings)
            _task("feature-extraction", (spec("last_hidden_state", _BS),), "AutoModel", "AutoModelForCausalLM", "AutoModelForPreTraining"),
            _task("fill-mask", (spec("logits", _BS),), "AutoModelForMaskedLM"),
            _task("text-generation", (spec("logits", _BS),), "AutoModelForCausalLM"),
            _task(
                "text2text-generation",
                (spec("logits", {0: "batch_size", 1: "decoder_sequence_length"}),),
                "AutoModelForSeq2SeqLM",
            ),
            _task("text-classification", (spec("logits", _B),), "AutoModelForSequenceClassification"),
            _task("token-classification", (spec("logits", _BS),), "AutoModelForTokenClassification"),
            _task("multiple-choice", (spec("logits", {0: "batch_size", 1: "num_choices"}),), "AutoModelForMultipleChoice"),
            _task("question-answering", (spec("start_logits", _BS), spec("end_logits", _BS)), "AutoModelForQuestionAnswering"),
            _task("image-classification", (spec("logits", _B),), "AutoModelForImageClassification"),
            _task("image-segmentation", (spec("logits", {0: "batch_size", 2: "height", 3: "width"}),), "AutoModelForImageSegmentation", "AutoModelForSemanticSegmentation"),
            _task(
                "semantic-segmentation",
                (spec("logits", {0: "batch_size", 1: "num_labels", 2: "height", 3: "width"}),),
                "AutoModelForSemanticSegmentation",
            ),
            _task(
                "object-detection",
                (spec("logits", {0: "batch_size", 1: "num_queries"}), spec("pred_boxes", {0: "batch_size", 1: "num_queries"})),
                "AutoModelForObjectDetection",
            ),
            _task("masked-im", (spec("reconstruction", _B),), "AutoModelForMaskedImageModeling"),
            _task("automatic-speech-recognition", (spec("logits", _BS),), "AutoModelForSpeechSeq2Seq", "AutoModelForCTC"),
            _task("audio-classification", (spec("logits", _B),), "AutoModelForAudioClassification"),
            _task("audio-frame-classification", (spec("logits", _BS),), "AutoModelForAudioFrameClassification"),
            _task("audio-xvector", (spec("logits", _B), spec("embeddings", _B)), "AutoModelForAudioXVector"),
            _task(
                "zero-shot-image-classification",
                (
                    spec("logits_per_image", {0: "image_batch_size", 1: "text_batch_size"}),
                    spec("logits_per_text", {0: "text_batch_size", 1: "image_batch_size"}),
                    spec("text_embeds", {0: "text_batch_size"}),
                    spec("image_embeds", {0: "image_batch_size"}),
                ),
                "AutoModelForZeroShotImageClassification",
            ),
            _task(
                "zero-shot-object-detection",
                (
                    spec("logits", {0: "batch_size", 1: "num_queries"}),
                    spec("pred_boxes", {0: "batch_size", 1: "num_queries"}),
                    spec("text_embeds", _B),
                    spec("image_embeds", _B),
                ),
                "AutoModelForZeroShotObjectDetection",
            ),
            _task("image-to-text", (spec("logits", _BS),), "AutoModelForImageTextToText"),
            _task("depth-estimation", (spec("predicted_depth", {0: "batch_size", 1: "height", 2: "width"}),), "AutoModelForDepthEstimation"),
            _task(
                "image-to-image",
                (spec("reconstruction", {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"}),),
                "AutoModelForImageToImage",
            ),
            _task(
                "keypoint-detection",
                (spec("heatmaps", {0: "batch_size", 1: "num_keypoints", 2: "height", 3: "width"}),),
                "AutoModelForKeypointDetection",
                "AutoModelForPoseEstimation",
            ),
            _task(
                "reinforcement-learning",
                (spec("state_preds", _BS), spec("action_preds", _BS), spec("return_preds", _BS), spec("last_hidden_state", _BS)),
                "AutoModel",
            ),
            _task("time-series-forecasting", (spec("prediction_outputs", _B),), "AutoModelForTimeSeriesPrediction"),
            _task("sentence-similarity", (spec("sentence_embedding", _B),), "AutoModel"),
            _task("text-to-audio", (spec("waveform", _B),), "AutoModelForTextToWaveform"),
        ]
    )
)

SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "default": "feature-extraction",
        "causal-lm": "text-generation",
        "seq2seq-lm": "text2text-generation",
        "summarization": "text2text-generation",
        "translation": "text2text-generation",
        "masked-lm": "fill-mask",
        "sequence-classification": "text-classification",
        "zero-shot-classification": "text-classification",
        "vision2seq-lm": "image-to-text",
        "speech2seq-lm": "automatic-speech-recognition",
        "text-to-speech": "text-to-audio",
        "mask-generation": "feature-extraction",
    }
)

NAMED_HEADS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        # forecasting heads that no auto class maps (Optimum names them too)
        ("patchtst", "time-series-forecasting"): "PatchTSTForPrediction",
        ("patchtsmixer", "time-series-forecasting"): "PatchTSMixerForPrediction",
        # heads of an auto class outside the task's own (instance segmentation; a spectrogram model)
        ("maskformer", "image-segmentation"): "MaskFormerForInstanceSegmentation",
        ("speecht5", "text-to-audio"): "SpeechT5ForTextToSpeech",
    }
)
"""(model type, task) -> the transformers class of a head in none of the task's auto classes."""


def head_classes(task: str, model_type: str) -> tuple[str, ...]:
    """Names of the transformers classes that may load ``task``'s head for ``model_type``, in
    the order to try them: the task's auto classes, then its named head (:data:`NAMED_HEADS`).

    >>> head_classes("time-series-forecasting", "patchtst")
    ('AutoModelForTimeSeriesPrediction', 'PatchTSTForPrediction')
    """
    named = NAMED_HEADS.get((model_type, task))
    return (*TASKS[task].auto_classes, *((named,) if named else ()))


_WITH_PAST = "-with-past"


@attrs.frozen
class TaskRequest:
    """A parsed task: canonical name and whether a cache was asked for (``-with-past``)."""

    name: str
    with_past: bool = False

    def __str__(self) -> str:
        return self.name + (_WITH_PAST if self.with_past else "")


def parse_task(task: str) -> TaskRequest:
    """Canonical task and cache flag from a user's task name (synonyms and ``-with-past``).

    >>> parse_task("causal-lm-with-past")
    TaskRequest(name='text-generation', with_past=True)
    """
    raw = task.strip().lower().replace("_", "-")
    with_past = raw.endswith(_WITH_PAST)
    base = raw[: -len(_WITH_PAST)] if with_past else raw
    name = SYNONYMS.get(base, base)
    if name not in TASKS:
        known = [*TASKS, *SYNONYMS, *(t + _WITH_PAST for t in TASKS)]
        raise UnknownNameError("task", task, known, hint="Run `onnxspec tasks` to list every task.")
    return TaskRequest(name, with_past)


def task_outputs(task: str) -> tuple[TensorSpec, ...]:
    """The common outputs of ``task`` (Optimum's defaults)."""
    return TASKS[parse_task(task).name].outputs


# Architecture class suffix -> task. Longest suffixes are tried first.
_ARCH_SUFFIX: Mapping[str, str] = MappingProxyType(
    {
        "ForMaskedLM": "fill-mask",
        "ForCausalLM": "text-generation",
        "LMHeadModel": "text-generation",
        "ForConditionalGeneration": "text2text-generation",
        "ForSpeechSeq2Seq": "automatic-speech-recognition",
        "ForSequenceClassification": "text-classification",
        "ForTokenClassification": "token-classification",
        "ForQuestionAnswering": "question-answering",
        "ForMultipleChoice": "multiple-choice",
        "ForImageClassification": "image-classification",
        "ForMaskedImageModeling": "masked-im",
        "ForCTC": "automatic-speech-recognition",
        "ForAudioClassification": "audio-classification",
        "ForAudioFrameClassification": "audio-frame-classification",
        "ForXVector": "audio-xvector",
        "ForSemanticSegmentation": "semantic-segmentation",
        "ForObjectDetection": "object-detection",
        "ForDepthEstimation": "depth-estimation",
        "ForImageTextToText": "image-to-text",
        "ForPrediction": "time-series-forecasting",
        "Model": "feature-extraction",
    }
)


def read_config_json(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a local model folder, with clear errors when it is not one."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ModelLoadError(f"model folder {folder!r} does not exist (or is not a folder); pass a local folder holding config.json")
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"{folder!r} is not a model folder: it has no config.json. "
            "Save a model there with model.save_pretrained(folder), or point --model at the folder that has it"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e}); the file is corrupt or truncated: save the config again") from e
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(f"{path} has no 'model_type' field; it is not a transformers model config")
    return data


def infer_task(
    config: Mapping[str, Any], overrides: Mapping[str, str] | None = None, *, default: str = "feature-extraction"
) -> str:
    """The task a config's ``architectures`` entry implies, read locally (no network).

    ``overrides`` maps an architecture suffix to a task for one model type (a speech model's
    ``ForConditionalGeneration`` is speech recognition). Without ``architectures`` the answer
    is ``default`` (``feature-extraction``: a bare model; a GGUF file's model generates text).
    """
    archs = config.get("architectures") or []
    table = {**_ARCH_SUFFIX, **(overrides or {})}
    for arch in archs:
        for suffix in sorted(table, key=len, reverse=True):
            if arch.endswith(suffix):
                return table[suffix]
    return default


