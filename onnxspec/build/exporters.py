"""The two torch exporters, driven by the same spec, and the graph stamping that follows.

``torchscript`` (``torch.onnx.export(..., dynamo=False)``) is the default while the installed
torch has it: on small models it is an order of magnitude faster. ``dynamo``
(``torch.onnx.export(..., dynamo=True)``) traces with torch.export; every dynamic axis becomes
``Dim.DYNAMIC`` and the graph's symbolic dims are renamed to the spec's symbols afterwards.

A failing exporter raises :class:`~onnxspec.errors.BackendError`: a one-line reason, with the
exporter's full text in ``details``. Everything the exporters write while they run (TorchScript's
C++ logger prints the whole IR graph to stdout when a node cannot be exported: 144 KB for a
small Phi-3) is captured at the file-descriptor level and kept there, never printed.
:func:`backends_to_try` says when TorchScript falls back to dynamo.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import onnx
import torch

from onnxspec.build.graphs import all_nodes, subgraphs
from onnxspec.build.pages import FileMappings, file_mappings, function_mode, is_mapped, linear_in_slices, mapped_heads, release, released_after_forward
from onnxspec.pieces.axes import axes_view
from onnxspec.errors import NO_SPACE, BackendError, OnnxSpecError, SpecError
from onnxspec.pieces.spec import GraphSpec
from onnxspec.build.streamed import WeightSource, fold_transposes, tensor_for

__all__ = [
    "Backend",
    "available_backends",
    "backends_to_try",
    "default_backend",
    "embed_external_data",
    "export_graph",
    "move_external_data",
    "releases_pages",
    "resolve_backend",
    "tie_transposed_weights",
    "weight_bytes",
]


class Backend(enum.Enum):
    """Which torch exporter traces the model."""

    TORCHSCRIPT = "torchscript"
    DYNAMO = "dynamo"


def _has_torchscript() -> bool:
    return hasattr(torch.onnx, "export") and hasattr(torch, "jit") and hasattr(torch.jit, "trace")


def _has_dynamo() -> bool:
    # find_spec, not import: importing onnxscript costs ~0.8 s, paid only when dynamo runs.
    return all(importlib.util.find_spec(m) is not None for m in ("onnxscript", "onnx_ir")) and hasattr(torch, "export")


def available_backends() -> tuple[Backend, ...]:
    """The backends the installed torch (and onnxscript) can run."""
    return tuple(b for b, ok in ((Backend.TORCHSCRIPT, _has_torchscript()), (Backend.DYNAMO, _has_dynamo())) if ok)


def default_backend() -> Backend:
    """TorchScript while torch has it, else torch.export."""
    available = available_backends()
    if not available:
        raise OnnxSpecError("no torch ONNX exporter is available: install torch>=2.5 (and onnxscript for the dynamo backend)")
    return available[0]


def resolve_backend(backend: Backend | str | None) -> Backend:
    """``backend`` as a :class:`Backend`, checked against what is installed."""
    if backend is None:
        return default_backend()
    try:
        chosen = Backend(backend)
    except ValueError as e:
        raise SpecError(f"unknown backend {backend!r}; choose one of {[b.value for b in Backend]}") from e
    if chosen not in available_backends():
        hint = "install onnxscript and onnx-ir" if chosen is Backend.DYNAMO else "this torch has no TorchScript exporter; use --backend dynamo"
        raise SpecError(f"backend {chosen.value!r} is not available here: {hint}")
    return chosen


def backends_to_try(chosen: Backend, *, named: bool) -> tuple[Backend, ...]:
    """The backends to trace a graph with, in order: ``chosen``, then dynamo when ``chosen`` is
    TorchScript picked by default (``named`` false: neither the caller nor the spec named a
    backend) and dynamo is installed. A backend someone named is never second-guessed.

    >>> backends_to_try(Backend.DYNAMO, named=False)
    (<Backend.DYNAMO: 'dynamo'>,)
    """
    if chosen is Backend.TORCHSCRIPT and not named and Backend.DYNAMO in available_backends():
        return (Backend.TORCHSCRIPT, Backend.DYNAMO)
    return (chosen,)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exporter's exception in one line: the innermost cause's type and first line of text
    (dynamo wraps the real error in ``TorchExportError``), cut at ``limit`` characters.

    >>> one_line(ValueError("bad op\\nthe IR graph ..."))
    'ValueError: bad op'
    """
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    said = root.args[0] if len(root.args) == 1 and isinstance(root.args[0], str) else str(root)  # KeyError quotes str()
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    text = f"{type(root).__name__}: {lines[0] if lines else '(no message)'}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _captured(into: list[str]) -> Iterator[None]:
    """Send file descriptors 1 and 2 (and Python's stdout and stderr) to a temporary file while
    the block runs and append what was written to ``into``. Without usable descriptors (an
    embedding host closed them) nothing is captured."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        try:
            saved = (os.dup(1), os.dup(2))
        except OSError:
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(out):
                yield
            into.append(out.getvalue())
            return
        text = io.StringIO()
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            into.append(text.getvalue() + sink.read().decode("utf-8", errors="replace"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation and tracer warnings (they are not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_torchscript(
    module: torch.nn.Module, args: tuple[torch.Tensor, ...], spec: GraphSpec, workdir: str, data_dir: str,
    stream: WeightSource | None = None,
) -> onnx.ModelProto:
    """The graph traced by TorchScript, its weights written to ``data_dir/<spec.filename>.data``.

    With ``stream`` the module's parameters are hollow (:mod:`onnxspec.build.streamed`): nothing is
    constant-folded or deduplicated by value (hollow weights are all zeros), each Linear's
    Transpose is folded by onnxspec and the weights are read from the checkpoint as written."""
    dynamic = {**axes_view(spec.inputs), **axes_view(spec.outputs)}
    path = os.path.join(workdir, "torchscript_export.onnx")
    weights: dict[str, torch.Tensor] = {}
    give_back = stream is not None or releases_pages(module)
    # the trace's forward gives each module's checkpoint pages back once it returns, a large
    # head's a slice at a time (onnxspec.build.pages)
    with _quiet(), torch.no_grad(), _weights_kept_out(weights), _shape_inference_without_weights(), \
            released_after_forward(module) if give_back else contextlib.nullcontext(), \
            _heads_traced_hollow(module) if give_back else contextlib.nullcontext(), \
            _deduplication_reading_samples(give_back):
        torch.onnx.export(
            module,
            args,
            path,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes={k: v for k, v in dynamic.items() if v},
            opset_version=spec.opset,
            do_constant_folding=stream is None,
            keep_initializers_as_inputs=stream is not None,
            dynamo=False,
        )
    model = _load_without_data(workdir, "torchscript_export.onnx")
    if stream is None:
        tie_transposed_weights(model, weights)
        _attach_weights(model, weights, data_dir, spec.filename + ".data", give_back=give_back)
    else:
        perms = fold_transposes(model, weights)
        tie_transposed_weights(model, weights)
        _attach_weights(model, weights, data_dir, spec.filename + ".data",
                        produce=lambda name, captured: tensor_for(stream, captured, perms.get(name)))
    return model


_LINEAR = torch.nn.functional.linear


def _hollow(weight: torch.Tensor) -> torch.Tensor:
    """A tensor of ``weight``'s shape and dtype reading zeros from memory never written: an
    anonymous private mapping, read-only (not charged to the commit limit; a write would fault),
    whose pages read are the kernel's shared zero page (none counts in the resident set)."""
    import mmap

    nbytes = max(1, weight.numel() * weight.element_size())
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    with warnings.catch_warnings():  # torch warns that the buffer is not writable: nothing writes it
        warnings.simplefilter("ignore")
        return torch.frombuffer(memory, dtype=weight.dtype, count=weight.numel()).view(weight.shape)


@attrs.frozen(kw_only=True, eq=False)
class _HollowHeads:
    """A torch function mode (pushed by :func:`_heads_traced_hollow`): under a trace, ``F.linear``
    given one of the weights ``heads`` names (by ``id``) is traced reading a :func:`_hollow`
    stand-in of the weight (the weight itself is what the graph names: its ``data`` is swapped
    for the call), and its output is then filled, the tracer paused, with the real product
    computed a slice of rows at a time (:func:`onnxspec.build.pages.linear_in_slices`, bit for bit
    the whole call's). Every other call runs as it is."""

    heads: frozenset[int]
    mappings: FileMappings

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not (func is _LINEAR and len(args) >= 2 and id(args[1]) in self.heads and torch.jit.is_tracing()
                and set(kwargs) <= {"bias"} and isinstance(args[0], torch.Tensor) and args[0].dtype == args[1].dtype):
            return func(*args, **kwargs)
        weight = args[1]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        kept = weight.data
        weight.data = _hollow(weight)
        try:
            out = func(*args, **kwargs)
        finally:
            weight.data = kept
        tracing = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            out.copy_(linear_in_slices(args[0], weight, bias, self.mappings))
        finally:
            torch._C._set_tracing_state(tracing)
        return out


@contextlib.contextmanager
def _heads_traced_hollow(module: torch.nn.Module) -> Iterator[None]:
    """While the block runs, TorchScript's trace of ``module`` reads each large linear weight
    memory-mapped from a checkpoint (:func:`onnxspec.build.pages.mapped_heads`) a slice at a time,
    its pages given back after each (:class:`_HollowHeads`), not whole in one ``F.linear``
    (gemma-3-270m's tied 262k x 640 head: 0.63 GiB of file-backed pages resident at once). The
    graph traced and the values computed are the same (``tests/unit/build/test_head_slices.py``)."""
    if not all(hasattr(torch._C, name) for name in ("_get_tracing_state", "_set_tracing_state")):
        yield  # a torch whose tracer cannot be paused: the head is read whole
        return
    mappings = file_mappings()
    heads = frozenset(mapped_heads(module, mappings))
    if not heads:
        yield
        return
    with function_mode(_HollowHeads(heads=heads, mappings=mappings)):
        yield


RELEASE_FROM = 64 << 20
"""A model whose parameters and buffers take fewer bytes than this (64 MiB) keeps its checkpoint's
pages while it is traced and run (:func:`releases_pages`): giving them back first reads the
process's mappings from ``/proc/self/smaps``, 20-30 ms a read once torch, transformers and
onnxruntime are loaded, four to five reads an export (0.1 s of a tiny model's 5 s CLI run), to
save at most these bytes of resident memory."""


def releases_pages(module: torch.nn.Module) -> bool:
    """Whether ``module``'s weights are worth giving back page by page once used
    (:mod:`onnxspec.build.pages`): they take :data:`RELEASE_FROM` bytes or more."""
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        total += tensor.numel() * tensor.element_size()
        if total >= RELEASE_FROM:
            return True
    return False


def _load_without_data(scratch: str, filename: str) -> onnx.ModelProto:
    """An exporter's file without its external data: the weights it wrote beside the graph stay
    on disk, and the proto's ``location`` fields still name them relative to ``scratch``
    (:func:`move_external_data` moves them out before the caller deletes the folder)."""
    return onnx.load(os.path.join(scratch, filename), load_external_data=False)


EXTERNAL_ALIGNMENT = 65536
"""Offset alignment of tensors of :data:`ALIGN_FROM` bytes or more in an external data file, so
that a runtime can memory-map each one at an allocation boundary."""
ALIGN_FROM = 1 << 20


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the tensors of ``model``: in the proto, and those it keeps as external data."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    return sum(
        (ExternalDataInfo(t).length or 0) if uses_external_data(t) else len(t.raw_data) for t in _get_all_tensors(model)
    )


def move_external_data(
    model: onnx.ModelProto, source_dir: str, target_dir: str, location: str, *, size_threshold: int = 1024
) -> None:
    """Write the tensor data of ``model`` into one file, ``target_dir/location``, one tensor at
    a time, and point the proto at it: tensors kept as external data (read from their files
    relative to ``source_dir``) and tensors in the proto of ``size_threshold`` bytes or more
    (cleared from the proto once written). Tensors of :data:`ALIGN_FROM` bytes or more start at
    a multiple of :data:`EXTERNAL_ALIGNMENT`. At most one tensor's bytes are in memory at a
    time. When ``source_dir`` is ``target_dir``, tensors already in that file stay where they
    are and the others are appended; else the file is written anew. Its bytes depend only on
    the proto's tensors, in order."""
    from onnx.external_data_helper import (
        ExternalDataInfo,
        _get_all_tensors,
        load_external_data_for_tensor,
        save_external_data,
        set_external_data,
        uses_external_data,
    )

    path = os.path.join(target_dir, location)
    in_place = os.path.abspath(source_dir) == os.path.abspath(target_dir) and os.path.exists(path)
    if not in_place:
        open(path, "wb").close()
    size = os.path.getsize(path)
    for tensor in _get_all_tensors(model):
        external = uses_external_data(tensor)
        if external and in_place and ExternalDataInfo(tensor).location == location:
            continue
        if external:
            load_external_data_for_tensor(tensor, source_dir)
        elif not tensor.HasField("raw_data") or len(tensor.raw_data) < size_threshold:
            continue
        size = _append(tensor, target_dir, location, size)


def _append(tensor: onnx.TensorProto, target_dir: str, location: str, size: int) -> int:
    """Write ``tensor``'s bytes at the end (``size``) of ``target_dir/location``, aligned when large,
    point the tensor at them and clear them from the proto; the file's new size."""
    from onnx.external_data_helper import save_external_data, set_external_data

    length = len(tensor.raw_data)
    offset = -(-size // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT if length >= ALIGN_FROM else size
    set_external_data(tensor, location, offset=offset)
    save_external_data(tensor, target_dir)
    tensor.ClearField("raw_data")
    return offset + length


@contextlib.contextmanager
def _weights_kept_out(into: dict[str, torch.Tensor]) -> Iterator[None]:
    """While the block runs, TorchScript's exporter writes graphs without their weights: the
    tensors it would serialize (the module's parameters and the ones constant folding made) are
    put in ``into``, by the name of the graph input each becomes. Serialized by the exporter,
    below 2 GB they went into its proto and its bytes, in memory at once, and the file was read
    back whole (a 0.7 GiB llama's trace peaked at 3.28 GiB, 1.85 GiB without);
    :func:`_attach_weights` writes them one at a time."""
    graph_type = torch._C.Graph
    export_onnx = graph_type._export_onnx

    def without_weights(graph: Any, params: dict[str, torch.Tensor], *rest: Any) -> Any:
        into.update(params)
        return export_onnx(graph, {}, *rest)

    graph_type._export_onnx = without_weights
    try:
        yield
    finally:
        graph_type._export_onnx = export_onnx


SHAPE_INFERENCE_KEEPS = 1 << 20
"""Floating-point weights of this many bytes or more are left out of the parameters TorchScript's
graph-wide shape inference sees (:func:`_shape_inference_without_weights`)."""


@contextlib.contextmanager
def _shape_inference_without_weights() -> Iterator[None]:
    """While the block runs, TorchScript's graph-wide ONNX shape inference is given the graph's
    parameters without its floating-point weights of :data:`SHAPE_INFERENCE_KEEPS` bytes or more.

    Given a parameter, that pass rebuilds each node consuming it as a one-node ONNX model holding
    the parameter's value as a constant and serializes it: a copy of every weight, several at a
    time, and the freed copies stay in the allocator's heap (llama-1b: the trace's high-water
    mark rose by 1.8 GiB inside this pass, 0.8 GiB still resident after it). Left out, the weight
    is a graph input of its declared type and shape, from which the same output types and shapes
    follow: a weight's values never decide a shape (shape-deciding tensors are small integer
    constants, kept). The graph written is the same (``tests/unit/build/test_trace_memory.py``
    compares it node for node with the pass given every parameter)."""
    name = "_jit_pass_onnx_graph_shape_type_inference"
    infer = getattr(torch._C, name)
    limit = SHAPE_INFERENCE_KEEPS

    def lean(graph: Any, params: dict[str, Any], *rest: Any) -> Any:
        kept = {k: v for k, v in params.items()
                if not (isinstance(v, torch.Tensor) and v.is_floating_point() and v.nbytes >= limit)}
        return infer(graph, kept, *rest)

    setattr(torch._C, name, lean)
    try:
        yield
    finally:
        setattr(torch._C, name, infer)


WRITE_BLOCK_BYTES = 1 << 24
"""A weight that is not contiguous (a Linear's weight transposed by constant folding, a view of
the module's tensor) is made contiguous and written this many bytes of rows at a time (16 MiB)."""


def row_blocks(weight: torch.Tensor, *, split: bool = False) -> Iterator[torch.Tensor]:
    """``weight``'s values in C order as contiguous tensors: itself when contiguous (no copy),
    else consecutive blocks of its first dimension of about :data:`WRITE_BLOCK_BYTES` each, so
    that writing a transposed weight copies a block at a time, never the whole (a tied 262k x
    640 embedding transposed for the lm_head's MatMul: 0.63 GiB at once, measured). ``split``:
    a contiguous weight larger than a block comes as views of its blocks too (no copy), so that
    a writer can give each block's mapped pages back before reading the next."""
    if weight.is_contiguous():
        if not split or weight.dim() == 0 or weight.numel() * weight.element_size() <= WRITE_BLOCK_BYTES:
            yield weight
            return
        step = max(1, WRITE_BLOCK_BYTES // max(1, weight[0].numel() * weight.element_size()))
        for start in range(0, weight.shape[0], step):
            yield weight[start : start + step]
        return
    row = max(1, weight[0].numel() * weight.element_size()) if weight.dim() else 1
    step = max(1, WRITE_BLOCK_BYTES // row)
    across = weight.dim() == 2 and weight.stride(1) != 1  # a row's values lie apart: a transposed weight
    for start in range(0, weight.shape[0], step):
        part = weight[start : start + step]
        yield _tiled_copy(part) if across else part.contiguous()


TILE = 128
"""A transposed weight's block is copied in tiles of this many rows and columns (:func:`_tiled_copy`)."""


def _tiled_copy(part: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of the 2-D ``part`` whose rows are strided (a block of a transposed
    weight), a :data:`TILE` x :data:`TILE` tile at a time: each tile reads short runs of the
    source and writes short runs of the copy, all within the CPU's cache, where a block copied
    whole takes each value from another cache line (torch's fast transpose needs the whole
    matrix). Measured in 16 MiB blocks: a tied 50257 x 768 embedding transposed for the lm_head,
    0.36 s of CPU copied whole, 0.085 s in tiles; 49152 x 576, 0.17 and 0.06 s; 8192 x 2048,
    0.15 and 0.06 s; a 1536 x 576 Linear weight, 1.8 and 1.2 ms."""
    block = torch.empty(part.shape, dtype=part.dtype, device=part.device)
    for row in range(0, part.shape[0], TILE):
        for column in range(0, part.shape[1], TILE):
            block[row : row + TILE, column : column + TILE].copy_(part[row : row + TILE, column : column + TILE])
    return block


def _bytes_of(tensor: torch.Tensor) -> Any:
    """The bytes of a contiguous tensor as a numpy uint8 array over its memory (no copy)."""
    return tensor.reshape(-1).view(torch.uint8).numpy()


DEDUPLICATION_SAMPLES_FROM = 1 << 20
"""Weights of this many bytes or more are shown to TorchScript's deduplication of initializers
only when a sample of their values equals another weight's (:func:`_deduplication_reading_samples`)."""


def _sample(tensor: torch.Tensor, count: int = 64) -> torch.Tensor:
    """``count`` elements of ``tensor`` at positions that depend only on its shape (any strides,
    no copy of the tensor: a page or so read per element)."""
    generator = torch.Generator().manual_seed(len(tensor.shape) * 1000003 + tensor.numel())
    index = tuple(torch.randint(0, max(1, size), (count,), generator=generator) for size in tensor.shape)
    return tensor[index] if index else tensor.reshape(1)


@contextlib.contextmanager
def _deduplication_reading_samples(give_back: bool = True) -> Iterator[None]:
    """While the block runs, TorchScript's deduplication of initializers by value (``equal``
    between every two weights of the same dtype, shape and strides) sees only the weights of
    :data:`DEDUPLICATION_SAMPLES_FROM` bytes or more whose sample (:func:`_sample`) equals another
    candidate's; the others, which cannot equal any weight since a part of them does not, are
    given back to its result unchanged. Comparing every weight read the whole checkpoint into
    memory at once (llama-1b: its 3.3 GiB of mapped pages, measured); the samples read a few
    pages each, and the pages are given back (:func:`onnxspec.build.pages.release`). The
    initializers kept are those the pass would keep (``tests/unit/build/test_trace_memory.py``).
    ``give_back=False`` (a small model, :func:`releases_pages`) keeps the pages."""
    name = "_jit_pass_onnx_deduplicate_initializers"
    deduplicate = getattr(torch._C, name)
    limit = DEDUPLICATION_SAMPLES_FROM

    def sampled(graph: Any, params: dict[str, Any], *rest: Any) -> Any:
        large = {k: v for k, v in params.items() if isinstance(v, torch.Tensor) and v.numel() * v.element_size() >= limit}
        groups: dict[tuple[Any, ...], list[tuple[str, torch.Tensor]]] = {}
        mappings = file_mappings() if give_back and large else None
        for key, tensor in large.items():
            groups.setdefault((tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()), tensor.device), []).append((key, _sample(tensor)))
            if mappings is not None:
                release((tensor,), mappings)  # each read maps the pages around it too (the kernel's fault-around: 64 KiB)
        alone = set()
        for members in groups.values():
            for key, sample in members:
                if not any(other != key and sample.equal(theirs) for other, theirs in members):
                    alone.add(key)
        shown = {k: v for k, v in params.items() if k not in alone}
        kept = deduplicate(graph, shown, *rest)
        if give_back:
            release(shown.values())
        return {**{k: params[k] for k in alone}, **kept}

    setattr(torch._C, name, sampled)
    try:
        yield
    finally:
        setattr(torch._C, name, deduplicate)


def _transpose_of(weight: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether the 2-D ``weight`` is ``other`` transposed, as a view of the same memory (constant
    folding of a tied lm_head's Transpose): same storage, offset and dtype, shape and strides
    reversed, ``other`` contiguous (written as it is)."""
    return (
        weight.dim() == 2 and other.dim() == 2 and weight.dtype == other.dtype and other.is_contiguous()
        and not weight.is_contiguous() and weight.device == other.device
        and weight.untyped_storage().data_ptr() == other.untyped_storage().data_ptr()
        and weight.storage_offset() == other.storage_offset()
        and tuple(weight.shape) == tuple(reversed(other.shape)) and tuple(weight.stride()) == tuple(reversed(other.stride()))
    )


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def tie_transposed_weights(model: onnx.ModelProto, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write a tied embedding once, as its lookup reads it: the ``[V, H]`` table.

    Without this TorchScript writes it twice. Constant folding turns the head's Transpose of the
    ``[V, H]`` table into a ``[H, V]`` weight that is a transposed view of the same memory
    (:func:`_transpose_of`): both are in ``weights``. With streamed weights (no constant folding)
    the graph keeps the head's ``Transpose`` node of the table instead, which onnxruntime would
    fold into a transposed copy in the process's own memory when the session opens.

    Each such ``[H, V]`` weight (or ``Transpose`` output) read only as input ``B`` of ``MatMul``
    nodes of the top-level graph is dropped (from ``weights`` and the graph's inputs; the
    ``Transpose`` node removed), and each ``MatMul(X, B)`` becomes ``X`` reshaped to ``[-1, H]``,
    ``Gemm`` by the table with ``transB=1``, and the product reshaped back to ``X``'s leading dims
    + ``[V]``. The table's ``Gather`` nodes read it as they did.

    Why the table's own layout, and not the head's (a ``[H, V]`` weight, with the lookup gathering
    its columns): onnxruntime's ``MatMul`` reads a ``[H, V]`` weight a band of columns at a time,
    every one of its ``H`` rows' pages in each band, so the whole weight is resident within
    milliseconds of each pass, however often its pages are given back while the graph runs
    (:func:`onnxspec.build.pages.giving_back`). ``Gemm`` with ``transB=1`` reads the ``[V, H]``
    table in row order, and the given-back pages stay gone: gemma-3-270m's validation runs
    (its 262k x 640 table, 0.63 GiB) peaked at 0.22 GiB of file-backed memory against 0.73 GiB,
    the logits bit-identical. The 2-D product costs one logits-sized buffer more in onnxruntime
    (+72 MiB at that model's large validation set).

    A pair read any other way, or a graph below opset 11 (``Gemm`` without ``C``), is left as it
    is: both written. Returns each name no longer read (a dropped weight, a removed Transpose's
    output) -> the table read instead."""
    if _opset(model) < 11:
        return {}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))
    nested = {name for node in model.graph.node for sub in subgraphs(node) for inner in all_nodes(sub) for name in inner.input}
    outputs = {v.name for v in model.graph.output}

    def read_as_b(name: str) -> bool:  # read, and only as input B of top-level MatMul nodes
        uses = readers.get(name, [])
        return bool(uses) and name not in nested and name not in outputs and all(
            node.op_type == "MatMul" and index == 1 for node, index in uses)

    tied: dict[str, str] = {}
    for name, weight in weights.items():
        if weight.dim() == 2 and not weight.is_contiguous() and read_as_b(name):
            table = next((other for other, w in weights.items() if other != name and _transpose_of(weight, w)), None)
            if table is not None and table not in tied:
                tied[name] = table
    transposes = set()
    for node in model.graph.node:  # a weight's Transpose left in the graph (streamed weights: no constant folding)
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if (node.op_type == "Transpose" and node.input and node.input[0] in weights and node.input[0] not in tied
                and weights[node.input[0]].dim() == 2 and perm == [1, 0] and read_as_b(node.output[0])):
            tied[node.output[0]] = node.input[0]
            transposes.add(node.output[0])
    if not tied:
        return tied
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in tied:
            table = tied[node.input[1]]
            rewritten.extend(_gemm_by_transposed(node, table, *weights[table].shape))
        elif not (node.op_type == "Transpose" and node.output[0] in transposes):
            rewritten.append(node)
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    kept = [v for v in model.graph.input if v.name not in tied]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name in tied.keys() - transposes:
        del weights[name]
    return tied


def _gemm_by_transposed(node: onnx.NodeProto, table: str, rows: int, width: int) -> list[onnx.NodeProto]:
    """``MatMul(X, B)``, ``B`` being ``table`` ``[rows, width]`` transposed, as ``Gemm`` by ``table``
    with ``transB=1`` between two Reshapes: ``X`` to ``[-1, width]``, the product to ``X``'s leading
    dims + ``[rows]`` (Shape, Slice, Concat: opset 11 and up)."""
    import numpy as np
    from onnx import helper, numpy_helper

    x, out = node.input[0], node.output[0]
    base = (node.name or out).rstrip("/") + "/tied"
    nodes: list[onnx.NodeProto] = []

    def constant(suffix: str, values: list[int]) -> str:
        name = f"{base}/{suffix}"
        nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.array(values, dtype=np.int64), name)))
        return name

    flat, zero, last, count = constant("flat", [-1, width]), constant("zero", [0]), constant("last", [-1]), constant("rows", [rows])
    nodes += [
        helper.make_node("Reshape", [x, flat], [f"{base}/x2"], name=f"{base}/reshape_in"),
        helper.make_node("Gemm", [f"{base}/x2", table], [f"{base}/y2"], name=f"{base}/gemm", transB=1),
        helper.make_node("Shape", [x], [f"{base}/shape"], name=f"{base}/shape"),
        helper.make_node("Slice", [f"{base}/shape", zero, last, zero], [f"{base}/lead"], name=f"{base}/lead"),
        helper.make_node("Concat", [f"{base}/lead", count], [f"{base}/out_shape"], name=f"{base}/out_shape", axis=0),
        helper.make_node("Reshape", [f"{base}/y2", f"{base}/out_shape"], [out], name=f"{base}/reshape_out"),
    ]
    return nodes


def _attach_weights(
    model: onnx.ModelProto, weights: dict[str, torch.Tensor], target_dir: str, location: str,
    produce: Any = None, give_back: bool = True,
) -> None:
    """Turn the graph inputs named in ``weights`` back into initializers, in input order: tensors
    of 1 KB or more written one at a time into ``target_dir/location`` (new), the others in the
    proto; each tensor is dropped from ``weights`` once written. ``produce(name, tensor)``, when
    given, makes the values written from the captured tensor (read from a checkpoint). Once
    written, a tensor memory-mapped from a checkpoint gives its pages back
    (:func:`onnxspec.build.pages.release`), unless ``give_back`` is false (a small model:
    :func:`releases_pages`)."""
    mappings = file_mappings() if give_back else None
    inputs = list(model.graph.input)
    kept = [v for v in inputs if v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    with open(os.path.join(target_dir, location), "wb") as data:
        for value in inputs:
            if value.name not in weights:
                continue
            weight = weights.pop(value.name).detach()
            if produce is not None:
                weight = produce(value.name, weight)
            tensor = onnx.TensorProto(name=value.name, data_type=value.type.tensor_type.elem_type, dims=list(weight.shape))
            nbytes = weight.numel() * weight.element_size()
            if nbytes < 1024:
                tensor.raw_data = _bytes_of(weight.contiguous()).tobytes()
            else:  # written from the tensor's memory: no bytes object, no copy in the proto
                size = data.tell()
                offset = -(-size // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT if nbytes >= ALIGN_FROM else size
                data.write(b"\0" * (offset - size))
                # a contiguous weight mapped from a checkpoint is written a block at a time, each
                # block's pages given back once written (gemma-3-270m's tied 262k x 640 table: 0.63
                # GiB of file-backed pages resident at once when written whole); a large transposed
                # one a block of its source's rows at a time (_write_transposed); any other
                # transposed one reads every page in each block, so its pages go once it is all written
                split = mappings is not None and weight.is_contiguous()
                if mappings is not None and _transposed_mapped(weight, mappings):
                    _write_transposed(data, offset, weight, mappings)
                else:
                    for block in row_blocks(weight, split=split):
                        data.write(memoryview(_bytes_of(block)))
                        if split:
                            release((block,), mappings)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for key, entry in (("location", location), ("offset", offset), ("length", nbytes)):
                    tensor.external_data.add(key=key, value=str(entry))
            if mappings is not None:
                release((weight,), mappings)
            del weight
            model.graph.initializer.append(tensor)


def _transposed_mapped(weight: torch.Tensor, mappings: FileMappings) -> bool:
    """Whether ``weight`` is a 2-D transpose of a contiguous tensor memory-mapped from a file and
    larger than two write blocks (an untied lm_head's weight after constant folding: llama-1b's
    32000 x 2048, 250 MiB)."""
    return (weight.dim() == 2 and weight.shape[0] > 1 and weight.shape[1] > 1 and weight.stride() == (1, weight.shape[0])
            and weight.numel() * weight.element_size() > 2 * WRITE_BLOCK_BYTES and is_mapped(weight, mappings))


def _write_transposed(data: Any, offset: int, weight: torch.Tensor, mappings: FileMappings) -> None:
    """Write the ``[H, V]`` ``weight``, the transpose of a mapped contiguous ``[V, H]`` source, in
    C order at ``offset`` of the open file ``data``: :data:`WRITE_BLOCK_BYTES` of the source's rows
    at a time are copied in tiles into a ``[H, block]`` buffer (:func:`_tiled_copy`) whose ``H``
    rows go to their places in the file (``os.pwrite``), and the source's pages are given back
    after each block. Row blocks of the ``[H, V]`` weight would each read every page of the
    source, so the whole source was resident until the end (llama-1b's lm_head: 250 MiB). Leaves
    the file's position at the end of the weight."""
    rows, columns = weight.shape
    item = weight.element_size()
    step = max(1, WRITE_BLOCK_BYTES // (rows * item))
    data.flush()
    descriptor = data.fileno()
    for start in range(0, columns, step):
        block = _tiled_copy(weight[:, start : start + step])
        raw = memoryview(_bytes_of(block))
        width = block.shape[1] * item
        for row in range(rows):
            piece, at = raw[row * width : (row + 1) * width], offset + (row * columns + start) * item
            while piece:
                written = os.pwrite(descriptor, piece, at)
                piece, at = piece[written:], at + written
        del raw, block
        release((weight,), mappings)
    data.seek(offset + rows * columns * item)


def embed_external_data(model: onnx.ModelProto, base_dir: str) -> None:
    """Read every external tensor of ``model`` (relative to ``base_dir``) into the proto."""
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(model, base_dir)


def _export_dynamo(module: torch.nn.Module, args: tuple[torch.Tensor, ...], spec: GraphSpec, workdir: str) -> onnx.ModelProto:
    dyn = torch.export.Dim.DYNAMIC
    shapes = tuple({i: dyn for i in t.dynamic_axes} or None for t in spec.inputs)
    path = os.path.join(workdir, "dynamo_export.onnx")
    with _quiet(), torch.no_grad():
        # One eager call first: modules that build state on their first call would build it
        # inside the trace, where torch.export captures it wrongly. transformers' LongRoPE
        # (phi3) creates ``long_inv_freq`` that way; traced cold, the graph's logits were off by
        # 4e-3 beyond original_max_position_embeddings, warmed they pass on both sides.
        module(*args)
        program = torch.onnx.export(
            module,
            args,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=(shapes,),
            opset_version=spec.opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
        program.save(path, external_data=True)
    return _load_without_data(workdir, "dynamo_export.onnx")


def export_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    spec: GraphSpec,
    backend: Backend,
    workdir: str,
    stream: WeightSource | None = None,
) -> onnx.ModelProto:
    """Trace ``module`` at ``args`` with ``backend`` and return the ONNX model (not yet stamped).

    ``stream``: the module's parameters are hollow and their weights are read from the
    checkpoint it names as they are written (TorchScript only; :mod:`onnxspec.build.streamed`).

    The exporter writes into a private folder under ``workdir``, removed before returning. The
    weights never pass through memory all at once: TorchScript's exporter writes the graph
    without them and onnxspec writes them from the traced tensors; dynamo's writes them as
    external data, moved without being loaded. Either way they end up, one tensor at a time, in
    ``workdir/<spec.filename>.data``, which the returned proto's ``location`` fields name
    (relative to ``workdir``); tensors under 1 KB stay in the proto.
    Whatever it prints is captured; when it fails, :class:`BackendError` carries a one-line
    reason and, in ``details``, the exception in full and the captured text. A full disk and
    running out of memory are not the exporter's failure and propagate unchanged.
    """
    scratch = tempfile.mkdtemp(prefix="trace-", dir=workdir)
    said: list[str] = []
    try:
        with _captured(said):
            if backend is Backend.TORCHSCRIPT:
                proto = _export_torchscript(module, args, spec, scratch, workdir, stream)
            elif stream is not None:
                raise SpecError("streamed weights are exported with the torchscript backend only; pass --backend torchscript")
            else:
                proto = _export_dynamo(module, args, spec, scratch)
                if _external_tensors(proto):
                    move_external_data(proto, scratch, workdir, spec.filename + ".data")
        return proto
    except (MemoryError, OnnxSpecError):
        raise
    except OSError as e:
        if e.errno in NO_SPACE:
            raise
        raise _backend_error(backend, e, said) from e
    except Exception as e:
        raise _backend_error(backend, e, said) from e
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _backend_error(backend: Backend, e: Exception, said: list[str]) -> BackendError:
    full = "".join(traceback.format_exception(e))
    output = "".join(said).strip()
    return BackendError(backend.value, one_line(e), full + (f"\nThe exporter's output:\n{output}" if output else ""))


def dim_names(model: onnx.ModelProto) -> Mapping[str, list[str | int | None]]:
    """Each graph input's and output's dims: symbol, size, or ``None`` when unknown."""
    out: dict[str, list[str | int | None]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in dims]
    return out
