"""MusicGen: its family plans Optimum's files (MusicgenOnnxConfig, variant "text-conditional-with-past";
transformers.js loads text_encoder, decoder_model_merged and encodec_decode) with their I/O names and
axes; the normalizer reads the three sub-configs; dummies have the shapes the model reads; EnCodec's
padding patch gathers what its branch computes. Specs and dummies only; exports are in
tests/integration/test_musicgen.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers as T
from transformers.models.encodec.modeling_encodec import EncodecConv1d

from onnxspec.catalog import families
from onnxspec.catalog.families import MUSICGEN_DELAY_PATTERN, MUSICGEN_ENCODEC_DECODE, MUSICGEN_TEXT_ENCODER, musicgen
from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces import kinds
from onnxspec.pieces.axes import Kind
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import bind, plan
from tests.tiny import CONFIGS

B = "batch_size"
TEXT = {0: B, 1: "encoder_sequence_length"}
CODES = {0: "total_batch_size_x_num_codebooks", 1: "decoder_sequence_length"}
LAYERS = 2  # the tiny decoder's


def _io(specs) -> list[tuple[str, dict[int, str]]]:
    return [(t.name, dict(t.dynamic_axes)) for t in specs]


def _plan(use_past: bool):
    return {g.filename: g for g in plan(bind(musicgen("musicgen", "text-to-audio", use_past=use_past), CONFIGS["musicgen"]()))}


def _cache(prefix: str, parts: tuple[str, ...]) -> list[str]:
    return [f"{prefix}.{i}.{p}.{w}" for i in range(LAYERS) for p in parts for w in ("key", "value")]


def test_with_the_cache_it_plans_optimums_five_files_merged_last() -> None:
    files = _plan(use_past=True)
    assert list(files) == [
        "text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
        "decoder_model_merged.onnx",
    ]
    assert files["text_encoder.onnx"].kind is MUSICGEN_TEXT_ENCODER and files["encodec_decode.onnx"].kind is MUSICGEN_ENCODEC_DECODE
    assert files["decoder_model_merged.onnx"].kind is kinds.MERGED_DECODER
    assert files["build_delay_pattern_mask.onnx"].kind is MUSICGEN_DELAY_PATTERN
    assert list(_plan(use_past=False)) == ["text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", "decoder_model.onnx"]


def test_text_encoder_and_encodec_io_are_optimums() -> None:
    files = _plan(use_past=True)
    encoder, encodec = files["text_encoder.onnx"], files["encodec_decode.onnx"]
    assert _io(encoder.inputs) == [("input_ids", TEXT), ("attention_mask", TEXT)]
    assert _io(encoder.outputs) == [("last_hidden_state", TEXT)]
    assert _io(encodec.inputs) == [("audio_codes", {1: B, 3: "chunk_length"})]
    assert encodec.inputs[0].kind is Kind.INT and encodec.inputs[0].rank == 4
    assert _io(encodec.outputs) == [("audio_values", {0: B, 2: "audio_length"})]
    delay = files["build_delay_pattern_mask.onnx"]
    # Optimum leaves the prompt's length static (traced at its dummy's); here it is the decoder's sequence length
    assert _io(delay.inputs) == [("input_ids", CODES), ("pad_token_id", {}), ("max_length", {})]
    assert [t.rank for t in delay.inputs[1:]] == [0, 0]
    assert _io(delay.outputs) == [("input_ids_edited", CODES), ("delay_pattern_mask", {0: CODES[0], 1: "max_length"})]
    assert not any(g.use_past or g.use_past_in_inputs for g in (encoder, encodec, delay))


def test_decoder_files_take_codebook_rows_and_carry_a_seq2seq_cache() -> None:
    files = _plan(use_past=True)
    first, later, merged = (files[f] for f in ("decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"))
    inputs = [("input_ids", CODES), ("encoder_attention_mask", TEXT), ("encoder_hidden_states", TEXT)]
    assert _io(first.inputs) == inputs
    assert [n for n, _ in _io(first.outputs)] == ["logits", *_cache("present", ("decoder", "encoder"))]
    assert dict(_io(first.outputs))["logits"] == CODES
    # later steps: the cross-attention cache stands for encoder_hidden_states
    assert [n for n, _ in _io(later.inputs)] == ["input_ids", "encoder_attention_mask", *_cache("past_key_values", ("decoder", "encoder"))]
    assert [n for n, _ in _io(later.outputs)] == ["logits", *_cache("present", ("decoder",))]
    assert dict(_io(later.inputs))["past_key_values.0.decoder.key"] == {0: B, 2: "past_decoder_sequence_length"}
    assert [n for n, _ in _io(merged.inputs)] == [
        "input_ids", "encoder_attention_mask", "encoder_hidden_states", *_cache("past_key_values", ("decoder", "encoder")), "use_cache_branch",
    ]


def test_the_normalizer_reads_the_three_sub_configs() -> None:
    config = CONFIGS["musicgen"]()
    model = bind(musicgen("musicgen", "text-to-audio", use_past=True), config)
    dims = model.dims
    assert dims["vocab_size"] == config.text_encoder.vocab_size
    assert dims["encoder_hidden_size"] == config.text_encoder.d_model != config.decoder.hidden_size  # projected inside the decoder
    assert (dims["num_codebooks"], dims["codebook_vocab_size"]) == (config.decoder.num_codebooks, config.decoder.vocab_size)
    assert dims["codebook_size"] == config.audio_encoder.codebook_size
    past = model.past
    assert (past.num_layers, past.num_heads, past.key_dim) == (
        config.decoder.num_hidden_layers, config.decoder.num_attention_heads, config.decoder.hidden_size // config.decoder.num_attention_heads,
    )


@pytest.mark.parametrize("shapes", [Shapes(), Shapes(batch_size=3, sequence_length=4, decoder_sequence_length=1)], ids=["default", "other"])
def test_dummies_are_what_the_model_reads(shapes: Shapes) -> None:
    """Each file's dummies run through the tiny model's own parts and give the shapes the spec names."""
    config = CONFIGS["musicgen"]()
    torch.manual_seed(0)
    model = T.MusicgenForConditionalGeneration(config).eval()
    files = _plan(use_past=False)
    spec = next(iter(files.values())).model
    ctx = context(shapes, DTypes(), spec.dims, past=spec.past)
    made = {f: make_dummies(g.inputs, spec.generators, ctx, seed=0) for f, g in files.items()}
    b, k = shapes.batch_size, config.decoder.num_codebooks

    text = made["text_encoder.onnx"]
    assert text["input_ids"].shape == (b, shapes.sequence_length) and int(text["input_ids"].max()) < config.text_encoder.vocab_size
    decoder = made["decoder_model.onnx"]
    ids = decoder["input_ids"]
    assert ids.shape == (b * k, shapes.decoder_sequence_length) and int(ids.max()) < config.decoder.vocab_size
    assert decoder["encoder_hidden_states"].shape == (b, shapes.sequence_length, config.text_encoder.d_model)
    codes = made["encodec_decode.onnx"]["audio_codes"]
    assert codes.shape == (1, b, k, shapes.decoder_sequence_length) and int(codes.max()) < config.audio_encoder.codebook_size
    with torch.no_grad():
        logits = model(
            decoder_input_ids=ids, encoder_outputs=(decoder["encoder_hidden_states"],), attention_mask=decoder["encoder_attention_mask"]
        ).logits
        audio = families.musicgen_encodec_decode(model, codes)["audio_values"]
    assert logits.shape == (b * k, shapes.decoder_sequence_length, config.decoder.vocab_size)
    assert audio.shape[:2] == (b, config.audio_encoder.audio_channels)


@pytest.mark.parametrize("paddings", [(6, 0), (2, 1), (1, 2), (3, 3), (0, 4)])
def test_encodecs_padding_patch_gathers_what_its_branch_computes(paddings: tuple[int, int]) -> None:
    """Short signals (zero-extended first) and long ones alike, with the paddings as the tensors EnCodec passes."""
    gen = torch.Generator().manual_seed(0)
    for length in range(1, 10):
        signal = torch.randn((2, 3, length), generator=gen)
        pads = (torch.tensor(paddings[0]), torch.tensor(paddings[1]))
        expected = EncodecConv1d._pad1d(signal, pads, mode="reflect")
        torch.testing.assert_close(families._reflect_pad_any_length(signal, pads, mode="reflect"), expected, rtol=0, atol=0)


@pytest.mark.parametrize(("channels", "codebooks"), [(1, 4), (2, 8)], ids=["mono", "stereo"])
def test_the_delay_pattern_patch_computes_what_the_model_builds(channels: int, codebooks: int) -> None:
    """Against MusicgenForCausalLM.build_delay_pattern_mask itself, at lengths on both sides of
    ``2 * codebooks - 1`` (per channel), with the inputs as the tensors the graph takes."""
    method = T.MusicgenForCausalLM.build_delay_pattern_mask
    model = SimpleNamespace(num_codebooks=codebooks, config=SimpleNamespace(audio_channels=channels), generation_config=SimpleNamespace(max_length=20))
    gen = torch.Generator().manual_seed(0)
    for batch, steps, max_length in [(1, 1, 3), (2, 1, 6), (2, 3, 7), (1, 2, 8), (3, 1, 11), (2, 4, 30)]:
        ids = torch.randint(0, 64, (batch * codebooks, steps), generator=gen)
        expected = method(model, ids, pad_token_id=64, max_length=max_length)
        got = families._delay_pattern_any_length(model, ids, torch.tensor(64), torch.tensor(max_length))
        for g, e in zip(got, expected, strict=True):
            assert torch.equal(g, e), (batch, steps, max_length)


def test_the_registered_pairs_plan_the_family_and_musicgen_is_not_refused() -> None:
    with_past = bind(spec_for(REGISTRY, "musicgen", "text-to-audio-with-past"), CONFIGS["musicgen"]())
    assert with_past.family == "musicgen" and with_past.use_past
    assert [g.filename for g in plan(with_past)] == list(_plan(use_past=True))
    assert [g.filename for g in plan(spec_for(REGISTRY, "musicgen", "text-to-audio"))] == list(_plan(use_past=False))
    assert not any(mt == "musicgen" for mt, _ in UNSUPPORTED)
