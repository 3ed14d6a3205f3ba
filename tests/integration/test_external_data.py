"""An export whose exporter writes its weights as external data (dynamo) keeps that data file,
moved without loading it: the graph names ``model.onnx.data`` only and validates."""

from __future__ import annotations

import os

import onnx
import pytest
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from onnxspec.build.exporters import ALIGN_FROM, EXTERNAL_ALIGNMENT, Backend, available_backends


@pytest.mark.integration
@pytest.mark.skipif(Backend.DYNAMO not in available_backends(), reason="the dynamo exporter is not installed")
def test_a_dynamo_export_keeps_the_exporters_data_file(tmp_path) -> None:
    """The dynamo exporter writes its weights as external data; the graph written refers to
    ``model.onnx.data`` only, nothing else is left in the folder, and it validates."""
    from onnxspec.pipeline.core import export
    from tests.tiny import tiny_model

    out = tmp_path / "out"
    report = export(tiny_model("bert", "feature-extraction"), out, backend="dynamo", external_data_threshold=0)
    assert report.passed
    names = sorted(os.listdir(out))
    assert "model.onnx.data" in names and not [n for n in names if n.startswith("trace-") or n.endswith(".onnx.data") and n != "model.onnx.data"]
    graph = onnx.load(os.fspath(out / "model.onnx"), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in graph.graph.initializer if uses_external_data(t)}
    assert locations == {"model.onnx.data"}
    big = [t for t in graph.graph.initializer if uses_external_data(t) and ExternalDataInfo(t).length >= ALIGN_FROM]
    assert all(ExternalDataInfo(t).offset % EXTERNAL_ALIGNMENT == 0 for t in big)
