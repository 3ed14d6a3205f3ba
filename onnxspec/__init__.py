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
    "pieces.axes": ("Kind", "TensorSpec", "axes_view", "merge_specs", "rename", "symbol_size"),
    "pieces.shapes": ("DTypes", "FloatDtype", "IntDtype", "Shapes", "validation_shapes"),
    "pieces.normalize": ("Dims", "Normalizer"),
    "pieces.generators": ("DummyContext", "make_dummies"),
    "pieces.past": ("Direction", "PastKind", "PastLayout", "add_past_key_values", "past_specs"),
    "pieces.patches": ("Patch", "patched"),
    "pieces.spec": (
        "Behavior",
        "Call",
        "ExportSpec",
        "GraphIO",
        "GraphSpec",
        "ModelSpec",
        "bind",
        "contract",
        "contract_json",
        "describe",
        "graph_spec",
        "plan",
        "with_behavior",
        "with_graph",
        "with_opset",
        "with_criterion",
        "with_past",
        "with_tolerance",
    ),
    "pieces.kinds": (
        "GraphKind",
        "DECODER",
        "DECODER_FIRST_STEP",
        "DECODER_WITH_PAST",
        "EMBED_TOKENS",
        "ENCODER",
        "MERGED_DECODER",
        "SINGLE",
        "SINGLE_WITH_PAST",
        "VISION_ENCODER",
    ),
    "pieces.criteria": ("DEFAULT_CRITERIA", "NoiseBound", "Tolerance", "Verdict", "judge"),
    "pieces.tasks": ("SYNONYMS", "TASKS", "infer_task", "parse_task"),
    "catalog.registry": ("ModelEntry", "build_registry", "entry", "lookup", "spec_for", "supported_tasks"),
    "catalog.models": ("ENTRIES", "REGISTRY"),
    "build.exporters": ("Backend",),
    "judge.report": ("ExportReport", "GraphReport", "OutputCheck", "report_json"),
    "pipeline.loading": ("ModelSource", "load_model", "read_source"),
    "pipeline.core": ("STAGES", "export"),
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
_SUBMODULES = {"errors": "errors", "families": "catalog.families", "generators": "pieces.generators", "normalizers": "catalog.normalizers"}
_LAZY = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and keep the value as a module attribute."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"onnxspec.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"onnxspec.{_SUBMODULES[name]}")
    else:
        raise AttributeError(f"module 'onnxspec' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from onnxspec import errors
    from onnxspec.catalog import families, normalizers
    from onnxspec.pieces import generators
    from onnxspec.pieces.axes import Kind, TensorSpec, axes_view, merge_specs, rename, symbol_size
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
    from onnxspec.build.exporters import Backend
    from onnxspec.pieces.generators import DummyContext, make_dummies
    from onnxspec.pipeline.loading import ModelSource, load_model, read_source
    from onnxspec.catalog.models import ENTRIES, REGISTRY
    from onnxspec.pieces.normalize import Dims, Normalizer
    from onnxspec.pieces.past import Direction, PastKind, PastLayout, add_past_key_values, past_specs
    from onnxspec.pieces.patches import Patch, patched
    from onnxspec.pipeline.core import STAGES, export
    from onnxspec.catalog.registry import ModelEntry, build_registry, entry, lookup, spec_for, supported_tasks
    from onnxspec.judge.report import ExportReport, GraphReport, OutputCheck, report_json
    from onnxspec.pieces.shapes import DTypes, FloatDtype, IntDtype, Shapes, validation_shapes
    from onnxspec.pieces.spec import (
        Behavior,
        Call,
        ExportSpec,
        GraphIO,
        GraphSpec,
        ModelSpec,
        bind,
        contract,
        contract_json,
        describe,
        graph_spec,
        plan,
        with_behavior,
        with_graph,
        with_opset,
        with_criterion,
        with_past,
        with_tolerance,
    )
    from onnxspec.pieces.kinds import (
        DECODER,
        DECODER_FIRST_STEP,
        DECODER_WITH_PAST,
        EMBED_TOKENS,
        ENCODER,
        MERGED_DECODER,
        SINGLE,
        SINGLE_WITH_PAST,
        VISION_ENCODER,
        GraphKind,
    )
    from onnxspec.pieces.criteria import DEFAULT_CRITERIA, NoiseBound, Tolerance, Verdict, judge
    from onnxspec.pieces.tasks import SYNONYMS, TASKS, infer_task, parse_task
