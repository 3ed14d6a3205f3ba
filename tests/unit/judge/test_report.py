"""The report's size, wall time and runtimes: measured, written, and read back from the JSON."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from onnxspec.judge.report import ExportReport, GraphReport, OutputCheck, folder_bytes, process_seconds, write_report


def _check(error: float, bound: float, passed: bool = True) -> OutputCheck:
    return OutputCheck(graph="model.onnx", output="logits", shape_set="small", torch_shape=(1, 2), onnx_shape=(1, 2),
                       max_abs=error, max_rel=0.046, atol=0.0, rtol=0.0, compared=2, passed=passed,
                       criterion="noise", reference="float64", error=error, bound=bound, noise=bound / 64)


def _report(folder: str, checks: tuple[OutputCheck, ...]) -> ExportReport:
    graph = GraphReport(filename="model.onnx", behavior="encoder", use_past=False, use_past_in_inputs=False,
                        backend="torchscript", trace_shapes={}, export_seconds=0.1, validate_seconds=0.1,
                        inputs=("input_ids", "attention_mask"), outputs=("logits",), checks=checks)
    return ExportReport(model_type="bert", task="text-classification", backend="torchscript", output_dir=folder,
                        graphs=(graph,), versions={}, seed=0, seconds=0.5, files=("model.onnx", "onnxspec_report.json"))


def test_error_over_bound_is_what_the_verdict_judges() -> None:
    assert _check(1e-7, 4e-6).error_over_bound == pytest.approx(0.025)
    assert _check(8e-6, 4e-6, passed=False).error_over_bound == pytest.approx(2.0)
    assert _check(0.0, 0.0).error_over_bound == 0.0
    assert math.isinf(_check(1e-9, 0.0, passed=False).error_over_bound)
    assert math.isnan(OutputCheck(graph="g", output="o", shape_set="s", torch_shape=(), onnx_shape=(), max_abs=0.0,
                                  max_rel=0.0, atol=1e-4, rtol=1e-3, compared=1, passed=True).error_over_bound)


def test_process_seconds_counts_from_the_process_start() -> None:
    t0, before = time.perf_counter(), process_seconds()
    time.sleep(0.05)
    after = process_seconds()
    assert before > 0 and after - before >= time.perf_counter() - t0 - 0.02


def test_write_report_states_the_size_of_the_folder_it_is_in(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\0" * 12345)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.data").write_bytes(b"\1" * 999)
    report = write_report(_report("/final/bert-onnx", (_check(1e-7, 4e-6),)), str(tmp_path))
    on_disk = sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(tmp_path) for n in names)
    assert report.total_bytes == on_disk == folder_bytes(str(tmp_path))
    data = json.loads((tmp_path / "onnxspec_report.json").read_text())
    assert data["total_bytes"] == on_disk
    assert data["process_seconds"] == report.process_seconds and report.process_seconds >= report.seconds
    assert data["graphs"][0]["checks"][0]["error_over_bound"] == pytest.approx(0.025)
    names = [r["name"] for r in data["runtimes"]]
    assert names[0] == "optimum" and names[-1] == "onnxruntime"
    assert data["runtimes"][0]["loader"] == "ORTModelForSequenceClassification"
    assert '"/final/bert-onnx"' in data["runtimes"][0]["snippet"]  # where the folder ends up, not the work folder
