"""The validation session gives back the pages of its graph's memory-mapped data file while it
runs and after, with the same outputs bit for bit; a small graph's session is left as it is. The
resident set is measured (``RssFile``) while onnxruntime runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxspec.pipeline.core as core
from onnxspec.build import pages

pytestmark = pytest.mark.skipif(pages._MADVISE is None or not pages.file_mappings().ranges, reason="needs /proc and madvise")

WIDTH = 2048  # each weight [2048, 2048] float32: 16 MiB
LAYERS = 8  # 128 MiB of external data, over RELEASE_FROM
MiB = 1 << 20


def _rss_file() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) * 1024


def _chain(folder: Path, layers: int) -> str:
    """A graph of ``layers`` MatMuls in a row, each weight its own random [WIDTH, WIDTH] tensor
    in ``model.onnx.data``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    initializers, nodes, offset = [], [], 0
    with open(folder / "model.onnx.data", "wb") as data:
        for k in range(layers):
            weight = (rng.random((WIDTH, WIDTH), dtype=np.float32) - 0.5) * (3.5 / WIDTH**0.5)
            tensor = TensorProto(name=f"w{k}", data_type=TensorProto.FLOAT, dims=weight.shape, data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "model.onnx.data"), ("offset", offset), ("length", weight.nbytes)):
                tensor.external_data.add(key=key, value=str(value))
            data.write(weight.tobytes())
            offset += weight.nbytes
            initializers.append(tensor)
            nodes.append(helper.make_node("MatMul", [f"h{k}" if k else "x", f"w{k}"], [f"h{k + 1}" if k + 1 < layers else "y"]))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])], initializers,
    )
    path = str(folder / "model.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def _run_sampled(session, feed) -> tuple[np.ndarray, int, int]:
    """``session``'s output, and the highest ``RssFile`` sampled every 2 ms while it ran and the
    one after, both over the one before."""
    before, peak, stop = _rss_file(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_file())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        (y,) = session.run(["y"], feed)
    finally:
        stop.set()
        sampler.join()
    return y, max(peak[0], _rss_file()) - before, _rss_file() - before


def _perms(path: str) -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split()[1] for line in f if line.rstrip().endswith(path)}


def test_a_large_data_file_is_given_back_while_the_graph_runs_with_the_same_outputs(tmp_path, monkeypatch) -> None:
    path = _chain(tmp_path / "large", LAYERS)
    data = LAYERS * WIDTH * WIDTH * 4
    feed = {"x": np.random.default_rng(1).standard_normal((192, WIDTH)).astype(np.float32)}

    with monkeypatch.context() as m:
        m.setattr(core, "RELEASE_FROM", 1 << 62)  # the same session, nothing given back
        kept = core._session(path)
        assert not isinstance(kept, pages.GivingBack)
        want, kept_peak, kept_after = _run_sampled(kept, feed)
        del kept
    assert kept_after > 0.9 * data  # every weight read, and resident until the session closes

    session = core._session(path)
    assert isinstance(session, pages.GivingBack)
    assert sum(end - start for start, end in session.ranges) >= data  # onnxruntime's mappings of every weight
    assert _perms(path + ".data") == {"r--p"}  # made read-only: no page can be copied on write
    for _ in range(2):  # the second run reads again the pages the first gave back
        got, peak, after = _run_sampled(session, feed)
        np.testing.assert_array_equal(got, want)
        assert peak < 0.5 * data, f"{peak / MiB:.0f} MiB of {data / MiB:.0f} resident at once"
        assert after < 0.1 * data
    assert [i.name for i in session.get_inputs()] == ["x"]  # the session's own attributes


def test_a_small_data_file_keeps_the_plain_session(tmp_path) -> None:
    path = _chain(tmp_path / "small", 1)  # 16 MiB, under RELEASE_FROM
    session = core._session(path)
    assert not isinstance(session, pages.GivingBack)
    assert _perms(path + ".data") == {"rw-p"}  # onnxruntime's own mapping, untouched
    before = _rss_file()
    session.run(["y"], {"x": np.ones((1, WIDTH), np.float32)})
    assert _rss_file() - before > 0.9 * WIDTH * WIDTH * 4  # the weight read stays resident
    assert core._data_files(path) == []
