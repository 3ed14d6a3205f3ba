"""A streamed float64 reference widens a large linear layer's weight a slice at a time, and reads
a weight's dtype without widening it: a tied head of a large vocabulary is never in float64 whole. Measured in a child process (its peak
resident memory, reset before the run), against converting the whole model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from onnxspec.judge.reference import SLICE_BYTES, WIDEN_BYTES, _sliced_linear

_CHILD = r"""
import json, sys
import torch
from onnxspec.judge.reference import in_float64, streamed_float64

def kib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024

class Tied(torch.nn.Module):
    def __init__(self, vocab, width):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.mid = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        scale = torch.tensor(0.5).to(self.embed.weight.dtype)  # the weight's dtype read outside its module, as Gemma3's embedding does
        return self.head(torch.tanh(self.mid(self.embed(ids) * scale)))

torch.manual_seed(0)
model = Tied(int(sys.argv[2]), 640).eval()
ids = torch.randint(0, model.embed.num_embeddings, (2, 8))
with torch.no_grad():
    open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
    before = kib("VmRSS")
    if sys.argv[1] == "streamed":
        with streamed_float64(model) as seen:
            out = model(ids)
    else:
        with in_float64(model):
            out = model(ids)
        seen = None
    extra = kib("VmHWM") - before
print(json.dumps({"extra": extra, "sum": out.sum().item(), "dtype": str(out.dtype), "out": out.flatten()[:4096].tolist(),
                  "outside": sorted(seen.outside) if seen else []}))
"""


def _child(how: str, vocab: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    got = subprocess.run([sys.executable, "-c", _CHILD, how, str(vocab)], capture_output=True, text=True, env=env, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    return json.loads(got.stdout.strip().splitlines()[-1])


def test_a_large_tied_head_is_never_widened_whole() -> None:
    vocab = 65536  # 65536 x 640: 160 MiB in float32, 320 MiB in float64, 20 slices
    weight_float64 = vocab * 640 * 8
    assert weight_float64 > 4 * SLICE_BYTES
    streamed, whole = _child("streamed", vocab), _child("whole", vocab)
    assert streamed["dtype"] == whole["dtype"] == "torch.float64"
    assert streamed["outside"] == ["embed.weight"]  # the head's call went through the slicing
    # the whole model in float64 holds the head's weight widened; the streamed run, a slice and the logits
    assert whole["extra"] > weight_float64 * 0.9
    assert streamed["extra"] < weight_float64 / 2
    assert torch.allclose(torch.tensor(streamed["out"], dtype=torch.float64), torch.tensor(whole["out"], dtype=torch.float64), rtol=1e-13, atol=1e-13)


def test_sliced_linear_is_the_linear_layer_in_float64() -> None:
    torch.manual_seed(1)
    width = 96
    rows = WIDEN_BYTES // (8 * width)
    weight, bias = torch.randn(2 * rows + 5, width), torch.randn(2 * rows + 5)  # three slices, the last one short
    x = torch.randn(3, width, dtype=torch.float64)
    got = _sliced_linear(x, weight, bias)
    want = torch.nn.functional.linear(x, weight.double(), bias.double())
    assert got.dtype is torch.float64 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(_sliced_linear(x, weight, None), want - bias.double(), rtol=1e-12, atol=1e-12)


def test_a_mapped_head_gives_its_pages_back_slice_by_slice(tmp_path, monkeypatch) -> None:
    """A head memory-mapped from a checkpoint is never resident whole while it is widened: the
    pages of the rows widened so far go back after each slice, and the product is the same."""
    import numpy as np

    from onnxspec.build import pages
    from onnxspec.judge import reference

    if pages._MADVISE is None or not pages.file_mappings().ranges:
        return  # no /proc or madvise: nothing is released, nothing to measure
    rows, width = 8192, 1024  # 32 MiB of float32
    values = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    values.tofile(tmp_path / "head.bin")
    weight = torch.from_numpy(np.memmap(tmp_path / "head.bin", dtype=np.float32, mode="c", shape=(rows, width)))
    x = torch.randn(3, width, dtype=torch.float64)
    reference._LINEAR(x, torch.zeros(512, width, dtype=torch.float64), None)  # the library's code pages read first
    pages.release([weight])

    def rss_file() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) * 1024

    start, seen = rss_file(), []
    linear = reference._LINEAR

    def measured(*args):
        seen.append(rss_file() - start)
        return linear(*args)

    monkeypatch.setattr(reference, "WIDEN_BYTES", 8 * width * 512)  # 16 slices of 512 rows (2 MiB of float32 each)
    monkeypatch.setattr(reference, "_LINEAR", measured)
    got = _sliced_linear(x, weight, None)
    assert len(seen) == 16
    assert max(seen) < values.nbytes / 4, seen  # a slice or two resident, not the 32 MiB head
    torch.testing.assert_close(got, x @ torch.from_numpy(values).double().T, rtol=1e-12, atol=1e-12)
