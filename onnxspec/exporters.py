"""The two torch exporters, driven by the same spec, and the graph stamping that follows.

``torchscript`` (``torch.onnx.export(..., dynamo=False)``) is the default while the installed
torch has it: on small models it is an order of magnitude faster. ``dynamo``
(``torch.onnx.export(..., dynamo=True)``) traces with torch.export; every dynamic axis becomes
``Dim.DYNAMIC`` and the graph's symbolic dims are renamed to the spec's symbols afterwards.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping

import onnx
import torch

from onnxspec.axes import axes_view
from onnxspec.errors import OnnxSpecError, SpecError
from onnxspec.spec import ExportSpec

__all__ = ["Backend", "available_backends", "default_backend", "export_graph", "resolve_backend"]


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation and tracer warnings (they are not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_torchscript(module: torch.nn.Module, args: tuple[torch.Tensor, ...], spec: ExportSpec, workdir: str) -> onnx.ModelProto:
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


def _export_dynamo(module: torch.nn.Module, args: tuple[torch.Tensor, ...], spec: ExportSpec, workdir: str) -> onnx.ModelProto:
    dyn = torch.export.Dim.DYNAMIC
    shapes = tuple({i: dyn for i in t.dynamic_axes} or None for t in spec.inputs)
    path = os.path.join(workdir, "dynamo_export.onnx")
    with _quiet(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
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
    spec: ExportSpec,
    backend: Backend,
    workdir: str,
) -> onnx.ModelProto:
    """Trace ``module`` at ``args`` with ``backend`` and return the ONNX model (not yet stamped).

    The exporter writes into a private folder under ``workdir``, removed before returning.
    """
    scratch = tempfile.mkdtemp(prefix="trace-", dir=workdir)
    try:
        if backend is Backend.TORCHSCRIPT:
            return _export_torchscript(module, args, spec, scratch)
        return _export_dynamo(module, args, spec, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def dim_names(model: onnx.ModelProto) -> Mapping[str, list[str | int | None]]:
    """Each graph input's and output's dims: symbol, size, or ``None`` when unknown."""
    out: dict[str, list[str | int | None]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in dims]
    return out
