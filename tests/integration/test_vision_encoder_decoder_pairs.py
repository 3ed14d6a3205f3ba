"""Vision-encoder-decoder pairs beyond the registry's tiny one: other encoders (ViT, Donut's
Swin), other decoders (TrOCR, mBART) and widths, each exported with its cache and merged decoder
and validated against PyTorch (the registry test covers ViT -> GPT-2, widths 32 -> 48)."""

from __future__ import annotations

import pytest
import transformers

from onnxspec.pipeline.core import export
from tests.tiny import VISION_PAIRS


@pytest.mark.integration
@pytest.mark.parametrize("pair", sorted(set(VISION_PAIRS) - {"vit-gpt2"}))
def test_vision_encoder_decoder_pair_exports_and_validates(pair: str, tmp_path) -> None:
    import torch

    torch.manual_seed(0)
    transformers.VisionEncoderDecoderModel(VISION_PAIRS[pair]()).save_pretrained(tmp_path / "model")
    report = export(tmp_path / "model", tmp_path / "onnx", task="image-to-text-with-past")
    assert report.passed, report.failures
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"} <= set(report.files)
