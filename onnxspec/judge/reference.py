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

PyTorch's runs at the export dtype read a large memory-mapped head a slice of rows at a time,
bit for bit the whole call (:func:`heads_in_slices`); the streamed float64 run widens it a slice
at a time (:func:`streamed_float64`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import torch

from onnxspec.build.pages import FileMappings, file_mappings, function_mode, is_mapped, linear_in_slices, mapped_heads, release
from onnxspec.pieces.patches import Patch

__all__ = [
    "Streamed", "available_memory", "finfo_of", "float64_bytes", "float64_plan", "float64_room", "heads_in_slices", "in_float64",
    "streamed_float64", "to_float64",
]


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


def _own(module: torch.nn.Module) -> list[torch.Tensor]:
    """The floating parameters and buffers ``module`` registers itself (not its children's)."""
    tensors = (*module.parameters(recurse=False), *module.buffers(recurse=False))
    return [t for t in tensors if t is not None and t.is_floating_point()]


def _streamed_need(module: torch.nn.Module) -> int:
    """Extra bytes a streamed float64 run may hold at once: the largest module's own tensors in
    float64 (its parents on the call path own little or nothing in transformers' models), plus
    one tensor copied for a use outside its owner (at most the largest). A linear layer's weight
    widened in slices counts as one slice."""
    per_module = [sum(WIDEN_BYTES if t is _sliced(m) else t.numel() * 8 for t in _own(m)) for m in module.modules()]
    largest = max((t.numel() * 8 for t in _floating(module)), default=0)
    return max(per_module, default=0) + largest


def float64_room(module: torch.nn.Module, *, headroom: float = 0.75, streamed: bool = False) -> str:
    """Why a float64 copy of ``module`` does not fit now, or ``""`` when it does.

    In place (:func:`in_float64`), the conversion frees each float32 tensor as its float64 copy
    is made, so the extra memory is the float64 size minus the current size; ``streamed``
    (:func:`streamed_float64`), it is a few modules' tensors at a time. It must stay under
    ``headroom`` of what is free.
    """
    if streamed:
        need = _streamed_need(module)
    else:
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


def float64_plan(module: torch.nn.Module) -> str:
    """Why ``module`` cannot run in float64 one module at a time, or ``""`` when it can."""
    scripted = [name or "the model" for name, m in module.named_modules() if isinstance(m, torch.jit.ScriptModule)]
    if scripted:
        return f"TorchScript modules take no forward hooks ({', '.join(scripted[:3])})"
    return ""


@attrs.frozen(kw_only=True, eq=False)
class Streamed:
    """What a :func:`streamed_float64` run saw: the names of the tensors used outside their own
    module's forward (each converted per call by the torch function mode), filled as it runs."""

    outside: set[str] = attrs.field(factory=set)


_METADATA = frozenset(
    f
    for f in (
        *(getattr(torch.Tensor, a).__get__ for a in ("data", "shape", "device", "requires_grad", "is_leaf", "grad", "layout", "ndim")),
        torch.Tensor.data.__set__, torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.is_floating_point,
        torch.Tensor.__len__, torch.Tensor.__hash__, torch.Tensor.__format__, torch.Tensor.__repr__,
    )
)
"""Torch functions that read no values of a tensor and do not depend on its dtype: a tensor used
outside its owner's forward is given to them as it is."""
_DTYPE = torch.Tensor.dtype.__get__
_EMBEDDING = torch.nn.functional.embedding
_LINEAR = torch.nn.functional.linear

SLICE_BYTES = 1 << 26
"""A linear layer's weight whose float64 copy would take more than this many bytes (64 MiB) is
never widened whole in a streamed run: :func:`_sliced_linear` widens :data:`WIDEN_BYTES` of its
rows at a time."""
WIDEN_BYTES = 1 << 24
"""Bytes of float64 rows :func:`_sliced_linear` widens at once (16 MiB: gemma-3-270m's float64
run at the large set peaked 48 MiB lower than with 64 MiB slices, at the same speed)."""


def _sliced_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a float64 ``x`` and a ``weight`` in a narrower dtype,
    the weight's rows widened :data:`WIDEN_BYTES` at a time (each output feature is the same dot
    product as with the whole weight widened; BLAS may sum it in another order: measured 5e-15
    relative on a 262k x 640 head). The extra memory is a slice, not the weight in float64 (a
    tied 262k x 640 head: 16 MiB, not 1.25 GiB). Every slice is widened into the same buffer:
    fresh memory for each would be faulted in page by page (half the time of the call, measured
    on a 49k x 576 head). A weight memory-mapped from a checkpoint gives back the pages of the
    rows widened so far after each slice (:func:`onnxspec.build.pages.release`: read again from
    the file if needed, the same bytes), so the head is never resident whole during the call
    (gemma-3-270m's tied 262k x 640 head: 0.63 GiB of file-backed pages)."""
    rows = max(1, min(weight.shape[0], WIDEN_BYTES // (8 * weight.shape[-1])))
    out = x.new_empty((*x.shape[:-1], weight.shape[0]))
    wide = torch.empty((rows, *weight.shape[1:]), dtype=torch.float64)
    mappings = file_mappings() if weight.shape[0] > rows else None  # one read of /proc/self/smaps per call
    for start in range(0, weight.shape[0], rows):
        part = slice(start, start + rows)
        rows_here = min(rows, weight.shape[0] - start)
        wide[:rows_here].copy_(weight[part])
        if mappings is not None and mappings.ranges:
            release((weight,), mappings)
        out[..., part] = _LINEAR(x, wide[:rows_here], None if bias is None else bias[part].to(torch.float64))
    return out


@attrs.frozen(kw_only=True, eq=False)
class _MappedHeads:
    """A torch function mode (pushed as :func:`_mode` does): ``F.linear`` given one of the
    weights ``heads`` names (by ``id``), in the input's dtype and still memory-mapped from a
    file, runs as :func:`onnxspec.build.pages.linear_in_slices`; every other call runs as it is."""

    heads: frozenset[int]
    mappings: FileMappings

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if (func is _LINEAR and len(args) >= 2 and id(args[1]) in self.heads and isinstance(args[0], torch.Tensor)
                and args[0].dtype == args[1].dtype and set(kwargs) <= {"bias"} and not torch.jit.is_tracing()
                and is_mapped(args[1], self.mappings)):
            return linear_in_slices(args[0], args[1], args[2] if len(args) > 2 else kwargs.get("bias"), self.mappings)
        return func(*args, **kwargs)


@contextlib.contextmanager
def heads_in_slices(module: torch.nn.Module) -> Iterator[None]:
    """While the block runs, each linear layer of ``module`` whose weight is memory-mapped from
    a checkpoint and over :data:`onnxspec.build.pages.HEAD_FROM` bytes (a head of a large
    vocabulary: :func:`onnxspec.build.pages.mapped_heads`) is computed in its own dtype a slice of
    rows at a time, its pages given back slice by slice, bit for bit the whole call's
    (:func:`onnxspec.build.pages.linear_in_slices`); nothing changes where there is none. For
    PyTorch's runs at the export dtype (the streamed float64 run widens such a weight a slice
    at a time already); never under a trace."""
    mappings = file_mappings()
    heads = frozenset(mapped_heads(module, mappings))
    if not heads:
        yield
        return
    with function_mode(_MappedHeads(heads=heads, mappings=mappings)):  # type: ignore[arg-type]
        yield


def _sliced(owner: torch.nn.Module) -> torch.Tensor | None:
    """The weight of ``owner`` a streamed run widens slice by slice: a linear layer's over :data:`SLICE_BYTES` in float64."""
    weight = owner.weight if isinstance(owner, torch.nn.Linear) else None
    return weight if weight is not None and weight.numel() * 8 > SLICE_BYTES else None


@attrs.frozen(kw_only=True, eq=False)
class _Outside:
    """A torch function mode: every torch function given a tensor of the model that is not
    float64 at that moment (used outside its owner's forward) runs on a float64 copy of it, made
    for that call; its ``dtype`` reads float64. Each such tensor's name is added to ``seen``.

    Any object with a ``__torch_function__`` method can sit on torch's function-mode stack
    (:func:`_mode` pushes it as :class:`torch.overrides.TorchFunctionMode` pushes itself), so this
    record needs no base class; while its method runs, torch takes it off the stack.
    """

    names: dict[int, str]
    seen: set[str]

    def _stale(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and id(value) in self.names and value.dtype is not torch.float64

    def _widen(self, value: Any) -> Any:
        if self._stale(value):
            self.seen.add(self.names[id(value)])
            return value.detach().to(torch.float64)
        if isinstance(value, (list, tuple)) and any(self._stale(v) for v in value):
            return type(value)(self._widen(v) for v in value)
        return value

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        values = (*args, *kwargs.values())
        if not any(self._stale(v) or (isinstance(v, (list, tuple)) and any(self._stale(w) for w in v)) for v in values):
            return func(*args, **kwargs)
        if func == _DTYPE:  # a method-wrapper: a new object at each access, equal, never identical
            self.seen.add(self.names[id(args[0])])  # read, not widened (it was, whole, while ``is`` compared here)
            return torch.float64
        if func in _METADATA:
            return func(*args, **kwargs)
        if func is _EMBEDDING and len(args) >= 2 and self._stale(args[1]) and not any(self._stale(v) for v in (args[0], *args[2:])):
            # the lookup copies rows exactly: gather them in the weight's dtype, then widen only them
            self.seen.add(self.names[id(args[1])])
            return func(*args, **kwargs).to(torch.float64)
        if (func is _LINEAR and len(args) >= 2 and self._stale(args[1]) and args[1].numel() * 8 > SLICE_BYTES
                and isinstance(args[0], torch.Tensor) and args[0].dtype is torch.float64):
            self.seen.add(self.names[id(args[1])])
            return _sliced_linear(args[0], args[1], self._widen(args[2] if len(args) > 2 else kwargs.get("bias")))
        return func(*(self._widen(a) for a in args), **{k: self._widen(v) for k, v in kwargs.items()})


def _use_count(tensor: torch.Tensor) -> int:
    """How many tensors share ``tensor``'s storage (views included), or a large number where
    torch does not say: a float64 buffer is reused only when nothing else can still read it."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count(tensor.untyped_storage()._cdata) if count is not None else 1 << 30


_LONE = _use_count(torch.empty(1, dtype=torch.float64))
"""What :func:`_use_count` says of a tensor no other tensor shares storage with."""


@contextlib.contextmanager
def streamed_float64(module: torch.nn.Module) -> Iterator[Streamed]:
    """``module`` running in float64 one module at a time (see the module's docstring); every
    tensor holds its own storage again on exit, even on error. Check :func:`float64_plan` first.

    The float64 copies are made without fresh memory where possible: a copy given back when its
    module returns is kept, and the next tensor of the same shape is converted into it (the
    repeating blocks of a transformer reuse one buffer per shape, across calls), unless a view of
    it escaped the module. An ``nn.Embedding``'s weight is not converted for its own call: the
    lookup gathers the rows in the weight's dtype and widens only those (exact either way). A
    linear layer's weight over :data:`SLICE_BYTES` in float64 is not converted either: its call
    widens it a slice of rows at a time (:func:`_sliced_linear`; an lm_head of 32k or 262k words)."""
    names: dict[int, str] = {}
    for name, tensor in (*module.named_parameters(remove_duplicate=True), *module.named_buffers(remove_duplicate=True)):
        if tensor.is_floating_point() and tensor.dtype is not torch.float64:
            names.setdefault(id(tensor), name)
    held: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}  # id -> (tensor, original data, modules holding it)
    spare: dict[tuple[int, ...], torch.Tensor] = {}  # shape -> a float64 buffer no tensor uses now

    def wide(original: torch.Tensor) -> torch.Tensor:
        buffer = spare.pop(tuple(original.shape), None) if original.is_contiguous() else None
        return original.to(torch.float64) if buffer is None else buffer.copy_(original)

    def widen(owner: torch.nn.Module, *_: Any) -> None:
        lookup = owner.weight if isinstance(owner, torch.nn.Embedding) and owner.max_norm is None else None
        sliced = _sliced(owner)
        for tensor in _own(owner):
            key = id(tensor)
            if key not in names or tensor is lookup or tensor is sliced:
                continue
            if key in held:
                t, original, count = held[key]
                held[key] = (t, original, count + 1)
                continue
            original = tensor.data
            held[key] = (tensor, original, 1)
            tensor.data = wide(original)

    def narrow(owner: torch.nn.Module, *_: Any) -> None:
        for tensor in _own(owner):
            key = id(tensor)
            if key not in held:
                continue
            t, original, count = held[key]
            if count > 1:
                held[key] = (t, original, count - 1)
                continue
            del held[key]
            given_back = tensor.data
            tensor.data = original
            if given_back.is_contiguous() and _use_count(given_back) == _LONE:
                spare[tuple(given_back.shape)] = given_back
            del given_back

    owners = [m for m in module.modules() if any(id(t) in names for t in _own(m))]
    handles = []
    seen = Streamed()
    try:
        for owner in owners:
            handles.append(owner.register_forward_pre_hook(widen))
            handles.append(owner.register_forward_hook(narrow, always_call=True))
        with function_mode(_Outside(names=names, seen=seen.outside)):
            yield seen
    finally:
        for handle in handles:
            handle.remove()
        for tensor, original, _ in held.values():  # a forward that raised between its hooks
            tensor.data = original
        held.clear()
        spare.clear()


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
