"""The TorchScript trace's memory: its graph-wide shape inference is run without the weights'
values (they made a copy of every weight), and the graph written stays the same."""

from __future__ import annotations

import os

import onnx
import pytest
import torch

from onnxspec.build import exporters
from onnxspec.pipeline.core import export
from tests.tiny import tiny_model


def _written(model: torch.nn.Module, task: str, out: str) -> tuple[bytes, bytes]:
    export(model, out, task=task, overwrite=True, validation_shapes=(), backend="torchscript")
    proto = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    data = os.path.join(out, "model.onnx.data")
    return proto.graph.SerializeToString(deterministic=True), open(data, "rb").read() if os.path.exists(data) else b""


@pytest.mark.parametrize(("model_type", "task"), [("llama", "text-generation-with-past"), ("gemma3_text", "text-generation-with-past")])
def test_shape_inference_without_the_weights_writes_the_same_graph(tmp_path, monkeypatch, model_type: str, task: str) -> None:
    model = tiny_model(model_type, task.removesuffix("-with-past"))
    seen: list[tuple[int, int]] = []
    infer = torch._C._jit_pass_onnx_graph_shape_type_inference

    def spy(graph, params, *rest):  # type: ignore[no-untyped-def]
        seen.append((len(params), sum(isinstance(v, torch.Tensor) and v.is_floating_point() for v in params.values())))
        return infer(graph, params, *rest)

    monkeypatch.setattr(torch._C, "_jit_pass_onnx_graph_shape_type_inference", spy)
    monkeypatch.setattr(exporters, "SHAPE_INFERENCE_KEEPS", 1 << 62)  # every weight given, as TorchScript does
    given = _written(model, task, os.fspath(tmp_path / "given"))
    assert seen and max(floats for _, floats in seen) > 0
    seen.clear()
    monkeypatch.setattr(exporters, "SHAPE_INFERENCE_KEEPS", 0)  # no floating-point weight given
    lean = _written(model, task, os.fspath(tmp_path / "lean"))
    assert seen and max(floats for _, floats in seen) == 0
    assert lean[0] == given[0]
    assert lean[1] == given[1]


def test_a_transposed_weight_is_written_a_block_of_rows_at_a_time(monkeypatch) -> None:
    monkeypatch.setattr(exporters, "WRITE_BLOCK_BYTES", 4 * 37 * 5)  # five rows of the transposed weight
    weight = torch.randn(37, 23)
    blocks = list(exporters.row_blocks(weight.T))
    assert len(blocks) == 5 and all(b.is_contiguous() and b.numel() <= 37 * 5 for b in blocks)
    assert torch.equal(torch.cat(blocks), weight.T.contiguous())
    (whole,) = exporters.row_blocks(weight)  # contiguous: itself, no copy
    assert whole.data_ptr() == weight.data_ptr()


def test_deduplication_shown_only_weights_sampled_alike_keeps_the_same_initializers(tmp_path, monkeypatch) -> None:
    model = tiny_model("llama", "text-generation")  # random weights, and norm weights all ones: deduplicated
    shown: list[int] = []
    deduplicate = torch._C._jit_pass_onnx_deduplicate_initializers

    def spy(graph, params, *rest):  # type: ignore[no-untyped-def]
        shown.append(len(params))
        return deduplicate(graph, params, *rest)

    monkeypatch.setattr(torch._C, "_jit_pass_onnx_deduplicate_initializers", spy)
    monkeypatch.setattr(exporters, "DEDUPLICATION_SAMPLES_FROM", 1 << 62)  # every weight compared, as TorchScript does
    every = _written(model, "text-generation-with-past", os.fspath(tmp_path / "every"))
    monkeypatch.setattr(exporters, "DEDUPLICATION_SAMPLES_FROM", 0)  # only weights whose samples match
    sampled = _written(model, "text-generation-with-past", os.fspath(tmp_path / "sampled"))
    assert len(shown) == 2 and shown[1] < shown[0] // 2  # most weights were never compared
    assert sampled == every
    names = [t.name for t in onnx.load(os.fspath(tmp_path / "sampled" / "model.onnx"), load_external_data=False).graph.initializer]
    assert len([n for n in names if "norm" in n]) == 1  # the five norm weights, all ones, are still one initializer


def test_a_small_model_keeps_its_pages_and_a_large_one_gives_them_back(tmp_path, monkeypatch) -> None:
    """Giving a checkpoint's pages back reads /proc/self/smaps first; a model under RELEASE_FROM
    bytes skips it (the reads cost more than its pages), one over it still does, and both write
    the same graph."""
    from onnxspec.build import pages
    from tests.tiny import tiny_folder

    folder = tiny_folder("llama", "text-generation", tmp_path / "llama")  # weights memory-mapped from safetensors
    reads: list[int] = []
    read = pages.file_mappings

    def counted() -> pages.FileMappings:
        reads.append(1)
        return read()

    monkeypatch.setattr(pages, "file_mappings", counted)
    monkeypatch.setattr(exporters, "file_mappings", counted)
    small = export(folder, tmp_path / "small", task="text-generation")
    assert small.passed and reads == []
    monkeypatch.setattr(exporters, "RELEASE_FROM", 0)  # every model counts as large
    large = export(folder, tmp_path / "large", task="text-generation")
    assert large.passed and len(reads) >= 3  # the trace's forward, the written weights, the validation's forward
    graphs = [onnx.load(os.fspath(tmp_path / name / "model.onnx"), load_external_data=False).graph for name in ("small", "large")]
    assert graphs[0].SerializeToString(deterministic=True) == graphs[1].SerializeToString(deterministic=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_transposed_weight_is_copied_in_tiles_to_the_same_values(monkeypatch, dtype: torch.dtype) -> None:
    monkeypatch.setattr(exporters, "WRITE_BLOCK_BYTES", 4 * 41 * 7)  # blocks of rows, each several tiles
    monkeypatch.setattr(exporters, "TILE", 5)  # tiles that do not divide the block: ragged edges
    copied: list[torch.Tensor] = []
    tiled = exporters._tiled_copy
    monkeypatch.setattr(exporters, "_tiled_copy", lambda part: copied.append(part) or tiled(part))
    weight = torch.randn(41, 23).to(dtype)
    blocks = list(exporters.row_blocks(weight.T))
    assert copied and len(blocks) == len(copied) > 1 and all(b.is_contiguous() and b.dtype == dtype for b in blocks)
    assert torch.equal(torch.cat(blocks), weight.T.contiguous())
    strided = torch.randn(6, 8, 10)[:, :, ::2]  # not 2-D: copied a block of rows at a time, as before
    copied.clear()
    assert torch.equal(torch.cat(list(exporters.row_blocks(strided))), strided.contiguous()) and not copied
