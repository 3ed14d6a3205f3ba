"""The runtimes table offers transformers.js only for a folder its layout accepts: both read one
rule (runtimes.transformers_js_files), so MusicGen's files, which --layout transformers.js
refuses, are not offered to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.errors import UnsupportedTaskError
from onnxspec.judge.runtimes import runtimes_for, transformers_js_files
from onnxspec.pieces.spec import bind, plan
from onnxspec.post.layouts import transformers_js_graphs
from tests.tiny import CONFIGS

CASES = [
    ("bert", "text-classification"), ("llama", "text-generation-with-past"), ("t5", "text2text-generation-with-past"),
    ("t5", "text2text-generation"), ("whisper", "automatic-speech-recognition-with-past"), ("sam", "feature-extraction"),
    ("musicgen", "text-to-audio-with-past"), ("musicgen", "text-to-audio"),
]


def _files(model_type: str, task: str) -> list[str]:
    """The graph files onnxspec's plan writes for ``model_type`` / ``task`` (a tiny config)."""
    return [g.filename for g in plan(bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]()))]


def _layout_accepts(folder: Path, files: list[str]) -> bool:
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"")  # the layout's rule reads the names only
    try:
        transformers_js_graphs(folder)
    except UnsupportedTaskError:
        return False
    return True


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_transformers_js_is_offered_exactly_when_its_layout_accepts_the_files(model_type: str, task: str, tmp_path: Path) -> None:
    files = _files(model_type, task)
    offered = "transformers.js" in {r.name for r in runtimes_for(task, str(tmp_path / "out"), files, ("input_ids",))}
    assert offered == _layout_accepts(tmp_path / "flat", files) == (transformers_js_files(files) is not None)


def test_musicgen_is_not_offered_to_transformers_js_and_a_seq2seq_model_is() -> None:
    musicgen = _files("musicgen", "text-to-audio-with-past")
    assert "decoder_model_merged.onnx" in musicgen and "encoder_model.onnx" not in musicgen
    assert [r.name for r in runtimes_for("text-to-audio-with-past", "/out/musicgen", musicgen)] == ["onnxruntime"]
    t5 = _files("t5", "text2text-generation-with-past")
    assert "transformers.js" in {r.name for r in runtimes_for("text2text-generation-with-past", "/out/t5", t5)}
    assert transformers_js_files(t5) == ("encoder_model.onnx", "decoder_model_merged.onnx")
