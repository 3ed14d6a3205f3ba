"""Moving a graph's weights into one external data file one tensor at a time: from the files an
exporter wrote (one per tensor, as TorchScript's exporter writes them past 2 GB), from the proto,
appended to a file already written (a dynamo export's: tests/integration/test_external_data.py)."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from onnxspec.build.exporters import (
    ALIGN_FROM,
    EXTERNAL_ALIGNMENT,
    embed_external_data,
    move_external_data,
    weight_bytes,
)


def _graph(tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    names = list(tensors)
    nodes = [helper.make_node("Add", [names[0], n], [f"s{i}"]) for i, n in enumerate(names[1:])]
    inits = [numpy_helper.from_array(a, n) for n, a in tensors.items()]
    outputs = [helper.make_tensor_value_info(f"s{i}", onnx.TensorProto.FLOAT, None) for i in range(len(names) - 1)]
    return helper.make_model(helper.make_graph(nodes, "g", [], outputs, inits))


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "big": rng.standard_normal(ALIGN_FROM // 4 + 3).astype(np.float32),
        "small": rng.standard_normal(300).astype(np.float32),  # 1200 bytes: external, not aligned
        "tiny": rng.standard_normal(5).astype(np.float32),  # 20 bytes: stays in the graph
        "big2": rng.standard_normal(ALIGN_FROM // 4 + 1).astype(np.float32),
    }


def _values(model: onnx.ModelProto, base: str) -> dict[str, np.ndarray]:
    loaded = onnx.ModelProto()
    loaded.CopyFrom(model)
    embed_external_data(loaded, base)
    return {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}


def test_weights_move_from_per_tensor_files_into_one_aligned_file(tmp_path) -> None:
    arrays = _tensors(np.random.default_rng(0))
    model = _graph(arrays)
    source, target = tmp_path / "scratch", tmp_path / "out"
    source.mkdir()
    target.mkdir()
    # the exporter's layout: the first two tensors in a file each, the others in the graph
    onnx.save_model(model, os.fspath(source / "x.onnx"))
    written = onnx.load(os.fspath(source / "x.onnx"))
    for tensor in written.graph.initializer[:2]:
        (source / tensor.name).write_bytes(tensor.raw_data)
        onnx.external_data_helper.set_external_data(tensor, tensor.name, offset=0, length=len(tensor.raw_data))
        tensor.ClearField("raw_data")
    assert weight_bytes(written) == sum(a.nbytes for a in arrays.values())

    move_external_data(written, os.fspath(source), os.fspath(target), "m.onnx.data")

    assert sorted(os.listdir(target)) == ["m.onnx.data"]
    kept = {t.name: t for t in written.graph.initializer}
    assert not uses_external_data(kept["tiny"]) and kept["tiny"].raw_data
    for name in ("big", "small", "big2"):
        assert uses_external_data(kept[name]) and not kept[name].HasField("raw_data")
        assert ExternalDataInfo(kept[name]).location == "m.onnx.data"
    assert ExternalDataInfo(kept["big"]).offset % EXTERNAL_ALIGNMENT == 0
    assert ExternalDataInfo(kept["big2"]).offset % EXTERNAL_ALIGNMENT == 0
    assert ExternalDataInfo(kept["small"]).offset % EXTERNAL_ALIGNMENT != 0  # right after big: no gap
    assert weight_bytes(written) == sum(a.nbytes for a in arrays.values())
    got = _values(written, os.fspath(target))
    for name, array in arrays.items():
        np.testing.assert_array_equal(got[name], array)


def test_tensors_already_in_the_file_stay_and_the_others_are_appended(tmp_path) -> None:
    arrays = _tensors(np.random.default_rng(1))
    model = _graph(arrays)
    move_external_data(model, os.fspath(tmp_path), os.fspath(tmp_path), "m.onnx.data")
    before = {t.name: ExternalDataInfo(t).offset for t in model.graph.initializer if uses_external_data(t)}
    size = os.path.getsize(tmp_path / "m.onnx.data")
    extra = np.arange(ALIGN_FROM // 4, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(extra, "extra"))

    move_external_data(model, os.fspath(tmp_path), os.fspath(tmp_path), "m.onnx.data")

    after = {t.name: ExternalDataInfo(t).offset for t in model.graph.initializer if uses_external_data(t)}
    assert {n: after[n] for n in before} == before
    assert after["extra"] >= size and after["extra"] % EXTERNAL_ALIGNMENT == 0
    got = _values(model, os.fspath(tmp_path))
    for name, array in {**arrays, "extra": extra}.items():
        np.testing.assert_array_equal(got[name], array)
