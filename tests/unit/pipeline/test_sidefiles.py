"""Which files of a model folder are copied beside the graphs (onnxspec.pipeline.sidefiles)."""

from __future__ import annotations

import json
import os

from onnxspec.pipeline.sidefiles import KNOWN_TOKENIZER_FILES, copy_side_files, declared_tokenizer_files, side_files, tokenizer_class_name
from tests.tiny_tokenizers import marian_tokenizer_files, t5_tokenizer_files


def _config(folder, model_type: str) -> dict[str, str]:
    data = {"model_type": model_type}
    (folder / "config.json").write_text(json.dumps(data))
    return data


def test_t5_copies_what_its_tokenizer_class_declares(tmp_path) -> None:
    config = _config(tmp_path, "t5")
    expected = t5_tokenizer_files(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "vocab.txt").write_text("not T5's")  # not declared by T5Tokenizer: left behind
    side = side_files(os.fspath(tmp_path), config)
    assert side.tokenizer_class == "T5Tokenizer" and "vocab_files_names" in side.how
    assert set(side.files) == {"config.json", *expected}
    assert not side.warning
    out = tmp_path / "out"
    out.mkdir()
    assert copy_side_files(side, os.fspath(out)) == side.files
    assert (out / "spiece.model").read_bytes() == (tmp_path / "spiece.model").read_bytes()


def test_marian_falls_back_to_known_names_when_its_class_cannot_be_resolved(tmp_path) -> None:
    config = _config(tmp_path, "marian")
    expected = marian_tokenizer_files(tmp_path)
    side = side_files(os.fspath(tmp_path), config)
    assert set(side.files) == {"config.json", *expected}
    assert "source.spm" in side.files and "target.spm" in side.files
    if side.tokenizer_class is None:  # MarianTokenizer needs sentencepiece, not installed here
        assert "MarianTokenizer" in side.how and "known tokenizer file names" in side.how


def test_declared_files_of_known_classes() -> None:
    names, problem = declared_tokenizer_files("WhisperTokenizer")
    assert problem == "" and names is not None and "normalizer.json" in names
    names, problem = declared_tokenizer_files("LlamaTokenizerFast")
    assert names is not None and "tokenizer.model" in names
    names, problem = declared_tokenizer_files("NoSuchTokenizer")
    assert names is None and "NoSuchTokenizer" in problem
    for name in ("tokenizer.model", "source.spm", "target.spm", "spm.model", "normalizer.json"):
        assert name in KNOWN_TOKENIZER_FILES


def test_tokenizer_class_from_config_or_model_type(tmp_path) -> None:
    assert tokenizer_class_name(os.fspath(tmp_path), {"model_type": "bert"}) == "BertTokenizer"
    assert tokenizer_class_name(os.fspath(tmp_path), {"model_type": "vit"}) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    assert tokenizer_class_name(os.fspath(tmp_path), {"model_type": "bert"}) == "GPT2Tokenizer"


def test_processor_configs_and_chat_templates_are_copied(tmp_path) -> None:
    config = _config(tmp_path, "vit")
    (tmp_path / "preprocessor_config.json").write_text("{}")
    (tmp_path / "processor_config.json").write_text("{}")
    (tmp_path / "additional_chat_templates").mkdir()
    (tmp_path / "additional_chat_templates" / "tool_use.jinja").write_text("{{ x }}")
    side = side_files(os.fspath(tmp_path), config)
    assert set(side.files) == {"config.json", "preprocessor_config.json", "processor_config.json",
                               "additional_chat_templates/tool_use.jinja"}
    assert not side.warning
    out = tmp_path / "out"
    out.mkdir()
    copy_side_files(side, os.fspath(out))
    assert (out / "additional_chat_templates" / "tool_use.jinja").read_text() == "{{ x }}"


def test_a_folder_without_tokenizer_or_preprocessor_warns(tmp_path) -> None:
    config = _config(tmp_path, "bert")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    side = side_files(os.fspath(tmp_path), config)
    assert side.files == ("config.json",)
    assert "no tokenizer and no preprocessor" in side.warning and "save_pretrained" in side.warning
