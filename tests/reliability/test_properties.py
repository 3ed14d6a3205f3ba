"""Property-based tests of the spec records and the pure functions over them.

Strategies build TensorSpec, PastLayout, Shapes, Tolerance, ModelSpec and GraphSpec values from valid
pieces (specs both from raw pieces and from the registry's families, bound to tiny
configs and moved to each of their sub-graphs). Properties: the JSON contract round-trips;
``with_behavior`` and ``add_past_key_values`` never change their argument and are
deterministic; an invalid field value is always rejected at construction, naming the field.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from onnxspec.pieces.axes import Kind, TensorSpec
from onnxspec.errors import SpecError
from onnxspec.catalog.models import REGISTRY
from onnxspec.pieces.kinds import DECODER
from onnxspec.pieces.past import Direction, PastKind, PastLayout, add_past_key_values
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes, FloatDtype, IntDtype, Shapes
from onnxspec.pieces.spec import (
    GraphSpec,
    ModelSpec,
    plan,
    GraphIO,
    Tolerance,
    bind,
    contract,
    contract_json,
    with_behavior,
)
from tests.tiny import CONFIGS

SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# strategies

identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)
symbols = st.lists(identifiers, min_size=1, max_size=3).map(" + ".join)
tensor_names = st.from_regex(r"[a-z][a-z0-9_.]{0,15}", fullmatch=True)
kinds = st.sampled_from(Kind)


@st.composite
def tensor_specs(draw: st.DrawFn, name: st.SearchStrategy[str] = tensor_names) -> TensorSpec:
    rank = draw(st.none() | st.integers(0, 5))
    top = 6 if rank is None else rank
    indices = draw(st.sets(st.integers(0, top - 1), max_size=top)) if top else set()
    axes = {i: draw(symbols) for i in sorted(indices)}
    return TensorSpec(name=draw(name), rank=rank, axes=axes, kind=draw(kinds))


def unique_specs(min_size: int = 0, max_size: int = 5) -> st.SearchStrategy[tuple[TensorSpec, ...]]:
    return st.lists(tensor_specs(), min_size=min_size, max_size=max_size, unique_by=lambda t: t.name).map(tuple)


past_layouts = st.builds(
    PastLayout,
    kind=st.sampled_from(PastKind),
    num_layers=st.integers(1, 6),
    num_heads=st.integers(1, 8),
    key_dim=st.integers(1, 64),
    value_dim=st.integers(1, 64),
    cross_num_heads=st.none() | st.integers(1, 8),
)

SHAPE_FIELDS = [a.name for a in attrs.fields(Shapes)]
shapes = st.fixed_dictionaries(
    {n: (st.integers(0, 64) if n == "past_sequence_length" else st.integers(1, 64)) for n in SHAPE_FIELDS}
).map(lambda kw: Shapes(**kw))

positive = st.floats(min_value=1e-12, max_value=10.0, allow_nan=False, allow_infinity=False)
tolerances = st.builds(Tolerance, atol=positive, rtol=st.floats(0.0, 1.0, allow_nan=False))
dtypes = st.builds(DTypes, int_dtype=st.sampled_from(IntDtype), float_dtype=st.sampled_from([FloatDtype.FP32, FloatDtype.FP16]))


@st.composite
def raw_export_specs(draw: st.DrawFn) -> ModelSpec:
    """A monolith spec assembled directly from random pieces (no family, no registry)."""
    graph = GraphIO(inputs=draw(unique_specs(1)), outputs=draw(unique_specs(1)))
    outs = [t.name for t in graph.outputs]
    tols = draw(st.dictionaries(st.sampled_from(outs), tolerances, max_size=len(outs)))
    return ModelSpec(
        model_type=draw(identifiers),
        task=draw(identifiers),
        family="raw",
        graphs={"monolith": graph},
        opset=draw(st.integers(7, 30)),
        tolerances=tols,
    )


REGISTERED = sorted((mt, task) for mt, e in REGISTRY.items() if mt in CONFIGS for task in e.tasks)


@functools.lru_cache(maxsize=None)
def _bound(model_type: str, task: str) -> ModelSpec:
    return bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())


@st.composite
def family_specs(draw: st.DrawFn) -> GraphSpec:
    """A registered spec bound to a tiny config, at one of the files its plan writes."""
    model_type, task = draw(st.sampled_from(REGISTERED))
    return draw(st.sampled_from(plan(_bound(model_type, task))))


export_specs = raw_export_specs().map(lambda s: plan(s)[0]) | family_specs()

# --------------------------------------------------------------------------------------------
# the JSON contract


@SLOW
@given(spec=export_specs, dt=dtypes)
def test_contract_round_trips_through_json(spec: GraphSpec, dt: DTypes) -> None:
    text = contract_json(spec, dt)
    assert json.loads(text) == contract(spec, dt)
    assert contract_json(spec, dt) == text  # stable text


@SLOW
@given(spec=export_specs, dt=dtypes)
def test_contract_lists_exactly_the_spec_io(spec: GraphSpec, dt: DTypes) -> None:
    c = contract(spec, dt)
    for side, specs in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        assert [e["name"] for e in c[side]] == [t.name for t in specs]
        assert [e["dynamic_axes"] for e in c[side]] == [{str(k): v for k, v in t.axes} for t in specs]


@given(t=tensor_specs())
def test_tensor_spec_rebuilds_from_its_fields(t: TensorSpec) -> None:
    again = TensorSpec(name=t.name, rank=t.rank, axes=t.dynamic_axes, kind=t.kind)
    assert again == t and hash(again) == hash(t)


@given(s=shapes)
def test_shapes_rebuild_from_asdict(s: Shapes) -> None:
    assert Shapes(**attrs.asdict(s)) == s


@given(tol=tolerances)
def test_tolerance_rebuilds_from_asdict(tol: Tolerance) -> None:
    assert Tolerance(**attrs.asdict(tol)) == tol


# --------------------------------------------------------------------------------------------
# with_behavior and add_past_key_values: no mutation, deterministic


@SLOW
@given(data=st.data())
def test_with_behavior_never_mutates_and_is_deterministic(data: st.DataObject) -> None:
    model_type, task = data.draw(st.sampled_from(REGISTERED))
    spec = _bound(model_type, task)
    before = copy.copy(spec)
    files = plan(spec)
    start = data.draw(st.sampled_from([g for g in files if not g.kind.is_merged]))
    before_contract = contract(start)
    target = data.draw(st.sampled_from([g for g in files if not g.kind.is_merged]))
    kwargs = {"use_past": target.use_past, "use_past_in_inputs": target.use_past_in_inputs}
    first = with_behavior(start, target.role, **kwargs)
    second = with_behavior(start, target.role, **kwargs)
    assert spec == before and plan(spec) == files and contract(start) == before_contract
    assert first == second == target and contract(first) == contract(second)
    back = with_behavior(first, start.role, use_past=start.use_past, use_past_in_inputs=start.use_past_in_inputs)
    assert contract(back) == before_contract and back == start  # round trip


@given(specs=unique_specs(0, 4), layout=past_layouts, direction=st.sampled_from(Direction), in_inputs=st.booleans())
def test_add_past_key_values_never_mutates_and_is_deterministic(
    specs: tuple[TensorSpec, ...], layout: PastLayout, direction: Direction, in_inputs: bool
) -> None:
    assume(not any(t.name.startswith(("past_key_values.", "present.")) for t in specs))
    as_list = list(specs)
    first = add_past_key_values(as_list, layout, direction, past_in_inputs=in_inputs)
    second = add_past_key_values(tuple(specs), layout, direction, past_in_inputs=in_inputs)
    assert as_list == list(specs)  # the list handed in is untouched
    assert first == second
    assert first[: len(specs)] == specs
    added = first[len(specs):]
    # a seq2seq graph fed its past returns only the self-attention part (cross-attention is fixed)
    cross_fixed = layout.kind is PastKind.SEQ2SEQ and direction is Direction.OUTPUTS and in_inputs
    assert len(added) == layout.num_layers * (2 if cross_fixed else layout.tensors_per_layer)
    prefix = "past_key_values." if direction is Direction.INPUTS else "present."
    assert all(t.name.startswith(prefix) for t in added)
    assert len({t.name for t in first}) == len(first)


# --------------------------------------------------------------------------------------------
# invalid values are rejected at construction, naming the field

not_positive_ints = st.integers(max_value=0) | st.sampled_from([1.5, "2", None, True])


@given(field=st.sampled_from([n for n in SHAPE_FIELDS if n != "past_sequence_length"]), value=not_positive_ints)
def test_shapes_reject_non_positive_sizes(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=rf"\b{field}\b"):
        Shapes(**{field: value})


@given(value=st.integers(max_value=-1) | st.sampled_from([0.5, "0", None, False]))
def test_shapes_reject_negative_past_length(value: object) -> None:
    with pytest.raises(SpecError, match="past_sequence_length"):
        Shapes(past_sequence_length=value)


@given(field=st.sampled_from(["num_layers", "num_heads", "key_dim", "value_dim", "cross_num_heads"]), value=not_positive_ints)
def test_past_layout_rejects_non_positive_fields(field: str, value: object) -> None:
    assume(not (field == "cross_num_heads" and value is None))  # None means "same as num_heads"
    fields = {"kind": PastKind.DECODER_ONLY, "num_layers": 2, "num_heads": 2, "key_dim": 8, "value_dim": 8, field: value}
    with pytest.raises(SpecError, match=rf"PastLayout\.{field}"):
        PastLayout(**fields)


@given(atol=st.floats(max_value=0.0) | st.just(math.nan) | st.sampled_from(["1e-4", None, True]))
def test_tolerance_rejects_non_positive_atol(atol: object) -> None:
    with pytest.raises(SpecError, match=r"Tolerance\.atol"):
        Tolerance(atol=atol)


@given(rtol=st.floats(max_value=-1e-300) | st.just(math.nan) | st.sampled_from(["0", None]))
def test_tolerance_rejects_negative_rtol(rtol: object) -> None:
    with pytest.raises(SpecError, match=r"Tolerance\.rtol"):
        Tolerance(atol=1e-4, rtol=rtol)


@given(t=tensor_specs(), bad=st.integers(max_value=-1))
def test_tensor_spec_rejects_negative_rank(t: TensorSpec, bad: int) -> None:
    with pytest.raises(SpecError, match="rank"):
        TensorSpec(name=t.name, rank=bad, axes={}, kind=t.kind)


@given(rank=st.integers(0, 5), extra=st.integers(0, 5), symbol=symbols)
def test_tensor_spec_rejects_axis_beyond_rank(rank: int, extra: int, symbol: str) -> None:
    with pytest.raises(SpecError, match=rf"axis index {rank + extra} is beyond its rank {rank}"):
        TensorSpec(name="x", rank=rank, axes={rank + extra: symbol})


@given(index=st.integers(max_value=-1), symbol=symbols)
def test_tensor_spec_rejects_negative_axis(index: int, symbol: str) -> None:
    with pytest.raises(SpecError, match="axis index must be >= 0"):
        TensorSpec(name="x", axes={index: symbol})


_VALID_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*( \+ [A-Za-z_][A-Za-z0-9_]*)*")


@given(symbol=st.text(max_size=12) | st.sampled_from(["", "1batch", "a+b", "a +b", " a", "a-b", "a + ", "batch\n"]))
def test_tensor_spec_rejects_non_identifier_symbols(symbol: str) -> None:
    assume(not _VALID_SYMBOL.fullmatch(symbol))
    with pytest.raises(SpecError, match="is not an identifier"):
        TensorSpec(name="x", axes={0: symbol})


@given(name=st.sampled_from(["", None, 3]))
def test_tensor_spec_rejects_empty_names(name: object) -> None:
    with pytest.raises(SpecError, match="tensor name"):
        TensorSpec(name=name, axes={})  # type: ignore[arg-type]


@given(spec=raw_export_specs(), opset=st.integers(max_value=6) | st.integers(min_value=31))
def test_export_spec_rejects_opset_out_of_range(spec: ModelSpec, opset: int) -> None:
    with pytest.raises(SpecError, match="opset"):
        attrs.evolve(spec, opset=opset)


@given(spec=raw_export_specs(), side=st.text(max_size=8).filter(lambda s: s not in ("left", "right")))
def test_export_spec_rejects_padding_side(spec: ModelSpec, side: str) -> None:
    with pytest.raises(ValueError, match="padding_side"):
        attrs.evolve(spec, padding_side=side)


@given(spec=raw_export_specs())
def test_export_spec_rejects_a_file_of_a_missing_graph(spec: ModelSpec) -> None:
    with pytest.raises(SpecError, match="traced from the 'decoder' graph, which this spec does not define"):
        attrs.evolve(spec, files=(DECODER,))


@given(field=st.sampled_from(["int_dtype", "float_dtype"]), value=st.text(max_size=6).filter(
    lambda v: v not in {m.value for m in (*IntDtype, *FloatDtype)}))
def test_dtypes_reject_unknown_names(field: str, value: str) -> None:
    with pytest.raises(SpecError, match=rf"DTypes\.{field}"):
        DTypes(**{field: value})
