"""``onnxspec quantize`` / ``optimize`` on a folder a layout moved graphs in (``--layout
transformers.js``: the report's ``path`` is not the flat ``filename``) refuse it before loading
anything, naming the layout and what to run instead; a folder whose graphs are where their flat
names say (flat, genai) is read as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxspec.cli import main
from onnxspec.errors import ModelLoadError
from onnxspec.post.folder import read_export_folder
from onnxspec.post.optimize import optimize
from onnxspec.post.quantize import quantize


def _laid_out(folder: Path, graphs: dict[str, str], layout: str = "transformers.js") -> Path:
    """A folder as an export in ``layout`` leaves it: each graph (flat name -> where it is; ""
    for left out) and the report naming both."""
    for path in graphs.values():
        if path:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(b"")  # never read: the folder is refused by its report
    report = {"passed": True, "model_type": "t5", "task": "text2text-generation-with-past", "seed": 0, "source": {},
              "graphs": [{"filename": name, "path": path, "trace_shapes": {}} for name, path in graphs.items()]}
    (folder / "onnxspec_report.json").write_text(json.dumps(report))
    (folder / "onnxspec_layout.json").write_text(json.dumps({"layout": layout, "graphs": {}}))
    return folder


SEQ2SEQ = {"encoder_model.onnx": "onnx/encoder_model.onnx", "decoder_model.onnx": "",
           "decoder_with_past_model.onnx": "", "decoder_model_merged.onnx": "onnx/decoder_model_merged.onnx"}


def test_quantize_refuses_a_transformers_js_folder_naming_the_variant_to_export(tmp_path: Path) -> None:
    folder = _laid_out(tmp_path / "tjs", SEQ2SEQ)
    with pytest.raises(ModelLoadError) as caught:
        quantize(folder, tmp_path / "q", method="int4")
    message = str(caught.value)
    assert "laid out for transformers.js" in message
    assert "encoder_model.onnx at onnx/encoder_model.onnx" in message and "decoder_model.onnx left out" in message
    assert "--layout transformers.js --variants q4" in message and "export without --layout" in message
    assert not (tmp_path / "q").exists()  # refused before anything was written


def test_optimize_refuses_it_too(tmp_path: Path) -> None:
    folder = _laid_out(tmp_path / "tjs", {"model.onnx": "onnx/model.onnx"})
    with pytest.raises(ModelLoadError, match=r"`onnxspec optimize` reads a flat export folder.*export without --layout"):
        optimize(folder, tmp_path / "o")
    with pytest.raises(ModelLoadError, match=r"--variants fp16"):
        optimize(folder, tmp_path / "o", fp16=True)
    assert not (tmp_path / "o").exists()


def test_the_cli_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _laid_out(tmp_path / "tjs", {"model.onnx": "onnx/model.onnx"})
    assert main(["quantize", str(folder), str(tmp_path / "q")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "laid out for transformers.js (its report puts model.onnx at onnx/model.onnx)" in err
    assert "--variants q8" in err and "Traceback" not in err and "are missing" not in err


def test_graphs_where_their_flat_names_say_are_read_as_before(tmp_path: Path) -> None:
    folder = _laid_out(tmp_path / "genai", {"model.onnx": "model.onnx"}, layout="genai")
    assert read_export_folder(folder).graphs == ("model.onnx",)
