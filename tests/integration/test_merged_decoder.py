"""The merged-decoder stage of the pipeline: a wrong merged graph fails validation, a failure in
its stages leaves nothing behind, and the option is honoured."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from onnxspec.pipeline import core as pipeline
from onnxspec.errors import ExportError, SpecError, ValidationError
from onnxspec.pipeline.core import export
from tests.tiny import tiny_folder

TASK = "text2text-generation-with-past"


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> str:
    return tiny_folder("t5", TASK, tmp_path_factory.mktemp("t5") / "model")


def _swap_branches(merge):
    def wrong(*args, **kwargs) -> onnx.ModelProto:
        model = merge(*args, **kwargs)
        branches = {a.name: a for a in model.graph.node[0].attribute}
        then, other = onnx.GraphProto(), onnx.GraphProto()
        then.CopyFrom(branches["then_branch"].g)
        other.CopyFrom(branches["else_branch"].g)
        branches["then_branch"].g.CopyFrom(other)
        branches["else_branch"].g.CopyFrom(then)
        return model

    return wrong


def _stale_cross_cache(merge):
    """The cache branch returns the self-attention cache where the cross-attention one belongs."""

    def wrong(*args, **kwargs) -> onnx.ModelProto:
        model = merge(*args, **kwargs)
        then = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
        for node in then.node:
            if node.op_type == "Identity" and node.input[0].startswith("past_key_values.0.encoder."):
                node.input[0] = node.input[0].replace(".encoder.", ".decoder.")
        return model

    return wrong


@pytest.mark.integration
def test_merged_graph_that_cannot_run_fails_in_its_validate_stage(t5_folder: str, tmp_path, monkeypatch) -> None:
    """Swapped branches: the first step runs the cache branch on an empty cache, which onnxruntime refuses."""
    monkeypatch.setattr(pipeline, "merge_decoders", _swap_branches(pipeline.merge_decoders))
    with pytest.raises(ExportError) as info:
        export(t5_folder, tmp_path / "out", task=TASK)
    assert info.value.stage == "validate (decoder_model_merged.onnx)"
    assert os.listdir(tmp_path) == []


@pytest.mark.integration
def test_a_wrong_merged_graph_fails_validation(t5_folder: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "merge_decoders", _stale_cross_cache(pipeline.merge_decoders))
    out = tmp_path / "out"
    with pytest.raises(ValidationError) as info:
        export(t5_folder, out, task=TASK)
    failures = info.value.report.failures
    assert failures and all(f.startswith("decoder_model_merged.onnx") for f in failures), failures
    assert not out.exists()
    assert (tmp_path / "out.onnxspec-failed" / "decoder_model_merged.onnx").is_file()


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["trace", "check", "validate"])
def test_a_failure_in_a_merged_stage_names_it_and_writes_nothing(stage: str, t5_folder: str, tmp_path) -> None:
    def fault(name: str, detail: str) -> None:
        if name == stage and detail == "decoder_model_merged.onnx":
            raise RuntimeError("injected")

    with pytest.raises(ExportError) as info:
        export(t5_folder, tmp_path / "out", task=TASK, _fault=fault)
    assert info.value.stage == f"{stage} (decoder_model_merged.onnx)"
    assert "validate:decoder_with_past_model.onnx" in info.value.done
    assert os.listdir(tmp_path) == []


@pytest.mark.integration
def test_merged_option(t5_folder: str, tmp_path) -> None:
    report = export(t5_folder, tmp_path / "skip", task=TASK, merged=False)
    assert "decoder_model_merged.onnx" not in os.listdir(tmp_path / "skip")
    assert [g.filename for g in report.graphs] == ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"]
    with pytest.raises(SpecError, match="monolith=True"):
        export(t5_folder, tmp_path / "mono", task="text2text-generation", merged=True, monolith=True)
    with pytest.raises(SpecError, match="no decoder pair"):
        export(t5_folder, tmp_path / "plain", task="text2text-generation", merged=True)
    assert sorted(os.listdir(tmp_path)) == ["skip"]


@pytest.mark.integration
def test_merged_decoder_with_external_data(t5_folder: str, tmp_path) -> None:
    report = export(t5_folder, tmp_path / "out", task=TASK, external_data_threshold=0)
    assert report.passed
    assert "decoder_model_merged.onnx.data" in report.files
    model = onnx.load(tmp_path / "out" / "decoder_model_merged.onnx", load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.integration
def test_merged_validation_reuses_the_decoders_pytorch_runs(t5_folder: str, tmp_path, monkeypatch) -> None:
    """The merged file's branches are fed the inputs decoder_model and decoder_with_past were
    validated at: PyTorch runs once per graph file (not again per branch), and only where the
    inputs are the same; a record made at other inputs is not used."""
    from types import SimpleNamespace

    from onnxspec.judge import validate as validate_module
    calls: list[tuple[tuple, object]] = []
    real = validate_module._pytorch_runs

    def counting(*args, **kwargs):
        made = real(*args, **kwargs)
        calls.append((args, made))
        return made

    monkeypatch.setattr(validate_module, "_pytorch_runs", counting)
    report = export(t5_folder, tmp_path / "out", task=TASK)
    assert report.passed
    assert [g.filename for g in report.graphs][-1] == "decoder_model_merged.onnx"
    assert len(calls) == 3  # encoder, decoder, decoder with past; none for the merged file's two branches
    merged = next(g for g in report.graphs if g.filename == "decoder_model_merged.onnx")
    tags = {c.shape_set.split("/")[1] for c in merged.checks}
    assert tags == {"no-cache", "cache"} and all(c.passed for c in merged.checks)
    assert any(c.output.startswith("present.") and ".encoder." in c.output and c.shape_set.endswith("/cache") for c in merged.checks)

    (module, spec, sets, dtypes, seed, wanted, feeds), record = calls[1]
    assert record.float64 is not None and not record.reused
    assert record.fits(seed, sets, dtypes, spec, feeds, wanted)
    assert not record.fits(seed + 1, sets, dtypes, spec, feeds, wanted)
    calls.clear()

    def run(names, feed):
        return [np.zeros(1)] * len(names)

    traced = sets[0]  # unused: the shape sets are given
    *_, again = validate_module.validate_with_references(
        SimpleNamespace(run=run), module, spec, traced, dtypes, seed, "decoder_model.onnx", sets, reuse=record
    )
    assert again.reused and calls == []
    *_, other = validate_module.validate_with_references(
        SimpleNamespace(run=run), module, spec, traced, dtypes, seed + 1, "decoder_model.onnx", sets, reuse=record
    )
    assert not other.reused and len(calls) == 1
