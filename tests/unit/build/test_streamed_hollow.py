"""Hollow tensors (:func:`onnxspec.build.streamed.hollow_tensors`): dense, all zeros, no resident
memory however much of them is read, read-only (a write faults), and zero-strided views where no
anonymous mapping can be made."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys

import pytest
import torch

from onnxspec.build.streamed import hollow_tensors

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")


def _resident() -> int:
    """Resident bytes of this process (file-backed and anonymous)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _permissions(address: int) -> str:
    """The permissions of the mapping holding ``address``, from ``/proc/self/maps``."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return perms
    raise AssertionError(f"no mapping holds {address:#x}")


def test_hollow_tensors_are_dense_zeros_that_take_no_memory_when_read() -> None:
    specs = [((4096, 8192), torch.float32)] * 4 + [((4096, 4096), torch.float16)] * 4 + [((0, 7), torch.float32), ((3,), torch.int64)]
    size = sum(torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size() for shape, dtype in specs)
    assert size >= 2**29  # 640 MiB
    before = _resident()
    tensors = hollow_tensors(specs)
    assert [(tuple(t.shape), t.dtype) for t in tensors] == specs
    assert all(t.is_contiguous() and 0 not in t.stride() for t in tensors if t.numel() > 1)  # dense: no zero strides
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == len(tensors)  # each its own address
    x = torch.randn(16, 4096)
    for t in tensors:  # every byte read: reductions, and a Linear as the trace runs it
        assert not t.any()
        if t.dim() == 2 and t.shape[1] == 4096:
            assert not torch.nn.functional.linear(x.to(t.dtype), t).any()
    grown = _resident() - before
    assert grown < 48 * 2**20, f"reading {size / 2**20:.0f} MiB of hollow tensors took {grown / 2**20:.1f} MiB resident"


def test_hollow_tensors_are_read_only() -> None:
    (tensor,) = hollow_tensors([((1024,), torch.float32)])
    assert _permissions(tensor.untyped_storage().data_ptr()).startswith("r-")
    code = (
        "import torch; from onnxspec.build.streamed import hollow_tensors; "
        "(t,) = hollow_tensors([((1024,), torch.float32)]); t.add_(1); print('written')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert run.returncode == -signal.SIGSEGV and "written" not in run.stdout, (run.returncode, run.stderr[-2000:])


def test_without_anonymous_mappings_they_are_zero_strided_views(monkeypatch) -> None:
    monkeypatch.delattr(mmap, "MAP_ANONYMOUS")
    tensors = hollow_tensors([((64, 32), torch.float16), ((5,), torch.float32)])
    assert [tuple(t.shape) for t in tensors] == [(64, 32), (5,)]
    assert all(set(t.stride()) == {0} and t.untyped_storage().nbytes() <= 4 for t in tensors)
    assert tensors[0].untyped_storage().data_ptr() != tensors[1].untyped_storage().data_ptr()
