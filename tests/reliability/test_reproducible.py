"""Reproducibility and integrity of what an export writes.

The same model folder, spec, seed and versions give byte-identical ONNX files (also across
processes); the written ``onnxspec_contract.json`` matches each graph exactly; the report
records the versions that shaped the export; external data is written and loads when forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

import onnxspec
from onnxspec.pipeline.core import export
from tests.reliability.conftest import TASK
from tests.tiny import tiny_folder

REPO = Path(__file__).resolve().parents[2]

# Files that must not change between two identical exports (the report holds timings and paths).
_STABLE_SUFFIXES = (".onnx", ".onnx.data", "onnxspec_contract.json", "config.json")


def digests(folder: Path) -> dict[str, str]:
    return {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
        for n in sorted(os.listdir(folder))
        if n.endswith(_STABLE_SUFFIXES)
    }


_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from tests import conftest  # offline settings
from onnxspec.pipeline.core import export
export({folder!r}, {out!r}, task={task!r}, seed=3)
"""


@pytest.mark.parametrize(
    "model_type, task",
    [("bert", "text-classification"), ("gpt2", "text-generation-with-past")],
)
def test_same_inputs_give_byte_identical_files(model_type: str, task: str, tmp_path: Path) -> None:
    folder = tiny_folder(model_type, task.removesuffix("-with-past"), tmp_path / "model")
    export(folder, tmp_path / "a", task=task, seed=3)
    code = _CHILD.format(repo=str(REPO), folder=folder, out=str(tmp_path / "b"), task=task)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert any(n.endswith(".onnx") for n in a)
    assert a == b


def test_graph_holds_no_path_nor_time(bert_folder: str, tmp_path: Path) -> None:
    """Nothing run-specific leaks into the graph: no folder path, no timestamp metadata."""
    export(bert_folder, tmp_path / "out", task=TASK)
    data = (tmp_path / "out" / "model.onnx").read_bytes()
    for leak in (str(tmp_path).encode(), bert_folder.encode(), b"onnxspec-tmp"):
        assert leak not in data
    model = onnx.load(tmp_path / "out" / "model.onnx")
    keys = {p.key for p in model.metadata_props}
    assert not any("time" in k or "date" in k for k in keys)


_ONNX_DTYPE = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
               onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.BOOL: "bool"}


def _graph_view(values) -> list[dict]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        out.append({"name": v.name, "dtype": _ONNX_DTYPE[t.elem_type], "dims": dims})
    return out


def _check_side(contract: list[dict], graph: list[dict], where: str) -> None:
    assert [c["name"] for c in contract] == [g["name"] for g in graph], where
    for c, g in zip(contract, graph):
        assert c["dtype"] == g["dtype"], f"{where} {c['name']}"
        if "rank" in c:
            assert c["rank"] == len(g["dims"]), f"{where} {c['name']}"
        dynamic = {int(k): v for k, v in c["dynamic_axes"].items()}
        for index, symbol in dynamic.items():
            assert g["dims"][index] == symbol, f"{where} {c['name']} axis {index}: graph {g['dims']}"
        for index, dim in enumerate(g["dims"]):
            if index not in dynamic:
                assert not isinstance(dim, str), f"{where} {c['name']} axis {index} is dynamic ({dim!r}) in the graph only"


@pytest.mark.parametrize(
    "model_type, task",
    [("bert", "text-classification"), ("gpt2", "text-generation-with-past"), ("t5", "text2text-generation-with-past")],
)
def test_contract_matches_the_graph(model_type: str, task: str, tmp_path: Path) -> None:
    folder = tiny_folder(model_type, task.removesuffix("-with-past"), tmp_path / "model")
    report = export(folder, tmp_path / "out", task=task)
    contracts = json.loads((tmp_path / "out" / "onnxspec_contract.json").read_text())
    graphs = sorted(g.filename for g in report.graphs)
    assert sorted(contracts) == graphs
    for filename, c in contracts.items():
        model = onnx.load(tmp_path / "out" / filename)
        _check_side(c["inputs"], _graph_view(model.graph.input), f"{filename} inputs")
        _check_side(c["outputs"], _graph_view(model.graph.output), f"{filename} outputs")
        assert c["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_report_records_versions(bert_folder: str, tmp_path: Path) -> None:
    import torch
    import transformers

    report = export(bert_folder, tmp_path / "out", task=TASK)
    expected = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxspec": onnxspec.__version__,
    }
    assert {k: report.versions.get(k) for k in expected} == expected
    written = json.loads((tmp_path / "out" / "onnxspec_report.json").read_text())
    assert {k: written["versions"].get(k) for k in expected} == expected
    assert written["seed"] == 0 and written["passed"] is True


def test_forced_external_data(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = export(bert_folder, out, task=TASK, external_data_threshold=0)
    assert report.passed
    data = out / "model.onnx.data"
    assert data.is_file() and data.stat().st_size > 0
    assert "model.onnx.data" in report.files
    model = onnx.load(out / "model.onnx", load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "no initializer was written as external data"
    assert all(e.key != "location" or e.value == "model.onnx.data" for t in model.graph.initializer for e in t.external_data)
    onnx.checker.check_model(str(out / "model.onnx"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.ones((2, 7), dtype=np.int64) for i in session.get_inputs()
    }
    (logits,) = session.run(None, feeds)
    assert logits.shape == (2, 2) and np.isfinite(logits).all()

    inline = tmp_path / "inline"
    export(bert_folder, inline, task=TASK)
    assert not (inline / "model.onnx.data").exists()
    ref = onnxruntime.InferenceSession(str(inline / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(ref.run(None, feeds)[0], logits)
