"""Shapes and dtypes: Optimum's defaults, validation naming the field, validation shape sets."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.axes import Kind
from onnxspec.errors import SpecError
from onnxspec.pieces.shapes import DTypes, FloatDtype, IntDtype, Shapes, size_table, torch_dtype, validation_shapes

SIZE_FIELDS = [a.name for a in attrs.fields(Shapes) if a.name != "past_sequence_length"]

# The defaults Optimum documents (reference/README.md, "Default dummy shapes").
OPTIMUM_DEFAULTS = dict(
    batch_size=2, sequence_length=16, num_choices=4, width=64, height=64, num_channels=3, point_batch_size=3,
    nb_points_per_image=2, visual_seq_length=16, feature_size=80, nb_max_frames=3000, audio_sequence_length=16000,
)


def test_defaults_are_optimums() -> None:
    shapes = Shapes()
    assert {k: getattr(shapes, k) for k in OPTIMUM_DEFAULTS} == OPTIMUM_DEFAULTS


@given(field=st.sampled_from(SIZE_FIELDS), value=st.integers(max_value=0))
def test_zero_or_negative_sizes_are_rejected_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(SpecError) as info:
        Shapes(**{field: value})
    assert field in str(info.value) and repr(value) in str(info.value)


@given(value=st.integers(max_value=-1))
def test_past_sequence_length_may_be_zero_but_not_negative(value: int) -> None:
    assert Shapes(past_sequence_length=0).past_sequence_length == 0
    with pytest.raises(SpecError, match="past_sequence_length"):
        Shapes(past_sequence_length=value)


@pytest.mark.parametrize("bad", [True, 2.0, "16", None])
def test_sizes_must_be_plain_integers(bad: object) -> None:
    with pytest.raises(SpecError, match="sequence_length"):
        Shapes(sequence_length=bad)  # type: ignore[arg-type]


def test_evolve_revalidates() -> None:
    with pytest.raises(SpecError, match="batch_size"):
        attrs.evolve(Shapes(), batch_size=0)


def test_repr_lists_only_changed_fields() -> None:
    assert repr(Shapes()) == "Shapes()"
    assert repr(Shapes(batch_size=3)) == "Shapes(batch_size=3)"


def test_dtypes_accept_strings_and_enums() -> None:
    assert DTypes(int_dtype="int32", float_dtype="fp16") == DTypes(int_dtype=IntDtype.INT32, float_dtype=FloatDtype.FP16)


@pytest.mark.parametrize(("field", "bad"), [("int_dtype", "int16"), ("float_dtype", "fp64")])
def test_unknown_dtypes_raise_a_spec_error_listing_the_choices(field: str, bad: str) -> None:
    with pytest.raises(SpecError) as info:
        DTypes(**{field: bad})
    assert field in str(info.value) and repr(bad) in str(info.value)
    assert ("int64" if field == "int_dtype" else "fp32") in str(info.value)


@pytest.mark.parametrize(
    ("kind", "dtypes", "expected"),
    [
        (Kind.INT, DTypes(), torch.int64),
        (Kind.INT, DTypes(int_dtype="int8"), torch.int8),
        (Kind.FLOAT, DTypes(float_dtype="fp16"), torch.float16),
        (Kind.FLOAT, DTypes(float_dtype="bf16"), torch.bfloat16),
        (Kind.BOOL, DTypes(int_dtype="int32", float_dtype="fp16"), torch.bool),
    ],
)
def test_torch_dtype_follows_kind(kind: Kind, dtypes: DTypes, expected: torch.dtype) -> None:
    assert torch_dtype(kind, dtypes) is expected


def test_size_table_covers_the_derived_symbols_and_takes_overrides() -> None:
    shapes = Shapes(sequence_length=7, past_sequence_length=3)
    table = size_table(shapes, {"num_queries": 9})
    assert table["encoder_sequence_length"] == 7 and table["past_decoder_sequence_length"] == 3
    assert table["total_sequence_length"] == 10 and table["text_batch_size"] == shapes.batch_size
    assert table["num_queries"] == 9
    assert size_table(shapes, {"sequence_length": 1})["sequence_length"] == 1


shapes_strategy = st.builds(
    Shapes,
    batch_size=st.integers(1, 9),
    sequence_length=st.integers(1, 40),
    past_sequence_length=st.integers(0, 20),
    decoder_sequence_length=st.integers(1, 20),
    num_choices=st.integers(1, 6),
    audio_sequence_length=st.integers(800, 40_000),
    image_batch_size=st.integers(1, 5),
)

VARIED = (
    "batch_size",
    "sequence_length",
    "past_sequence_length",
    "decoder_sequence_length",
    "audio_sequence_length",
    "num_choices",
    "image_batch_size",
)


@given(traced=shapes_strategy)
def test_every_validation_set_differs_from_the_trace_on_every_varied_size(traced: Shapes) -> None:
    sets = validation_shapes(traced)
    assert len(sets) == 3
    for shapes in sets:
        for field in VARIED:
            assert getattr(shapes, field) != getattr(traced, field), (field, traced, shapes)


@given(traced=shapes_strategy)
def test_validation_sets_cover_a_single_step_an_empty_past_and_a_longer_past(traced: Shapes) -> None:
    small, large, decode = validation_shapes(traced)
    assert small.sequence_length <= 2 and small.batch_size <= 2
    assert large.past_sequence_length == 0 or traced.past_sequence_length == 0
    assert decode.past_sequence_length > traced.past_sequence_length
    assert validation_shapes(traced) == (small, large, decode)
