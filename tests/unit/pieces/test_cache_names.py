"""The cache naming scheme: names round-trip through parse, predicates agree with the records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.cache_names import (
    CacheName,
    Direction,
    Part,
    Which,
    cache_name,
    is_cache,
    is_cache_input,
    is_cache_output,
    is_cross,
    name_of,
    parse,
    to_past,
    to_present,
)
from onnxspec.errors import SpecError
from onnxspec.pieces.past import PastKind, PastLayout, past_specs

records = st.builds(
    CacheName,
    layer=st.integers(0, 10_000),
    which=st.sampled_from(list(Which)),
    part=st.none() | st.sampled_from(list(Part)),
    direction=st.sampled_from(list(Direction)),
)


@given(record=records)
def test_name_parse_name_round_trips(record: CacheName) -> None:
    name = name_of(record)
    assert parse(name) == record
    assert name_of(parse(name)) == name
    assert cache_name(record.layer, record.which, part=record.part, direction=record.direction) == name


@given(record=records)
def test_predicates_follow_the_record(record: CacheName) -> None:
    name = name_of(record)
    assert is_cache(name)
    assert is_cache_input(name) is (record.direction is Direction.INPUTS)
    assert is_cache_output(name) is (record.direction is Direction.OUTPUTS)
    assert is_cross(name) is (record.part is Part.CROSS)


@given(record=records)
def test_past_and_present_flip_only_the_direction(record: CacheName) -> None:
    name = name_of(record)
    present, past = parse(to_present(name)), parse(to_past(name))
    assert present.direction is Direction.OUTPUTS and past.direction is Direction.INPUTS
    assert (present.layer, present.which, present.part) == (past.layer, past.which, past.part) == (record.layer, record.which, record.part)
    assert to_past(to_present(name)) == to_past(name)


def test_known_names() -> None:
    assert cache_name(0, "key") == "past_key_values.0.key"
    assert cache_name(11, "value", part="encoder", direction=Direction.OUTPUTS) == "present.11.encoder.value"
    assert to_present("past_key_values.2.decoder.key") == "present.2.decoder.key"
    assert to_past("present.0.value") == "past_key_values.0.value"


@pytest.mark.parametrize(
    "name",
    ["logits", "present", "present.0", "present.x.key", "present.01.key", "present.0.keys", "past_key_values.0.cross.key",
     "present.0.decoder.key.extra", "past.0.key", "present.-1.key", " present.0.key", "encoder_hidden_states"],
)
def test_other_names_are_not_cache_names(name: str) -> None:
    assert parse(name) is None
    assert not (is_cache(name) or is_cache_input(name) or is_cache_output(name) or is_cross(name))
    with pytest.raises(SpecError, match="not a cache tensor name"):
        to_present(name)


def test_bad_parts_are_named() -> None:
    with pytest.raises(SpecError, match="part"):
        cache_name(0, "key", part="cross")
    with pytest.raises(SpecError, match="layer"):
        CacheName(layer=-1, which=Which.KEY)


@given(
    kind=st.sampled_from(list(PastKind)),
    layers=st.integers(1, 6),
    direction=st.sampled_from(list(Direction)),
    past_in_inputs=st.booleans(),
)
def test_every_spec_the_layouts_make_parses(kind: PastKind, layers: int, direction: Direction, past_in_inputs: bool) -> None:
    layout = PastLayout(kind=kind, num_layers=layers, num_heads=2, key_dim=4, value_dim=4)
    for t in past_specs(layout, direction, past_in_inputs=past_in_inputs):
        record = parse(t.name)
        assert record is not None and record.direction is direction
        assert (record.part is None) is (kind is PastKind.DECODER_ONLY)
