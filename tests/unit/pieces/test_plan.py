"""plan(): a model spec and the export options -> one self-contained graph spec per file."""

from __future__ import annotations

import functools

import attrs
import pytest

from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.errors import SpecError
from onnxspec.pieces import kinds as K
from onnxspec.pieces.axes import Kind, names, spec
from onnxspec.pieces.cache_names import is_cache_input, is_cache_output
from onnxspec.pieces.criteria import Tolerance
from onnxspec.pieces.kinds import BRANCH_INPUT, GraphKind
from onnxspec.pieces.spec import (
    Call,
    GraphIO,
    GraphSpec,
    ModelSpec,
    bind,
    contract,
    describe,
    graph_spec,
    plan,
    with_behavior,
    with_opset,
    with_past,
    with_tolerance,
)
from tests.tiny import CONFIGS

CASES = sorted((mt, task) for mt in CONFIGS for task in REGISTRY[mt].tasks)

# What each family's plan writes, without and with the cache (merged decoders last).
EXPECTED_FILES = {
    "text-decoder": (["model.onnx"], ["model.onnx"]),
    "text-seq2seq": (
        ["encoder_model.onnx", "decoder_model.onnx"],
        ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"],
    ),
    "speech-to-text": (
        ["encoder_model.onnx", "decoder_model.onnx"],
        ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"],
    ),
    "encoder-decoder": (
        ["encoder_model.onnx", "decoder_model.onnx"],
        ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"],
    ),
    "segment-anything": (
        ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"],
        ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"],
    ),
    "musicgen": (
        ["text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", "decoder_model.onnx"],
        [
            "text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
            "decoder_model_merged.onnx",
        ],
    ),
    "speecht5": (  # no merged decoder: its two decoders take output_sequence over different lengths
        ["encoder_model.onnx", "decoder_model.onnx", "decoder_postnet_and_vocoder.onnx"],
        ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_postnet_and_vocoder.onnx"],
    ),
    "decoder-alone": (
        ["decoder_model.onnx"],
        ["decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"],
    ),
}


@functools.lru_cache(maxsize=None)
def bound(model_type: str, task: str) -> ModelSpec:
    return bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}/{t}" for m, t in CASES])
def test_every_registered_pair_plans_self_contained_files(model_type: str, task: str) -> None:
    model = bound(model_type, task)
    files = plan(model)
    names_planned = [g.filename for g in files]
    assert len(set(names_planned)) == len(names_planned), "two graphs of one export share a file name"
    cached, plain = EXPECTED_FILES.get(model.family, (["model.onnx"], ["model.onnx"]))[::-1]
    if model.family in EXPECTED_FILES and len(model.files) == 1 and model.files[0] is K.SINGLE:
        plain = cached = ["model.onnx"]  # a seq2seq family's one-graph form (e.g. an encoder-only task)
    assert names_planned == (cached if model.use_past else plain)
    for g in files:
        assert isinstance(g, GraphSpec) and g.model is model
        assert g.call == model.graphs[g.role].call
        assert set(g.tolerances) <= set(names(g.outputs))
        cache_in = [n for n in names(g.inputs) if is_cache_input(n)]
        cache_out = [n for n in names(g.outputs) if is_cache_output(n)]
        assert bool(cache_in) == g.kind.cache_in and bool(cache_out) == g.kind.cache_out
        if g.kind.is_merged:
            first, later = g.branches
            assert (first.kind, later.kind) == g.kind.joins and [first.filename, later.filename] == names_planned[-3:-1]
            assert names(g.inputs)[-1] == BRANCH_INPUT and g.inputs[-1].kind is Kind.BOOL
            assert names(g.outputs) == names(first.outputs)
        else:
            assert g == graph_spec(model, g.kind), "a planned file is exactly the spec of its kind"
        assert contract(g)["kind"] == g.kind.name


def test_plan_is_pure() -> None:
    model = bound("t5", "text2text-generation-with-past")
    before = (repr(model), dict(model.graphs), model.files, model.use_past)
    plan(model)
    plan(model, use_past=False, monolith=True)
    assert (repr(model), dict(model.graphs), model.files, model.use_past) == before


def test_options_choose_cache_merge_and_one_graph() -> None:
    model = bound("t5", "text2text-generation-with-past")
    assert [g.filename for g in plan(model, merged=False)] == ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"]
    assert [g.filename for g in plan(model, use_past=False)] == ["encoder_model.onnx", "decoder_model.onnx"]
    assert [g.filename for g in plan(model, use_past=False, monolith=True)] == ["model.onnx"]
    decoder_only = bound("llama", "text-generation-with-past")
    (one,) = plan(decoder_only)
    assert one.kind is K.SINGLE_WITH_PAST and one.use_past_in_inputs
    (plain,) = plan(decoder_only, use_past=False)
    assert plain.kind is K.SINGLE and not any(is_cache_input(n) for n in names(plain.inputs))


@pytest.mark.parametrize("model_type", ["t5", "bart", "marian", "whisper"])
def test_seq2seq_with_past_plans_a_merged_decoder_by_default(model_type: str) -> None:
    task = "automatic-speech-recognition-with-past" if model_type == "whisper" else "text2text-generation-with-past"
    merged = [g for g in plan(bound(model_type, task)) if g.kind.is_merged]
    assert [g.filename for g in merged] == ["decoder_model_merged.onnx"]
    assert [g.filename for g in plan(bound(model_type, task), merged=True) if g.kind.is_merged] == ["decoder_model_merged.onnx"]
    assert not any(g.kind.is_merged for g in plan(bound(model_type, task), merged=False))


def test_no_merged_decoder_without_a_pair_unless_asked() -> None:
    assert not any(g.kind.is_merged for g in plan(bound("t5", "text2text-generation")))
    assert not any(g.kind.is_merged for g in plan(bound("gpt2", "text-generation-with-past")))
    assert not any(g.kind.is_merged for g in plan(bound("t5", "text2text-generation"), monolith=True))


def test_asking_for_a_merged_decoder_that_cannot_be_is_a_named_error() -> None:
    with pytest.raises(SpecError, match="model.onnx already serves every step"):
        plan(bound("gpt2", "text-generation-with-past"), merged=True)
    with pytest.raises(SpecError, match="export a seq2seq task with '-with-past'"):
        plan(bound("t5", "text2text-generation"), merged=True)
    with pytest.raises(SpecError, match="monolith=True exports one graph without cache; drop one"):
        plan(bound("t5", "text2text-generation"), merged=True, monolith=True)
    with pytest.raises(SpecError, match="no decoder pair"):
        plan(bound("bert", "text-classification"), merged=True)
    with pytest.raises(SpecError, match="takes no KV cache"):
        plan(bound("t5", "text2text-generation-with-past"), monolith=True)


def _toy(**changes: object) -> ModelSpec:
    ids = spec("input_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT)
    graphs = {
        "monolith": GraphIO(inputs=[ids], outputs=[spec("logits", {0: "batch_size", 1: "sequence_length"})]),
        "embed_tokens": GraphIO(
            inputs=[ids], outputs=[spec("inputs_embeds", {0: "batch_size", 1: "sequence_length"})],
            call=Call(module="get_input_embeddings()"),
        ),
    }
    return ModelSpec(**{"model_type": "toy", "task": "text-generation", "family": "toy", "graphs": graphs, **changes})  # type: ignore[arg-type]


def test_a_new_graph_kind_is_a_value_the_plan_carries_through() -> None:
    """An embeddings graph beside the model: a new role and a new kind, no core change."""
    model = _toy(files=(K.SINGLE, K.EMBED_TOKENS))
    planned = plan(model)
    assert [(g.filename, g.role) for g in planned] == [("model.onnx", "monolith"), ("embed_tokens.onnx", "embed_tokens")]
    assert names(planned[1].outputs) == ("inputs_embeds",) and planned[1].call.module == "get_input_embeddings()"
    assert "embed_tokens.onnx" in describe(model)
    custom = GraphKind(name="prompt-decoder", role="embed_tokens", filename="prompt_encoder_mask_decoder.onnx")
    assert plan(_toy(files=(custom,)))[0].filename == "prompt_encoder_mask_decoder.onnx"


def test_contradictory_kinds_and_files_are_named_errors() -> None:
    with pytest.raises(SpecError, match="cache_in.*set cache_out=True"):
        GraphKind(name="x", role="decoder", filename="x.onnx", cache_in=True)
    with pytest.raises(SpecError, match="must end in '.onnx'"):
        GraphKind(name="x", role="decoder", filename="x.bin")
    with pytest.raises(SpecError, match="not among its cache_variants"):
        GraphKind(name="x", role="decoder", filename="x.onnx", merged=K.MERGED_DECODER)
    with pytest.raises(SpecError, match="the first without cache inputs"):
        GraphKind(name="m", role="decoder", filename="m.onnx", joins=(K.DECODER_WITH_PAST, K.DECODER_FIRST_STEP))
    with pytest.raises(SpecError, match="traced from the 'vision_encoder' graph, which this spec does not define"):
        _toy(files=(K.VISION_ENCODER,))
    past_kind = bound("llama", "text-generation-with-past").past_kind
    with pytest.raises(SpecError, match="the monolith graph carries no cache"):
        _toy(use_past=True, past_kind=past_kind)
    with pytest.raises(SpecError, match="none of its files has a form with cache"):
        _toy(use_past=True, past_kind=past_kind, files=(K.EMBED_TOKENS,))
    with pytest.raises(SpecError, match="carries a cache but family .toy. has none"):
        graph_spec(_toy(), K.SINGLE_WITH_PAST)


def test_pure_functions_on_a_graph_spec_rederive_the_same_file() -> None:
    decoder = with_behavior(bound("bart", "text2text-generation-with-past"), "decoder", use_past=True, use_past_in_inputs=True)
    assert decoder.kind is K.DECODER_WITH_PAST
    newer = with_opset(decoder, 17)
    assert isinstance(newer, GraphSpec) and newer.kind is decoder.kind and newer.opset == 17 and decoder.opset == 18
    tight = with_tolerance(decoder, 1e-5, outputs=["logits"])
    assert tight.tolerances == {"logits": Tolerance(atol=1e-5, rtol=0.0)} and decoder.tolerances == {}
    first = with_past(decoder, use_past=True, use_past_in_inputs=False)
    assert first.kind is K.DECODER_FIRST_STEP and first.filename == "decoder_model.onnx"
    assert with_behavior(decoder, "encoder").kind is K.ENCODER
    plain = with_past(bound("llama", "text-generation-with-past"), use_past=False)
    assert isinstance(plain, ModelSpec) and [g.kind for g in plan(plain)] == [K.SINGLE]


def test_the_kinds_of_the_files_are_frozen_values() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        K.DECODER.filename = "other.onnx"  # type: ignore[misc]
    assert K.DECODER.merged is K.MERGED_DECODER and K.MERGED_DECODER.joins == (K.DECODER_FIRST_STEP, K.DECODER_WITH_PAST)
    assert K.merged_filename("decoder_model.onnx") == "decoder_model_merged.onnx"
