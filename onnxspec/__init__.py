"""onnxspec: export Hugging Face transformers models to ONNX from composable specs, and prove
every export correct against PyTorch.

The public API, re-exported from the module of each kind of piece::

    from onnxspec import REGISTRY, spec_for, with_tolerance, export

    spec = with_tolerance(spec_for(REGISTRY, "bert", "text-classification"), 1e-4)
    report = export("./my-bert", "./my-bert-onnx", spec=spec)

Names are imported on first use (most pieces need torch, which takes seconds to import), so
``import onnxspec`` and ``onnxspec --help`` stay fast. Each name is resolved once, then it is
an ordinary module attribute.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives: one module per kind of piece.
_FROM: dict[str, tuple[str, ...]] = {
    "axes": ("Kind", "TensorSpec", "axes_view", "merge_specs", "rename", "symbol_size"),
    "shapes": ("DTypes", "FloatDtype", "IntDtype", "Shapes", "validation_shapes"),
    "normalize": ("Dims", "Normalizer"),
    "generators": ("DummyContext", "make_dummies"),
    "past": ("Direction", "PastKind", "PastLayout", "add_past_key_values", "past_specs"),
    "patches": ("Patch", "patched"),
    "spec": (
        "Behavior",
        "Call",
        "ExportSpec",
        "GraphIO",
        "Split",
        "bind",
        "contract",
        "contract_json",
        "describe",
        "with_behavior",
        "with_graph",
        "with_opset",
        "with_criterion",
        "with_past",
        "with_tolerance",
    ),
    "criteria": ("DEFAULT_CRITERIA", "NoiseBound", "Tolerance", "Verdict", "judge"),
    "tasks": ("SYNONYMS", "TASKS", "infer_task", "parse_task"),
    "registry": ("ModelEntry", "build_registry", "entry", "lookup", "spec_for", "supported_tasks"),
    "models": ("ENTRIES", "REGISTRY"),
    "exporters": ("Backend",),
    "report": ("ExportReport", "GraphReport", "OutputCheck", "report_json"),
    "loading": ("ModelSource", "load_model", "read_source"),
    "pipeline": ("STAGES", "export"),
    "errors": (
        "ConfigError",
        "ExportError",
        "ModelLoadError",
        "OnnxSpecError",
        "OutputDirError",
        "SpecError",
        "UnknownNameError",
        "UnsupportedTaskError",
        "ValidationError",
    ),
}
_SUBMODULES = ("errors", "families", "generators", "normalizers")
_LAZY = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and keep the value as a module attribute."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"onnxspec.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"onnxspec.{name}")
    else:
        raise AttributeError(f"module 'onnxspec' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from onnxspec import errors, families, generators, normalizers
    from onnxspec.axes import Kind, TensorSpec, axes_view, merge_specs, rename, symbol_size
    from onnxspec.errors import (
        ConfigError,
        ExportError,
        ModelLoadError,
        OnnxSpecError,
        OutputDirError,
        SpecError,
        UnknownNameError,
        UnsupportedTaskError,
        ValidationError,
    )
    from onnxspec.exporters import Backend
    from onnxspec.generators import DummyContext, make_dummies
    from onnxspec.loading import ModelSource, load_model, read_source
    from onnxspec.models import ENTRIES, REGISTRY
    from onnxspec.normalize import Dims, Normalizer
    from onnxspec.past import Direction, PastKind, PastLayout, add_past_key_values, past_specs
    from onnxspec.patches import Patch, patched
    from onnxspec.pipeline import STAGES, export
    from onnxspec.registry import ModelEntry, build_registry, entry, lookup, spec_for, supported_tasks
    from onnxspec.report import ExportReport, GraphReport, OutputCheck, report_json
    from onnxspec.shapes import DTypes, FloatDtype, IntDtype, Shapes, validation_shapes
    from onnxspec.spec import (
        Behavior,
        Call,
        ExportSpec,
        GraphIO,
        Split,
        bind,
        contract,
        contract_json,
        describe,
        with_behavior,
        with_graph,
        with_opset,
        with_criterion,
        with_past,
        with_tolerance,
    )
    from onnxspec.criteria import DEFAULT_CRITERIA, NoiseBound, Tolerance, Verdict, judge
    from onnxspec.tasks import SYNONYMS, TASKS, infer_task, parse_task
