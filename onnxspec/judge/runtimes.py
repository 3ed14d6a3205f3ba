"""Which runtimes load an export folder, and the three lines that run it.

The facts are data: :data:`OPTIMUM` (task -> the ``optimum.onnxruntime`` class whose
``from_pretrained`` loads the folder, as optimum-onnx 0.1.0's pipelines map them),
:data:`TRANSFORMERS_JS` (task -> the task name transformers.js's ``pipeline()`` knows),
:data:`GENAI_TASKS` (what onnxruntime-genai runs: decoder-only language models with a cache).
onnxruntime's ``InferenceSession`` runs every graph of every folder.

:func:`runtimes_for` turns them into :class:`Runtime` records for one export (its task, files
and graph inputs): the loader, a snippet to paste, and ``needs``, what the folder lacks for that
runtime (empty when it loads the folder as written). A runtime is listed only when its layout can
give it the folder: transformers.js when :func:`transformers_js_files` (the rule
``--layout transformers.js`` applies) finds a file set it loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import attrs

__all__ = [
    "GENAI_TASKS", "main_graph", "OPTIMUM", "OPTIMUM_GENERATES", "OPTIMUM_OUTPUTS", "Runtime", "TRANSFORMERS_JS", "runtimes_for",
    "transformers_js_files",
]


@attrs.frozen(kw_only=True)
class Runtime:
    """One way to run an export folder."""

    name: str
    """``"optimum"``, ``"transformers.js"``, ``"onnxruntime-genai"`` or ``"onnxruntime"``."""
    loader: str
    """What loads the folder: a class (``ORTModelForCausalLM``), a call (``pipeline('fill-mask')``)."""
    language: str
    """The snippet's language: ``"python"`` or ``"javascript"``."""
    snippet: str
    """Three lines to paste: import, load the folder, run it on ``inputs``."""
    needs: str = ""
    """What the folder lacks for this runtime (or, for onnxruntime, the other graphs to open);
    empty when the snippet runs the folder as written."""


OPTIMUM: Mapping[str, str] = {
    "feature-extraction": "ORTModelForFeatureExtraction",
    "fill-mask": "ORTModelForMaskedLM",
    "text-generation": "ORTModelForCausalLM",
    "text2text-generation": "ORTModelForSeq2SeqLM",
    "text-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "multiple-choice": "ORTModelForMultipleChoice",
    "question-answering": "ORTModelForQuestionAnswering",
    "image-classification": "ORTModelForImageClassification",
    "image-segmentation": "ORTModelForSemanticSegmentation",
    "semantic-segmentation": "ORTModelForSemanticSegmentation",
    "image-to-image": "ORTModelForImageToImage",
    "image-to-text": "ORTModelForVision2Seq",
    "automatic-speech-recognition": "ORTModelForSpeechSeq2Seq",
    "audio-classification": "ORTModelForAudioClassification",
    "audio-frame-classification": "ORTModelForAudioFrameClassification",
    "audio-xvector": "ORTModelForAudioXVector",
    "zero-shot-image-classification": "ORTModelForZeroShotImageClassification",
}
"""onnxspec task (without ``-with-past``) -> Optimum's ORTModel class. Speech recognition by a
single CTC graph (no ``encoder_model.onnx``) is ``ORTModelForCTC`` instead (see
:func:`runtimes_for`). ``sentence-similarity`` has none: ``ORTModelForFeatureExtraction`` reads a
``last_hidden_state`` output, and that export's output is ``sentence_embedding``. The class is
chosen by task; it may still refuse a model type Optimum does not know."""

OPTIMUM_GENERATES = frozenset({"ORTModelForCausalLM", "ORTModelForSeq2SeqLM", "ORTModelForSpeechSeq2Seq", "ORTModelForVision2Seq"})
"""The classes run with ``generate()``; they take ``use_cache=False`` for a folder without a cache."""

OPTIMUM_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "ORTModelForFeatureExtraction": ("last_hidden_state",),
    "ORTModelForQuestionAnswering": ("start_logits", "end_logits"),
    "ORTModelForAudioXVector": ("logits", "embeddings"),
    "ORTModelForImageToImage": ("reconstruction",),
    "ORTModelForZeroShotImageClassification": ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"),
}
"""The outputs an Optimum class reads from its one graph, by name (the others read ``logits``);
a graph without them is not one the class can run (a dual-encoder feature extraction, say)."""

_OPTIMUM_SEQ2SEQ = frozenset({"ORTModelForSeq2SeqLM", "ORTModelForSpeechSeq2Seq", "ORTModelForVision2Seq"})
"""Classes that load ``encoder_model.onnx`` and a decoder: a ``--monolith`` folder is not theirs."""

TRANSFORMERS_JS: Mapping[str, str] = {
    "feature-extraction": "feature-extraction",
    "fill-mask": "fill-mask",
    "text-generation": "text-generation",
    "text2text-generation": "text2text-generation",
    "text-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "image-classification": "image-classification",
    "image-segmentation": "image-segmentation",
    "semantic-segmentation": "image-segmentation",
    "image-to-image": "image-to-image",
    "image-to-text": "image-to-text",
    "automatic-speech-recognition": "automatic-speech-recognition",
    "audio-classification": "audio-classification",
    "zero-shot-image-classification": "zero-shot-image-classification",
    "object-detection": "object-detection",
    "zero-shot-object-detection": "zero-shot-object-detection",
    "depth-estimation": "depth-estimation",
    "text-to-audio": "text-to-audio",
}
"""onnxspec task -> the task transformers.js's ``pipeline()`` runs it as (feature extraction
from images is its ``image-feature-extraction``)."""

GENAI_TASKS = frozenset({"text-generation-with-past"})
"""onnxruntime-genai runs decoder-only language models with a cache."""

_MAIN_GRAPHS = ("model.onnx", "encoder_model.onnx", "decoder_model_merged.onnx")


def main_graph(graphs: Sequence[str]) -> str:
    """The graph a snippet opens: ``model.onnx``, else the encoder (it runs first), else the first."""
    return next((g for g in _MAIN_GRAPHS if g in graphs), graphs[0] if graphs else "model.onnx")


def _session(folder: str, graphs: Sequence[str]) -> Runtime:
    graph = main_graph(graphs)
    others = [g for g in graphs if g != graph]
    snippet = (
        "import onnxruntime\n"
        f"session = onnxruntime.InferenceSession({json.dumps(os.path.join(folder, graph))})\n"
        "outputs = session.run(None, inputs)  # inputs: {name: numpy array}"
    )
    needs = f"one session per graph ({len(graphs)} graphs)" if others else ""
    return Runtime(name="onnxruntime", loader="onnxruntime.InferenceSession", language="python", snippet=snippet, needs=needs)


def _optimum(base: str, with_past: bool, folder: str, graphs: Sequence[str], outputs: Sequence[str]) -> Runtime | None:
    cls = OPTIMUM.get(base)
    seq2seq = "encoder_model.onnx" in graphs
    if base == "automatic-speech-recognition" and not seq2seq:
        cls = "ORTModelForCTC"
    if cls is None:
        return None
    needs = ""
    if cls in _OPTIMUM_SEQ2SEQ and not seq2seq:
        needs = f"{cls} loads encoder_model.onnx and a decoder: export without --monolith"
    missing = [n for n in OPTIMUM_OUTPUTS.get(cls, ("logits",)) if outputs and n not in outputs] if cls not in _OPTIMUM_SEQ2SEQ else []
    if missing:
        needs = f"the output{'s' if len(missing) > 1 else ''} {', '.join(missing)} {cls} reads; the graph has {', '.join(outputs)}"
    generates = cls in OPTIMUM_GENERATES
    options = "" if with_past or not generates else ", use_cache=False"
    run = ("ids = model.generate(**inputs)" if generates else "outputs = model(**inputs)") + (
        "  # inputs: processor(..., return_tensors=\"pt\")")
    snippet = (
        f"from optimum.onnxruntime import {cls}\n"
        f"model = {cls}.from_pretrained({json.dumps(folder)}{options})\n"
        f"{run}"
    )
    return Runtime(name="optimum", loader=cls, language="python", snippet=snippet, needs=needs)


def transformers_js_files(graphs: Sequence[str]) -> tuple[str, ...] | None:
    """The graph files transformers.js loads from an export's ``graphs`` (file names): ``model.onnx``
    alone, or ``encoder_model.onnx`` and ``decoder_model_merged.onnx`` for an encoder-decoder (not
    its ``decoder_model.onnx`` or ``decoder_with_past_model.onnx``); ``None`` for any other file
    set (MusicGen's six files, SAM's two, an encoder-decoder without its merged decoder).
    ``--layout transformers.js`` lays out these files and refuses a folder holding neither set
    (:func:`onnxspec.post.layouts.transformers_js_graphs`), so no other folder is offered to it.

    >>> transformers_js_files(["encoder_model.onnx", "decoder_model.onnx", "decoder_model_merged.onnx"])
    ('encoder_model.onnx', 'decoder_model_merged.onnx')
    """
    names = set(graphs)
    if names == {"model.onnx"}:
        return ("model.onnx",)
    if {"encoder_model.onnx", "decoder_model_merged.onnx"} <= names:
        return ("encoder_model.onnx", "decoder_model_merged.onnx")
    return None


def _transformers_js(base: str, with_past: bool, folder: str, graphs: Sequence[str], inputs: Sequence[str]) -> Runtime | None:
    if transformers_js_files(graphs) is None:  # --layout transformers.js refuses the folder
        return None
    parent, name = os.path.split(os.path.abspath(folder))
    setup = (
        f"env.localModelPath = {json.dumps(parent + os.sep)}; env.allowRemoteModels = false;\n"
    )
    task = TRANSFORMERS_JS.get(base)
    if task == "feature-extraction" and "pixel_values" in inputs:
        task = "image-feature-extraction"
    if task is None:
        return None
    needs = ["the graphs in onnx/, where it reads them (--layout transformers.js)"]
    if base == "text-generation" and not with_past:
        needs.append("a graph with a cache (--task text-generation-with-past)")
    snippet = (
        "import { env, pipeline } from '@huggingface/transformers';\n" + setup
        + f"const pipe = await pipeline('{task}', {json.dumps(name)}, {{ dtype: 'fp32' }});"
    )
    return Runtime(name="transformers.js", loader=f"pipeline('{task}')", language="javascript", snippet=snippet,
                   needs="; ".join(needs))


def _genai(task: str, folder: str, graphs: Sequence[str]) -> Runtime | None:
    if task not in GENAI_TASKS or "model.onnx" not in graphs:
        return None
    snippet = (
        "import onnxruntime_genai as og\n"
        f"model = og.Model({json.dumps(folder)})\n"
        "generator = og.Generator(model, og.GeneratorParams(model))"
    )
    return Runtime(name="onnxruntime-genai", loader="onnxruntime_genai.Model", language="python", snippet=snippet,
                   needs="genai_config.json beside the graphs (--layout genai)")


def runtimes_for(task: str, folder: str, graphs: Sequence[str], inputs: Sequence[str] = (),
                 outputs: Sequence[str] = ()) -> tuple[Runtime, ...]:
    """The runtimes that load an export of ``task`` (``-with-past`` included) written to ``folder``
    with the graph files ``graphs``; ``inputs`` and ``outputs`` are the names of :func:`main_graph`'s
    (``outputs`` empty: not checked). Optimum first when it has a class for the task, plain
    onnxruntime always last."""
    with_past = task.endswith("-with-past")
    base = task.removesuffix("-with-past")
    found = [
        _optimum(base, with_past, folder, graphs, outputs),
        _transformers_js(base, with_past, folder, graphs, inputs),
        _genai(task, folder, graphs),
        _session(folder, graphs),
    ]
    return tuple(r for r in found if r is not None)
