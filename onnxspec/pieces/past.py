"""Past-key-value layouts and the pure function that adds cache tensors to a list of specs.

A :class:`PastLayout` says how many layers a cache has, how many key/value heads, the key and
value head dims (they may differ), and whether it is a decoder-only cache or a seq2seq one
(self attention + cross attention). Names follow what ONNX Runtime consumers of Optimum-exported
models read: ``past_key_values.{i}.key`` in, ``present.{i}.key`` out; seq2seq adds
``.decoder`` / ``.encoder`` (the names come from :mod:`onnxspec.pieces.cache_names`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from onnxspec.pieces.axes import Kind, TensorSpec, merge_specs
from onnxspec.pieces.cache_names import Direction, Part, Which, cache_name
from onnxspec.errors import SpecError

__all__ = [
    "Direction",
    "PastKind",
    "PastLayout",
    "add_past_key_values",
    "past_specs",
]


class PastKind(enum.Enum):
    """Decoder-only cache, or a seq2seq decoder's self + cross attention cache."""

    DECODER_ONLY = "decoder-only"
    SEQ2SEQ = "seq2seq"


def _positive(inst: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"PastLayout.{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class PastLayout:
    """Shape of a KV cache: ``(batch, num_heads, length, key_dim | value_dim)`` per layer."""

    kind: PastKind = attrs.field(validator=attrs.validators.instance_of(PastKind))
    num_layers: int = attrs.field(validator=_positive)
    num_heads: int = attrs.field(validator=_positive)
    key_dim: int = attrs.field(validator=_positive)
    value_dim: int = attrs.field(validator=_positive)
    cross_num_heads: int | None = attrs.field(default=None)

    @cross_num_heads.validator
    def _check_cross(self, attribute: attrs.Attribute, value: int | None) -> None:
        if value is not None:
            _positive(self, attribute, value)

    @property
    def encoder_heads(self) -> int:
        return self.cross_num_heads or self.num_heads

    @property
    def tensors_per_layer(self) -> int:
        return 4 if self.kind is PastKind.SEQ2SEQ else 2


def _axes(kind: PastKind, part: Part | None, direction: Direction, past_in_inputs: bool) -> dict[int, str]:
    if kind is PastKind.DECODER_ONLY:
        if direction is Direction.INPUTS:
            return {0: "batch_size", 2: "past_sequence_length"}
        length = "past_sequence_length + sequence_length" if past_in_inputs else "sequence_length"
        return {0: "batch_size", 2: length}
    if part is Part.CROSS:
        return {0: "batch_size", 2: "encoder_sequence_length_out"}
    if direction is Direction.INPUTS:
        return {0: "batch_size", 2: "past_decoder_sequence_length"}
    length = "past_decoder_sequence_length + decoder_sequence_length" if past_in_inputs else "decoder_sequence_length"
    return {0: "batch_size", 2: length}


def past_specs(layout: PastLayout, direction: Direction, *, past_in_inputs: bool = True) -> tuple[TensorSpec, ...]:
    """The cache tensors of ``layout`` in ``direction``, layer by layer, key before value.

    For a seq2seq decoder whose past is an input, the cross-attention cache does not change
    between steps, so its outputs carry only the ``.decoder`` part (2 per layer); inputs, and
    outputs of a graph without past inputs, carry both parts (4 per layer).
    """
    if layout.kind is PastKind.DECODER_ONLY:
        parts: tuple[Part | None, ...] = (None,)
    elif direction is Direction.OUTPUTS and past_in_inputs:
        parts = (Part.SELF,)
    else:
        parts = (Part.SELF, Part.CROSS)
    out = []
    for i in range(layout.num_layers):
        for part in parts:
            axes = _axes(layout.kind, part, direction, past_in_inputs)
            for which in Which:
                name = cache_name(i, which, part=part, direction=direction)
                out.append(TensorSpec(name=name, axes=axes, kind=Kind.FLOAT, rank=4))
    return tuple(out)


def add_past_key_values(
    specs: Iterable[TensorSpec],
    layout: PastLayout,
    direction: Direction,
    *,
    past_in_inputs: bool = True,
) -> tuple[TensorSpec, ...]:
    """``specs`` followed by the cache tensors of ``layout``; a new tuple, the input untouched.

    Raises if a cache name is already among ``specs`` with a different spec.
    """
    return merge_specs(tuple(specs), past_specs(layout, direction, past_in_inputs=past_in_inputs))
