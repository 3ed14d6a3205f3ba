"""Float64 references: the PyTorch module run in double precision, to measure rounding noise.

:func:`in_float64` converts a module's floating parameters and buffers to float64 in place and
puts every one back to its own dtype on exit, even on error (float32 -> float64 -> float32 is
exact, so the module is left bit for bit as it was). Converting in place, rather than copying,
keeps one copy of the weights: the float64 copy needs twice the float32 bytes while it lives.
:func:`float64_room` says whether that fits in the memory available now.

The float64 run must compute the *same function* as the export dtype's run, only with exact
arithmetic. Models take constants from ``torch.finfo(dtype)``: the fill value of attention
masks (its ``min``), clamps and epsilons. Left to float64 they change meaning: a float64 mask
fill of -1.8e308, cast to float32 by a model that runs its softmax in float32, becomes -inf, and
a fully masked (left-padded) query row turns into NaN that spreads through the next layers,
where the float32 run stays finite. :func:`finfo_of` makes ``torch.finfo(torch.float64)``
answer with the export dtype's limits while the reference runs, so those constants are the ones
the exported graph holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from onnxspec.pieces.patches import Patch

__all__ = ["available_memory", "finfo_of", "float64_bytes", "float64_room", "in_float64", "to_float64"]


def _floating(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Each floating parameter and buffer once (tied weights are one tensor)."""
    seen: set[int] = set()
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor


def float64_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's floating tensors take in float64."""
    return sum(t.numel() * 8 for t in _floating(module))


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def float64_room(module: torch.nn.Module, *, headroom: float = 0.75) -> str:
    """Why a float64 copy of ``module`` does not fit now, or ``""`` when it does.

    The conversion frees each float32 tensor as its float64 copy is made, so the extra memory is
    the float64 size minus the current size; it must stay under ``headroom`` of what is free.
    """
    need = float64_bytes(module) - sum(t.numel() * t.element_size() for t in _floating(module))
    free = available_memory()
    if free is None or need <= headroom * free:
        return ""
    return f"a float64 copy of the weights needs {need / 2**30:.1f} GiB more, {free / 2**30:.1f} GiB is available"


@contextlib.contextmanager
def in_float64(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with every floating parameter and buffer in float64; restored on exit."""
    saved: list[tuple[torch.Tensor, torch.dtype]] = []
    try:
        for tensor in _floating(module):
            saved.append((tensor, tensor.dtype))
            tensor.data = tensor.data.to(torch.float64)
        yield module
    finally:
        for tensor, dtype in reversed(saved):
            tensor.data = tensor.data.to(dtype)


def to_float64(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Floating tensors in float64 (exact), others unchanged."""
    return tuple(t.to(torch.float64) if t.is_floating_point() else t for t in tensors)


def finfo_of(dtype: torch.dtype) -> Patch:
    """A patch making ``torch.finfo(torch.float64)`` (and ``torch.finfo()`` under a float64
    default) give ``dtype``'s limits; apply with :func:`onnxspec.pieces.patches.patched`."""

    def wrap(real: type) -> object:
        def finfo(kind: torch.dtype | None = None) -> object:
            if kind is torch.float64 or (kind is None and torch.get_default_dtype() is torch.float64):
                return real(dtype)
            return real() if kind is None else real(kind)

        return finfo

    return Patch(target=torch, attribute="finfo", wrap=wrap, reason=f"float64 reference keeps {dtype}'s mask fill and epsilons")
