"""Graph kinds: what one file of an export holds, as a value.

A :class:`GraphKind` names a role (which entry of a model spec's graph table the file is
traced from: ``"monolith"``, ``"encoder"``, ``"decoder"``, ``"vision_encoder"``, any string a
family chooses), its file name, and how it treats the KV cache: whether it returns the cache
(``present.*``) and whether it reads one (``past_key_values.*``). A kind also says what becomes
of it when an export carries a cache (``cache_variants``: a decoder becomes a first-step
decoder and a decoder with past) and which merged file may join those variants (``merged``).
A merged kind's ``joins`` are the two kinds its branches are traced as.

Nothing in the pipeline tests a kind's name: a new kind of graph (an embeddings graph, a
prompt decoder) is a new value here or in a family, with no enum member to add.

The merged decoder's interface is computed here too (:func:`merged_interface`), from its two
branches' specs: it is part of what the kind means, and needs no ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from onnxspec.errors import SpecError
from onnxspec.pieces.axes import Kind, TensorSpec, merge_specs, spec

__all__ = [
    "BRANCH_INPUT",
    "DECODER",
    "DECODER_FIRST_STEP",
    "DECODER_WITH_PAST",
    "EMBED_TOKENS",
    "ENCODER",
    "GraphKind",
    "Interface",
    "MERGED_DECODER",
    "SINGLE",
    "SINGLE_WITH_PAST",
    "VISION_ENCODER",
    "merged_filename",
    "merged_interface",
]

BRANCH_INPUT = "use_cache_branch"
"""A merged decoder's boolean ``[1]`` input choosing the branch: ``False`` first step, ``True`` later steps."""


def _check_name(inst: object, attribute: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str):
        raise SpecError(f"GraphKind.{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen(kw_only=True)
class GraphKind:
    """What one file of an export holds.

    ``role``: the key of the model spec's graph table this file is traced from. ``cache_out``:
    the graph returns the cache (``present.*``); ``cache_in``: it reads one
    (``past_key_values.*``, and the inputs the cache replaces are dropped). ``cache_variants``:
    the kinds that stand for this one when the export carries a cache (empty: it is written the
    same way with or without). ``merged``: a kind joining those variants in one file (an ``If``
    on :data:`BRANCH_INPUT`). ``joins``: for a merged kind, the no-cache-input and cache-input
    kinds of its two branches.
    """

    name: str = attrs.field(validator=_check_name)
    role: str = attrs.field(validator=_check_name)
    filename: str = attrs.field(validator=_check_name)
    cache_out: bool = False
    cache_in: bool = False
    cache_variants: tuple[GraphKind, ...] = attrs.field(default=(), converter=tuple)
    merged: GraphKind | None = None
    joins: tuple[GraphKind, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        who = f"graph kind {self.name!r}"
        if not self.filename.endswith(".onnx"):
            raise SpecError(f"{who}: filename must end in '.onnx', got {self.filename!r}")
        if self.cache_in and not self.cache_out:
            raise SpecError(f"{who}: a graph reading the cache (cache_in) returns it too; set cache_out=True")
        if self.joins:
            if len(self.joins) != 2 or self.joins[0].cache_in or not self.joins[1].cache_in:
                raise SpecError(
                    f"{who}: joins must be two kinds, the first without cache inputs and the second with them, "
                    f"got {[k.name for k in self.joins]}"
                )
            if {k.role for k in self.joins} != {self.role}:
                raise SpecError(f"{who}: the kinds it joins must have its role {self.role!r}, got {[k.role for k in self.joins]}")
        if self.merged is not None:
            if not self.merged.joins:
                raise SpecError(f"{who}: merged kind {self.merged.name!r} joins no kinds; give it joins=(first, later)")
            missing = [k.name for k in self.merged.joins if k not in self.cache_variants]
            if missing:
                raise SpecError(f"{who}: merged kind {self.merged.name!r} joins {missing}, which are not among its cache_variants")

    @property
    def is_merged(self) -> bool:
        """Whether this file joins two traced kinds rather than being traced itself."""
        return bool(self.joins)

    def __repr__(self) -> str:
        cache = "cache in and out" if self.cache_in else "cache out" if self.cache_out else "no cache"
        return f"GraphKind({self.name}: {self.filename}, role {self.role!r}, {cache})"


def merged_filename(no_past: str) -> str:
    """``decoder_model.onnx`` -> ``decoder_model_merged.onnx`` (the name runtimes look for).

    >>> merged_filename("decoder_model.onnx")
    'decoder_model_merged.onnx'
    """
    stem = no_past[: -len(".onnx")] if no_past.endswith(".onnx") else no_past
    return f"{stem}_merged.onnx"


SINGLE_WITH_PAST = GraphKind(name="model-with-past", role="monolith", filename="model.onnx", cache_out=True, cache_in=True)
"""A decoder-only model's one graph with its cache: it serves the first step too (an empty past)."""
SINGLE = GraphKind(name="model", role="monolith", filename="model.onnx", cache_variants=(SINGLE_WITH_PAST,))
"""A model exported as one graph."""
ENCODER = GraphKind(name="encoder", role="encoder", filename="encoder_model.onnx")
"""An encoder-decoder model's encoder."""
DECODER_FIRST_STEP = GraphKind(name="decoder-first-step", role="decoder", filename="decoder_model.onnx", cache_out=True)
"""The decoder's first step: reads the encoder's output, returns the whole cache."""
DECODER_WITH_PAST = GraphKind(
    name="decoder-with-past", role="decoder", filename="decoder_with_past_model.onnx", cache_out=True, cache_in=True
)
"""The decoder's later steps: reads the cache (the cross-attention cache stands for the encoder's output)."""
MERGED_DECODER = GraphKind(
    name="merged-decoder",
    role="decoder",
    filename=merged_filename(DECODER_FIRST_STEP.filename),
    cache_out=True,
    cache_in=True,
    joins=(DECODER_FIRST_STEP, DECODER_WITH_PAST),
)
"""Both decoder steps in one graph, an ``If`` on :data:`BRANCH_INPUT`, weights stored once."""
DECODER = GraphKind(
    name="decoder",
    role="decoder",
    filename="decoder_model.onnx",
    cache_variants=(DECODER_FIRST_STEP, DECODER_WITH_PAST),
    merged=MERGED_DECODER,
)
"""An encoder-decoder model's decoder without any cache."""
VISION_ENCODER = GraphKind(name="vision-encoder", role="vision_encoder", filename="vision_encoder.onnx")
"""An image encoder whose output feeds another graph (SAM's image embeddings, a VLM's image features)."""
EMBED_TOKENS = GraphKind(name="embed-tokens", role="embed_tokens", filename="embed_tokens.onnx")
"""Token embeddings alone: ids in, ``inputs_embeds`` out (an image+text model's text side)."""


@attrs.frozen(kw_only=True)
class Interface:
    """A graph's inputs and outputs (what :func:`onnxspec.judge.validate.check_graph` compares)."""

    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)


def merged_interface(
    no_past_inputs: Sequence[TensorSpec],
    no_past_outputs: Sequence[TensorSpec],
    with_past_inputs: Sequence[TensorSpec],
    with_past_outputs: Sequence[TensorSpec],
) -> Interface:
    """The merged graph's inputs and outputs, from the two graphs' specs.

    Inputs: the union (no-cache graph first), then ``use_cache_branch``. Outputs: the no-cache
    graph's names; an output both graphs have takes the cache graph's axes (with a past of
    length 0 they are the first step's), the others (the cross-attention cache) the first's.
    """
    inputs = (*merge_specs(no_past_inputs, with_past_inputs), spec(BRANCH_INPUT, {}, Kind.BOOL, rank=1))
    later = {t.name: t for t in with_past_outputs}
    outputs = tuple(later.get(t.name, t) for t in no_past_outputs)
    return Interface(inputs=inputs, outputs=outputs)
