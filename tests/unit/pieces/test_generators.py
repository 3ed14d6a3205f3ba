"""Dummy-input generators: seeded, realistic values (ids in range, contiguous masks, positions)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces import generators as g
from onnxspec.pieces.axes import Kind, TensorSpec, spec, symbol_size, symbol_terms
from onnxspec.errors import ConfigError, SpecError
from onnxspec.pieces.normalize import Dims
from onnxspec.pieces.past import Direction, PastKind, PastLayout, past_specs
from onnxspec.pieces.shapes import DTypes, Shapes

BS = {0: "batch_size", 1: "sequence_length"}
DIMS = Dims({"vocab_size": 100, "type_vocab_size": 2, "hidden_size": 32, "num_channels": 3, "image_size": 30}, "test")
NO_MADE: Mapping[str, torch.Tensor] = MappingProxyType({})

INPUTS = (
    spec("input_ids", BS, Kind.INT),
    spec("attention_mask", {0: "batch_size", 1: "past_sequence_length + sequence_length"}, Kind.INT),
    spec("position_ids", BS, Kind.INT),
    spec("token_type_ids", BS, Kind.INT),
    spec("pixel_values", {0: "batch_size"}, Kind.FLOAT, rank=4),
    spec("encoder_hidden_states", {0: "batch_size", 1: "encoder_sequence_length"}, Kind.FLOAT, rank=3),
)
LAYOUT = PastLayout(kind=PastKind.DECODER_ONLY, num_layers=2, num_heads=2, key_dim=16, value_dim=8)
GENERATORS = {
    "input_ids": g.token_ids,
    "attention_mask": g.attention_mask,
    "position_ids": g.position_ids,
    "token_type_ids": g.token_type_ids,
    "pixel_values": g.pixel_values,
    "encoder_hidden_states": g.encoder_hidden_states,
}


def _ctx(shapes: Shapes = Shapes(), dtypes: DTypes = DTypes(), dims: Dims = DIMS, **kw: object) -> g.DummyContext:
    return g.context(shapes, dtypes, dims, **kw)  # type: ignore[arg-type]


def _all_inputs() -> tuple[TensorSpec, ...]:
    return INPUTS + past_specs(LAYOUT, Direction.INPUTS)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@given(seed=st.integers(0, 2**31 - 1), other=st.integers(0, 2**31 - 1), global_seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_dummies_whatever_the_global_rng(seed: int, other: int, global_seed: int) -> None:
    ctx = _ctx(past=LAYOUT)
    first = g.make_dummies(_all_inputs(), GENERATORS, ctx, seed)
    torch.manual_seed(global_seed)
    torch.rand(7)
    state = torch.get_rng_state()
    second = g.make_dummies(_all_inputs(), GENERATORS, ctx, seed)
    assert _equal(first, second)
    assert torch.equal(torch.get_rng_state(), state), "make_dummies must not touch the global generator"
    if other != seed:
        assert not _equal(first, g.make_dummies(_all_inputs(), GENERATORS, ctx, other))


def test_dummies_follow_the_spec_order_shapes_and_dtypes() -> None:
    shapes = Shapes(batch_size=3, sequence_length=5, past_sequence_length=4)
    made = g.make_dummies(_all_inputs(), GENERATORS, _ctx(shapes, DTypes(int_dtype="int32", float_dtype="fp16"), past=LAYOUT), 0)
    assert list(made) == [t.name for t in _all_inputs()]
    assert made["input_ids"].shape == (3, 5) and made["input_ids"].dtype == torch.int32
    assert made["attention_mask"].shape == (3, 9)
    assert made["pixel_values"].shape == (3, 3, 30, 30) and made["pixel_values"].dtype == torch.float16
    assert made["encoder_hidden_states"].shape == (3, 5, 32)
    assert made["past_key_values.0.key"].shape == (3, 2, 4, 16)
    assert made["past_key_values.1.value"].shape == (3, 2, 4, 8)


def test_missing_generator_names_the_input_and_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        g.make_dummies((spec("pixel_mask", BS, Kind.INT),), {"input_ids": g.token_ids}, _ctx(), 0)
    assert "'pixel_mask'" in str(info.value) and "input_ids" in str(info.value)


def _mask(batch: int, length: int, side: str, seed: int, rows: int | None = None) -> torch.Tensor:
    axes = {0: "batch_size", 1: "sequence_length"} if rows is None else {0: "batch_size", 1: "num_choices", 2: "sequence_length"}
    shapes = Shapes(batch_size=batch, sequence_length=length, num_choices=rows or 4)
    return g.attention_mask(spec("attention_mask", axes, Kind.INT), _ctx(shapes, padding_side=side), torch.Generator().manual_seed(seed), NO_MADE)


@given(batch=st.integers(1, 8), length=st.integers(1, 40), side=st.sampled_from(["left", "right"]), seed=st.integers(0, 10_000))
def test_masks_are_contiguous_padded_on_their_side_and_never_empty(batch: int, length: int, side: str, seed: int) -> None:
    mask = _mask(batch, length, side, seed)
    assert mask.shape == (batch, length) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1}
    for row in mask.tolist():
        kept = sum(row)
        assert kept >= 1, "a fully masked row"
        expected = [1] * kept + [0] * (length - kept) if side == "right" else [0] * (length - kept) + [1] * kept
        assert row == expected
    assert mask[0].all(), "the first row keeps every position"


@given(choices=st.integers(1, 5), side=st.sampled_from(["left", "right"]), seed=st.integers(0, 1000))
def test_masks_with_leading_axes_keep_every_row_non_empty(choices: int, side: str, seed: int) -> None:
    mask = _mask(2, 6, side, seed, rows=choices)
    assert mask.shape == (2, choices, 6)
    assert bool((mask.sum(-1) >= 1).all())


def test_length_one_masks_are_legal() -> None:
    assert _mask(4, 1, "left", 0).tolist() == [[1]] * 4


@given(
    vocab=st.integers(1, 300_000),
    int_dtype=st.sampled_from(["int64", "int32", "int8"]),
    seed=st.integers(0, 10_000),
)
def test_token_ids_fit_the_vocabulary_and_the_int_dtype(vocab: int, int_dtype: str, seed: int) -> None:
    dtypes = DTypes(int_dtype=int_dtype)
    ctx = _ctx(Shapes(batch_size=3, sequence_length=50), dtypes, Dims({"vocab_size": vocab}, "t"))
    ids = g.token_ids(spec("input_ids", BS, Kind.INT), ctx, torch.Generator().manual_seed(seed), NO_MADE)
    assert ids.dtype == getattr(torch, int_dtype)
    assert int(ids.min()) >= 0
    assert int(ids.max()) < vocab
    assert int(ids.max()) <= torch.iinfo(ids.dtype).max


def test_token_ids_need_a_vocab_size() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        g.token_ids(spec("input_ids", BS, Kind.INT), _ctx(dims=Dims({}, "t")), torch.Generator(), NO_MADE)


def test_token_type_ids_stay_below_type_vocab_size() -> None:
    ids = g.token_type_ids(spec("token_type_ids", BS, Kind.INT), _ctx(Shapes(sequence_length=64)), torch.Generator().manual_seed(0), NO_MADE)
    assert set(ids.unique().tolist()) <= {0, 1}
    one = g.token_type_ids(spec("token_type_ids", BS, Kind.INT), _ctx(dims=Dims({}, "t")), torch.Generator(), NO_MADE)
    assert not one.any()


@given(past=st.integers(0, 12), length=st.integers(1, 6), batch=st.integers(1, 5), seed=st.integers(0, 1000))
def test_position_ids_are_the_cumulative_mask_minus_one(past: int, length: int, batch: int, seed: int) -> None:
    shapes = Shapes(batch_size=batch, sequence_length=length, past_sequence_length=past)
    ctx = _ctx(shapes, padding_side="left", past=LAYOUT)
    inputs = (INPUTS[1], INPUTS[2])
    made = g.make_dummies(inputs, GENERATORS, ctx, seed)
    mask, pos = made["attention_mask"], made["position_ids"]
    assert pos.shape == (batch, length)
    for b in range(batch):
        current = mask[b, past:]
        kept_before = int(mask[b, :past].sum())
        for j in range(length):
            if current[j]:
                assert int(pos[b, j]) == kept_before + int(current[: j + 1].sum()) - 1
    without_mask = g.make_dummies((INPUTS[2],), GENERATORS, ctx, seed)["position_ids"]
    assert without_mask.tolist() == [list(range(past, past + length))] * batch


def test_dynamic_shape_needs_every_axis_dynamic() -> None:
    with pytest.raises(SpecError, match="'x'.*every axis dynamic"):
        g.dynamic_shape(TensorSpec(name="x", rank=3, axes={0: "batch_size"}), _ctx())
    assert g.dynamic_shape(spec("x", BS), _ctx(Shapes(batch_size=3, sequence_length=2))) == (3, 2)


def test_zeros_follow_the_tensor_kind() -> None:
    out = g.zeros(spec("use_cache_branch", {}, Kind.BOOL), _ctx(), torch.Generator(), NO_MADE)
    assert out.dtype == torch.bool and out.shape == ()


def test_pixel_values_use_dynamic_sizes_when_declared() -> None:
    t = spec("pixel_values", {0: "batch_size", 2: "height", 3: "width"}, Kind.FLOAT, rank=4)
    out = g.pixel_values(t, _ctx(Shapes(height=20, width=24)), torch.Generator().manual_seed(0), NO_MADE)
    assert out.shape == (2, 3, 20, 24)
    assert float(out.min()) >= 0.0 and float(out.max()) < 1.0


def test_audio_generators_shapes() -> None:
    dims = Dims({"feature_size": 16, "nb_max_frames": 60}, "whisper")
    features = g.audio_features(spec("input_features", {0: "batch_size"}, rank=3), _ctx(dims=dims), torch.Generator(), NO_MADE)
    assert features.shape == (2, 16, 60)
    values = g.audio_values(spec("input_values", {0: "batch_size", 1: "audio_sequence_length"}), _ctx(Shapes(audio_sequence_length=400)), torch.Generator(), NO_MADE)
    assert values.shape == (2, 400)


def test_past_tensors_follow_the_layout_including_cross_attention_heads() -> None:
    layout = PastLayout(kind=PastKind.SEQ2SEQ, num_layers=1, num_heads=4, key_dim=8, value_dim=6, cross_num_heads=2)
    shapes = Shapes(batch_size=3, sequence_length=7, past_sequence_length=5)
    made = g.make_dummies(past_specs(layout, Direction.INPUTS), {}, _ctx(shapes, past=layout), 0)
    assert made["past_key_values.0.decoder.key"].shape == (3, 4, 5, 8)
    assert made["past_key_values.0.decoder.value"].shape == (3, 4, 5, 6)
    assert made["past_key_values.0.encoder.key"].shape == (3, 2, 7, 8)
    with pytest.raises(SpecError, match="no past layout"):
        g.make_dummies(past_specs(layout, Direction.INPUTS), {}, _ctx(shapes), 0)


def test_context_rejects_an_unknown_padding_side() -> None:
    with pytest.raises(ValueError):
        _ctx(padding_side="middle")


def _registry_graphs() -> list[tuple[str, object]]:
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.catalog.registry import spec_for
    from onnxspec.pieces.spec import bind, plan
    from tests.tiny import CONFIGS

    out = []
    for model_type, e in REGISTRY.items():
        for task in e.tasks:
            s = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
            for sub in plan(s, merged=False):
                out.append((f"{model_type}/{task}/{sub.filename}", sub))
    return out


REGISTRY_GRAPHS = _registry_graphs()


@given(
    graph=st.sampled_from(REGISTRY_GRAPHS),
    shapes=st.builds(
        Shapes,
        batch_size=st.integers(1, 4),
        sequence_length=st.integers(1, 12),
        past_sequence_length=st.integers(0, 9),
        decoder_sequence_length=st.integers(1, 6),
        num_choices=st.integers(1, 4),
        audio_sequence_length=st.integers(400, 2000),
        image_batch_size=st.integers(1, 4),
    ),
    int_dtype=st.sampled_from(["int64", "int32"]),
    seed=st.integers(0, 1000),
)
def test_registry_dummies_match_their_declared_axes_and_are_realistic(
    graph: tuple[str, object], shapes: Shapes, int_dtype: str, seed: int
) -> None:
    where, sub = graph
    ctx = g.context(shapes, DTypes(int_dtype=int_dtype), sub.dims, past=sub.past, padding_side=sub.padding_side)  # type: ignore[attr-defined]
    made = g.make_dummies(sub.inputs, sub.generators, ctx, seed)  # type: ignore[attr-defined]
    for t in sub.inputs:  # type: ignore[attr-defined]
        value = made[t.name]
        if t.rank is not None:
            assert value.ndim == t.rank, (where, t.name)
        for axis, symbol in t.axes:
            if not set(symbol_terms(symbol)) <= set(ctx.sizes):  # a size the model derives (subsampled frames): no size to hold it to
                continue
            assert value.shape[axis] == symbol_size(symbol, ctx.sizes), (where, t.name, axis)
        if t.kind is Kind.INT:
            assert value.dtype == getattr(torch, int_dtype), (where, t.name)
        if "attention_mask" in t.name:
            assert bool((value.sum(-1) >= 1).all()), (where, t.name)
        if t.name == "input_ids":
            assert int(value.max()) < int(sub.dims["vocab_size"]) and int(value.min()) >= 0  # type: ignore[attr-defined]
