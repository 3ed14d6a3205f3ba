"""Re-validating export folders (onnxspec.post.recheck.validate_folder): onnxspec's own exports at
other shapes, a tampered weight, a folder in Optimum's layout without onnxspec's metadata, and
(opt-in, ONNXSPEC_OPTIMUM=1) a folder Optimum's exporter wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import attrs
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxspec.errors import SpecError, ValidationError
from onnxspec.pieces.shapes import Shapes
from onnxspec.pipeline.core import export
from onnxspec.post.recheck import read_graphs, validate_folder
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OPTIMUM = REPO / "benchmarks" / ".work" / "optimum-venv" / "bin"
SIDE = Path(__file__).with_name("optimum_side.py")
T5_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("t5")
    model = Path(tiny_folder("t5", "text2text-generation", root / "model"))
    report = export(model, root / "onnx", task="text2text-generation-with-past")
    assert report.passed and set(T5_FILES) <= set(report.files)
    return model, root / "onnx"


def _strip(source: Path, destination: Path, rename: dict[str, str] | None = None) -> Path:
    """A copy of an onnxspec folder as another tool would write it: no onnxspec_*.json, no
    onnxspec metadata in the graphs, files renamed."""
    destination.mkdir()
    for path in source.iterdir():
        if path.name.startswith("onnxspec_"):
            continue
        name = (rename or {}).get(path.name, path.name)
        if path.suffix == ".onnx":
            proto = onnx.load(str(path))
            kept = [p for p in proto.metadata_props if not p.key.startswith("onnxspec.")]
            del proto.metadata_props[:]
            proto.metadata_props.extend(kept)
            proto.producer_name, proto.producer_version = "another-exporter", "1.0"
            onnx.save(proto, str(destination / name))
        else:
            shutil.copy(path, destination / name)
    return destination


def _tamper(path: Path) -> str:
    """Change one weight of the graph at ``path``: add 0.1 to the last matrix a MatMul multiplies by
    (the language-model head); return its name."""
    proto = onnx.load(str(path))
    floats = {t.name: t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    used = [i for node in proto.graph.node if node.op_type in ("MatMul", "Gemm") for i in node.input if i in floats]
    target = floats[used[-1]]
    array = numpy_helper.to_array(target) + np.float32(0.1)
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    onnx.save(proto, str(path))
    return target.name


def test_t5_with_past_revalidates_at_other_shapes(t5: tuple[Path, Path]) -> None:
    model, folder = t5
    shapes = Shapes(batch_size=3, sequence_length=5, past_sequence_length=7)
    report = validate_folder(folder, model, shapes=shapes)
    assert report.passed and report.validated
    assert [g.filename for g in report.graphs] == list(T5_FILES)
    merged = next(g for g in report.graphs if g.filename == "decoder_model_merged.onnx")
    assert {c.shape_set for c in merged.checks} == {"set0/no-cache", "set0/cache"}
    encoder = next(g for g in report.graphs if g.filename == "encoder_model.onnx")
    assert encoder.checks[0].onnx_shape[:2] == (3, 5)  # the shapes asked for
    assert report.task.startswith("text2text-generation") and all(g.problems == () for g in report.graphs)


def test_a_tampered_weight_fails_naming_the_graph_and_output(t5: tuple[Path, Path], tmp_path: Path) -> None:
    model, folder = t5
    copy = Path(shutil.copytree(folder, tmp_path / "tampered"))
    _tamper(copy / "decoder_with_past_model.onnx")
    with pytest.raises(ValidationError) as e:
        validate_folder(copy, model, shapes=Shapes(batch_size=2, sequence_length=4))
    report = e.value.report
    failed = {g.filename for g in report.graphs if not g.passed}
    assert failed == {"decoder_with_past_model.onnx"}
    bad = {c.output for g in report.graphs for c in g.checks if not c.passed}
    assert "logits" in bad
    assert "decoder_with_past_model.onnx" in str(e.value) and "'logits'" in str(e.value)


def test_optimum_layout_without_metadata_finds_graphs_by_name_and_infers_the_task(t5: tuple[Path, Path], tmp_path: Path) -> None:
    model, folder = t5
    stripped = _strip(folder, tmp_path / "optimum")
    assert all(g.contract is None for g in read_graphs(stripped))
    report = validate_folder(stripped, model, shapes=Shapes(batch_size=2, sequence_length=6))
    assert report.passed and len(report.graphs) == 4 and report.graphs[0].use_past is False
    assert any(g.use_past_in_inputs for g in report.graphs)  # the cache task was inferred from the graphs
    assert report.backend == "another-exporter 1.0"
    # transformers.js's layout: the graphs in onnx/, with variants no plan has
    nested = Path(shutil.copytree(stripped, tmp_path / "transformers.js"))
    (nested / "onnx").mkdir()
    for name in (*T5_FILES[:2], "decoder_model_merged.onnx"):
        (nested / name).rename(nested / "onnx" / name)
    shutil.copy(nested / "onnx" / "decoder_model_merged.onnx", nested / "onnx" / "decoder_model_merged_quantized.onnx")
    for name in T5_FILES:
        (nested / name).unlink(missing_ok=True)
    laid_out = validate_folder(nested, model, shapes=Shapes(batch_size=1, sequence_length=3))
    assert laid_out.passed and [g.filename for g in laid_out.graphs] == [*T5_FILES[:2], "decoder_model_merged.onnx"]
    assert any("decoder_model_merged_quantized.onnx: not a file" in n for n in laid_out.notes)
    assert any("decoder_with_past_model.onnx: in onnxspec's plan" in n for n in laid_out.notes)
    # without its cache graphs the folder is re-validated as the task without cache
    for name in ("decoder_with_past_model.onnx", "decoder_model_merged.onnx"):
        (stripped / name).unlink()
    plain = validate_folder(stripped, model, shapes=Shapes(batch_size=2, sequence_length=6))
    assert plain.passed and [g.filename for g in plain.graphs] == ["encoder_model.onnx", "decoder_model.onnx"]


def test_bert_renamed_to_model_onnx_and_what_cannot_be_matched(tmp_path: Path) -> None:
    model = Path(tiny_folder("bert", "question-answering", tmp_path / "bert"))
    assert export(model, tmp_path / "onnx").passed
    folder = _strip(tmp_path / "onnx", tmp_path / "optimum")
    assert validate_folder(folder, model, shapes=Shapes(batch_size=1, sequence_length=9)).passed
    # a graph whose input has another name, and a file no plan has
    proto = onnx.load(str(folder / "model.onnx"))
    for node in proto.graph.node:
        node.input[:] = ["segment_ids" if i == "token_type_ids" else i for i in node.input]
    next(i for i in proto.graph.input if i.name == "token_type_ids").name = "segment_ids"
    onnx.save(proto, str(folder / "model.onnx"))
    shutil.copy(folder / "model.onnx", folder / "model_quantized.onnx")
    with pytest.raises(ValidationError) as e:
        validate_folder(folder, model)
    report = e.value.report
    (graph,) = report.graphs
    assert not graph.checks
    assert "token_type_ids are not inputs of the graph" in graph.problems[0]
    assert "segment_ids are not in the spec" in graph.problems[0]
    assert any("model_quantized.onnx: not a file of onnxspec's plan" in n for n in report.notes)
    with pytest.raises(SpecError, match="no graph of .* is a file onnxspec writes"):
        validate_folder(_only(folder, "model_quantized.onnx", tmp_path / "only"), model)


def _only(folder: Path, name: str, destination: Path) -> Path:
    destination.mkdir()
    shutil.copy(folder / name, destination / name)
    return destination


@pytest.mark.skipif(os.environ.get("ONNXSPEC_OPTIMUM") != "1", reason="Optimum's exporter: set ONNXSPEC_OPTIMUM=1 to run it")
@pytest.mark.skipif(not (OPTIMUM / "optimum-cli").exists(), reason=f"no Optimum venv at {OPTIMUM.parent}: `.venv/bin/python benchmarks/peer.py`")
def test_a_folder_optimum_exported(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}

    def run(*args: str) -> None:
        done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]

    run(str(OPTIMUM / "python"), str(SIDE), "make", "t5", str(tmp_path / "t5"))
    run(str(OPTIMUM / "optimum-cli"), "export", "onnx", "--model", str(tmp_path / "t5"), "--task",
        "text2text-generation-with-past", str(tmp_path / "t5-optimum"))
    assert {"encoder_model.onnx", "decoder_model_merged.onnx"} <= {p.name for p in (tmp_path / "t5-optimum").iterdir()}
    report = validate_folder(tmp_path / "t5-optimum", tmp_path / "t5", shapes=Shapes(batch_size=2, sequence_length=7))
    assert report.passed, report.failures
    assert [g.filename for g in report.graphs] == list(T5_FILES)
    # Optimum's merged decoder leaves the cross-attention cache of its cache branch empty: said, not checked
    assert any("present.0.encoder.key" in n and "empty placeholders" in n for n in report.notes)

    bert = Path(tiny_folder("bert", "text-classification", tmp_path / "bert"))
    run(str(OPTIMUM / "optimum-cli"), "export", "onnx", "--model", str(bert), "--task", "text-classification",
        str(tmp_path / "bert-optimum"))
    report = validate_folder(tmp_path / "bert-optimum", bert, shapes=Shapes(batch_size=2, sequence_length=7))
    assert report.passed and [g.filename for g in report.graphs] == ["model.onnx"]


def test_only_empty_cross_cache_placeholders_of_a_foreign_merged_decoder_are_left_out() -> None:
    """The rule for Optimum's merged decoder: its cache branch's present.*.encoder.* are empty
    placeholders. Only empty ones, only in the cache branch, only without an onnxspec contract."""
    from onnxspec.judge.report import OutputCheck
    from onnxspec.post.recheck import FolderGraph, _placeholders

    def check(output: str, shape_set: str, onnx_shape: tuple[int, ...], passed: bool) -> OutputCheck:
        return OutputCheck(graph="decoder_model_merged.onnx", output=output, shape_set=shape_set, torch_shape=(2, 4, 7, 8),
                           onnx_shape=onnx_shape, max_abs=float("nan"), max_rel=float("nan"), atol=0.0, rtol=0.0,
                           compared=0, passed=passed)

    checks = (
        check("present.0.encoder.key", "set0/cache", (0, 4, 1, 8), False),  # a placeholder: left out
        check("present.0.encoder.value", "set0/cache", (2, 4, 7, 8), False),  # values, wrong: kept
        check("present.0.encoder.key", "set0/no-cache", (0, 4, 1, 8), False),  # the first step must hold it: kept
        check("present.0.decoder.key", "set0/cache", (0, 4, 1, 8), False),  # the self-attention cache: kept
    )
    foreign = FolderGraph(file="decoder_model_merged.onnx", inputs={}, outputs={})
    kept, notes = _placeholders(foreign, checks)
    assert kept == checks[1:] and len(notes) == 1 and "present.0.encoder.key" in notes[0]
    own = attrs.evolve(foreign, contract={"task": "text2text-generation"})
    assert _placeholders(own, checks) == (checks, [])


def test_dtypes_are_read_from_the_graphs() -> None:
    from onnxspec.post.recheck import FolderGraph, graph_dtypes

    T = onnx.TensorProto
    half = FolderGraph(file="model.onnx", inputs={"input_ids": T.INT32, "attention_mask": T.INT32}, outputs={"logits": T.FLOAT16})
    assert (graph_dtypes([half]).int_dtype.value, graph_dtypes([half]).float_dtype.value) == ("int32", "fp16")
    plain = FolderGraph(file="model.onnx", inputs={"input_ids": T.INT64, "pixel_values": T.FLOAT}, outputs={"logits": T.FLOAT})
    assert (graph_dtypes([plain]).int_dtype.value, graph_dtypes([plain]).float_dtype.value) == ("int64", "fp32")


def test_a_vocoder_for_a_folder_that_runs_none_is_refused(t5: tuple[Path, Path], tmp_path: Path) -> None:
    model, onnx_folder = t5
    with pytest.raises(SpecError, match=r"vocoder=.* is given, but no graph of this folder runs a vocoder; leave it out"):
        validate_folder(onnx_folder, model, vocoder=tmp_path / "vocoder")
