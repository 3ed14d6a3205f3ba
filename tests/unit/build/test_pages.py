"""Pages of weights memory-mapped from a file are given back once used, and only those: the
resident set is measured, and the values read after are the file's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from onnxspec.build import pages

pytestmark = pytest.mark.skipif(pages._MADVISE is None or not pages.file_mappings().ranges, reason="needs /proc and madvise")

N = 1 << 22  # 16 MiB of float32


def _rss_file() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) * 1024


def _mapped(tmp_path, name: str = "w.bin") -> tuple[torch.Tensor, np.ndarray]:
    values = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    values.tofile(tmp_path / name)
    mapped = np.memmap(tmp_path / name, dtype=np.float32, mode="c", shape=(N,))  # private, copy-on-write, as a checkpoint's
    return torch.from_numpy(mapped), values


def test_a_mapped_tensor_leaves_the_resident_set_and_reads_the_same(tmp_path) -> None:
    tensor, values = _mapped(tmp_path)
    total = float(tensor.sum())
    before = _rss_file()
    assert pages.release([tensor]) >= N * 4
    assert before - _rss_file() > N * 4 * 0.9
    assert float(tensor.sum()) == total  # faulted in again from the file
    np.testing.assert_array_equal(tensor.numpy(), values)


def test_a_mapping_written_to_and_anonymous_memory_are_left_alone(tmp_path) -> None:
    tensor, values = _mapped(tmp_path)
    tensor[7] = 123.0  # one page copied on write: the mapping is no longer the file's bytes
    assert pages.release([tensor]) == 0
    assert float(tensor[7]) == 123.0
    np.testing.assert_array_equal(tensor.numpy()[8:], values[8:])
    anonymous = torch.randn(N)
    kept = anonymous.clone()
    assert pages.release([anonymous]) == 0
    assert torch.equal(anonymous, kept)


def test_each_module_gives_its_pages_back_after_its_forward(tmp_path) -> None:
    weight, values = _mapped(tmp_path)
    layer = torch.nn.Linear(1024, N // 1024, bias=False)
    layer.weight = torch.nn.Parameter(weight.view(N // 1024, 1024), requires_grad=False)
    model = torch.nn.Sequential(layer, torch.nn.ReLU())
    x = torch.randn(2, 1024)
    want = torch.relu(x @ torch.from_numpy(values).view(N // 1024, 1024).T)
    with pages.released_after_forward(model):
        before = _rss_file()
        got = model(x)
        after = _rss_file()
    torch.testing.assert_close(got, want)
    assert after <= before + N * 4 * 0.1  # the forward read all 16 MiB and gave them back
    assert not layer._forward_hooks  # the hooks are gone with the block


def test_a_sessions_own_mappings_are_given_back_as_it_runs_but_not_those_written_to(tmp_path) -> None:
    values = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    path = str(tmp_path / "model.onnx.data")
    values.tofile(path)
    earlier = np.memmap(path, dtype=np.float32, mode="c", shape=(N,))  # mapped before the session: not its own
    float(earlier.sum())
    held: list[np.memmap] = []

    def opened() -> SimpleNamespace:  # maps the file twice, private and writable, as onnxruntime does
        clean, written = (np.memmap(path, dtype=np.float32, mode="c", shape=(N,)) for _ in range(2))
        written[7] = 123.0  # one page copied on write
        held.extend((clean, written))
        return SimpleNamespace(run=lambda: (float(clean.astype(np.float64).sum()), float(written.astype(np.float64).sum())), name="fake")

    session = pages.giving_back(opened, [path])
    clean, written = held
    start = clean.ctypes.data
    assert isinstance(session, pages.GivingBack)
    assert session.ranges == ((start, start + N * 4),)
    perms = {int(line.split("-")[0], 16): line.split()[1] for line in open("/proc/self/maps")}
    assert (perms[start], perms[written.ctypes.data], perms[earlier.ctypes.data]) == ("r--p", "rw-p", "rw-p")
    before = _rss_file()
    got = session.run()
    grown = _rss_file() - before
    assert got == (values.astype(np.float64).sum(), values.astype(np.float64).sum() - values[7] + 123.0)
    assert float(written[7]) == 123.0
    assert 0.9 * N * 4 < grown < 1.1 * N * 4  # the written mapping's 16 MiB stay resident, the clean one's went back
    assert session.name == "fake"
    earlier_kept = _rss_file()
    float(earlier.sum())
    assert _rss_file() - earlier_kept < 0.1 * N * 4  # the earlier mapping's pages were never given back
