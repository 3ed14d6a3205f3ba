"""MusicGen exported from a model folder with ``--task text-to-audio-with-past`` (text_encoder.onnx,
the decoder files with the cache, encodec_decode.onnx, build_delay_pattern_mask.onnx), validated
against PyTorch, then driven by onnxruntime alone through a greedy generation that must give
``model.generate``'s audio.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers as T

from onnxspec.pieces.cache_names import is_cache_input
from onnxspec.pipeline.core import export
from tests.tiny import CONFIGS

pytestmark = pytest.mark.integration

FILES = [
    "text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
    "decoder_model_merged.onnx",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = CONFIGS["musicgen"]()
    torch.manual_seed(0)
    model = T.MusicgenForConditionalGeneration(config).eval()
    # Random weights leave EnCodec's codebooks at zero (every code decodes to the same audio) and the projection of the
    # text into the decoder too small to change any greedy choice: give both unit-variance values, so that the audio
    # depends on the codes and the codes on the prompt (both asserted below).
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.enc_to_dec_proj.weight.copy_(torch.randn(model.enc_to_dec_proj.weight.shape, generator=gen))
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=gen))
    folder = tmp_path_factory.mktemp("musicgen")
    model.save_pretrained(folder / "model")
    report = export(folder / "model", folder / "onnx", task="text-to-audio-with-past")
    return model, folder / "onnx", report


def test_every_file_is_written_and_agrees_with_pytorch(exported) -> None:
    _, out, report = exported
    assert report.passed, report.failures
    assert [g.filename for g in report.graphs] == FILES
    for g in report.graphs:
        assert g.checks and all(c.passed for c in g.checks), g.filename
        assert (out / g.filename).is_file()
    merged_sets = {c.shape_set for g in report.graphs if g.filename == "decoder_model_merged.onnx" for c in g.checks}
    assert {"small/no-cache", "large/cache", "decode/cache"} <= merged_sets


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_greedy_generation_with_the_onnx_files_gives_generates_audio(exported) -> None:
    """The prompt through text_encoder.onnx, the delay pattern from build_delay_pattern_mask.onnx,
    the codes through decoder_model_merged.onnx step by step with its cache (the pattern applied as
    MusicGen's generate does), the waveform through encodec_decode.onnx: the same audio as
    ``model.generate`` (greedy)."""
    model, out, _ = exported
    decoder_config = model.config.decoder
    pad, codebooks, new_tokens = decoder_config.pad_token_id, decoder_config.num_codebooks, 10
    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(2, model.config.text_encoder.vocab_size, (2, 6), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0  # the second prompt is padded

    with torch.no_grad():
        expected = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=new_tokens)

    encoder, merged, encodec, delay = (
        _session(out / f) for f in ("text_encoder.onnx", "decoder_model_merged.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx")
    )
    (hidden,) = encoder.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})

    ids = torch.full((2 * codebooks, 1), decoder_config.decoder_start_token_id, dtype=torch.long)
    ids, delay_mask = (
        torch.from_numpy(t) for t in delay.run(None, {"input_ids": ids.numpy(), "pad_token_id": np.array(pad), "max_length": np.array(1 + new_tokens)})
    )
    cache_inputs = [i for i in merged.get_inputs() if is_cache_input(i.name)]
    heads, head_dim = decoder_config.num_attention_heads, decoder_config.hidden_size // decoder_config.num_attention_heads
    past = {i.name: np.zeros((2, heads, 0, head_dim), dtype=np.float32) for i in cache_inputs}
    output_names = [o.name for o in merged.get_outputs()]
    first = True
    while ids.shape[1] < 1 + new_tokens:
        step = model.decoder.apply_delay_pattern_mask(ids, delay_mask)
        feed = {
            "input_ids": (step if first else step[:, -1:]).numpy(),
            "encoder_attention_mask": attention_mask.numpy(),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.array([not first]),
            **past,
        }
        results = dict(zip(output_names, merged.run(None, feed)))
        next_ids = torch.from_numpy(results["logits"][:, -1]).argmax(-1)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        for name in past:
            present = name.replace("past_key_values", "present")
            if first or ".decoder." in name:  # the cross-attention cache is made once, on the first step
                past[name] = results[present]
        first = False

    codes = model.decoder.apply_delay_pattern_mask(ids, delay_mask)
    codes = codes[codes != pad].reshape(2, codebooks, -1)[None]
    assert not torch.equal(codes[0, 0], codes[0, 1]), "both prompts gave the same codes: the test cannot tell them apart"
    (audio,) = encodec.run(None, {"audio_codes": codes.numpy()})
    assert audio.shape == tuple(expected.shape)
    assert np.abs(audio[0] - audio[1]).max() > 1e-3, "both prompts gave the same audio"
    np.testing.assert_allclose(audio, expected.numpy(), rtol=1e-4, atol=1e-5)
