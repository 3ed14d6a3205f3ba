"""The onnxruntime session validation opens: no prepacked copy of the weights, no spinning threads, nothing kept between runs."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxspec.pipeline.core import _session


def test_the_validation_session_neither_prepacks_nor_spins(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    options = _session(str(path)).get_session_options()
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_second_run_at_the_same_shapes_takes_no_more_memory(tmp_path: Path) -> None:
    # onnxruntime's memory pattern would allocate, on the second run at the same input shapes,
    # one block for all the run's intermediates (here two 64 MiB tensors) beside the arena's
    import numpy as np
    import psutil

    nodes = [helper.make_node("Mul", ["x", "two"], ["a"]), helper.make_node("Add", ["a", "two"], ["b"]),
             helper.make_node("Mul", ["b", "x"], ["c"]), helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9), path)
    session = _session(str(path))
    assert not session.get_session_options().enable_mem_pattern
    x = np.ones(16 << 20, np.float32)
    session.run(None, {"x": x})
    after_first = psutil.Process().memory_info().rss
    session.run(None, {"x": x})
    grown = psutil.Process().memory_info().rss - after_first
    assert grown < 32 << 20, f"the second run at the same shapes took {grown / 2**20:.0f} MiB more"


def test_what_a_large_graphs_run_frees_leaves_the_process(tmp_path: Path) -> None:
    # onnxruntime's memory arena would keep the run's 64 MiB intermediates for later runs, resident
    # through whatever the process does next (PyTorch's judging, the next shape set); a graph with
    # 64 MiB of external data (RELEASE_FROM) or more runs without it, a small one keeps it
    import numpy as np
    import psutil

    from onnxspec.build.exporters import RELEASE_FROM

    count = RELEASE_FROM // 4
    nodes = [helper.make_node("Mul", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "w"], ["b"]),
             helper.make_node("ReduceSum", ["b"], ["y"], keepdims=0)]
    weight = numpy_helper.from_array(np.full(count, 2.0, np.float32), "w")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], initializer=[weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9), path,
              save_as_external_data=True, location="m.onnx.data")
    session = _session(str(path))
    assert not session.get_session_options().enable_cpu_mem_arena
    x = np.ones(count, np.float32)
    before = psutil.Process().memory_info().rss
    session.run(None, {"x": x})
    kept = psutil.Process().memory_info().rss - before
    assert kept < 32 << 20, f"the run's freed intermediates kept {kept / 2**20:.0f} MiB resident"

    small = tmp_path / "small.onnx"
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    ), opset_imports=[helper.make_opsetid("", 17)], ir_version=9), small)
    assert _session(str(small)).get_session_options().enable_cpu_mem_arena
