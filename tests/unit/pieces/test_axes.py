"""Tensor specs: validation of names, ranks and axes; merging; symbol sizes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.axes import Kind, TensorSpec, axes_view, merge_specs, names, rename, spec, symbol_size, symbol_terms
from onnxspec.errors import OnnxSpecError, SpecError

identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)


def test_axes_are_frozen_sorted_and_copied_out() -> None:
    t = spec("input_ids", {1: "sequence_length", 0: "batch_size"}, Kind.INT)
    assert t.axes == ((0, "batch_size"), (1, "sequence_length"))
    view = t.dynamic_axes
    view[5] = "oops"
    assert 5 not in t.dynamic_axes
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.name = "x"  # type: ignore[misc]


def test_axes_accept_pairs_and_mappings_alike() -> None:
    assert spec("a", {0: "b"}) == TensorSpec(name="a", axes=[(0, "b")])


@pytest.mark.parametrize("bad", ["", None, 3])
def test_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(SpecError, match="non-empty string"):
        TensorSpec(name=bad)  # type: ignore[arg-type]


@given(rank=st.integers(0, 6), extra=st.integers(0, 4))
def test_axis_index_at_or_beyond_rank_is_rejected_naming_the_tensor(rank: int, extra: int) -> None:
    index = rank + extra
    with pytest.raises(SpecError) as info:
        TensorSpec(name="pixel_values", rank=rank, axes={index: "batch_size"})
    assert "'pixel_values'" in str(info.value)
    assert str(index) in str(info.value) and f"rank {rank}" in str(info.value)


@given(rank=st.integers(1, 6), data=st.data())
def test_axis_index_below_rank_is_accepted(rank: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, rank - 1))
    assert TensorSpec(name="x", rank=rank, axes={index: "batch_size"}).dynamic_axes == {index: "batch_size"}


def test_negative_axis_and_negative_rank_are_rejected() -> None:
    with pytest.raises(SpecError, match="'x'.*>= 0"):
        spec("x", {-1: "batch_size"})
    with pytest.raises(SpecError, match="'x'.*rank must be >= 0"):
        TensorSpec(name="x", rank=-1)


def test_axis_declared_twice_is_rejected() -> None:
    with pytest.raises(SpecError, match="axis 0 is declared twice"):
        TensorSpec(name="x", axes=[(0, "a"), (0, "b")])


@pytest.mark.parametrize("symbol", ["", "1batch", "a+b", "a + ", "batch size", "a - b"])
def test_symbols_must_be_identifiers_or_sums(symbol: str) -> None:
    with pytest.raises(SpecError, match="not an identifier"):
        spec("x", {0: symbol})


def test_kind_must_be_a_kind() -> None:
    with pytest.raises(TypeError):
        TensorSpec(name="x", kind="int")  # type: ignore[arg-type]


def test_evolve_reruns_validators() -> None:
    t = TensorSpec(name="x", rank=2, axes={1: "s"})
    with pytest.raises(SpecError, match="beyond its rank"):
        attrs.evolve(t, rank=1)


def test_spec_errors_are_onnxspec_and_value_errors() -> None:
    with pytest.raises(OnnxSpecError):
        spec("x", {0: "no good"})
    with pytest.raises(ValueError):
        spec("x", {0: "no good"})


def test_axes_view_is_optimums_shape_and_a_copy() -> None:
    specs = (spec("input_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT), spec("logits", {0: "batch_size"}))
    view = axes_view(specs)
    assert view == {"input_ids": {0: "batch_size", 1: "sequence_length"}, "logits": {0: "batch_size"}}
    view["logits"][1] = "changed"
    assert axes_view(specs)["logits"] == {0: "batch_size"}
    assert names(specs) == ("input_ids", "logits")


specs_strategy = st.lists(
    st.builds(
        lambda n, a, k: spec(n, a, k),
        identifiers,
        st.dictionaries(st.integers(0, 3), identifiers, max_size=3),
        st.sampled_from(list(Kind)),
    ),
    max_size=6,
)


@given(a=specs_strategy, b=specs_strategy)
def test_merge_specs_keeps_first_appearance_order_or_raises_on_conflict(a: list[TensorSpec], b: list[TensorSpec]) -> None:
    everything = [*a, *b]
    conflict = any(x.name == y.name and x != y for x in everything for y in everything)
    if conflict:
        with pytest.raises(SpecError, match="declared twice with different specs"):
            merge_specs(a, b)
        return
    merged = merge_specs(a, b)
    expected_names = list(dict.fromkeys(s.name for s in everything))
    assert list(names(merged)) == expected_names
    assert set(merged) == set(everything)


def test_merge_specs_conflict_names_both_sides() -> None:
    left = spec("attention_mask", {0: "batch_size", 1: "sequence_length"}, Kind.INT)
    right = spec("attention_mask", {0: "batch_size", 1: "past_sequence_length + sequence_length"}, Kind.INT)
    with pytest.raises(SpecError) as info:
        merge_specs([left], [right])
    message = str(info.value)
    assert "'attention_mask'" in message and "past_sequence_length + sequence_length" in message and "'sequence_length'" in message


def test_merge_specs_collapses_identical_repeats_and_leaves_inputs_alone() -> None:
    group = [spec("a", {0: "b"}), spec("c", {})]
    before = list(group)
    assert merge_specs(group, group) == tuple(group)
    assert group == before


def test_rename_changes_only_mapped_names() -> None:
    specs = (spec("decoder_input_ids", {0: "b"}, Kind.INT), spec("encoder_outputs", {0: "b"}))
    renamed = rename(specs, {"decoder_input_ids": "input_ids"})
    assert names(renamed) == ("input_ids", "encoder_outputs")
    assert renamed[0].axes == specs[0].axes and renamed[0].kind is Kind.INT


@given(sizes=st.dictionaries(identifiers, st.integers(0, 10_000), min_size=1, max_size=5), data=st.data())
def test_symbol_size_is_the_sum_of_its_terms(sizes: dict[str, int], data: st.DataObject) -> None:
    terms = data.draw(st.lists(st.sampled_from(sorted(sizes)), min_size=1, max_size=4))
    symbol = " + ".join(terms)
    assert symbol_terms(symbol) == tuple(terms)
    assert symbol_size(symbol, sizes) == sum(sizes[t] for t in terms)


def test_symbol_size_names_the_missing_terms() -> None:
    with pytest.raises(SpecError, match=r"\['past_sequence_length'\]"):
        symbol_size("past_sequence_length + sequence_length", {"sequence_length": 3})
