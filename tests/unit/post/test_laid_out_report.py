"""The report of an export written in a layout names each graph's file where the layout put it
(``path``), keeping the flat name (``filename``) that the checks and onnxspec's plan use; its
``files`` are the laid-out folder's; the printed validation table shows the laid-out paths."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from onnxspec.cli.commands import validation_table
from onnxspec.judge.report import ExportReport, GraphReport, OutputCheck, report_json
from onnxspec.post.layouts import _relocated, get_layout, laid_out_paths

SEQ2SEQ = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")


def _folder(folder: Path, graphs: tuple[str, ...]) -> Path:
    folder.mkdir()
    for g in graphs:
        (folder / g).write_bytes(b"")  # only the names matter here
    return folder


def _check(graph: str) -> OutputCheck:
    return OutputCheck(graph=graph, output="logits", shape_set="small", torch_shape=(1, 3), onnx_shape=(1, 3), max_abs=1e-7,
                       max_rel=1e-6, atol=1e-4, rtol=1e-3, compared=3, passed=True, criterion="noise", reference="float64",
                       error=1e-7, bound=1e-5, noise=1e-7)


def _report(graphs: tuple[str, ...], folder: str) -> ExportReport:
    return ExportReport(
        model_type="t5", task="text2text-generation-with-past", backend="torchscript", output_dir=folder, versions={}, seed=0,
        seconds=1.0, files=(*graphs, "config.json", "onnxspec_report.json"),
        graphs=tuple(GraphReport(filename=g, behavior="decoder", use_past=False, use_past_in_inputs=False, backend="torchscript",
                                 trace_shapes={}, export_seconds=0.1, validate_seconds=0.1, inputs=("input_ids",),
                                 outputs=("logits",), checks=(_check(g),)) for g in graphs),
    )


def test_transformers_js_puts_the_loaded_graphs_under_onnx_and_leaves_the_others_out(tmp_path: Path) -> None:
    flat = _folder(tmp_path / "seq2seq", SEQ2SEQ)
    assert laid_out_paths(flat, "transformers.js") == {
        "encoder_model.onnx": "onnx/encoder_model.onnx", "decoder_model_merged.onnx": "onnx/decoder_model_merged.onnx",
        "decoder_model.onnx": "", "decoder_with_past_model.onnx": ""}
    assert laid_out_paths(flat, "transformers.js", "fp16")["decoder_model_merged.onnx"] == "onnx/decoder_model_merged_fp16.onnx"
    single = _folder(tmp_path / "single", ("model.onnx",))
    assert laid_out_paths(single, "transformers.js") == {"model.onnx": "onnx/model.onnx"}
    assert laid_out_paths(single, "genai") == laid_out_paths(single, "flat") == {"model.onnx": "model.onnx"}


def test_a_relocated_report_names_each_graph_where_it_is(tmp_path: Path) -> None:
    flat = _folder(tmp_path / "seq2seq", SEQ2SEQ)
    files = ("config.json", "onnx/decoder_model_merged.onnx", "onnx/encoder_model.onnx", "onnxspec_report.json")
    report = _relocated(_report(SEQ2SEQ, str(flat)), str(tmp_path), str(tmp_path), str(tmp_path / "out"),
                        get_layout("transformers.js"), laid_out_paths(flat, "transformers.js"), files)
    assert [(g.filename, g.path) for g in report.graphs] == [
        ("encoder_model.onnx", "onnx/encoder_model.onnx"), ("decoder_model.onnx", ""), ("decoder_with_past_model.onnx", ""),
        ("decoder_model_merged.onnx", "onnx/decoder_model_merged.onnx")]
    assert report.files == files and report.output_dir == str(tmp_path / "out")
    written = json.loads(report_json(report))
    assert [g["path"] for g in written["graphs"]] == [g.path for g in report.graphs]
    assert [g["filename"] for g in written["graphs"]] == list(SEQ2SEQ)  # the flat names stay for what reads them
    assert [c["graph"] for g in written["graphs"] for c in g["checks"]] == list(SEQ2SEQ)

    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(validation_table(report, width=200))
    printed = console.file.getvalue()
    assert "onnx/encoder_model.onnx" in printed and "onnx/decoder_model_merged.onnx" in printed
    assert "decoder_model.onnx (not written)" in printed


def test_a_graph_not_laid_out_is_where_the_export_wrote_it() -> None:
    graph = _report(("model.onnx",), "/x").graphs[0]
    assert graph.path == "model.onnx"
    assert json.loads(report_json(graph))["path"] == "model.onnx"
