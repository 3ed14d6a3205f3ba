"""A large linear weight memory-mapped from a checkpoint (a head of a large vocabulary) is read a
slice of rows at a time by the trace and by PyTorch's runs at the export dtype, its pages given
back after each slice: the product is bit for bit the whole call's, the graph written the same."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

from onnxspec.build import exporters, pages
from onnxspec.pieces.shapes import Shapes, validation_shapes
from onnxspec.pipeline.core import export
from tests.tiny import tiny_folder

_MAPPED = pages._MADVISE is not None and bool(pages.file_mappings().ranges)


def _rss_file() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) * 1024


def _mapped_weight(path: str, rows: int, width: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    values = (np.random.default_rng(seed).standard_normal((rows, width)) * 0.05).astype(np.float32)
    values.tofile(path)
    return torch.from_numpy(np.memmap(path, dtype=np.float32, mode="c", shape=(rows, width))), values


@pytest.mark.skipif(not _MAPPED, reason="no /proc or madvise: nothing is released")
def test_a_mapped_head_in_slices_is_the_whole_call_bit_for_bit_and_never_resident_whole(tmp_path, monkeypatch) -> None:
    rows, width = 20011, 512  # 39 MiB, a short last slice
    weight, values = _mapped_weight(os.fspath(tmp_path / "head.bin"), rows, width, 0)
    monkeypatch.setattr(pages, "HEAD_SLICE_BYTES", 2048 * width * 4)  # 10 slices of 2048 rows (4 MiB each)
    linear = torch.nn.functional.linear
    resident: list[int] = []

    def measured(*args):  # type: ignore[no-untyped-def]
        resident.append(_rss_file() - start)
        return linear(*args)

    torch.manual_seed(0)
    trace = Shapes()
    for shapes in (trace, *validation_shapes(trace)):  # the shapes the trace and validation feed a head
        x = torch.randn(shapes.batch_size, shapes.sequence_length, width)
        whole = linear(x, torch.from_numpy(values))
        pages.release([weight])
        start = _rss_file()
        monkeypatch.setattr(torch.nn.functional, "linear", measured)
        got = pages.linear_in_slices(x, weight, None, pages.file_mappings())
        monkeypatch.setattr(torch.nn.functional, "linear", linear)
        assert torch.equal(got, whole), (shapes.batch_size, shapes.sequence_length, (got - whole).abs().max().item())
        assert len(resident) == 10 and max(resident) < values.nbytes / 4, resident  # a slice or two, not the head
        resident.clear()
    bias = torch.randn(rows)
    assert torch.equal(pages.linear_in_slices(x, weight, bias, pages.file_mappings()), linear(x, torch.from_numpy(values), bias))


def _exported(folder: str, out: str) -> tuple[bytes, bytes, list[tuple]]:
    report = export(folder, out, task="text-generation-with-past", overwrite=True, backend="torchscript")
    assert report.passed
    proto = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    path = os.path.join(out, "model.onnx.data")  # a tiny model's weights may all be in the proto
    data = open(path, "rb").read() if os.path.exists(path) else b""
    checks = json.load(open(os.path.join(out, "onnxspec_report.json")))["graphs"][0]["checks"]
    return proto.graph.SerializeToString(deterministic=True), data, [(c["shape_set"], c["output"], c["max_abs"], c.get("error"), c.get("noise")) for c in checks]


@pytest.mark.skipif(not _MAPPED, reason="no /proc or madvise: nothing is released")
def test_an_export_reading_its_mapped_head_in_slices_writes_and_validates_the_same(tmp_path, monkeypatch) -> None:
    """A tiny Gemma 3 (tied head) loaded from its folder, every linear weight counted as a head:
    the trace and the export-dtype runs read them in slices, and the graph, its data and every
    check's figures are those of the export reading them whole."""
    folder = tiny_folder("gemma3_text", "text-generation", tmp_path / "gemma3")
    monkeypatch.setattr(exporters, "RELEASE_FROM", 0)  # pages given back, as for a large model
    whole = _exported(folder, os.fspath(tmp_path / "whole"))
    sliced: list[tuple[str, bool]] = []
    linear_in_slices = pages.linear_in_slices

    def spy(where: str):  # type: ignore[no-untyped-def]
        def sliced_here(x, weight, bias, mappings):  # type: ignore[no-untyped-def]
            sliced.append((where, torch._C._get_tracing_state() is None))
            return linear_in_slices(x, weight, bias, mappings)

        return sliced_here

    from onnxspec.judge import reference

    monkeypatch.setattr(pages, "HEAD_FROM", 0)
    monkeypatch.setattr(pages, "HEAD_SLICE_BYTES", 64 * 4)  # slices of 64 rows
    monkeypatch.setattr(exporters, "linear_in_slices", spy("trace"))
    monkeypatch.setattr(reference, "linear_in_slices", spy("validation"))
    in_slices = _exported(folder, os.fspath(tmp_path / "sliced"))
    assert {where for where, _ in sliced} == {"trace", "validation"}
    assert all(paused for _, paused in sliced)  # the trace's product computed with the tracer paused
    assert in_slices[0] == whole[0]
    assert in_slices[1] == whole[1]
    assert in_slices[2] == whole[2]


@pytest.mark.skipif(not _MAPPED, reason="no /proc or madvise: nothing is released")
def test_a_large_transposed_mapped_weight_is_written_by_blocks_of_its_source_rows(tmp_path, monkeypatch) -> None:
    """An untied head's weight after constant folding (a transposed view of the mapped ``[V, H]``
    table) is written in C order, the same bytes, a block of the table's rows at a time: the pages
    resident while it is written are a block's, not the table's."""
    rows, width = 8003, 1024  # the [V, H] table, 31 MiB; written as its [H, V] transpose
    table, values = _mapped_weight(os.fspath(tmp_path / "table.bin"), rows, width, 2)
    monkeypatch.setattr(exporters, "WRITE_BLOCK_BYTES", 512 * width * 4)  # blocks of 512 table rows (2 MiB)
    pwrite, calls, resident = os.pwrite, [], []

    def measured(fd, piece, at):  # type: ignore[no-untyped-def]
        calls.append(at)
        if len(calls) % width == 1:  # the first of a block's H rows: the block's table rows are read
            resident.append(_rss_file() - start)
        return pwrite(fd, piece, at)

    monkeypatch.setattr(os, "pwrite", measured)
    model = onnx.ModelProto(graph=onnx.GraphProto(input=[onnx.helper.make_tensor_value_info("head", onnx.TensorProto.FLOAT, [width, rows]),
                                                         onnx.helper.make_tensor_value_info("small", onnx.TensorProto.FLOAT, [300])]))
    pages.release([table])
    start = _rss_file()
    exporters._attach_weights(model, {"head": table.T, "small": torch.arange(300.0)}, os.fspath(tmp_path), "model.onnx.data")
    assert len(calls) == width * -(-rows // 512)  # each of the H rows, once per block of 512 table rows
    assert max(resident) < values.nbytes / 4, max(resident)
    head, small = model.graph.initializer
    with open(tmp_path / "model.onnx.data", "rb") as f:
        written = f.read()
    offset = int({e.key: e.value for e in head.external_data}["offset"])
    assert written[offset : offset + values.nbytes] == np.ascontiguousarray(values.T).tobytes()
    small_at = int({e.key: e.value for e in small.external_data}["offset"])
    assert written[small_at : small_at + 1200] == np.arange(300, dtype=np.float32).tobytes()  # written after it, in place
