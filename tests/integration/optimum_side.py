"""Runs inside the benchmarks' Optimum venv (optimum-onnx 0.1.0, transformers 4.57), never in
onnxspec's: it imports neither onnxspec nor the tests package.

    python optimum_side.py make MODEL_TYPE FOLDER
        save a tiny random model (saved by transformers 4.57, which misreads some 5.x configs)
    python optimum_side.py generate MODEL_TYPE MODEL_FOLDER ONNX_FOLDER MERGED
        greedy generate() with PyTorch and with Optimum's ORTModel class loading ONNX_FOLDER
        (use_merged=MERGED, "true" or "false"); prints {"torch": ids, "ort": ids, "sessions": {...}}

MODEL_TYPE: t5, bart, whisper, speech_to_text, moonshine, vision-encoder-decoder (ViT of width
32 -> GPT-2 of width 48, TrOCR-style). The weights are drawn wide enough (init std) that greedy
decoding picks varied tokens, so equal ids mean something.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import transformers as T

STEPS = 12


_BART_LIKE = dict(
    d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
)
_TOKENS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
# which Auto class builds and loads each model type, and which Optimum class loads its ONNX folder
AUTO = {"t5": "AutoModelForSeq2SeqLM", "bart": "AutoModelForSeq2SeqLM", "whisper": "AutoModelForSpeechSeq2Seq",
        "speech_to_text": "AutoModelForSpeechSeq2Seq", "moonshine": "AutoModelForSpeechSeq2Seq",
        "vision-encoder-decoder": "AutoModelForVision2Seq"}
SEED = {"speech_to_text": 2, "vision-encoder-decoder": 1}
"""Seeds (default 0) under which the two rows decode to different, varied tokens."""
ORT = {"AutoModelForSeq2SeqLM": "ORTModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq": "ORTModelForSpeechSeq2Seq",
       "AutoModelForVision2Seq": "ORTModelForVision2Seq"}


def _config(model_type: str) -> T.PretrainedConfig:
    if model_type == "bart":
        return T.BartConfig(**_BART_LIKE, max_position_embeddings=64, init_std=0.2)
    if model_type == "speech_to_text":
        return T.Speech2TextConfig(
            **_BART_LIKE, max_source_positions=64, max_target_positions=64, num_conv_layers=2, conv_kernel_sizes=[5, 5],
            conv_channels=16, input_feat_per_channel=12, input_channels=1, init_std=1.0,
        )
    if model_type == "moonshine":
        return T.MoonshineConfig(
            vocab_size=100, hidden_size=32, intermediate_size=37, encoder_num_hidden_layers=2, decoder_num_hidden_layers=2,
            encoder_num_attention_heads=4, decoder_num_attention_heads=4, encoder_num_key_value_heads=4, decoder_num_key_value_heads=4,
            max_position_embeddings=64, initializer_range=0.5, **_TOKENS,
        )
    if model_type == "vision-encoder-decoder":
        encoder = T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8,
                               initializer_range=0.3)
        decoder = T.GPT2Config(n_embd=48, n_layer=2, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.3, **_TOKENS)
        config = T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
        for name, value in _TOKENS.items():
            setattr(config, name, value)
        return config
    if model_type == "t5":
        # d_kv * num_heads == d_model: Optimum's runtime sizes the empty first-step cache as
        # hidden_size // num_heads, as real T5 checkpoints have it
        return T.T5Config(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=100,
                          decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, initializer_factor=10.0)
    if model_type == "whisper":
        return T.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, num_mel_bins=16, max_source_positions=30,
            max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            suppress_tokens=[], begin_suppress_tokens=[], init_std=0.2,
        )
    raise SystemExit(f"no tiny config for {model_type!r}")


def make(model_type: str, folder: str) -> None:
    torch.manual_seed(SEED.get(model_type, 0))
    model = getattr(T, AUTO[model_type]).from_config(_config(model_type))
    model.generation_config.eos_token_id = None  # decode exactly STEPS tokens: nothing stops early
    model.save_pretrained(folder)


def _inputs(model_type: str, config: T.PretrainedConfig) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(6)
    if model_type == "whisper":
        frames = 2 * config.max_source_positions
        features = rng.standard_normal((2, config.num_mel_bins, frames)).astype(np.float32)
        features[1, :, frames // 2:] = -1.5
        return {"input_features": torch.from_numpy(features)}
    if model_type == "speech_to_text":  # filterbank frames (batch, frames, features), the second clip padded
        features = rng.standard_normal((2, 29, config.input_feat_per_channel)).astype(np.float32)
        mask = np.ones((2, 29), np.int64)
        mask[1, 17:] = 0
        features[1, 17:] = 0.0
        return {"input_features": torch.from_numpy(features), "attention_mask": torch.from_numpy(mask)}
    if model_type == "moonshine":  # raw waveforms; onnxspec's moonshine encoder takes no mask, so no padding
        return {"input_values": torch.from_numpy(rng.standard_normal((2, 4000)).astype(np.float32))}
    if model_type == "vision-encoder-decoder":  # images have no mask
        size = config.encoder.image_size
        return {"pixel_values": torch.from_numpy(rng.random((2, config.encoder.num_channels, size, size)).astype(np.float32))}
    ids = rng.integers(3, config.vocab_size, size=(2, 11), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = config.pad_token_id
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def generate(model_type: str, model_folder: str, onnx_folder: str, merged: bool) -> None:
    import optimum.onnxruntime

    auto = getattr(T, AUTO[model_type])
    ort_class = getattr(optimum.onnxruntime, ORT[AUTO[model_type]])
    model = auto.from_pretrained(model_folder).eval()
    ort = ort_class.from_pretrained(onnx_folder, use_merged=merged)
    inputs = _inputs(model_type, model.config)
    options = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, num_beams=1)
    with torch.no_grad():
        want = model.generate(**inputs, **options)
        got = ort.generate(**inputs, **options)
    sessions = {name: getattr(ort, name).path.name for name in ("encoder", "decoder", "decoder_with_past") if getattr(ort, name, None) is not None}
    print(json.dumps({"torch": want.tolist(), "ort": got.tolist(), "sessions": sessions, "class": type(ort).__name__}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "make":
        make(*args)
    elif command == "generate":
        generate(args[0], args[1], args[2], args[3] == "true")
    else:
        raise SystemExit(f"unknown command {command!r}")
