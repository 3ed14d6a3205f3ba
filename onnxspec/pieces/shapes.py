"""Dummy dimensions and dtypes: the knobs dummy inputs and validation are built from.

``Shapes`` carries Optimum's default sizes plus the few onnxspec adds for caches and
multimodal batches. ``DTypes`` says which integer and floating dtypes the dummy inputs and the
exported graph's inputs use. ``validation_shapes`` derives the shape sets a graph is checked at,
all different from the ones it was traced with.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs
import torch

from onnxspec.pieces.axes import Kind
from onnxspec.errors import SpecError

__all__ = [
    "DTypes",
    "FloatDtype",
    "IntDtype",
    "Shapes",
    "size_table",
    "torch_dtype",
    "validation_shapes",
]


def _positive(inst: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"shape {attribute.name} must be a positive integer, got {value!r}")


def _non_negative(inst: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SpecError(f"shape {attribute.name} must be an integer >= 0, got {value!r}")


def _size(default: int) -> int:
    return attrs.field(default=default, validator=_positive)


@attrs.frozen(kw_only=True)
class Shapes:
    """Sizes of the dummy inputs. Defaults are Optimum's, plus cache and multimodal knobs.

    Dynamic sizes used for tracing differ from one another (2, 16, 8, 5, 3, 4) because
    torch.export treats equal sizes as the same symbol and specialises sizes 0 and 1.
    """

    batch_size: int = _size(2)
    sequence_length: int = _size(16)
    num_choices: int = _size(4)
    width: int = _size(64)
    height: int = _size(64)
    num_channels: int = _size(3)
    point_batch_size: int = _size(3)
    nb_points_per_image: int = _size(2)
    visual_seq_length: int = _size(16)
    feature_size: int = _size(80)
    nb_max_frames: int = _size(3000)
    audio_sequence_length: int = _size(16000)
    past_sequence_length: int = attrs.field(default=8, validator=_non_negative)
    decoder_sequence_length: int = _size(5)
    image_batch_size: int = _size(3)

    def __repr__(self) -> str:
        changed = {
            a.name: getattr(self, a.name)
            for a in attrs.fields(Shapes)
            if getattr(self, a.name) != a.default
        }
        return f"Shapes({', '.join(f'{k}={v}' for k, v in changed.items())})"


class IntDtype(enum.Enum):
    """Integer dtype of token ids, masks and positions."""

    INT64 = "int64"
    INT32 = "int32"
    INT8 = "int8"


class FloatDtype(enum.Enum):
    """Floating dtype of the model and of its float inputs."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


_TORCH = {
    IntDtype.INT64: torch.int64,
    IntDtype.INT32: torch.int32,
    IntDtype.INT8: torch.int8,
    FloatDtype.FP32: torch.float32,
    FloatDtype.FP16: torch.float16,
    FloatDtype.BF16: torch.bfloat16,
}


def _enum_converter(kind: type[enum.Enum], field: str):  # type: ignore[no-untyped-def]
    """Convert a value to ``kind``; a bad one raises a SpecError listing the choices."""

    def convert(value: object) -> enum.Enum:
        try:
            return kind(value)
        except ValueError as e:
            choices = [m.value for m in kind]
            raise SpecError(f"DTypes.{field} must be one of {choices}, got {value!r}") from e

    return convert


@attrs.frozen(kw_only=True)
class DTypes:
    """The integer and floating dtypes of dummy inputs and of the exported graph's inputs."""

    int_dtype: IntDtype = attrs.field(default=IntDtype.INT64, converter=_enum_converter(IntDtype, "int_dtype"))
    float_dtype: FloatDtype = attrs.field(default=FloatDtype.FP32, converter=_enum_converter(FloatDtype, "float_dtype"))


def torch_dtype(kind: Kind, dtypes: DTypes) -> torch.dtype:
    """The torch dtype a tensor of ``kind`` has under ``dtypes``.

    >>> torch_dtype(Kind.INT, DTypes(int_dtype="int32"))
    torch.int32
    """
    if kind is Kind.BOOL:
        return torch.bool
    return _TORCH[dtypes.int_dtype if kind is Kind.INT else dtypes.float_dtype]


def size_table(shapes: Shapes, extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """Size of every axis symbol the built-in specs use, from ``shapes`` (``extra`` overrides).

    >>> size_table(Shapes())["past_decoder_sequence_length"]
    8
    """
    table = {a.name: getattr(shapes, a.name) for a in attrs.fields(Shapes)}
    table.update(
        past_decoder_sequence_length=shapes.past_sequence_length,
        encoder_sequence_length=shapes.sequence_length,
        encoder_sequence_length_out=shapes.sequence_length,
        text_batch_size=shapes.batch_size,
        total_sequence_length=shapes.past_sequence_length + shapes.sequence_length,
    )
    table.update(extra or {})
    return table


def validation_shapes(traced: Shapes, *, boundary: int | None = None) -> tuple[Shapes, ...]:
    """Shape sets to validate at: each differs from ``traced`` on every dynamic size.

    The first is the smallest legal step (batch 1, one token, a short past); the second an odd,
    larger one with an empty past (a first generation step); the third a decode step with a
    longer past. (A graph whose inputs vary with the batch only would get the second set's
    shapes again from the third: validation feeds it the first's instead, with other values;
    see :func:`onnxspec.judge.validate.validate_with_references`.)

    ``boundary``: a length where the model switches behaviour (a rotary embedding's
    ``max_position_embeddings`` for dynamic NTK, ``original_max_position_embeddings`` for
    LongRoPE: :func:`onnxspec.catalog.rope.boundary`). The second set's prompt then runs past it
    (at least ``boundary + 9`` tokens) and the third decodes after an even longer past, so the
    total lengths grow from set to set: a PyTorch module that keeps state from its longest call
    so far (dynamic NTK) computes at each set what a fresh one would.
    """

    def other(value: int, *candidates: int) -> int:
        return next(c for c in candidates if c != value)

    b, s, p = traced.batch_size, traced.sequence_length, traced.past_sequence_length
    d, a, n = traced.decoder_sequence_length, traced.audio_sequence_length, traced.num_choices
    ib, pb, pn = traced.image_batch_size, traced.point_batch_size, traced.nb_points_per_image
    small = attrs.evolve(
        traced,
        batch_size=other(b, 1, 2),
        sequence_length=other(s, 1, 2),
        past_sequence_length=other(p, 3, 4),
        decoder_sequence_length=other(d, 1, 2),
        audio_sequence_length=other(a, max(400, a // 2 + 1), max(401, a // 2 + 2)),
        num_choices=other(n, 2, 3),
        image_batch_size=other(ib, 1, 2),
        point_batch_size=other(pb, 1, 2),
        nb_points_per_image=other(pn, 1, 2),
    )
    large = attrs.evolve(
        traced,
        batch_size=other(b, 3, 4),
        sequence_length=max(s + 7 if (s + 7) % 2 else s + 8, 0 if boundary is None else boundary + 9 + boundary % 2),
        past_sequence_length=0 if p else 1,
        decoder_sequence_length=d + 4 if (d + 4) % 2 else d + 5,
        audio_sequence_length=a + a // 3 + 1,
        num_choices=n + 1,
        image_batch_size=other(ib, 2, 1),
        point_batch_size=pb + 2,
        nb_points_per_image=pn + 3,
    )
    decode = attrs.evolve(
        traced,
        batch_size=other(b, 2, 3),
        sequence_length=other(s, 1, 2),
        past_sequence_length=p + 5 if boundary is None else max(p + 5, large.sequence_length + large.past_sequence_length + 7),
        decoder_sequence_length=other(d, 1, 2),
        audio_sequence_length=other(a, a + 160, a + 320),
        num_choices=other(n, 3, 5),
        image_batch_size=other(ib, 1, 2),
        point_batch_size=other(pb, 2, 1),
        nb_points_per_image=other(pn, 1, 3),
    )
    return small, large, decode
