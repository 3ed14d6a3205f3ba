"""Past-key-value layouts: names, axes and counts of cache tensors; add_past_key_values is pure."""

from __future__ import annotations

import copy
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.axes import Kind, TensorSpec, names, spec
from onnxspec.errors import SpecError
from onnxspec.pieces.past import Direction, PastKind, PastLayout, add_past_key_values, past_specs

layouts = st.builds(
    PastLayout,
    kind=st.sampled_from(list(PastKind)),
    num_layers=st.integers(1, 12),
    num_heads=st.integers(1, 8),
    key_dim=st.integers(1, 64),
    value_dim=st.integers(1, 64),
    cross_num_heads=st.none() | st.integers(1, 8),
)
base_inputs = st.lists(
    st.sampled_from(
        [
            spec("input_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT),
            spec("attention_mask", {0: "batch_size", 1: "past_sequence_length + sequence_length"}, Kind.INT),
            spec("position_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT),
            spec("encoder_hidden_states", {0: "batch_size", 1: "encoder_sequence_length"}, rank=3),
        ]
    ),
    unique=True,
)


@given(layout=layouts, base=base_inputs)
def test_inputs_gain_two_names_per_layer_decoder_only_and_four_for_seq2seq(layout: PastLayout, base: list[TensorSpec]) -> None:
    out = add_past_key_values(base, layout, Direction.INPUTS)
    per_layer = 4 if layout.kind is PastKind.SEQ2SEQ else 2
    assert len(out) == len(base) + per_layer * layout.num_layers
    assert out[: len(base)] == tuple(base)
    added = names(out[len(base):])
    assert len(set(added)) == len(added)
    assert all(n.startswith("past_key_values.") for n in added)
    assert layout.tensors_per_layer == per_layer


@given(layout=layouts, base=base_inputs, direction=st.sampled_from(list(Direction)), past_in_inputs=st.booleans())
def test_add_past_key_values_never_mutates_and_is_deterministic(
    layout: PastLayout, base: list[TensorSpec], direction: Direction, past_in_inputs: bool
) -> None:
    before = copy.deepcopy(base)
    first = add_past_key_values(base, layout, direction, past_in_inputs=past_in_inputs)
    assert base == before
    assert first == add_past_key_values(list(before), layout, direction, past_in_inputs=past_in_inputs)
    assert isinstance(first, tuple)
    assert add_past_key_values(first, layout, direction, past_in_inputs=past_in_inputs) == first, "idempotent"


@given(layout=layouts)
def test_decoder_only_names_and_axes_match_what_runtimes_read(layout: PastLayout) -> None:
    layout = PastLayout(kind=PastKind.DECODER_ONLY, num_layers=layout.num_layers, num_heads=1, key_dim=1, value_dim=1)
    ins = past_specs(layout, Direction.INPUTS)
    outs = past_specs(layout, Direction.OUTPUTS)
    assert names(ins) == tuple(f"past_key_values.{i}.{w}" for i in range(layout.num_layers) for w in ("key", "value"))
    assert names(outs) == tuple(f"present.{i}.{w}" for i in range(layout.num_layers) for w in ("key", "value"))
    assert all(t.dynamic_axes == {0: "batch_size", 2: "past_sequence_length"} and t.rank == 4 for t in ins)
    assert all(t.dynamic_axes == {0: "batch_size", 2: "past_sequence_length + sequence_length"} for t in outs)
    no_past = past_specs(layout, Direction.OUTPUTS, past_in_inputs=False)
    assert all(t.dynamic_axes == {0: "batch_size", 2: "sequence_length"} for t in no_past)


@given(num_layers=st.integers(1, 6))
def test_seq2seq_names_carry_decoder_and_encoder_parts(num_layers: int) -> None:
    layout = PastLayout(kind=PastKind.SEQ2SEQ, num_layers=num_layers, num_heads=2, key_dim=4, value_dim=4)
    ins = past_specs(layout, Direction.INPUTS)
    pattern = re.compile(r"^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")
    assert all(pattern.match(n) for n in names(ins)) and len(ins) == 4 * num_layers
    assert {t.dynamic_axes[2] for t in ins if ".encoder." in t.name} == {"encoder_sequence_length_out"}
    assert {t.dynamic_axes[2] for t in ins if ".decoder." in t.name} == {"past_decoder_sequence_length"}
    # With the cache as an input the cross-attention cache is not re-emitted: only .decoder outputs.
    with_past = past_specs(layout, Direction.OUTPUTS, past_in_inputs=True)
    assert names(with_past) == tuple(f"present.{i}.decoder.{w}" for i in range(num_layers) for w in ("key", "value"))
    assert {t.dynamic_axes[2] for t in with_past} == {"past_decoder_sequence_length + decoder_sequence_length"}
    first_step = past_specs(layout, Direction.OUTPUTS, past_in_inputs=False)
    assert len(first_step) == 4 * num_layers
    assert {t.dynamic_axes[2] for t in first_step if ".decoder." in t.name} == {"decoder_sequence_length"}


def test_a_conflicting_cache_name_raises() -> None:
    layout = PastLayout(kind=PastKind.DECODER_ONLY, num_layers=1, num_heads=1, key_dim=1, value_dim=1)
    clash = spec("past_key_values.0.key", {0: "batch_size"})
    with pytest.raises(SpecError, match="past_key_values.0.key"):
        add_past_key_values([clash], layout, Direction.INPUTS)


@pytest.mark.parametrize("field", ["num_layers", "num_heads", "key_dim", "value_dim", "cross_num_heads"])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_layout_sizes_must_be_positive_integers(field: str, bad: object) -> None:
    good = dict(kind=PastKind.DECODER_ONLY, num_layers=1, num_heads=1, key_dim=1, value_dim=1)
    with pytest.raises(SpecError, match=field):
        PastLayout(**{**good, field: bad})


def test_encoder_heads_default_to_self_attention_heads() -> None:
    layout = PastLayout(kind=PastKind.SEQ2SEQ, num_layers=1, num_heads=6, key_dim=1, value_dim=1)
    assert layout.encoder_heads == 6
    assert PastLayout(kind=PastKind.SEQ2SEQ, num_layers=1, num_heads=6, key_dim=1, value_dim=1, cross_num_heads=3).encoder_heads == 3
