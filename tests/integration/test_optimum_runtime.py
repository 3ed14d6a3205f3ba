"""Optimum's runtime classes as the judge of onnxspec's seq2seq folders.

Tiny random models, saved by transformers 4.57 in the benchmarks' Optimum venv (4.57 misreads
some configs saved by 5.x), are exported by onnxspec in the project's venv; the Optimum venv
then loads the folder with optimum-onnx 0.1.0's runtime class (``use_merged=True``: encoder +
``decoder_model_merged.onnx``; ``False``: encoder + ``decoder_model.onnx`` +
``decoder_with_past_model.onnx``) and its ``generate()`` must give the ids of the same 4.57
PyTorch model's ``generate()`` (12 greedy tokens, batch of 2; padded where the input has a mask):

============================  ===================================  ===========================
model type                    onnxspec task                        Optimum class (what loads)
============================  ===================================  ===========================
t5, bart                      text2text-generation-with-past       ``ORTModelForSeq2SeqLM``
whisper                       automatic-speech-recognition-w.-p.   ``ORTModelForSpeechSeq2Seq``
                                                                   (-> ``ORTModelForWhisper``)
speech_to_text                automatic-speech-recognition-w.-p.   ``ORTModelForSpeechSeq2Seq``
moonshine                     automatic-speech-recognition-w.-p.   ``ORTModelForSpeechSeq2Seq``
                                                                   (-> ``ORTModelForMoonshine``)
vision-encoder-decoder        image-to-text-with-past              ``ORTModelForVision2Seq``
(ViT 32 -> GPT-2 48, TrOCR-style)
============================  ===================================  ===========================

optimum-onnx 0.1.0 supports all of them (``ORTModelForSpeechSeq2Seq`` "officially supports
whisper, speech_to_text" and hands moonshine to ``ORTModelForMoonshine``). Padding: t5 and bart
pad the second sentence (attention_mask), whisper pads the second clip's features with silence
(its encoder takes no mask), speech_to_text masks the second clip's frames (attention_mask, also
fed to the decoder as ``encoder_attention_mask``); moonshine's and the ViT's inputs have no mask
in onnxspec's graphs (raw waveforms of equal length, images), so they are not padded.

Out of the default run (a few minutes, and it needs the venv)::

    .venv/bin/python benchmarks/peer.py      # creates benchmarks/.work/optimum-venv once
    ONNXSPEC_OPTIMUM=1 .venv/bin/python -m pytest tests/integration/test_optimum_runtime.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from onnxspec.pipeline.core import export

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / "benchmarks" / ".work" / "optimum-venv" / "bin" / "python"
SIDE = Path(__file__).with_name("optimum_side.py")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("ONNXSPEC_OPTIMUM") != "1", reason="Optimum runtime test: set ONNXSPEC_OPTIMUM=1 to run it (about a minute)"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no Optimum venv at {PYTHON}: create it with `.venv/bin/python benchmarks/peer.py`"),
]

TASKS = {
    "t5": "text2text-generation-with-past",
    "bart": "text2text-generation-with-past",
    "whisper": "automatic-speech-recognition-with-past",
    "speech_to_text": "automatic-speech-recognition-with-past",
    "moonshine": "automatic-speech-recognition-with-past",
    "vision-encoder-decoder": "image-to-text-with-past",
}
CLASSES = {"t5": "ORTModelForSeq2SeqLM", "bart": "ORTModelForSeq2SeqLM", "whisper": "ORTModelForWhisper",
           "speech_to_text": "ORTModelForSpeechSeq2Seq", "moonshine": "ORTModelForMoonshine",
           "vision-encoder-decoder": "ORTModelForVision2Seq"}
"""The class Optimum's from_pretrained returns (ORTModelForSpeechSeq2Seq dispatches whisper and moonshine)."""


def _side(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([str(PYTHON), str(SIDE), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module", params=sorted(TASKS))
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    model_type = request.param
    root = tmp_path_factory.mktemp(model_type)
    _side("make", model_type, str(root / "model"))
    report = export(root / "model", root / "onnx", task=TASKS[model_type])
    assert report.passed, report.failures
    assert "decoder_model_merged.onnx" in report.files
    return model_type, root / "model", root / "onnx"


@pytest.mark.parametrize("merged", [True, False], ids=["use_merged", "two_decoders"])
def test_ort_model_generates_pytorch_ids(exported: tuple[str, Path, Path], merged: bool) -> None:
    model_type, model, onnx = exported
    result = json.loads(_side("generate", model_type, str(model), str(onnx), "true" if merged else "false").strip().splitlines()[-1])
    want = {"encoder": "encoder_model.onnx", "decoder": "decoder_model_merged.onnx"} if merged else {
        "encoder": "encoder_model.onnx", "decoder": "decoder_model.onnx", "decoder_with_past": "decoder_with_past_model.onnx"}
    assert result["class"] == CLASSES[model_type]
    assert result["sessions"] == want
    want_ids = result["torch"]
    assert len(want_ids[0]) >= 12
    new = [row[1:] for row in want_ids]
    assert new[0] != new[1] and len(set(new[0] + new[1])) > 2, want_ids  # a decode worth comparing
    assert result["ort"] == want_ids
