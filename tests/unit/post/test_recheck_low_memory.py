"""``onnxspec validate`` opens the sessions an export opens: an fp16 graph whose weights' fp32
copies would not fit in memory is re-validated by the low-memory session, and the report names it
(``LOW_MEMORY_RUNTIME``), as the export's does; otherwise the default session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnxruntime
import pytest

import onnxspec.judge.reference as reference
import onnxspec.pipeline.core as core
from onnxspec.pieces.shapes import DTypes, FloatDtype
from onnxspec.pipeline.core import LOW_MEMORY_RUNTIME, export
from onnxspec.post.recheck import validate_folder
from tests.tiny import tiny_folder

FP16 = DTypes(float_dtype=FloatDtype.FP16)


@pytest.fixture(scope="module")
def fp16(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("fp16")
    model = tiny_folder("llama", "text-generation", root / "llama", seed=5)
    report = export(model, root / "onnx", task="text-generation-with-past", dtypes=FP16)
    assert report.passed and [g.runtime for g in report.graphs] == ["onnxruntime"]
    return model, os.fspath(root / "onnx")


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The options of every session ``validate_folder`` opens."""
    opened: list[Any] = []
    session = core.validation_session

    def spy(path: str, runtime: str = "onnxruntime", **kwargs: Any) -> Any:
        opened.append(session(path, runtime, **kwargs))
        return opened[-1]

    monkeypatch.setattr(core, "validation_session", spy)
    return opened


def test_an_fp16_folder_whose_copies_do_not_fit_is_revalidated_by_the_low_memory_session(fp16, monkeypatch) -> None:
    model, folder = fp16
    opened = _spy(monkeypatch)
    monkeypatch.setattr(reference, "available_memory", lambda: 1000)  # the MatMul weights' fp32 copies take ~100 KB
    report = validate_folder(folder, model)
    (graph,) = report.graphs
    assert graph.runtime == LOW_MEMORY_RUNTIME
    assert len(graph.checks) > 3 and all(c.passed for c in graph.checks) and report.passed
    assert {c.shape_set for c in graph.checks} >= {"small", "large", "decode"}
    (session,) = opened
    options = session.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert not options.enable_cpu_mem_arena and options.execution_order == onnxruntime.ExecutionOrder.PRIORITY_BASED


def test_an_fp16_folder_whose_copies_fit_keeps_the_default_session(fp16, monkeypatch) -> None:
    model, folder = fp16
    opened = _spy(monkeypatch)
    report = validate_folder(folder, model)
    assert [g.runtime for g in report.graphs] == ["onnxruntime"] and report.passed
    (session,) = opened
    options = session.get_session_options()
    assert options.graph_optimization_level != onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    # the export's session: no prepacked copy of the weights
    assert options.get_session_config_entry("session.disable_prepacking") == "1"


def test_a_float32_folder_never_takes_the_low_memory_session(tmp_path: Path, monkeypatch) -> None:
    model = tiny_folder("llama", "text-generation", tmp_path / "llama", seed=5)
    export(model, tmp_path / "onnx", task="text-generation")
    monkeypatch.setattr(reference, "available_memory", lambda: 1000)  # its fp32 weights need no copy
    report = validate_folder(tmp_path / "onnx", model)
    assert [g.runtime for g in report.graphs] == ["onnxruntime"] and report.passed
