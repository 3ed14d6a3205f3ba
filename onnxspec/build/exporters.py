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

import onnx
import torch

from onnxspec.pieces.axes import axes_view
from onnxspec.errors import NO_SPACE, BackendError, OnnxSpecError, SpecError
from onnxspec.pieces.spec import GraphSpec

__all__ = ["Backend", "available_backends", "backends_to_try", "default_backend", "export_graph", "resolve_backend"]


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


def _export_torchscript(module: torch.nn.Module, args: tuple[torch.Tensor, ...], spec: GraphSpec, workdir: str) -> onnx.ModelProto:
    dynamic = {**axes_view(spec.inputs), **axes_view(spec.outputs)}
    path = os.path.join(workdir, "torchscript_export.onnx")
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            args,
            path,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes={k: v for k, v in dynamic.items() if v},
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return _load_and_remove(workdir, "torchscript_export.onnx")


def _load_and_remove(workdir: str, filename: str) -> onnx.ModelProto:
    """Load an exporter's file (with any external data) into memory; the caller deletes workdir."""
    return onnx.load(os.path.join(workdir, filename), load_external_data=True)


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
    return _load_and_remove(workdir, "dynamo_export.onnx")


def export_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    spec: GraphSpec,
    backend: Backend,
    workdir: str,
) -> onnx.ModelProto:
    """Trace ``module`` at ``args`` with ``backend`` and return the ONNX model (not yet stamped).

    The exporter writes into a private folder under ``workdir``, removed before returning.
    Whatever it prints is captured; when it fails, :class:`BackendError` carries a one-line
    reason and, in ``details``, the exception in full and the captured text. A full disk and
    running out of memory are not the exporter's failure and propagate unchanged.
    """
    scratch = tempfile.mkdtemp(prefix="trace-", dir=workdir)
    said: list[str] = []
    try:
        with _captured(said):
            if backend is Backend.TORCHSCRIPT:
                return _export_torchscript(module, args, spec, scratch)
            return _export_dynamo(module, args, spec, scratch)
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
