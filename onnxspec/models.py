"""The supported architectures, as data: one entry per model type, and the default registry.

Adding an architecture is usually one ``entry(...)`` line here: the family it belongs to, the
options that set it apart (which normalizer, whether it takes ``token_type_ids`` or
``position_ids`` ...) and its tasks. A model type whose graph needs a new input or a new cache
shape composes a new piece in ``families.py`` / ``generators.py`` rather than subclassing.
"""

from __future__ import annotations

from onnxspec import normalizers
from onnxspec.families import audio, speech_to_text, text_and_vision, text_decoder, text_encoder, text_seq2seq, vision
from onnxspec.registry import ModelEntry, Registry, build_registry, entry

__all__ = ["ENTRIES", "REGISTRY"]

_ENCODER_TASKS = (
    "feature-extraction",
    "fill-mask",
    "multiple-choice",
    "question-answering",
    "text-classification",
    "token-classification",
)
_DECODER_TASKS = (
    "feature-extraction",
    "feature-extraction-with-past",
    "text-generation",
    "text-generation-with-past",
    "text-classification",
)
_SEQ2SEQ_TASKS = (
    "feature-extraction",
    "feature-extraction-with-past",
    "text2text-generation",
    "text2text-generation-with-past",
)

ENTRIES: tuple[ModelEntry, ...] = (
    # text encoders
    entry("bert", text_encoder, _ENCODER_TASKS),
    entry("roberta", text_encoder, _ENCODER_TASKS, token_type_ids=False),
    entry("distilbert", text_encoder, _ENCODER_TASKS, token_type_ids=False),
    # decoder-only
    entry("gpt2", text_decoder, (*_DECODER_TASKS, "token-classification")),
    entry("llama", text_decoder, _DECODER_TASKS),
    # encoder-decoder text
    entry("t5", text_seq2seq, _SEQ2SEQ_TASKS, normalizer=normalizers.T5),
    entry(
        "bart",
        text_seq2seq,
        (*_SEQ2SEQ_TASKS, "text-generation", "text-generation-with-past", "text-classification", "question-answering"),
        task_families={"text-generation": text_decoder},
        task_options={"text-generation": {"position_ids": False, "normalizer": normalizers.SEQ2SEQ_DECODER}},
    ),
    # vision, audio, speech, multimodal
    entry("vit", vision, ("feature-extraction", "image-classification", "masked-im")),
    entry(
        "wav2vec2",
        audio,
        ("feature-extraction", "automatic-speech-recognition", "audio-classification", "audio-frame-classification", "audio-xvector"),
        architecture_tasks={"ForSequenceClassification": "audio-classification"},
    ),
    entry(
        "whisper",
        speech_to_text,
        (
            "feature-extraction",
            "feature-extraction-with-past",
            "audio-classification",
            "automatic-speech-recognition",
            "automatic-speech-recognition-with-past",
        ),
        architecture_tasks={"ForConditionalGeneration": "automatic-speech-recognition"},
    ),
    entry("clip", text_and_vision, ("feature-extraction", "zero-shot-image-classification", "image-classification")),
)

REGISTRY: Registry = build_registry(ENTRIES)
"""Every supported model type, built once from :data:`ENTRIES`."""
