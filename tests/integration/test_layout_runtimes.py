"""The runtimes themselves as the judges of the layouts: onnxruntime-genai loads a folder written
with ``--layout genai``, transformers.js (in node, from disk only) one written with
``--layout transformers.js``, and their greedy generation gives the ids of PyTorch's
``generate()`` on the same tiny random model (12 new tokens, two prompts).

============================  ======================  =====================================
model types                   layout                  what loads and generates
============================  ======================  =====================================
llama, qwen2, qwen3, mistral, genai                   ``onnxruntime_genai.Model`` (genai_config.json)
phi3, gemma, granite, olmo,
gpt2
llama                         transformers.js         ``AutoModelForCausalLM``, dtype fp32, fp16, q8
t5                            transformers.js         ``AutoModelForSeq2SeqLM``, dtype fp32
whisper                       transformers.js         ``AutoModelForSpeechSeq2Seq``, dtype fp32
ViT -> TrOCR (vision-e.-d.)   transformers.js         ``AutoModelForVision2Seq``, dtype fp32
============================  ======================  =====================================

fp32 and fp16 must give PyTorch's ids (both graphs are validated against PyTorch); the int8
graph (``q8``, ``model_quantized.onnx``, judged by agreement when written) must load and
generate, its ids are not compared. The encoder-decoders are written with ``--variants ''``. (A
ViT -> GPT-2 pair is refused by the layout: transformers.js feeds its decoder a decoder-only
cache; see ``test_layouts.py``.)

Out of the default run (it needs the runtimes, set up once outside ``.venv``)::

    bash tests/integration/layout_runtimes_setup.sh
    ONNXSPEC_LAYOUT_RUNTIMES=1 .venv/bin/python -m pytest tests/integration/test_layout_runtimes.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import transformers as T

from onnxspec.cli.commands import main
from tests.tiny import CONFIGS, VISION_PAIRS, tiny_model

REPO = Path(__file__).resolve().parents[2]
GENAI_PYTHON = REPO / "benchmarks" / ".work" / "genai-venv" / "bin" / "python"
TRANSFORMERS_JS = REPO / "benchmarks" / ".work" / "transformers-js" / "node_modules" / "@huggingface" / "transformers" / "dist" / "transformers.node.mjs"
HERE = Path(__file__).parent
NEW_TOKENS = 12
PROMPTS = [[1, 5, 7, 9, 11], [1, 42, 3]]
SETUP = "bash tests/integration/layout_runtimes_setup.sh"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("ONNXSPEC_LAYOUT_RUNTIMES") != "1",
                       reason="layout runtime test: set ONNXSPEC_LAYOUT_RUNTIMES=1 to run it (after `" + SETUP + "`)"),
]


def _model(model_type: str, task: str) -> torch.nn.Module:
    if model_type == "vit-trocr":
        torch.manual_seed(0)
        model = T.VisionEncoderDecoderModel(VISION_PAIRS["vit-trocr"]()).eval()
    else:
        model = tiny_model(model_type, task)
    if model_type in SPREAD:
        # with the default initialization these tiny encoder-decoders repeat one token: wider
        # weights make greedy decoding pick different tokens, so equal ids say something
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.3)
    return model


SPREAD = ("t5", "whisper", "vit-trocr")


def _export(model_type: str, task: str, layout: str, tmp_path: Path, *options: str) -> Path:
    folder = tmp_path / model_type
    _model(model_type, task).save_pretrained(folder)
    out = tmp_path / f"{model_type}-{layout}"
    assert main(["export", "--model", str(folder), "--task", task, "--layout", layout, *options, str(out)]) == 0
    return out


def _torch_ids(model_type: str, task: str, examples: list[dict[str, torch.Tensor]]) -> list[list[int]]:
    model = _model(model_type, task)
    with torch.no_grad():
        return [model.generate(**ex, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)[0].tolist()
                for ex in examples]


@pytest.mark.skipif(not GENAI_PYTHON.exists(), reason=f"no onnxruntime-genai venv at {GENAI_PYTHON}: run `{SETUP}`")
@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma", "granite", "olmo", "gpt2"])
def test_genai_generates_pytorchs_ids(model_type: str, tmp_path: Path) -> None:
    task = "text-generation-with-past"
    out = _export(model_type, task, "genai", tmp_path)
    ran = subprocess.run([str(GENAI_PYTHON), str(HERE / "genai_side.py"), str(out), json.dumps(PROMPTS), str(NEW_TOKENS)],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    expected = _torch_ids(model_type, task, [{"input_ids": torch.tensor([p])} for p in PROMPTS])
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == expected


def _tensor(t: torch.Tensor) -> dict[str, object]:
    kind = "int64" if t.dtype == torch.int64 else "float32"
    return {"type": kind, "dims": list(t.shape), "data": t.flatten().tolist()}


def _node(out: Path, cls: str, dtype: str, examples: list[dict[str, torch.Tensor]]) -> list[list[int]]:
    payload = json.dumps([{k: _tensor(v) for k, v in ex.items()} for ex in examples])
    ran = subprocess.run(["node", str(HERE / "transformers_js_side.mjs"), str(TRANSFORMERS_JS), str(out), cls, dtype, payload,
                          str(NEW_TOKENS)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1])


def _examples(model_type: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    if model_type == "vit-trocr":
        return [{"pixel_values": torch.randn(1, 3, 32, 32, generator=g)} for _ in range(2)]
    if model_type == "whisper":
        return [{"input_features": torch.randn(1, 16, 60, generator=g)} for _ in range(2)]
    return [{"input_ids": torch.tensor([p]), "attention_mask": torch.ones(1, len(p), dtype=torch.int64)} for p in PROMPTS]


CASES = {
    "llama": ("text-generation-with-past", "AutoModelForCausalLM"),
    "t5": ("text2text-generation-with-past", "AutoModelForSeq2SeqLM"),
    "whisper": ("automatic-speech-recognition-with-past", "AutoModelForSpeechSeq2Seq"),
    "vit-trocr": ("image-to-text-with-past", "AutoModelForVision2Seq"),
}


@pytest.mark.skipif(shutil.which("node") is None or not TRANSFORMERS_JS.exists(),
                    reason=f"no node or no transformers.js at {TRANSFORMERS_JS}: run `{SETUP}`")
@pytest.mark.parametrize("model_type", list(CASES))
def test_transformers_js_generates_pytorchs_ids(model_type: str, tmp_path: Path) -> None:
    task, cls = CASES[model_type]
    # the widened weights of the encoder-decoders are harsh on int8 (t5's falls below the agreement
    # thresholds): their folders get the fp32 graphs alone, which is what is compared here
    options = ["--variants", ""] if model_type in SPREAD else []
    out = _export(model_type, task, "transformers.js", tmp_path, *options)
    examples = _examples(model_type)
    expected = _new_ids(_torch_ids(model_type, task, examples))
    assert _new_ids(_node(out, cls, "fp32", examples)) == expected
    if model_type == "llama":
        assert _new_ids(_node(out, cls, "fp16", examples)) == expected
        quantized = _new_ids(_node(out, cls, "q8", examples))
        assert [len(s) for s in quantized] == [len(s) for s in expected]
        assert all(0 <= t < CONFIGS["llama"]().vocab_size for s in quantized for t in s)


def _new_ids(sequences: list[list[int]]) -> list[list[int]]:
    """The generated tokens (transformers' whisper leaves the start token out of what it returns)."""
    return [s[-NEW_TOKENS:] for s in sequences]
