"""Long-context rotary embeddings in one graph: dynamic NTK's frequencies computed from the length.

transformers decorates the ``forward`` of most rotary embedding classes with
``dynamic_rope_update``. For ``rope_type: "dynamic"`` (dynamic NTK) that decorator recomputes
``inv_freq`` in Python whenever ``max(position_ids) + 1`` exceeds the length the module last
saw, and stores it on the module. A trace runs that Python ``if`` once: TorchScript keeps the
trace's frequencies (the graph is right only up to ``max_position_embeddings`` and wrong beyond
it), torch.export cannot guard on the data-dependent length and refuses to trace.

:data:`DYNAMIC_ROPE` holds, for every registered model type whose rotary class is so decorated,
a :class:`~onnxspec.pieces.patches.Patch` wrapping the class's ``forward``: for a dynamic
rope type it computes the frequencies with torch ops from the sequence length inside the graph
(transformers' own ``_compute_dynamic_ntk_parameters``, which takes ``max(seq_len,
max_position_embeddings)`` as a tensor: no branch left), then runs the undecorated ``forward``
on a shallow view of the module holding them. Every other rope type goes to the original
``forward`` unchanged. The module itself is never modified.

What the graph agrees with: PyTorch's rotary module keeps the frequencies of the longest call
it has seen until a call shorter than ``max_position_embeddings`` resets it, so a module that
decoded past the boundary answers later, shorter calls with the longer call's frequencies. An
ONNX graph has no such state; onnxspec's graphs compute what a *fresh* module computes at each
call: frequencies for ``max(max(position_ids) + 1, max_position_embeddings)``. A generation
that starts from a fresh module and grows step by step sees exactly these (each step is longer
than the one before), and so does validation when its shape sets grow in total length after
one set below the boundary (:func:`onnxspec.pieces.shapes.validation_shapes` with a boundary).

YaRN, llama3 and linear scaling compute static frequencies at construction: no switch, the
graph is right at every length without a patch. LongRoPE switches with ``torch.where`` inside
transformers' decorator, which torch.export traces (phi3; phimoe has its own patch in
:mod:`onnxspec.catalog.models`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from onnxspec.catalog.registry import ModelEntry
from onnxspec.errors import SpecError
from onnxspec.pieces.patches import Patch

__all__ = ["DYNAMIC_ROPE", "ROTARY_CLASSES", "boundary", "dynamic_rope_patch", "with_dynamic_rope"]

ROTARY_CLASSES: Mapping[str, str] = MappingProxyType({
    "arcee": "transformers.models.arcee.modeling_arcee:ArceeRotaryEmbedding",
    "cohere": "transformers.models.cohere.modeling_cohere:CohereRotaryEmbedding",
    "deepseek_v3": "transformers.models.deepseek_v3.modeling_deepseek_v3:DeepseekV3RotaryEmbedding",
    "esm": "transformers.models.esm.modeling_esm:EsmRotaryEmbedding",
    "falcon": "transformers.models.falcon.modeling_falcon:FalconRotaryEmbedding",
    "gemma": "transformers.models.gemma.modeling_gemma:GemmaRotaryEmbedding",
    "gemma2": "transformers.models.gemma2.modeling_gemma2:Gemma2RotaryEmbedding",
    "gemma3": "transformers.models.gemma3.modeling_gemma3:Gemma3RotaryEmbedding",
    "gemma3_text": "transformers.models.gemma3.modeling_gemma3:Gemma3RotaryEmbedding",
    "glm": "transformers.models.glm.modeling_glm:GlmRotaryEmbedding",
    "gpt_neox": "transformers.models.gpt_neox.modeling_gpt_neox:GPTNeoXRotaryEmbedding",
    "gpt_oss": "transformers.models.gpt_oss.modeling_gpt_oss:GptOssRotaryEmbedding",
    "granite": "transformers.models.granite.modeling_granite:GraniteRotaryEmbedding",
    "granitemoe": "transformers.models.granitemoe.modeling_granitemoe:GraniteMoeRotaryEmbedding",
    "helium": "transformers.models.helium.modeling_helium:HeliumRotaryEmbedding",
    "llama": "transformers.models.llama.modeling_llama:LlamaRotaryEmbedding",
    "mistral": "transformers.models.mistral.modeling_mistral:MistralRotaryEmbedding",
    "mixtral": "transformers.models.mixtral.modeling_mixtral:MixtralRotaryEmbedding",
    "modernbert": "transformers.models.modernbert.modeling_modernbert:ModernBertRotaryEmbedding",
    "moonshine": "transformers.models.moonshine.modeling_moonshine:MoonshineRotaryEmbedding",
    "nemotron": "transformers.models.nemotron.modeling_nemotron:NemotronRotaryEmbedding",
    "olmo": "transformers.models.olmo.modeling_olmo:OlmoRotaryEmbedding",
    "olmo2": "transformers.models.olmo2.modeling_olmo2:Olmo2RotaryEmbedding",
    "olmoe": "transformers.models.olmoe.modeling_olmoe:OlmoeRotaryEmbedding",
    "phi": "transformers.models.phi.modeling_phi:PhiRotaryEmbedding",
    "phi3": "transformers.models.phi3.modeling_phi3:Phi3RotaryEmbedding",
    "qwen2": "transformers.models.qwen2.modeling_qwen2:Qwen2RotaryEmbedding",
    "qwen2_moe": "transformers.models.qwen2_moe.modeling_qwen2_moe:Qwen2MoeRotaryEmbedding",
    "qwen3": "transformers.models.qwen3.modeling_qwen3:Qwen3RotaryEmbedding",
    "qwen3_moe": "transformers.models.qwen3_moe.modeling_qwen3_moe:Qwen3MoeRotaryEmbedding",
    "smollm3": "transformers.models.smollm3.modeling_smollm3:SmolLM3RotaryEmbedding",
    "stablelm": "transformers.models.stablelm.modeling_stablelm:StableLmRotaryEmbedding",
})
"""Registered model types whose rotary class's ``forward`` is decorated with transformers'
``dynamic_rope_update``, and that class. phimoe is not here: PhimoeConfig accepts LongRoPE
parameters only (its validation asks for ``short_mscale``), and its LongRoPE patch in
:mod:`onnxspec.catalog.models` replaces that ``forward``."""


def _dynamic_in_graph(original: Any) -> Any:
    """``wrap`` of the patch: ``original`` is the decorated ``forward``; for dynamic NTK the
    frequencies come from the length inside the graph, other rope types run ``original``.

    A ``forward`` that transformers' ``dynamic_rope_update`` does not wrap (another
    transformers version) cannot be run undecorated: dynamic NTK is then refused with a
    :class:`~onnxspec.errors.SpecError` when traced, other rope types still run ``original``.
    """
    raw = getattr(original, "__wrapped__", None)

    def forward(self, x, position_ids=None, layer_type=None):  # type: ignore[no-untyped-def]
        kwargs = {"layer_type": layer_type} if layer_type is not None else {}
        rope_type = self.rope_type if layer_type is None else self.rope_type[layer_type]
        if "dynamic" not in rope_type:
            return original(self, x, position_ids, **kwargs)
        if raw is None:
            raise SpecError(
                f"dynamic NTK rope: {type(self).__qualname__}.forward is not wrapped by transformers' dynamic_rope_update "
                "here, so onnxspec cannot compute its frequencies from the length inside the graph, and a trace would keep "
                "the traced length's (wrong past max_position_embeddings); use the transformers version onnxspec supports "
                "or a config without rope_type 'dynamic'"
            )
        import torch
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        # the length as a tensor: the ntk function takes max(length, max_position_embeddings) with torch ops
        seq_len = torch.max(position_ids) + 1
        inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](self.config, x.device, seq_len=seq_len, **kwargs)
        view = copy.copy(self)  # shares parameters and submodules; its own buffer table holds the new frequencies
        prefix = f"{layer_type}_" if layer_type is not None else ""
        object.__setattr__(view, "_buffers", {**self._buffers, f"{prefix}inv_freq": inv_freq})
        return raw(view, x, position_ids, **kwargs)

    return forward


def dynamic_rope_patch(target: str) -> Patch:
    """The patch computing dynamic NTK's frequencies in the graph for the rotary class ``target``."""
    return Patch(
        target=target,
        attribute="forward",
        wrap=_dynamic_in_graph,
        reason=(
            "dynamic_rope_update recomputes dynamic NTK's inv_freq by a Python `if` on max(position_ids) + 1, which "
            "TorchScript freezes at the trace's length and torch.export cannot guard on; the frequencies are computed "
            "from the length with torch ops instead (other rope types unchanged)"
        ),
    )


DYNAMIC_ROPE: Mapping[str, Patch] = MappingProxyType({t: dynamic_rope_patch(c) for t, c in ROTARY_CLASSES.items()})
"""Model type -> the patch that makes its dynamic NTK rotary embedding right at every length."""


def _with(options: Mapping[str, Any], patch: Patch) -> dict[str, Any]:
    patches = tuple(options.get("patches", ()))
    return {**options, "patches": patches if patch in patches else (*patches, patch)}


def with_dynamic_rope(entries: Iterable[ModelEntry]) -> tuple[ModelEntry, ...]:
    """``entries`` with the :data:`DYNAMIC_ROPE` patch of their model type added to their
    options and to every task's own options (which replace the entry's for that task)."""
    out = []
    for e in entries:
        patch = DYNAMIC_ROPE.get(e.model_type)
        if patch is not None:
            e = attrs.evolve(
                e, options=_with(e.options, patch), task_options={t: _with(o, patch) for t, o in e.task_options.items()}
            )
        out.append(e)
    return tuple(out)


def _decoder_config(config: Any) -> Any:
    """The config of the text side whose positions the rotary embedding counts: the decoder's
    (a composite config with a text encoder and a decoder, such as MusicGen's, names both, and
    asking for "the" text config is ambiguous there)."""
    get = getattr(config, "get_text_config", None)
    if get is None:
        return config
    try:
        return get(decoder=True)
    except (TypeError, ValueError):
        return config


def boundary(config: Any, *, switching_only: bool = False) -> int | None:
    """The length past which ``config``'s rotary embedding must be validated, or ``None``.

    Dynamic NTK rescales its frequencies beyond ``max_position_embeddings``; LongRoPE switches
    factors beyond ``original_max_position_embeddings``. YaRN and llama3 have no switch, but
    their frequencies are stretched from ``original_max_position_embeddings`` and are meant for
    lengths past it: that length too. Plain rope (``default``, ``linear``) gives ``None``. A
    config with rope parameters per layer type gives the smallest of their lengths.

    ``switching_only``: only the rope types whose graph switches at that length (dynamic NTK,
    LongRoPE); the export validates past it by default (YaRN's and llama3's frequencies do not
    depend on the length, so crossing proves nothing more for them and may cost a long run).
    """
    text = _decoder_config(config)
    rope = getattr(text, "rope_parameters", None) or {}
    kinds = [rope] if "rope_type" in rope else [v for v in rope.values() if isinstance(v, Mapping)]
    found = []
    for params in kinds:
        kind = str(params.get("rope_type", "default"))
        original = params.get("original_max_position_embeddings") or getattr(text, "original_max_position_embeddings", None)
        if "dynamic" in kind:
            found.append(int(text.max_position_embeddings))
        elif kind in (("longrope",) if switching_only else ("longrope", "yarn", "llama3")) and original:
            found.append(int(original))
    return min(found) if found else None
