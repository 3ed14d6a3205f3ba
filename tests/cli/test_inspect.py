"""``onnxspec inspect FOLDER``: graphs, I/O, contracts, report summary and sizes of an export
folder, read without loading weights; also on a folder onnxspec did not write."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxspec import export
from onnxspec.cli.commands import main
from onnxspec.cli.inspection import CONTRACT_KEY, inspect_folder
from tests.tiny import tiny_folder
from tests.tiny_tokenizers import t5_tokenizer_files


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("inspect")
    folder = tiny_folder("bert", "text-classification", root / "bert")
    export(folder, root / "bert-onnx")
    return os.fspath(root / "bert-onnx")


@pytest.fixture(scope="module")
def t5_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, tuple[str, ...]]:
    root = tmp_path_factory.mktemp("inspect")
    folder = tiny_folder("t5", "text2text-generation", root / "t5")
    tokenizer = t5_tokenizer_files(folder)
    export(folder, root / "t5-onnx", task="text2text-generation-with-past")
    return os.fspath(root / "t5-onnx"), tokenizer


def _inspect(folder: str, capsys, monkeypatch, *extra: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["inspect", folder, *extra]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in out  # nothing cut
    return out


@pytest.mark.integration
def test_inspect_a_bert_export(bert_export: str, capsys, monkeypatch) -> None:
    out = _inspect(bert_export, capsys, monkeypatch)
    assert "onnxspec export of bert / text-classification" in out and "passed" in out
    assert "model.onnx" in out and "matches" in out  # the embedded contract names the graph's I/O
    assert "input_ids" in out and "int64" in out and "[batch_size, sequence_length]" in out
    assert "logits" in out and "float32" in out
    assert "3 pass" in out  # checks of the report
    assert "versions: onnxspec" in out and "onnxruntime" in out and "total size:" in out
    assert "no tokenizer" in " ".join(out.split())  # the report's warning is shown (wrapped at 80 columns)


@pytest.mark.integration
def test_inspect_a_t5_export_with_past_lists_four_graphs(t5_export: tuple[str, tuple[str, ...]], capsys, monkeypatch) -> None:
    folder, tokenizer = t5_export
    info = inspect_folder(folder)
    names = [g.file for g in info.graphs]
    assert names == ["decoder_model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "encoder_model.onnx"]
    assert all(g.contract is not None and not g.contract_problems for g in info.graphs)
    assert all(g.summary is not None and g.summary.passed for g in info.graphs)
    merged = info.graphs[1]
    assert "use_cache_branch" in [t.name for t in merged.inputs]
    assert info.total_size == sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    out = _inspect(folder, capsys, monkeypatch)
    for name in names:
        assert f"{name}: contract: t5 / text2text-generation" in out
    assert "past_key_values.*.decoder.* (4)" in out and "present.*.encoder.* (4)" in out
    assert "use_cache_branch" in out and "bool" in out
    everything = _inspect(folder, capsys, monkeypatch, "--all")
    assert "past_key_values.1.encoder.value" in everything
    # the tokenizer files T5Tokenizer declares were copied (spiece.model among them)
    report = json.loads(open(os.path.join(folder, "onnxspec_report.json")).read())
    for name in tokenizer:
        assert name in report["files"] and os.path.isfile(os.path.join(folder, name))
    assert "spiece.model" in out


def _plain_graph(folder) -> None:
    """A graph as another tool writes it: no contract, no report, weights in external data."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 4])], [w],
    )
    model = helper.make_model(graph, producer_name="another-exporter", opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, os.fspath(folder / "model.onnx"), save_as_external_data=True, location="model.onnx_data", size_threshold=0)


def test_inspect_a_plain_onnx_folder(tmp_path, capsys, monkeypatch) -> None:
    _plain_graph(tmp_path)
    info = inspect_folder(tmp_path)
    assert not info.written_by_onnxspec and info.report is None
    (graph,) = info.graphs
    assert graph.external_data == ("model.onnx_data",) and graph.opset == 17 and graph.contract is None
    assert graph.size == os.path.getsize(tmp_path / "model.onnx") + os.path.getsize(tmp_path / "model.onnx_data")
    assert [(t.name, t.dtype, t.shape) for t in graph.inputs] == [("x", "float32", ("batch_size", 4))]
    out = _inspect(os.fspath(tmp_path), capsys, monkeypatch)
    assert "not written by onnxspec" in out and "no onnxspec_report.json" in out
    assert "model.onnx_data" in out and "another-exporter" in out and "[batch_size, 4]" in out


@pytest.mark.integration
def test_a_contract_that_does_not_match_the_graph_is_shown(bert_export: str, tmp_path, capsys, monkeypatch) -> None:
    model = onnx.load(os.path.join(bert_export, "model.onnx"))
    prop = next(p for p in model.metadata_props if p.key == CONTRACT_KEY)
    contract = json.loads(prop.value)
    contract["inputs"].append({"name": "position_ids", "dtype": "int64"})
    prop.value = json.dumps(contract)
    onnx.save(model, os.fspath(tmp_path / "model.onnx"))
    (graph,) = inspect_folder(tmp_path).graphs
    assert graph.contract_problems == ("inputs in the contract but not in the graph: position_ids",)
    out = _inspect(os.fspath(tmp_path), capsys, monkeypatch)
    assert "differs" in out and "position_ids" in out and "no onnxspec_report.json" in out


def test_inspect_refuses_a_folder_without_graphs(tmp_path, capsys) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert main(["inspect", os.fspath(tmp_path)]) == 2
    assert "holds no .onnx file" in capsys.readouterr().err
    assert main(["inspect", os.fspath(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
