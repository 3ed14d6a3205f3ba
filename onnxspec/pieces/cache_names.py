"""The KV-cache naming scheme, in one place: build a cache tensor's name, parse it back.

What ONNX Runtime consumers of Optimum-exported models read (Optimum's ORTModel,
transformers.js, onnxruntime-genai):

- decoder-only: ``past_key_values.{i}.key|value`` in, ``present.{i}.key|value`` out;
- seq2seq: ``past_key_values.{i}.decoder.key|value`` (self attention) and
  ``past_key_values.{i}.encoder.key|value`` (cross attention), ``present.*`` likewise.

Every module that needs a cache name asks here (:func:`cache_name`, :func:`parse`, the
predicates, :func:`to_present` / :func:`to_past`) instead of formatting strings itself.
"""

from __future__ import annotations

import enum
import re

import attrs

from onnxspec.errors import SpecError

__all__ = [
    "CacheName",
    "Direction",
    "INPUT_PREFIX",
    "OUTPUT_PATTERN",
    "OUTPUT_PREFIX",
    "Part",
    "Which",
    "cache_name",
    "is_cache",
    "is_cache_input",
    "is_cache_output",
    "is_cross",
    "name_of",
    "parse",
    "to_past",
    "to_present",
]

INPUT_PREFIX = "past_key_values"
OUTPUT_PREFIX = "present"
OUTPUT_PATTERN = "present.*"
"""The pattern standing for every cache output (a tolerance key, a folded table row)."""


class Direction(enum.Enum):
    """Cache tensors as graph inputs (``past_key_values.*``) or outputs (``present.*``)."""

    INPUTS = "inputs"
    OUTPUTS = "outputs"


class Part(enum.Enum):
    """Which attention of a seq2seq decoder a cache tensor belongs to."""

    SELF = "decoder"
    CROSS = "encoder"


class Which(enum.Enum):
    """Keys or values."""

    KEY = "key"
    VALUE = "value"


_PREFIX = {Direction.INPUTS: INPUT_PREFIX, Direction.OUTPUTS: OUTPUT_PREFIX}
_NAME = re.compile(r"^(past_key_values|present)\.(0|[1-9][0-9]*)\.(?:(decoder|encoder)\.)?(key|value)$")


def _layer(inst: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SpecError(f"CacheName.layer must be an integer >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class CacheName:
    """A parsed cache tensor name. ``part`` is ``None`` for a decoder-only cache."""

    layer: int = attrs.field(validator=_layer)
    which: Which = attrs.field(validator=attrs.validators.instance_of(Which))
    part: Part | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Part)))
    direction: Direction = attrs.field(default=Direction.INPUTS, validator=attrs.validators.instance_of(Direction))


def name_of(record: CacheName) -> str:
    """The tensor name of ``record``.

    >>> name_of(CacheName(layer=2, which=Which.VALUE, part=Part.CROSS, direction=Direction.OUTPUTS))
    'present.2.encoder.value'
    """
    middle = f".{record.part.value}" if record.part is not None else ""
    return f"{_PREFIX[record.direction]}.{record.layer}{middle}.{record.which.value}"


def cache_name(
    layer: int,
    which: Which | str,
    *,
    part: Part | str | None = None,
    direction: Direction = Direction.INPUTS,
) -> str:
    """The name of one cache tensor.

    >>> cache_name(0, "key")
    'past_key_values.0.key'
    >>> cache_name(3, Which.VALUE, part=Part.SELF, direction=Direction.OUTPUTS)
    'present.3.decoder.value'
    """
    try:
        record = CacheName(
            layer=layer,
            which=Which(which),
            part=Part(part) if part is not None else None,
            direction=direction,
        )
    except ValueError as e:
        raise SpecError(
            f"cache tensor ({layer!r}, {which!r}, part={part!r}): which must be one of {[w.value for w in Which]} and part "
            f"one of {[p.value for p in Part]} or None"
        ) from e
    return name_of(record)


def parse(name: str) -> CacheName | None:
    """The record of a cache tensor name, or ``None`` when ``name`` is not one.

    >>> parse("past_key_values.1.decoder.key").part
    <Part.SELF: 'decoder'>
    >>> parse("logits") is None
    True
    """
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    prefix, layer, part, which = match.groups()
    return CacheName(
        layer=int(layer),
        which=Which(which),
        part=Part(part) if part is not None else None,
        direction=Direction.INPUTS if prefix == INPUT_PREFIX else Direction.OUTPUTS,
    )


def is_cache(name: str) -> bool:
    """Whether ``name`` is a cache tensor, input or output."""
    return parse(name) is not None


def is_cache_input(name: str) -> bool:
    """Whether ``name`` is a cache input (``past_key_values.*``)."""
    record = parse(name)
    return record is not None and record.direction is Direction.INPUTS


def is_cache_output(name: str) -> bool:
    """Whether ``name`` is a cache output (``present.*``)."""
    record = parse(name)
    return record is not None and record.direction is Direction.OUTPUTS


def is_cross(name: str) -> bool:
    """Whether ``name`` is a cross-attention cache tensor (``*.encoder.key|value``)."""
    record = parse(name)
    return record is not None and record.part is Part.CROSS


def _flip(name: str, direction: Direction) -> str:
    record = parse(name)
    if record is None:
        raise SpecError(
            f"{name!r} is not a cache tensor name; cache names look like 'past_key_values.0.key', "
            "'present.0.decoder.value' or 'past_key_values.3.encoder.key'"
        )
    return name_of(attrs.evolve(record, direction=direction))


def to_present(name: str) -> str:
    """The output name matching a cache input (identity on an output name).

    >>> to_present("past_key_values.0.encoder.key")
    'present.0.encoder.key'
    """
    return _flip(name, Direction.OUTPUTS)


def to_past(name: str) -> str:
    """The input name matching a cache output (identity on an input name).

    >>> to_past("present.4.value")
    'past_key_values.4.value'
    """
    return _flip(name, Direction.INPUTS)
