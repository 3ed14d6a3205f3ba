"""``onnxspec inspect`` on a folder written with ``--layout transformers.js --variants fp16``: the
fp16 graph's validation is read from ``onnxspec_report_fp16.json`` (by its laid-out path,
``onnx/model_fp16.onnx``), beside the main graph's from ``onnxspec_report.json``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from onnxspec.cli.commands import main
from onnxspec.cli.inspection import inspect_folder


def _graph(path: Path, elem: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", elem, ["batch", 2])],
                              [helper.make_tensor_value_info("logits", elem, ["batch", 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def _check(error: float, passed: bool = True) -> dict:
    return {"graph": "model.onnx", "output": "logits", "shape_set": "small", "passed": passed, "error": error, "bound": 1e-4}


def _report(folder: Path, name: str, graphs: list[dict]) -> None:
    report = {"passed": True, "validated": True, "model_type": "bert", "task": "text-classification",
              "backend": "torchscript", "graphs": graphs}
    (folder / name).write_text(json.dumps(report))


@pytest.fixture()
def laid_out(tmp_path: Path) -> Path:
    _graph(tmp_path / "onnx" / "model.onnx", TensorProto.FLOAT)
    _graph(tmp_path / "onnx" / "model_fp16.onnx", TensorProto.FLOAT16)
    _report(tmp_path, "onnxspec_report.json",
            [{"filename": "model.onnx", "path": "onnx/model.onnx", "checks": [_check(1e-8)] * 3}])
    # the fp16 export's report: its own figures (one check failed, to tell it from the main report's)
    _report(tmp_path, "onnxspec_report_fp16.json",
            [{"filename": "model.onnx", "path": "onnx/model_fp16.onnx", "checks": [_check(2e-5), _check(3e-4, passed=False)]}])
    return tmp_path


def test_the_fp16_graph_is_summarized_from_its_own_report(laid_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = inspect_folder(laid_out)
    summaries = {g.file: g.summary for g in info.graphs}
    assert summaries["onnx/model.onnx"] is not None and summaries["onnx/model.onnx"].checks == 3
    assert summaries["onnx/model.onnx"].passed
    fp16 = summaries["onnx/model_fp16.onnx"]
    assert fp16 is not None and (fp16.checks, fp16.failed, fp16.passed) == (2, 1, False)
    assert info.reports == ("onnxspec_report.json", "onnxspec_report_fp16.json")
    assert info.report is not None and info.report["graphs"][0]["path"] == "onnx/model.onnx"  # the main report stays the folder's

    assert main(["inspect", str(laid_out)]) == 0
    out = capsys.readouterr().out
    assert "not in report" not in out
    assert "Validation (onnxspec_report.json, onnxspec_report_fp16.json)" in out
    assert "1 of 2 FAIL" in out and "3 pass" in out


def test_a_variant_entry_without_a_laid_out_path_does_not_stand_for_the_main_graph(laid_out: Path) -> None:
    # a variant report naming its graph by the flat name only (no path) cannot say which file it judged
    _report(laid_out, "onnxspec_report_fp16.json", [{"filename": "onnx/model.onnx", "checks": [_check(3e-4, passed=False)]}])
    summaries = {g.file: g.summary for g in inspect_folder(laid_out).graphs}
    assert summaries["onnx/model.onnx"] is not None and summaries["onnx/model.onnx"].passed
    assert summaries["onnx/model_fp16.onnx"] is None
