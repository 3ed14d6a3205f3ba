"""Runs inside the benchmarks' Optimum venv (optimum-onnx 0.1.0, transformers 4.57), never in
onnxspec's: it imports neither onnxspec nor the tests package.

    python optimum_side.py make MODEL_TYPE FOLDER
        save a tiny random model (saved by transformers 4.57, which misreads some 5.x configs)
    python optimum_side.py generate MODEL_TYPE MODEL_FOLDER ONNX_FOLDER MERGED
        greedy generate() with PyTorch and with Optimum's ORTModel class loading ONNX_FOLDER
        (use_merged=MERGED, "true" or "false"); prints {"torch": ids, "ort": ids, "files": [...]}
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import transformers as T

STEPS = 12


def _config(model_type: str) -> T.PretrainedConfig:
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
    torch.manual_seed(0)
    auto = T.AutoModelForSpeechSeq2Seq if model_type == "whisper" else T.AutoModelForSeq2SeqLM
    model = auto.from_config(_config(model_type))
    model.generation_config.eos_token_id = None  # decode exactly STEPS tokens: nothing stops early
    model.save_pretrained(folder)


def _inputs(model_type: str, config: T.PretrainedConfig) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(6)
    if model_type == "whisper":
        frames = 2 * config.max_source_positions
        features = rng.standard_normal((2, config.num_mel_bins, frames)).astype(np.float32)
        features[1, :, frames // 2:] = -1.5
        return {"input_features": torch.from_numpy(features)}
    ids = rng.integers(3, config.vocab_size, size=(2, 11), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = config.pad_token_id
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def generate(model_type: str, model_folder: str, onnx_folder: str, merged: bool) -> None:
    from optimum.onnxruntime import ORTModelForSeq2SeqLM, ORTModelForSpeechSeq2Seq

    auto = T.AutoModelForSpeechSeq2Seq if model_type == "whisper" else T.AutoModelForSeq2SeqLM
    ort_class = ORTModelForSpeechSeq2Seq if model_type == "whisper" else ORTModelForSeq2SeqLM
    model = auto.from_pretrained(model_folder).eval()
    ort = ort_class.from_pretrained(onnx_folder, use_merged=merged)
    inputs = _inputs(model_type, model.config)
    options = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, num_beams=1)
    with torch.no_grad():
        want = model.generate(**inputs, **options)
        got = ort.generate(**inputs, **options)
    sessions = {name: getattr(ort, name).path.name for name in ("encoder", "decoder", "decoder_with_past") if getattr(ort, name, None) is not None}
    print(json.dumps({"torch": want.tolist(), "ort": got.tolist(), "sessions": sessions}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "make":
        make(*args)
    elif command == "generate":
        generate(args[0], args[1], args[2], args[3] == "true")
    else:
        raise SystemExit(f"unknown command {command!r}")
