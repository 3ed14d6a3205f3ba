"""The export spec: its invariants, derived I/O, and the pure functions over it."""

from __future__ import annotations

import copy
import functools
import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.axes import Kind, names, spec
from onnxspec.errors import SpecError
from onnxspec.catalog.models import REGISTRY
from onnxspec.pieces.normalize import Dims
from onnxspec.pieces.past import PastKind, PastLayout
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes
from onnxspec.pieces import kinds as K
from onnxspec.pieces.spec import (
    Behavior,
    GraphIO,
    GraphSpec,
    ModelSpec,
    NoiseBound,
    Tolerance,
    bind,
    contract,
    contract_json,
    describe,
    past_layout,
    plan,
    tolerance_for,
    with_criterion,
    with_behavior,
    with_graph,
    with_opset,
    with_past,
    with_tolerance,
)
from tests.tiny import CONFIGS

CASES = sorted((mt, task) for mt, e in REGISTRY.items() for task in e.tasks)


@functools.lru_cache(maxsize=None)
def bound(model_type: str, task: str) -> ModelSpec:
    return bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())


def _tiny_spec(**changes: object) -> ModelSpec:
    graph = GraphIO(
        inputs=[spec("input_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT)],
        outputs=[spec("last_hidden_state", {0: "batch_size", 1: "sequence_length"})],
    )
    fields: dict[str, object] = dict(model_type="toy", task="feature-extraction", family="toy", graphs={"monolith": graph})
    return ModelSpec(**{**fields, **changes})  # type: ignore[arg-type]


def _snapshot(s: GraphSpec) -> tuple[object, ...]:
    """Everything observable about a graph spec, to compare before and after a transformation."""
    return (copy.copy(s), repr(s), hash(s), s.inputs, s.outputs, dict(s.graphs), dict(s.tolerances), s.kind, s.model)


def _legal_flags(s: ModelSpec | GraphSpec) -> list[tuple[str, bool, bool]]:
    out = []
    for role, graph in s.graphs.items():
        out.append((role, False, False))
        if graph.past and s.past_kind is not None:
            out += [(role, True, False), (role, True, True)]
    return out


@given(case=st.sampled_from(CASES), data=st.data())
def test_with_behavior_never_changes_its_argument_and_round_trips(case: tuple[str, str], data: st.DataObject) -> None:
    original = bound(*case)
    start = data.draw(st.sampled_from(_legal_flags(original)))
    s = with_behavior(original, start[0], use_past=start[1], use_past_in_inputs=start[2])
    target = data.draw(st.sampled_from(_legal_flags(s)))
    before = _snapshot(s)
    moved = with_behavior(s, target[0], use_past=target[1], use_past_in_inputs=target[2])
    assert _snapshot(s) == before
    assert (moved.role, moved.use_past, moved.use_past_in_inputs) == target
    assert moved.graphs == s.graphs and moved.dims == s.dims and moved.past == s.past
    back = with_behavior(moved, s.role, use_past=s.use_past, use_past_in_inputs=s.use_past_in_inputs)
    assert back == s and hash(back) == hash(s)
    assert back.inputs == s.inputs and back.outputs == s.outputs


@pytest.mark.parametrize("case", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_with_behavior_keeps_flags_only_where_legal(case: tuple[str, str]) -> None:
    s = bound(*case)
    for role, graph in s.graphs.items():
        derived = with_behavior(s, role)
        assert derived.role == role and derived.model is s
        if not graph.past:
            assert not derived.use_past and not derived.use_past_in_inputs
            if s.past_kind is not None:
                with pytest.raises(SpecError, match=f"the {role} graph has none"):
                    with_behavior(s, role, use_past=True)


def test_with_behavior_accepts_strings_and_rejects_unknown_behaviors() -> None:
    s = bound("t5", "text2text-generation-with-past")
    assert with_behavior(s, "decoder").role == with_behavior(s, Behavior.DECODER).role == "decoder"
    with pytest.raises(SpecError, match="no 'middle' graph"):
        with_behavior(s, "middle")
    with pytest.raises(SpecError, match="no 'encoder' graph; this spec defines \\['monolith'\\]"):
        with_behavior(bound("bert", "feature-extraction"), Behavior.ENCODER)


def test_cache_inputs_appear_only_with_use_past_in_inputs() -> None:
    (s,) = plan(bound("gpt2", "text-generation-with-past"))
    assert s.use_past and s.use_past_in_inputs
    assert [n for n in names(s.inputs) if n.startswith("past_key_values.")] == [
        "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"
    ]
    mask = {t.name: t for t in s.inputs}["attention_mask"]
    assert mask.dynamic_axes[1] == "past_sequence_length + sequence_length"
    plain = with_behavior(s, Behavior.MONOLITH, use_past=False, use_past_in_inputs=False)
    assert not any(n.startswith(("past_", "present.")) for n in names(plain.inputs) + names(plain.outputs))
    assert {t.name: t for t in plain.inputs}["attention_mask"].dynamic_axes[1] == "sequence_length"


def test_derived_io_of_an_unbound_spec_with_a_cache_says_to_bind() -> None:
    unbound = spec_for(REGISTRY, "gpt2", "text-generation-with-past")
    with pytest.raises(SpecError, match=r"bind\(spec, config\)"):
        plan(unbound)
    assert "files not listed" in describe(unbound)


def test_bind_resolves_dims_and_the_cache_layout_without_touching_the_config() -> None:
    config = CONFIGS["llama"]()
    before = config.to_dict()
    unbound = spec_for(REGISTRY, "llama", "text-generation-with-past")
    s = bind(unbound, config)
    assert config.to_dict() == before
    assert unbound.dims is None and unbound.past is None
    assert s.past == PastLayout(kind=PastKind.DECODER_ONLY, num_layers=2, num_heads=2, key_dim=16, value_dim=16)
    assert s.dims is not None and s.dims["vocab_size"] == 100
    assert bound("t5", "text2text-generation-with-past").past.key_dim == 16  # type: ignore[union-attr]
    assert bound("bert", "feature-extraction").past is None


def test_bind_accepts_a_plain_config_dict() -> None:
    s = bind(spec_for(REGISTRY, "gpt2", "text-generation-with-past"), CONFIGS["gpt2"]().to_dict())
    assert s.past == bound("gpt2", "text-generation-with-past").past


def test_past_layout_honours_gqa_explicit_head_dim_and_value_dim() -> None:
    dims = Dims({"num_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 64}, "m")
    assert past_layout(PastKind.DECODER_ONLY, dims) == PastLayout(kind=PastKind.DECODER_ONLY, num_layers=3, num_heads=2, key_dim=8, value_dim=8)
    dims = Dims({"num_layers": 3, "decoder_num_layers": 5, "num_attention_heads": 4, "head_dim": 6, "value_head_dim": 7, "hidden_size": 64}, "m")
    assert past_layout(PastKind.SEQ2SEQ, dims) == PastLayout(kind=PastKind.SEQ2SEQ, num_layers=5, num_heads=4, key_dim=6, value_dim=7)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(files=(K.ENCODER,)), "traced from the 'encoder' graph, which this spec does not define"),
        (dict(files=()), "files is empty"),
        (dict(use_past=True), "has no cache"),
        (dict(opset=6), "opset must be between 7 and 30, got 6"),
        (dict(graphs={}), "graphs is empty"),
        (dict(variants={"a": "x"}, variant="b"), "variant 'b' is not one of"),
        (dict(tolerances={"logits": 1e-3}), "must be a Tolerance or a NoiseBound"),
        (dict(padding_side="middle"), "padding_side"),
    ],
)
def test_spec_invariants_name_the_spec_and_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises((SpecError, ValueError)) as info:
        _tiny_spec(**changes)
    assert message in str(info.value)
    if isinstance(info.value, SpecError) and "graphs" not in changes:
        assert "toy/feature-extraction" in str(info.value)


def test_a_cache_needs_a_graph_that_carries_one_and_a_matching_layout() -> None:
    s = _tiny_spec(past_kind=PastKind.DECODER_ONLY)
    with pytest.raises(SpecError, match="carries no cache"):
        attrs.evolve(s, use_past=True)
    with pytest.raises(SpecError, match="contradicts past_kind"):
        attrs.evolve(s, past=PastLayout(kind=PastKind.SEQ2SEQ, num_layers=1, num_heads=1, key_dim=1, value_dim=1))


def test_graph_io_refuses_duplicate_names() -> None:
    t = spec("input_ids", {0: "batch_size"}, Kind.INT)
    with pytest.raises(SpecError, match=r"duplicate names \['input_ids'\]"):
        GraphIO(inputs=[t, t], outputs=[])


def test_seq2seq_decoder_graph_needs_encoder_hidden_states() -> None:
    s = bound("bart", "text2text-generation")
    decoder = s.graphs["decoder"]
    broken = attrs.evolve(decoder, inputs=[t for t in decoder.inputs if t.name != "encoder_hidden_states"], replaced_by_cache=frozenset())
    with pytest.raises(SpecError, match="encoder_hidden_states"):
        with_behavior(with_graph(s, Behavior.DECODER, broken), Behavior.DECODER)


def test_with_graph_past_opset_return_new_specs() -> None:
    s = bound("gpt2", "text-generation-with-past")
    renamed = GraphIO(inputs=s.graphs["monolith"].inputs, outputs=[spec("logitz", {0: "batch_size"})], past=True)
    changed = with_graph(s, Behavior.MONOLITH, renamed)
    assert names(plan(changed)[0].outputs)[0] == "logitz" and names(plan(s)[0].outputs)[0] == "logits"
    off = with_past(s, use_past=False)
    assert not off.use_past and not plan(off)[0].use_past_in_inputs and s.use_past
    layout = PastLayout(kind=PastKind.DECODER_ONLY, num_layers=3, num_heads=1, key_dim=2, value_dim=2)
    assert len([n for n in names(plan(with_past(s, layout))[0].inputs) if n.startswith("past_")]) == 6
    assert with_opset(s, 17).opset == 17 and s.opset == 18
    with pytest.raises(SpecError, match="opset"):
        with_opset(s, 99)


@given(atol=st.floats(max_value=0.0) | st.integers(max_value=0) | st.just(True))
def test_tolerance_rejects_non_positive_atol(atol: float) -> None:
    with pytest.raises(SpecError, match="Tolerance.atol must be a positive number"):
        Tolerance(atol=atol)


@given(atol=st.floats(min_value=1e-300, max_value=1e6), rtol=st.floats(max_value=-1e-300) | st.just(float("nan")))
def test_tolerance_rejects_negative_rtol(atol: float, rtol: float) -> None:
    assert Tolerance(atol=atol).rtol == 0.0
    with pytest.raises(SpecError, match="Tolerance.rtol"):
        Tolerance(atol=atol, rtol=rtol)


def test_with_tolerance_defaults_to_every_output_of_every_graph_and_the_cache() -> None:
    s = bound("t5", "text2text-generation-with-past")
    tight = with_tolerance(s, 1e-6)
    assert s.tolerances == {}
    dtypes = DTypes()
    for behavior, use_past, upi in _legal_flags(s):
        sub = with_behavior(tight, behavior, use_past=use_past, use_past_in_inputs=upi)
        for out in sub.outputs:
            assert tolerance_for(sub, out.name, dtypes) == Tolerance(atol=1e-6), (behavior, out.name)
    only = with_tolerance(s, 1e-2, 1e-1, outputs=["logits"])
    assert set(only.tolerances) == {"logits"} and only.tolerances["logits"].rtol == 1e-1


def test_tolerance_for_prefers_the_output_then_pattern_then_dtype_default() -> None:
    s = attrs.evolve(
        bound("gpt2", "text-generation-with-past"),
        tolerances={"logits": Tolerance(atol=1.0), "present.*": Tolerance(atol=2.0), "*": Tolerance(atol=3.0)},
    )
    assert tolerance_for(s, "logits", DTypes()).atol == 1.0
    assert tolerance_for(s, "present.0.key", DTypes()).atol == 2.0
    assert tolerance_for(s, "other", DTypes()).atol == 3.0
    plain = bound("gpt2", "text-generation")
    fp32, fp16 = tolerance_for(plain, "logits", DTypes()), tolerance_for(plain, "logits", DTypes(float_dtype="fp16"))
    assert isinstance(fp32, NoiseBound) and isinstance(fp16, NoiseBound)  # the default: calibrated on float64
    assert fp32.floor < fp16.floor and fp32.fallback.atol < fp16.fallback.atol


def test_with_criterion_sets_a_noise_bound_per_output() -> None:
    s = bound("gpt2", "text-generation-with-past")
    strict = NoiseBound(factor=4.0, floor=0.0, fallback=Tolerance(atol=1e-6))
    only = with_criterion(s, strict, outputs=["logits"])
    assert tolerance_for(only, "logits", DTypes()) == strict
    assert tolerance_for(only, "present.0.key", DTypes()) != strict
    assert s.tolerances == {}  # the input spec is unchanged


@pytest.mark.parametrize("case", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_contract_json_round_trips_and_lists_the_derived_io(case: tuple[str, str]) -> None:
    s = bound(*case)
    for behavior, use_past, upi in _legal_flags(s):
        sub = with_behavior(s, behavior, use_past=use_past, use_past_in_inputs=upi)
        data = contract(sub)
        assert json.loads(contract_json(sub)) == data
        assert contract_json(sub) == contract_json(copy.copy(sub))
        assert [t["name"] for t in data["inputs"]] == list(names(sub.inputs))
        assert [t["name"] for t in data["outputs"]] == list(names(sub.outputs))
        assert all(t["dynamic_axes"] == {str(k): v for k, v in x.axes} for t, x in zip(data["inputs"], sub.inputs))
        assert (data["behavior"], data["use_past"], data["use_past_in_inputs"]) == (behavior, use_past, upi)
        assert data["kind"] == sub.kind.name


def test_contract_dtypes_follow_the_dtypes_given() -> None:
    (s,) = plan(bound("gpt2", "text-generation-with-past"))
    data = contract(s, DTypes(int_dtype="int32", float_dtype="fp16"))
    by_name = {t["name"]: t["dtype"] for t in data["inputs"] + data["outputs"]}
    assert by_name["input_ids"] == "int32" and by_name["past_key_values.0.key"] == "float16" and by_name["logits"] == "float16"
    assert {t["name"]: t.get("rank") for t in data["inputs"]}["past_key_values.0.key"] == 4


def test_describe_lists_every_input_and_output_with_axes() -> None:
    s = with_behavior(bound("bart", "text2text-generation-with-past"), Behavior.DECODER, use_past=True, use_past_in_inputs=True)
    text = describe(s)
    assert text.splitlines()[0] == repr(s)
    assert "bart/text2text-generation" in text and "decoder" in text
    for t in (*s.inputs, *s.outputs):
        assert f"    {t.name}: {t.dynamic_axes}" in text
    assert text.index("inputs:") < text.index("outputs:")


def test_specs_are_frozen_and_their_mappings_read_only() -> None:
    s = bound("bert", "feature-extraction")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.opset = 17  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.graphs["encoder"] = s.graphs["monolith"]  # type: ignore[index]
    with pytest.raises(TypeError):
        s.generators["x"] = None  # type: ignore[index]


def test_padding_side_and_minimum_versions_are_checked_with_named_errors() -> None:
    import attrs as _attrs

    from onnxspec.errors import SpecError as _SpecError
    from onnxspec.catalog.models import REGISTRY as _REGISTRY
    from onnxspec.catalog.registry import spec_for as _spec_for
    from onnxspec.pieces.spec import check_versions

    base = _spec_for(_REGISTRY, "bert", "feature-extraction")
    with pytest.raises(_SpecError, match="padding_side"):
        _attrs.evolve(base, padding_side="middle")
    with pytest.raises(_SpecError, match="min_torch"):
        _attrs.evolve(base, min_torch="not a version")
    needy = _attrs.evolve(base, min_transformers="99.0")
    with pytest.raises(_SpecError, match=r"transformers>=99.0.*4.57.6 is installed"):
        check_versions(needy, {"torch": "2.13.0+cpu", "transformers": "4.57.6"})
    check_versions(base, {"torch": "2.13.0+cpu", "transformers": "5.24.0"})
