"""Giving back the resident pages of weights memory-mapped from a checkpoint, once used.

A model loaded from safetensors (or from a GGUF file through
:mod:`onnxspec.pipeline.gguf_stream`) holds its weights in private, read-only file mappings:
each page is read from the page cache when first touched and then counts in the process's
resident set until unmapped. A trace or a PyTorch forward touches every weight, so the whole
checkpoint ends up resident, beside whatever else the stage holds (the exporter's tensors, the
float64 reference's copies).

:func:`release` tells the kernel (``madvise(MADV_DONTNEED)``) that a tensor's pages are not
needed now: they leave the resident set and the next read faults them in again from the file
(from the page cache when it still holds them), with the same bytes. That is exact only for
pages never written to; so a range is released only when it lies inside one file-backed mapping
that holds no anonymous (copied-on-write) pages at all, as ``/proc/self/smaps`` reports; any
other tensor (in anonymous memory, or in a mapping with written pages) is left alone. Where the
kernel has no ``/proc`` or libc no ``madvise``, nothing is released.

:func:`released_after_forward` does it module by module while a model runs: after each
module's forward, its own weights' pages go. A head of a large vocabulary is read whole by one
``F.linear``: :func:`linear_in_slices` computes it a slice of rows at a time, each slice's pages
given back before the next is read (:func:`mapped_heads` finds such weights).

:func:`giving_back` does it for a runtime's own mappings of a graph's external data file
(onnxruntime maps each initializer of ``model.onnx.data`` on its own, private, and a forward
reads every page of them): while each ``run`` is in progress a thread gives the resident pages
of those mappings back every :data:`GIVE_BACK_EVERY` seconds, and once more when it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import torch

__all__ = [
    "GIVE_BACK_EVERY", "HEAD_FROM", "HEAD_SLICE_BYTES", "ROW_MULTIPLE", "FileMappings", "GivingBack", "file_mappings", "function_mode", "giving_back",
    "is_mapped", "linear_in_slices", "mapped_heads", "mappings_of", "release", "release_heap", "released_after_forward",
]

_MADV_DONTNEED = 4
_PROT_READ = 1
_PAGE = mmap.PAGESIZE
_T = TypeVar("_T")


@attrs.frozen
class FileMappings:
    """The process's file-backed mappings with no anonymous pages: ``(start, end)`` address
    ranges, sorted."""

    ranges: tuple[tuple[int, int], ...]

    def holding(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` lies inside one of the ranges."""
        import bisect

        i = bisect.bisect_right(self.ranges, (start, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= start and end <= self.ranges[i][1]


def file_mappings() -> FileMappings:
    """Read ``/proc/self/smaps``: every mapping of a regular file whose ``Anonymous`` count is 0."""
    ranges: list[tuple[int, int]] = []
    try:
        with open("/proc/self/smaps", encoding="ascii", errors="replace") as f:
            current: tuple[int, int] | None = None
            for line in f:
                head = line.split(None, 5)
                if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    path = head[5].strip() if len(head) > 5 else ""
                    current = (start, end) if head[4] != "0" and path.startswith("/") else None
                elif current is not None and line.startswith("Anonymous:"):
                    if int(line.split()[1]) == 0:
                        ranges.append(current)
                    current = None
    except OSError:
        return FileMappings(())
    return FileMappings(tuple(sorted(ranges)))


def mappings_of(paths: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """The ``(start, end)`` of the process's mappings of the files at ``paths``, sorted, as
    ``/proc/self/maps`` lists them (a cheap read: no page counts); a file is known by its device
    and inode, or by its path. Files that do not exist, or no ``/proc``: none."""
    files, names = set(), set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        files.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
        names.add(os.path.realpath(path))
    if not files:
        return ()
    ranges = []
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            for line in f:
                head = line.split(None, 5)
                if len(head) < 5 or head[4] == "0":
                    continue
                major, minor = (int(x, 16) for x in head[3].split(":"))
                if (major, minor, int(head[4])) in files or (len(head) > 5 and head[5].strip() in names):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return ()
    return tuple(sorted(ranges))


def _libc_function(name: str, *argtypes: Any) -> Any:
    """libc's function ``name`` taking ``argtypes`` and returning an int (errno kept), or ``None``."""
    found = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(found, use_errno=True) if found else None
    except OSError:
        return None
    function = getattr(libc, name, None)
    if function is not None:
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return function


_MADVISE = _libc_function("madvise", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int) if os.name == "posix" else None
_MPROTECT = _libc_function("mprotect", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int) if os.name == "posix" else None


def _span(tensor: torch.Tensor) -> tuple[int, int] | None:
    """The whole pages of ``tensor``'s storage, or ``None`` for a storage with no memory of its own."""
    if tensor.device.type != "cpu" or tensor.is_sparse:
        return None
    storage = tensor.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    if not start or size < _PAGE:
        return None
    return start - start % _PAGE, -(-(start + size) // _PAGE) * _PAGE


def release(tensors: Iterable[torch.Tensor], mappings: FileMappings | None = None) -> int:
    """Give back the resident pages of each tensor mapped from a file and never written (see the
    module's docstring); the bytes of address range released (resident or not). ``mappings``:
    a :func:`file_mappings` read earlier (the mappings must not have changed since)."""
    if _MADVISE is None:
        return 0
    spans = {s for s in (_span(t) for t in tensors) if s is not None}
    if not spans:
        return 0
    mappings = mappings or file_mappings()
    released = 0
    for start, end in sorted(spans):
        if mappings.holding(start, end) and _MADVISE(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released


def is_mapped(tensor: torch.Tensor, mappings: FileMappings) -> bool:
    """Whether ``tensor``'s storage lies inside one of ``mappings`` (a :func:`file_mappings`
    read): its pages can be given back by :func:`release` now."""
    span = _span(tensor)
    return _MADVISE is not None and span is not None and mappings.holding(*span)


HEAD_FROM = 1 << 25
"""A linear layer's weight mapped from a file and larger than this (32 MiB: a head of a large
vocabulary; in float32, the weights the streamed float64 reference widens a slice at a time) is
read a slice of rows at a time by PyTorch's runs that onnxspec makes (:func:`mapped_heads`,
:func:`linear_in_slices`), so that its pages are never all resident at once."""
HEAD_SLICE_BYTES = 1 << 26
"""Bytes of a head's rows :func:`linear_in_slices` reads at once (64 MiB). Each call costs the
BLAS library's threads a few milliseconds of CPU beyond its arithmetic (gemma-3-270m's head read
by 2 threads at 2 x 16 tokens: 0.37 s of CPU whole, 0.53 s in 64 MiB slices, 1.03 s in 16 MiB)."""
ROW_MULTIPLE = 64
""":func:`linear_in_slices` starts each slice at a multiple of this many rows: MKL's sgemm then
gives every output the bits it gives computing the whole head at once (measured with torch
2.13's MKL 2024.2, one and two threads: vocabularies of 262144, 151936, 50257 and 32000 words by
640, inputs of 1 x 1 to 5 x 40 tokens, slices of 4096 to 26176 rows, all identical; slices of
6553 or 26214 rows differed by up to 2.8e-7 of the largest logit)."""


def mapped_heads(model: torch.nn.Module, mappings: FileMappings) -> dict[int, torch.Tensor]:
    """The weight of each linear layer of ``model`` larger than :data:`HEAD_FROM` bytes and
    memory-mapped from a file (:func:`is_mapped`), by its ``id`` (a tied head: the embedding's)."""
    found = {}
    for module in model.modules():
        weight = module.weight if isinstance(module, torch.nn.Linear) else None
        if weight is not None and weight.dim() == 2 and weight.numel() * weight.element_size() > HEAD_FROM and is_mapped(weight, mappings):
            found[id(weight)] = weight
    return found


def linear_in_slices(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mappings: FileMappings) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``weight`` memory-mapped from a file, computed
    :data:`HEAD_SLICE_BYTES` of its rows at a time, the pages read given back (:func:`release`)
    after each slice: the weight is never resident whole (gemma-3-270m's tied 262k x 640 head:
    0.63 GiB of file-backed pages while one ``F.linear`` reads it). Each slice starts at a
    multiple of :data:`ROW_MULTIPLE` rows, where the product is bit for bit the whole call's
    (``tests/unit/build/test_head_slices.py`` checks it). The extra memory is one slice's output."""
    rows = HEAD_SLICE_BYTES // max(1, weight.shape[1] * weight.element_size())
    rows = min(weight.shape[0], max(ROW_MULTIPLE, rows - rows % ROW_MULTIPLE))
    out = x.new_empty((*x.shape[:-1], weight.shape[0]))
    for start in range(0, weight.shape[0], rows):
        part = slice(start, start + rows)
        out[..., part] = torch.nn.functional.linear(x, weight[part], None if bias is None else bias[part])
        release((weight,), mappings)
    return out


def release_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim``), where there is
    one: freed tensors and temporaries below the allocator's mapping threshold stay in the heap,
    resident, until trimmed (llama-1b before its validation session opens: 73 MiB)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


@contextlib.contextmanager
def function_mode(mode: Any) -> Iterator[None]:
    """``mode`` (any object with ``__torch_function__``) on torch's function-mode stack while the
    block runs (what :class:`torch.overrides.TorchFunctionMode`'s ``__enter__`` and ``__exit__``
    do, for a frozen record that is not one)."""
    torch.overrides._push_mode(mode)
    try:
        yield
    finally:
        torch.overrides._pop_mode()


@contextlib.contextmanager
def released_after_forward(model: torch.nn.Module) -> Iterator[None]:
    """While the block runs, each module of ``model`` whose own weights are mapped from a file
    gives their pages back after its forward returns (also when it raises). The weights are
    taken as they are when the block starts (a module that swaps a weight for a copy while it
    runs, as the streamed float64 reference does, still releases the mapped one)."""
    mappings = file_mappings()
    if not mappings.ranges or _MADVISE is None:
        yield
        return
    handles = []

    def hook(mapped: list[torch.Tensor]) -> Any:
        def give_back(*_: Any) -> None:  # returns None: a forward hook's value would replace the output
            release(mapped, mappings)

        return give_back

    try:
        for module in model.modules():
            own = [t.data for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)) if t is not None]
            mapped = [t for t in own if (s := _span(t)) is not None and mappings.holding(*s)]
            if mapped:
                handles.append(module.register_forward_hook(hook(mapped), always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


GIVE_BACK_EVERY = 0.005
"""Seconds between two give-backs of a runtime's mapped weights while it runs (:func:`giving_back`):
the resident part of them is about what the runtime reads in this time. A run at a small shape
set reads the weights fastest: gemma-3-270m's (1.00 GiB, 0.1 s a run at ``small``) peaked at
0.47 GiB file-backed every 20 ms, 0.29 every 10 ms, 0.26 every 5 ms, the runs' CPU time the same."""


def _give_back(ranges: Sequence[tuple[int, int]]) -> None:
    for start, end in ranges:
        _MADVISE(start, end - start, _MADV_DONTNEED)


def _run_giving_back(run: Callable[[], _T], ranges: Sequence[tuple[int, int]], every: float) -> _T:
    """``run()``, while a thread gives back the resident pages of ``ranges`` every ``every``
    seconds (the runtime releases the GIL while it runs), and once after it returns. ``ranges``:
    read-only mappings of files that stay mapped until ``run()`` returns."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            _give_back(ranges)

    thread = threading.Thread(target=loop, name="onnxspec-give-back", daemon=True)
    thread.start()
    try:
        return run()
    finally:
        stop.set()
        thread.join()
        _give_back(ranges)


@attrs.frozen(eq=False)
class GivingBack:
    """A runtime session (anything with ``run``) whose ``run`` gives back the resident pages of
    ``ranges``, the session's own read-only mappings of its graph's external data, while it runs
    and once after (:func:`giving_back`). Every other attribute is the session's."""

    session: Any
    ranges: tuple[tuple[int, int], ...]
    every: float = GIVE_BACK_EVERY

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return _run_giving_back(lambda: self.session.run(*args, **kwargs), self.ranges, self.every)

    def __getattr__(self, name: str) -> Any:
        if name in ("session", "ranges", "every") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.session, name)


def giving_back(open_session: Callable[[], Any], paths: Sequence[str], every: float = GIVE_BACK_EVERY) -> Any:
    """The session ``open_session()`` opens, wrapped in a :class:`GivingBack` over the mappings of
    the files at ``paths`` (its graph's external data) that opening it created, or the session
    itself where there are none (a runtime that reads the data into its own memory; no ``/proc``,
    ``madvise`` or ``mprotect``).

    onnxruntime maps each initializer stored in a data file on its own, private and writable
    (``rw-p`` in ``/proc/self/maps``), and only reads it. Of those mappings, each that holds no
    anonymous page once the session is open (see the module's docstring) is made read-only
    (``mprotect``): no page of it can then be copied on write, so each page given back is read
    again from the file with the same bytes. A runtime that wrote into its weights would get a
    segmentation fault, never a silently different result. Mappings with anonymous pages are
    left as they are, and kept resident."""
    if _MADVISE is None or _MPROTECT is None:
        return open_session()
    before = set(mappings_of(paths))
    session = open_session()
    opened = [r for r in mappings_of(paths) if r not in before]
    if not opened:
        return session
    clean = set(file_mappings().ranges)
    ranges = tuple(r for r in opened if r in clean and _MPROTECT(r[0], r[1] - r[0], _PROT_READ) == 0)
    if not ranges:
        return session
    _give_back(ranges)  # what opening the session read (constant folding)
    return GivingBack(session, ranges, every)

