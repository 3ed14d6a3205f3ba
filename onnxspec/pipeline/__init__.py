"""The export pipeline: the stage runner, model loading, side files, atomic output, and the
stages that resolve, load, trace, check, validate and write (:mod:`onnxspec.pipeline.core`)."""

from onnxspec.pipeline.core import (
    MIN_OPSET,
    STAGES,
    export,
    export_stages,
    load_model,
    max_opset,
    plan,
    resolve_spec,
    versions,
)

__all__ = [
    "MIN_OPSET",
    "STAGES",
    "export",
    "export_stages",
    "load_model",
    "max_opset",
    "plan",
    "resolve_spec",
    "versions",
]
