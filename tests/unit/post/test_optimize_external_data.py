"""A graph level written out from a graph whose weights are external data (every export over 8 MiB
of weights) gets its own data file beside it, so the output folder runs without the source's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from onnxspec.post.optimize import optimize_file


def test_a_graph_level_of_a_graph_with_external_data_writes_its_own_data_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(256, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Identity", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], [numpy_helper.from_array(w, "w")],
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "src" / "model.onnx",
              save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    optimize_file(tmp_path / "src" / "model.onnx", tmp_path / "dst" / "model.onnx", level="basic")
    shutil.rmtree(tmp_path / "src")  # the output must not need the source's data file
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["model.onnx", "model.onnx.data"]
    x = rng.normal(size=(3, 256)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "dst" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)
