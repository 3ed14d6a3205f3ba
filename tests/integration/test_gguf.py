"""Exporting a GGUF checkpoint: a tiny random llama written as a GGUF file is exported and
validated, the output folder is usable by a runtime (clean config, generation config,
tokenizer), and every way of naming the file wrongly is one clear error (exit code 2)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import transformers

from onnxspec import export
from onnxspec.cli.commands import EXIT_OK, EXIT_USAGE, main
from onnxspec.errors import ModelLoadError, UnsupportedTaskError
from tests.tiny import tiny_folder
from tests.tiny_gguf import tiny_llama, write_gguf

pytestmark = pytest.mark.integration

NAME = "tiny-llama.F32.gguf"


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    return tiny_llama(seed=5)


@pytest.fixture(scope="module")
def gguf_folder(source_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("gguf") / "tiny"
    folder.mkdir()
    write_gguf(source_model, folder / NAME)
    return str(folder)


def _copy(gguf_folder: str, to: Path, *also: str) -> Path:
    """A copy of the GGUF folder, with extra (empty) GGUF files named ``also``."""
    shutil.copytree(gguf_folder, to)
    for name in also:
        shutil.copy(to / NAME, to / name)
    return to


def test_export_a_gguf_folder_validates_and_writes_a_usable_folder(
    gguf_folder: str, source_model: torch.nn.Module, tmp_path: Path
) -> None:
    out = tmp_path / "onnx"
    report = export(gguf_folder, out)
    assert report.passed and report.validated
    assert (report.model_type, report.task) == ("llama", "text-generation-with-past")
    assert report.source["format"] == "gguf" and report.source["gguf_file"] == NAME
    assert report.source["tokenizer"].startswith("saved")
    written = json.loads((out / "onnxspec_report.json").read_text())
    assert written["source"]["gguf_file"] == NAME
    for name in ("model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
        assert name in report.files
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] == 2 and config["head_dim"] == 16

    # A runtime can use the folder: transformers reads its config and tokenizer back.
    assert type(transformers.AutoConfig.from_pretrained(out)).__name__ == "LlamaConfig"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    from_gguf = transformers.AutoTokenizer.from_pretrained(gguf_folder, gguf_file=NAME)
    text = "the cat sat on the mat"
    assert tokenizer(text)["input_ids"] == from_gguf(text)["input_ids"]
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    # The graph holds the source model's weights: onnxruntime's logits match the model written to the GGUF file.
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([tokenizer(text)["input_ids"]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for i in (x.name for x in session.get_inputs() if x.name.startswith("past_key_values")):
        feeds[i] = np.zeros((1, 2, 0, 16), dtype=np.float32)
    feeds = {k: v for k, v in feeds.items() if k in {x.name for x in session.get_inputs()}}
    logits = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        expected = source_model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_a_named_gguf_file_wins_over_config_json(gguf_folder: str, tmp_path: Path) -> None:
    folder = Path(tiny_folder("bert", "text-classification", tmp_path / "both"))
    shutil.copy(Path(gguf_folder) / NAME, folder / NAME)
    plain = export(folder, tmp_path / "plain", validation_shapes=())
    assert plain.model_type == "bert" and plain.source["format"] == "transformers"
    chosen = export(folder, tmp_path / "chosen", gguf_file=NAME, validation_shapes=())
    assert chosen.model_type == "llama" and chosen.source["gguf_file"] == NAME
    assert json.loads((tmp_path / "chosen" / "config.json").read_text())["model_type"] == "llama"


def test_a_gguf_file_without_tokenizer_exports_and_says_so(source_model: torch.nn.Module, tmp_path: Path) -> None:
    folder = tmp_path / "no-tok"
    folder.mkdir()
    write_gguf(source_model, folder / "model.gguf", tokenizer=False)
    report = export(folder, tmp_path / "out", task="text-generation", validation_shapes=())
    assert report.source["tokenizer"].startswith("no tokenizer saved")
    assert not any(n.startswith("tokenizer") for n in os.listdir(tmp_path / "out"))


def test_a_head_the_gguf_file_cannot_hold_is_refused(gguf_folder: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTaskError, match="randomly initialised; export with --task text-generation"):
        export(gguf_folder, tmp_path / "out", task="text-classification")
    assert not (tmp_path / "out").exists()


def test_gguf_file_with_a_module_is_refused(source_model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="torch.nn.Module was passed"):
        export(source_model, tmp_path / "out", gguf_file=NAME)


# --- the command line ------------------------------------------------------------------------


def test_cli_exports_the_named_gguf_file(gguf_folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(gguf_folder, tmp_path / "m", "other.gguf")
    code = main(["export", "--model", str(folder), "--gguf-file", NAME, "--task", "text-generation", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert f"Read from the GGUF file {NAME}" in captured.out


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_several_gguf_files_ask_for_one(gguf_folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(gguf_folder, tmp_path / "m", "tiny-llama.Q8_0.gguf")
    out = tmp_path / "out"
    line = _usage_error(["export", "--model", str(folder), str(out)], capsys)
    assert f"'{NAME}', 'tiny-llama.Q8_0.gguf'" in line and "--gguf-file" in line
    assert not out.exists()
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files"):
        export(folder, out)


def test_cli_a_gguf_file_that_is_not_there(gguf_folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["export", "--model", gguf_folder, "--gguf_file", "tiny-lama.F32.gguf", str(tmp_path / "out")], capsys)
    assert f"Did you mean '{NAME}'" in line


def test_cli_gguf_not_installed(
    gguf_folder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "gguf" else real(name, *a, **k))
    line = _usage_error(["export", "--model", gguf_folder, str(tmp_path / "out")], capsys)
    assert "'gguf' package" in line and "pip install 'onnxspec[gguf]'" in line
    assert not (tmp_path / "out").exists()


def test_cli_describe_reads_the_dimensions_of_a_gguf_file(gguf_folder: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["describe", "llama", "text-generation-with-past", "--model", gguf_folder])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert NAME in out and "'num_key_value_heads': 2" in out and "'head_dim': 16" in out
