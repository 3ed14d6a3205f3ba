"""The low-memory session that validates an fp16 graph whose weights' fp32 copies would not fit.

onnxruntime's CPU provider has no fp16 MatMul; its default session makes an fp32 copy of every
fp16 weight when it opens. Where those copies would not fit, validation runs the graph unoptimized,
without the memory arena and in priority order, so each copy is made right before its MatMul and
freed after it. Here: the export chooses that session and says so in its report; both sessions
compute the same outputs on a tiny fp16 llama; on a graph of large fp16 weights the low-memory
session's measured peak stays far below the default's; and the weights a merged decoder's branches
read are counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxspec.judge.reference as reference
from onnxspec.pieces.shapes import DTypes, FloatDtype
from onnxspec.pipeline.core import LOW_MEMORY_RUNTIME, _fp16_upcast_room, _session, export
from tests.tiny import tiny_model

FP16 = DTypes(float_dtype=FloatDtype.FP16)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("sharded") / "llama"
    tiny_model("llama", "text-generation", seed=5).save_pretrained(folder, max_shard_size="20KB")
    return os.fspath(folder)


def _feed(session: onnxruntime.InferenceSession) -> dict[str, np.ndarray]:
    """Inputs of a decoder with a cache: batch 2, 4 new tokens after 3 cached."""
    rng = np.random.default_rng(0)
    sizes = {"batch_size": 2, "sequence_length": 4, "past_sequence_length": 3, "past_sequence_length + sequence_length": 7}
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes[d] for d in i.shape]
        if i.name == "input_ids":
            feed[i.name] = rng.integers(3, 100, shape).astype(np.int64)
        elif i.name == "position_ids":
            feed[i.name] = np.broadcast_to(np.arange(3, 7), shape).astype(np.int64)
        elif i.type == "tensor(int64)":
            feed[i.name] = np.ones(shape, np.int64)
        else:
            feed[i.name] = (rng.standard_normal(shape) * 0.5).astype(np.float16)
    return feed


def test_fp16_export_whose_copies_do_not_fit_is_validated_by_the_low_memory_session(sharded, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reference, "available_memory", lambda: 1000)  # the MatMul weights' fp32 copies take ~100 KB
    report = export(sharded, tmp_path / "low", stream_weights=True, dtypes=FP16)
    (graph,) = report.graphs
    assert graph.runtime == LOW_MEMORY_RUNTIME
    assert graph.checks and all(c.passed for c in graph.checks) and report.passed
    monkeypatch.undo()
    path = os.fspath(tmp_path / "low" / "model.onnx")

    low, default = _session(path, low_memory=True), _session(path)
    options = low.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert not options.enable_cpu_mem_arena and options.execution_order == onnxruntime.ExecutionOrder.PRIORITY_BASED
    assert default.get_session_options().graph_optimization_level != onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    feed = _feed(default)
    names = [o.name for o in default.get_outputs()]
    ours, theirs = low.run(names, feed), default.run(names, feed)
    for name, a, b in zip(names, ours, theirs, strict=True):
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
        a, b = a.astype(np.float32), b.astype(np.float32)
        scale = float(np.abs(b).max())
        assert scale > 1e-3, name  # a real computation, not zeros
        # fp16 rounding: fused and unfused kernels round intermediate results differently, a few
        # units in the last place of the output's magnitude (2^-10 relative) at most
        np.testing.assert_allclose(a, b, rtol=0, atol=8 * 2**-10 * scale, err_msg=name)


def test_default_export_keeps_the_default_session(sharded, tmp_path) -> None:
    report = export(sharded, tmp_path / "default", stream_weights=True, dtypes=FP16)
    assert [g.runtime for g in report.graphs] == ["onnxruntime"] and report.passed


def _kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _peak_mib(path: str, low_memory: bool, n: int) -> float:
    """The process's peak resident memory while ``path`` is opened and run once, above what it held before."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from the current resident size
    before = _kib("VmRSS")
    session = _session(path, low_memory=low_memory)
    (y,) = session.run(None, {"x": np.ones((2, n), np.float16)})
    assert np.isfinite(y).all() and np.abs(y).max() > 0
    del session
    return (_kib("VmHWM") - before) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_low_memory_session_holds_about_one_fp32_copy_at_a_time(tmp_path: Path) -> None:
    n, count = 2048, 16  # 16 fp16 weights of 8 MiB: 128 MiB on disk, 256 MiB as fp32 copies
    weight = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) * 0.02).astype(np.float16)
    nodes, inits, x = [], [], "x"
    for i in range(count):
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        x = f"y{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", n])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT16, ["b", n])], inits,
    )
    path = os.fspath(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path,
              save_as_external_data=True, location="m.onnx.data")
    del graph, inits
    copies = 4 * n * n * count / 2**20
    low = _peak_mib(path, True, n)
    default = _peak_mib(path, False, n)
    # the default session holds every fp32 copy (256 MiB); the low-memory one about one 16 MiB copy
    # at a time. The mapped fp16 weights (128 MiB) count little in either: the validation session
    # gives their pages back while it runs (onnxspec.build.pages.giving_back)
    assert default > 0.9 * copies, (low, default)
    assert low < default - copies / 2, (low, default)


def test_weights_a_merged_decoders_branches_read_are_counted(tmp_path: Path, monkeypatch) -> None:
    """A merged decoder's MatMuls are in its If node's branches; the weights are the outer graph's."""
    w = numpy_helper.from_array(np.ones((64, 64), np.float16), "w")

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("MatMul", ["x", "w"], [name + "_y"])], name, [],
                                 [helper.make_tensor_value_info(name + "_y", TensorProto.FLOAT16, ["b", 64])])

    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else"))], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["b", 64])], [w],
    )
    path = os.fspath(tmp_path / "merged.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    monkeypatch.setattr(reference, "available_memory", lambda: 4 * 64 * 64)  # the copy needs 16 KiB: more than 3/4 of this
    assert "fp32 copy of every fp16 MatMul weight" in _fp16_upcast_room(path)
    monkeypatch.setattr(reference, "available_memory", lambda: 4 * 4 * 64 * 64)
    assert _fp16_upcast_room(path) == ""
    low, default = _session(path, low_memory=True), _session(path)
    feed = {"c": np.array(True), "x": np.full((2, 64), 0.5, np.float16)}
    np.testing.assert_array_equal(low.run(None, feed)[0], default.run(None, feed)[0])
    assert float(low.run(None, feed)[0][0, 0]) == 32.0
