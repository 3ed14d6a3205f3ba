"""Graph optimization and fp16 conversion of exported graphs with onnxruntime's tools.

Three transformations, applied in this order when several are asked for:

- ``fusions=MODEL_TYPE``: onnxruntime's transformer optimizer
  (``onnxruntime.transformers.optimizer.optimize_model``, ``model_type`` ``bert``, ``gpt2``,
  ... its ``MODEL_TYPES``), with its onnxruntime pass off (``opt_level=0``), so the result
  holds only its fusions (``Attention``, ``SkipLayerNormalization``, ``BiasGelu`` ...) and runs
  on any provider;
- ``fp16``: every float tensor but the graph's inputs and outputs converted to float16
  (``onnxruntime.transformers.float16.convert_float_to_float16`` with ``keep_io_types``, or the
  transformer optimizer's own converter after fusions), so the I/O contract is unchanged;
- ``level``: onnxruntime's graph optimizations (``basic``, ``extended`` or ``all``), the graph
  onnxruntime would run written out (``SessionOptions.optimized_model_filepath``). ``all``
  includes layout changes for this machine's CPU: onnxruntime warns that the file is meant for
  the machine that wrote it.

Fusions and graph levels compute the same function, so their result is judged by the export's
own validation (error against PyTorch in float64 within the same bounds); fp16 is lossy and is
judged by agreement (:mod:`onnxspec.post.agreement`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from onnxspec.build.graphs import external_data_files
from onnxspec.errors import SpecError, UnknownNameError
from onnxspec.post.agreement import DEFAULTS, Thresholds
from onnxspec.post.folder import PostReport, quiet_tools, transform_folder

__all__ = ["LEVELS", "fusion_types", "optimize", "optimize_file"]

LEVELS = ("basic", "extended", "all")
"""onnxruntime's graph optimization levels :func:`optimize_file` can write out."""

_EXTERNAL_ABOVE = 1_800_000_000


def fusion_types() -> tuple[str, ...]:
    """The model types onnxruntime's transformer optimizer knows (``--fusions``)."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    return tuple(sorted(MODEL_TYPES))


def _check(level: str | None, fusions: str | None) -> None:
    if level is not None and level not in LEVELS:
        raise UnknownNameError("optimization level", level, LEVELS, "Use --level basic, extended or all.")
    if fusions is not None and fusions not in fusion_types():
        raise UnknownNameError("transformer optimizer model type", fusions, fusion_types(),
                               "onnxruntime's transformer optimizer knows these model types.")


def _save(model: onnx.ModelProto, dst: Path) -> None:
    if model.ByteSize() > _EXTERNAL_ABOVE:
        onnx.save_model(model, os.fspath(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, os.fspath(dst))


def _external(path: Path) -> bool:
    """Whether an initializer of the graph at ``path`` (or of its subgraphs) is stored as external data."""
    return bool(external_data_files(onnx.load(os.fspath(path), load_external_data=False)))


def _write_level(src: Path, dst: Path, level: str) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = {
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.optimized_model_filepath = os.fspath(dst)
    # a graph with external data (every export over 8 MiB of weights) is written with its own
    # data file: otherwise onnxruntime writes the optimized graph pointing at the source's file,
    # which is not in the output folder
    if _external(src) or os.path.getsize(src) > _EXTERNAL_ABOVE:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(os.fspath(src), options, providers=["CPUExecutionProvider"])


def optimize_file(
    src: Path,
    dst: Path,
    *,
    level: str | None = None,
    fp16: bool = False,
    fusions: str | None = None,
    num_heads: int = 0,
    hidden_size: int = 0,
) -> None:
    """Write ``src`` optimized to ``dst``: ``fusions`` (transformer optimizer model type, with
    ``num_heads`` and ``hidden_size``, 0 to detect), then ``fp16``, then ``level`` (see the
    module docstring). Asking for nothing is an error."""
    _check(level, fusions)
    if level is None and not fp16 and fusions is None:
        raise SpecError("nothing to do: ask for a graph level (--level), fp16 (--fp16) or fusions (--fusions MODEL_TYPE)")
    with quiet_tools():
        _optimize(Path(src), Path(dst), level, fp16, fusions, num_heads, hidden_size)


def _optimize(src: Path, dst: Path, level: str | None, fp16: bool, fusions: str | None, num_heads: int, hidden_size: int) -> None:
    if fusions is None and not fp16:
        _write_level(src, dst, level)  # type: ignore[arg-type]
        return
    if fusions is not None:
        from onnxruntime.transformers.optimizer import optimize_model

        fused = optimize_model(os.fspath(src), model_type=fusions, num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        if fp16:  # the optimizer's own converter knows the fused operators' types
            fused.convert_float_to_float16(keep_io_types=True)
        model = fused.model
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(os.fspath(src)), keep_io_types=True)
    if level is None:
        _save(model, dst)
        return
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        step = Path(tmp) / src.name
        _save(model, step)
        del model
        _write_level(step, dst, level)


def _dims(folder: str) -> Mapping[str, int]:
    """``num_heads`` and ``hidden_size`` for the transformer optimizer, from the folder's config."""
    import json

    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config: Mapping[str, Any] = json.load(f)
    except (OSError, ValueError):
        return {}
    heads = config.get("num_attention_heads", config.get("n_head", 0))
    hidden = config.get("hidden_size", config.get("n_embd", 0))
    return {"num_heads": int(heads or 0), "hidden_size": int(hidden or 0)}


def optimize(
    folder: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    level: str | None = None,
    fp16: bool = False,
    fusions: str | None = None,
    model: str | os.PathLike[str] | None = None,
    thresholds: Thresholds | None = None,
    overwrite: bool = False,
) -> PostReport:
    """Optimize every graph of the export ``folder`` into ``output_dir`` and judge each against PyTorch.

    Graph levels and fusions are judged by the export's own validation (they must not change
    what the graph computes); ``fp16`` by agreement with ``thresholds`` (default
    ``agreement.DEFAULTS["fp16"]``). ``level=None``, ``fp16=False`` and no ``fusions`` means
    ``level="basic"``. Returns the :class:`PostReport` (also ``onnxspec_post.json``); raises
    :class:`~onnxspec.errors.ValidationError` when a graph fails (nothing is written then).
    """
    _check(level, fusions)
    if level is None and not fp16 and fusions is None:
        level = "basic"
    dims = _dims(os.fspath(folder)) if fusions is not None else {}
    settings: dict[str, Any] = {"kind": "optimize", "level": level, "fp16": fp16, "fusions": fusions}
    if fusions is not None:
        settings["fusion_dims"] = dict(dims)
    return transform_folder(
        folder, output_dir,
        lambda src, dst: optimize_file(src, dst, level=level, fp16=fp16, fusions=fusions, **dims),
        transformation=settings, judged_by="agreement" if fp16 else "lossless",
        thresholds=(thresholds or DEFAULTS["fp16"]) if fp16 else None, model=model, overwrite=overwrite,
    )
