"""Streamed weights: a sharded safetensors folder exported without ever loading the model.

The tiny llama is saved in several shards and exported twice, loaded and streamed: the streamed
export validates, holds no Transpose of a weight, writes every weight it traced from the
checkpoint, and computes what the loaded export computes. A checkpoint missing a tensor is refused
naming the parameter, and the hollow model holds no weights outside a call.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from onnxspec.build.streamed import checkpoint_bytes, is_hollow
from onnxspec.errors import ModelLoadError, OnnxSpecError, SpecError
from onnxspec.pieces.shapes import DTypes, FloatDtype
from onnxspec.pipeline import core
from onnxspec.pipeline.core import export
from onnxspec.pipeline.loading import load_hollow_model, read_source
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("sharded") / "llama"
    tiny_model("llama", "text-generation", seed=3).save_pretrained(folder, max_shard_size="20KB")
    assert len([n for n in os.listdir(folder) if n.endswith(".safetensors")]) > 2
    return os.fspath(folder)


def _run(path: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})


def test_streamed_export_validates_and_computes_what_the_loaded_one_does(sharded, tmp_path) -> None:
    loaded = export(sharded, tmp_path / "loaded", stream_weights=False)
    streamed = export(sharded, tmp_path / "streamed", stream_weights=True)
    assert "weights" not in loaded.source
    assert streamed.source["weights"].startswith("streamed")
    (graph,) = streamed.graphs
    assert graph.checks and all(c.passed for c in graph.checks)
    assert graph.float64_reference == "streamed"

    proto = onnx.load(os.fspath(tmp_path / "streamed" / "model.onnx"), load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    assert not [n.name for n in proto.graph.node if n.op_type == "Transpose" and n.input[0] in weights]
    assert len(weights) >= 21  # embeddings, 2 x 9 per layer, final norm, head: none left out

    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(0, 100, (2, 5)).astype(np.int64),
        "attention_mask": np.ones((2, 8), np.int64),
        "position_ids": np.tile(np.arange(3, 8, dtype=np.int64), (2, 1)),
    }
    for k in range(2):
        for part in ("key", "value"):
            feed[f"past_key_values.{k}.{part}"] = rng.standard_normal((2, 2, 3, 16)).astype(np.float32)
    ours = _run(os.fspath(tmp_path / "streamed" / "model.onnx"), feed)
    theirs = _run(os.fspath(tmp_path / "loaded" / "model.onnx"), feed)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert np.abs(ours[0]).max() > 1e-3  # real weights, not hollow zeros


def test_streamed_fp16_validates(sharded, tmp_path) -> None:
    report = export(sharded, tmp_path / "fp16", stream_weights=True, dtypes=DTypes(float_dtype=FloatDtype.FP16))
    (graph,) = report.graphs
    assert graph.backend == "torchscript"
    assert graph.checks and all(c.passed for c in graph.checks)
    data = onnx.load(os.fspath(tmp_path / "fp16" / "model.onnx"), load_external_data=False)
    assert {t.data_type for t in data.graph.initializer if len(t.dims) == 2} == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize("mapped", [True, False], ids=["anonymous-mapping", "zero-strided-fallback"])
def test_hollow_model_holds_no_weights_outside_a_call(sharded, mapped, monkeypatch) -> None:
    if not mapped:  # where mmap has no anonymous mappings (not POSIX)
        monkeypatch.delattr(mmap, "MAP_ANONYMOUS")
    model, source = load_hollow_model(read_source(sharded), "text-generation", torch.float32)
    params = list(model.parameters())
    assert params and all(is_hollow(source, p) for p in params)
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    if mapped:
        assert all(p.is_contiguous() and p.untyped_storage().nbytes() >= p.numel() * p.element_size() for p in params)
    else:
        assert all(p.untyped_storage().nbytes() <= 4 for p in params)
    assert not any(p.any() for p in params)
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        got = model(ids).logits
    assert all(is_hollow(source, p) for p in model.parameters())  # given back after the call
    real = tiny_model("llama", "text-generation", seed=3)
    with torch.no_grad():
        torch.testing.assert_close(got, real(ids).logits)


def test_a_missing_tensor_is_named(sharded, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(OnnxSpecError, match=r"no tensor for 1 parameter.*model\.layers\.1\.mlp\.up_proj\.weight"):
        export(os.fspath(broken), tmp_path / "out", stream_weights=True)
    assert not (tmp_path / "out").exists()


def test_streaming_is_refused_where_it_cannot_apply(sharded, tmp_path) -> None:
    with pytest.raises(SpecError, match="torch.nn.Module was passed"):
        export(tiny_model("llama", "text-generation"), tmp_path / "a", stream_weights=True)
    with pytest.raises(SpecError, match="torchscript backend only"):
        export(sharded, tmp_path / "b", stream_weights=True, backend="dynamo")
    with pytest.raises(SpecError, match="bf16"):
        export(sharded, tmp_path / "c", stream_weights=True, dtypes=DTypes(float_dtype=FloatDtype.BF16))
    with pytest.raises(ModelLoadError, match="safetensors checkpoint"):
        checkpoint_bytes(os.fspath(tmp_path))


def test_streams_by_itself_when_the_weights_would_not_fit(sharded, tmp_path, monkeypatch) -> None:
    size = checkpoint_bytes(sharded)
    assert size == 4 * sum(p.numel() for p in tiny_model("llama", "text-generation").parameters())
    import onnxspec.judge.reference as reference

    monkeypatch.setattr(reference, "available_memory", lambda: int(size / core.STREAM_HEADROOM) - 1)
    report = export(sharded, tmp_path / "auto", validation_shapes=())
    assert "GiB of memory is available" in report.source["weights"]
    monkeypatch.setattr(reference, "available_memory", lambda: int(size / core.STREAM_HEADROOM) + 1)
    report = export(sharded, tmp_path / "loaded", validation_shapes=())
    assert "weights" not in report.source


def test_cli_stream_weights(sharded, tmp_path, capsys) -> None:
    from onnxspec.cli.commands import EXIT_OK, main

    code = main(["export", "--model", sharded, "--stream-weights", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "Weights streamed from the safetensors shards (asked for): the model was never loaded" in " ".join(captured.out.split())
    code = main(["export", "--model", sharded, "--stream-weights", "--dtype", "bf16", str(tmp_path / "bf16")])
    captured = capsys.readouterr()
    assert code != EXIT_OK and "cannot stream the weights" in captured.err


def test_streaming_chosen_by_itself_names_the_way_out_when_it_cannot_read_the_weights(sharded, tmp_path, monkeypatch) -> None:
    import onnxspec.judge.reference as reference

    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["lm_head.weight"]
    index_path.write_text(json.dumps(index))
    monkeypatch.setattr(reference, "available_memory", lambda: 1000)
    with pytest.raises(OnnxSpecError, match=r"lm_head\.weight.*streamed because the fp32 weights take.*--no-stream-weights"):
        export(os.fspath(broken), tmp_path / "out", validation_shapes=())
