"""Optimum's runtime classes as the judge of onnxspec's seq2seq folders.

A tiny t5 and a tiny whisper, saved by transformers 4.57 in the benchmarks' Optimum venv, are
exported by onnxspec; the Optimum venv then loads the folder with ``ORTModelForSeq2SeqLM`` /
``ORTModelForSpeechSeq2Seq`` (``use_merged=True``: encoder + ``decoder_model_merged.onnx``;
``False``: encoder + ``decoder_model.onnx`` + ``decoder_with_past_model.onnx``) and its
``generate()`` must give the PyTorch model's ids (12 greedy tokens, batch of 2 with padding).

Out of the default run (about a minute, and it needs the venv)::

    .venv/bin/python benchmarks/peer.py      # creates benchmarks/.work/optimum-venv once
    ONNXSPEC_OPTIMUM=1 .venv/bin/python -m pytest tests/integration/test_optimum_runtime.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from onnxspec.pipeline import export

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / "benchmarks" / ".work" / "optimum-venv" / "bin" / "python"
SIDE = Path(__file__).with_name("optimum_side.py")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("ONNXSPEC_OPTIMUM") != "1", reason="Optimum runtime test: set ONNXSPEC_OPTIMUM=1 to run it (about a minute)"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no Optimum venv at {PYTHON}: create it with `.venv/bin/python benchmarks/peer.py`"),
]

TASKS = {"t5": "text2text-generation-with-past", "whisper": "automatic-speech-recognition-with-past"}


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
    assert result["sessions"] == want
    assert len(result["torch"][0]) >= 12
    assert result["ort"] == result["torch"]
