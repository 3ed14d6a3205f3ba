"""The export pipeline: stages as values, run by one runner, with atomic output.

``export(model_or_folder, output_dir, task=..., spec=...)`` runs::

    resolve -> load -> (for each sub-graph: dummies -> trace -> check -> validate)
            -> (for each merged decoder: trace -> check -> validate) -> write

Each step is a :class:`~onnxspec.pipeline.stages.Stage` value (a name, the file it works on, and a
function from one state to the next) run by :func:`~onnxspec.pipeline.stages.run_stages`, which names a
failing stage and the stages done before it and chains the cause. ``export`` itself only
checks its arguments into a :class:`_Request`, runs the ``resolve`` stage (which reads the
config, picks the spec and plans the files), builds the remaining stage tuple from that plan
with :func:`export_stages`, and runs it. Resolution comes first and alone because the
per-graph stages are data built from its plan; the second run carries on the stages done.

The state handed from stage to stage is a frozen record (:class:`_State`): a stage is a step
from one record to the next, and what it reads and adds is in its signature; what stays fixed
for a run (the request, the resolved spec and plan, the temporary folder) is bound into the
stages (:class:`_Job`), not carried in the state. One thing is handed over mutably, and only
between two stages: the traced ``onnx.ModelProto`` travels from ``trace`` to ``check`` in a
one-element list that ``check`` empties, so the graph is freed before the checker reads the
saved file back (a frozen field would keep it alive through the previous state, which the
runner still holds: up to 1.8 GB more at the peak).

Files are built in a temporary folder beside ``output_dir`` (:mod:`onnxspec.pipeline.output`) and moved
into place only when every graph validated; a failed export leaves the destination as it was.
The temporary folder is named ``.<name>.onnxspec-tmp-<pid>-<random>``: if the process is
killed, the next export to the same destination removes it (and puts back a previous output
caught mid-swap). A validation failure is an error; its graphs and report are kept in
``<output_dir>.onnxspec-failed``.

The pipeline never changes a model it is given: the training flag of each submodule and the
attention implementation of each config are put back when ``export`` returns or fails, and an
fp16 or bf16 export converts a copy (``copy.deepcopy``), since fp32 -> fp16 -> fp32 is lossy. That copy
costs the model's size again in fp32 while it is made (the fp16 copy then keeps half of it)
for the length of the export. A model loaded from a folder is the pipeline's own: once PyTorch's
references of the last file are made, its weights go to the ``meta`` device before onnxruntime
opens that file, so the two copies of the weights are never in memory together at the end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import onnx
import torch

from onnxspec import __version__
from onnxspec.errors import (
    BackendError, ExportError, ModelLoadError, SpecError, TraceError, UnsupportedTaskError, ValidationError,
)
from onnxspec.build.exporters import (
    RELEASE_FROM,
    Backend,
    available_backends,
    backends_to_try,
    embed_external_data,
    export_graph,
    move_external_data,
    releases_pages,
    resolve_backend,
    weight_bytes,
)
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.pipeline.loading import (
    ModelSource,
    config_from_json,
    default_task,
    exported_config_json,
    load_hollow_model,
    load_model,  # re-exported: onnxspec.pipeline.core.load_model predates onnxspec.pipeline.loading
    load_source_model,
    load_vocoder,
    read_source,
    save_gguf_tokenizer,
)
from onnxspec.build.graphs import all_nodes, external_data_files
from onnxspec.build.merge import BRANCH_INPUT, merge_decoders
from onnxspec.build.pages import giving_back, release_heap, released_after_forward
from onnxspec.build.streamed import WeightSource
from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.speecht5 import VOCODER_ATTRIBUTE, needs_vocoder
from onnxspec.pipeline.output import check_output_dir, keep_failed, make_workdir, move_into_place, recover_stale, remove_created
from onnxspec.pieces.patches import patched
from onnxspec.catalog.registry import Registry, lookup, spec_for
from onnxspec.judge.reference import heads_in_slices
from onnxspec.judge.report import ExportReport, GraphReport, OutputCheck, write_report
from onnxspec.pieces.axes import Kind, TensorSpec
from onnxspec.pieces.shapes import DTypes, FloatDtype, Shapes, torch_dtype, validation_shapes
from onnxspec.catalog.rope import boundary as rope_boundary
from onnxspec.pipeline.sidefiles import copy_side_files, side_files
from onnxspec.pieces.spec import GraphSpec, ModelSpec, bind, check_versions, contract, plan, with_tolerance
from onnxspec.pipeline.stages import STAGES, Fault, Progress, Stage, run_stages
from onnxspec.pieces.tasks import head_classes, infer_task, parse_task
from onnxspec.judge.validate import SHAPE_SET_NAMES, References, check_graph, runtime_for, stamp, validate_merged, validate_with_references
from onnxspec.build.wrappers import graph_module

__all__ = [
    "MIN_OPSET",
    "STAGES",
    "export",
    "export_stages",
    "load_model",
    "low_memory_needed",
    "max_opset",
    "plan",  # re-exported from onnxspec.pieces.spec: the pipeline runs what it returns
    "resolve_spec",
    "validation_session",
    "versions",
]

EXTERNAL_DATA_THRESHOLD = 8 * 2**20
"""Graphs whose weights exceed this many bytes (8 MiB) are saved with external data, in
``<file>.data``: onnxruntime memory-maps it when validating (file-backed pages, not a copy), and
the weights the exporter wrote never pass through memory again (protobuf caps a file at 2 GB)."""


MIN_OPSET = 14
"""Lowest opset onnxspec exports at: the attention of every registered model traces to
``aten::scaled_dot_product_attention``, which the torch exporter supports from opset 14 on
(measured on bert, gpt2, llama, t5 and vit: opsets 9, 11 and 13 fail in tracing)."""


def versions() -> dict[str, str]:
    """Versions of everything that shapes an export, recorded in every report."""
    import onnxruntime
    import transformers

    return {
        "onnxspec": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _exporter_max_opset(backend: Backend) -> int:
    from torch.onnx import _constants

    if backend is Backend.TORCHSCRIPT:
        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    return int(getattr(_constants, "ONNX_MAX_OPSET", 23))


def max_opset(backend: Backend) -> int:
    """The highest opset both the installed onnx and the torch exporter ``backend`` support."""
    return min(onnx.defs.onnx_opset_version(), _exporter_max_opset(backend))


def _check_opset(opset: int, backend: Backend, who: str) -> None:
    """Refuse an opset below :data:`MIN_OPSET` or above what onnx and the exporter support."""
    top = max_opset(backend)
    if opset < MIN_OPSET:
        raise SpecError(
            f"{who}: opset {opset} is too low: attention (aten::scaled_dot_product_attention) needs opset {MIN_OPSET} "
            f"or higher; pass an opset between {MIN_OPSET} and {top}, or leave it out to use the spec's default"
        )
    if opset > top:
        raise SpecError(
            f"{who}: opset {opset} is higher than this installation supports (onnx {onnx.__version__} goes up to "
            f"{onnx.defs.onnx_opset_version()}, the torch {backend.value} exporter up to {_exporter_max_opset(backend)}); "
            f"pass an opset between {MIN_OPSET} and {top}"
        )


def resolve_spec(
    model_type: str,
    config: Any,
    task: str | None,
    registry: Registry,
    *,
    inferred_from: Mapping[str, Any] | None = None,
    default_task: str = "feature-extraction",
) -> ModelSpec:
    """The bound spec for a model type and config; ``task=None`` infers it from ``architectures``
    (``default_task`` when there is none; a task the model type lacks falls back to
    ``feature-extraction``)."""
    if task is None:
        e = lookup(registry, model_type)
        name = infer_task(inferred_from or {}, e.architecture_tasks, default=default_task)
        if name not in {parse_task(t).name for t in e.tasks}:
            name = "feature-extraction"
        task = f"{name}-with-past" if f"{name}-with-past" in e.tasks else name
    return bind(spec_for(registry, model_type, task), config)


def _task_heads(task: str, model_type: str) -> set[str]:
    """Names of the model classes that load ``task``'s head for ``model_type``: those the task's
    auto classes map it to, and its named head (:func:`~onnxspec.pieces.tasks.head_classes`)."""
    import transformers

    names: set[str] = set()
    for class_name in head_classes(task, model_type):
        mapping = getattr(getattr(transformers, class_name, None), "_model_mapping", None)
        if mapping is None:  # not an auto class: a head loaded by its own class name (NAMED_HEADS)
            names.add(class_name)
            continue
        found = getattr(mapping, "_model_mapping", {}).get(model_type)
        names.update(found if isinstance(found, (list, tuple)) else ([found] if found else []))
    return names


def _check_head(config_json: Mapping[str, Any], task: str, model_type: str, registry: Registry) -> None:
    """Refuse a folder whose saved head is for another task (its new head would be random).

    A saved head passes when the task's own auto classes load that very class (a semantic
    segmentation head serves ``image-segmentation`` too).
    """
    if task == "feature-extraction" or not config_json.get("architectures"):
        return
    saved = infer_task(config_json, lookup(registry, model_type).architecture_tasks)
    if saved in ("feature-extraction", task) or config_json["architectures"][0] in _task_heads(task, model_type):
        return
    raise UnsupportedTaskError(
        f"the model in this folder has a {saved!r} head ({config_json['architectures'][0]}), but task {task!r} needs "
        f"another one, which would be randomly initialised; export with --task {saved} (or feature-extraction)"
    )


def _check_gguf_head(source: ModelSource, task: str) -> None:
    """Refuse a task whose head a GGUF file cannot hold: llama.cpp's files keep a language model's
    head (or none), so any other head would be randomly initialised."""
    saved = default_task(source)
    if task not in ("feature-extraction", saved):
        raise UnsupportedTaskError(
            f"the GGUF file {source.gguf_file!r} holds a language model (a {saved!r} head), but task {task!r} needs "
            f"another head, which would be randomly initialised; export with --task {saved} (or feature-extraction)"
        )


def _save(model: onnx.ModelProto, path: str, threshold: int) -> None:
    """Save ``model`` at ``path``: with its weights in ``<path>.data`` when they exceed ``threshold``
    bytes, else in the one file. The trace stage leaves the exporter's weights in ``<path>.data``
    already (:func:`~onnxspec.build.exporters.export_graph`); they stay there and tensors still
    in the proto (a merged decoder's) are appended one at a time; a graph under the threshold
    reads them back into the one file."""
    folder, data = os.path.dirname(path), os.path.basename(path) + ".data"
    if weight_bytes(model) > threshold:
        move_external_data(model, folder, folder, data)
    else:
        embed_external_data(model, folder)
        if os.path.exists(os.path.join(folder, data)):
            os.remove(os.path.join(folder, data))
    onnx.save_model(model, path)


@attrs.frozen(kw_only=True, eq=False)
class _Request:
    """What :func:`export` was asked for: its arguments, as given (checked in ``resolve``)."""

    model: torch.nn.Module | None
    folder: str | None
    output_dir: str
    task: str | None
    spec: ModelSpec | None
    shapes: Shapes
    dtypes: DTypes
    backend: Backend | str | None
    opset: int | None
    atol: float | None
    monolith: bool
    merged: bool | None
    overwrite: bool
    trust_remote_code: bool
    gguf_file: str | None
    seed: int
    registry: Registry
    validation_shapes: tuple[Shapes, ...] | None
    external_data_threshold: int
    start: float
    stream_weights: bool | None = None
    vocoder: str | None = None


@attrs.frozen(kw_only=True, eq=False)
class _Resolved:
    """What ``resolve`` decided: the bound spec, where the model is read from, the backend, and
    the plan (the graphs to export and the merged decoders to build from them)."""

    spec: ModelSpec
    source: ModelSource | None
    backend: Backend
    files: tuple[GraphSpec, ...]
    """Every file to write, in order: the traced graphs, then the merged ones."""
    tries: tuple[Backend, ...] = ()
    """The backends each graph's trace tries, in order (``backend``, then any fallback)."""
    stream: str = ""
    """Why the weights are streamed from the checkpoint (the model is built hollow, see
    :mod:`onnxspec.build.streamed`), or ``""`` when the model is loaded."""
    shape_sets: tuple[Shapes, ...] | Mapping[str, Shapes] | None = None
    """The shape sets validation runs at: the caller's, or (``None``) the default three; for a
    rotary embedding that switches at a length (dynamic NTK, LongRoPE), the three named the
    same but growing across that length."""

    @property
    def merges(self) -> tuple[GraphSpec, ...]:
        """The merged files: joined from two traced ones, not traced themselves."""
        return tuple(g for g in self.files if g.kind.is_merged)


@attrs.frozen(kw_only=True, eq=False)
class _Job:
    """What stays fixed once resolved, bound into every later stage."""

    request: _Request
    resolved: _Resolved
    workdir: str


@attrs.frozen(kw_only=True, eq=False)
class _InFlight:
    """One graph between its stages: what ``dummies``, ``trace`` and ``check`` leave for the next."""

    module: torch.nn.Module | None = None
    dummies: Mapping[str, torch.Tensor] = attrs.field(factory=dict)
    proto: list[onnx.ModelProto] = attrs.field(factory=list)  # at most one; ``check`` empties it (see the module docstring)
    export_seconds: float = 0.0
    problems: tuple[str, ...] = ()
    interface_ok: bool = False
    path: str = ""
    backend: str = ""
    fallback: str = ""


@attrs.frozen(kw_only=True, eq=False)
class _State:
    """The state stages pass on: the plan (after ``resolve``), the model (after ``load``), the
    graph in flight and the reports of the graphs done (then the export's, after ``write``)."""

    resolved: _Resolved | None = None
    model: torch.nn.Module | None = None
    graph: _InFlight = attrs.field(factory=_InFlight)
    reports: tuple[GraphReport, ...] = ()
    report: ExportReport | None = None
    references: Mapping[str, References] = attrs.field(factory=dict)
    """PyTorch's runs from validating a graph a merged decoder is built from, by file name; kept
    until the last merge that needs them is validated (they may be large)."""
    weights: WeightSource | None = None
    """Where a hollow model's weights are read from (streamed exports only)."""


def _choose_backend(requested: Backend | str | None, spec: ModelSpec, dtypes: DTypes) -> tuple[Backend, bool]:
    """The backend to trace with, and whether someone named it (then it gets no fallback).

    The caller's backend wins; else the spec's (``ModelSpec.backend``); else dynamo for fp16
    and bf16, TorchScript otherwise (while torch has it). bf16 needs dynamo: TorchScript's
    exporter has no bf16 path through the LayerNormalization and attention it writes.
    """
    named = requested if requested is not None else spec.backend
    chosen = resolve_backend(named)
    low_precision = dtypes.float_dtype in (FloatDtype.FP16, FloatDtype.BF16)
    if named is None and low_precision and Backend.DYNAMO in available_backends():
        # TorchScript writes LayerNormalization with mixed fp16/fp32 operands, which
        # onnxruntime refuses to load; torch.export's exporter keeps them consistent.
        chosen = Backend.DYNAMO
    if dtypes.float_dtype is FloatDtype.BF16 and chosen is not Backend.DYNAMO:
        by = "you asked for" if requested is not None else f"spec {spec.model_type}/{spec.task} asks for"
        raise SpecError(
            f"float dtype bf16 is exported with the dynamo backend only, but {by} {chosen.value!r}"
            + ("" if Backend.DYNAMO in available_backends() else " and dynamo is not installed (install onnxscript and onnx-ir)")
            + "; leave the backend out (or pass --backend dynamo), or export fp32 / fp16"
        )
    return chosen, named is not None


def _refuse_unsupported(model_type: str, task: str | None) -> None:
    """Refuse, with the reason, a pair onnxspec knows it cannot export correctly (models.UNSUPPORTED)."""
    name = parse_task(task).name if task is not None else None
    for (mt, t), reason in UNSUPPORTED.items():
        if mt == model_type and (t == "*" or t == name or (name is None and mt not in REGISTRY)):
            what = f"{model_type}/{name}" if name else model_type
            raise UnsupportedTaskError(
                f"{what} cannot be exported correctly: {reason}. Run `onnxspec models` for what is supported"
            )


def _check_vocoder(request: _Request, spec: ModelSpec) -> None:
    """A spec whose graphs run a vocoder (SpeechT5's last file) needs one: the folder given as
    ``vocoder``, or a caller's model with one attached as ``model.vocoder``; other specs take none."""
    who = f"{spec.model_type}/{spec.task}"
    attached = request.model is not None and getattr(request.model, VOCODER_ATTRIBUTE, None) is not None
    if needs_vocoder(spec) and request.vocoder is None and not attached:
        raise SpecError(
            f"{who}: the waveform comes from a HiFi-GAN vocoder, a checkpoint of its own; pass its folder as vocoder=PATH "
            "(--vocoder PATH), e.g. a download of microsoft/speecht5_hifigan"
        )
    if request.vocoder is not None and not needs_vocoder(spec):
        raise SpecError(f"{who}: vocoder={request.vocoder!r} is given, but no graph of this export runs a vocoder; leave it out")


def _resolve(request: _Request, state: _State) -> _State:
    """Check the output folder and the arguments, read the config, pick the spec, plan the files."""
    recover_stale(os.path.abspath(request.output_dir))
    check_output_dir(request.output_dir, request.overwrite)
    dtypes, folder, gguf_file, registry, task = request.dtypes, request.folder, request.gguf_file, request.registry, request.task
    resolve_backend(request.backend)  # an unknown or missing backend is refused before any model is read
    if folder is None and gguf_file is not None:
        raise SpecError(
            f"gguf_file={gguf_file!r} names a file in a model folder, but a torch.nn.Module was passed; "
            "pass the folder holding the GGUF file instead of a model, or leave gguf_file out"
        )
    source = read_source(folder, gguf_file, trust_remote_code=request.trust_remote_code) if folder is not None else None
    config_json = source.config_json if source is not None else request.model.config.to_dict()  # type: ignore[union-attr]
    model_type = config_json["model_type"]
    spec = request.spec
    if spec is None:
        _refuse_unsupported(model_type, task)
        lookup(registry, model_type)
        config = request.model.config if source is None else config_from_json(config_json)  # type: ignore[union-attr]
        spec = resolve_spec(
            model_type,
            config,
            task,
            registry,
            inferred_from=config_json,
            default_task="feature-extraction" if source is None else default_task(source),
        )
    elif spec.dims is None:
        spec = bind(spec, request.model.config if folder is None else config_json)  # type: ignore[union-attr]
    if source is not None and source.is_gguf:
        _check_gguf_head(source, spec.task)
    elif source is not None:
        _check_head(config_json, spec.task, model_type, registry)
    _check_vocoder(request, spec)
    chosen_backend, named = _choose_backend(request.backend, spec, dtypes)
    if request.opset is not None:
        spec = attrs.evolve(spec, opset=request.opset)
    _check_opset(spec.opset, chosen_backend, f"{spec.model_type}/{spec.task}")
    if request.atol is not None:
        spec = with_tolerance(spec, request.atol, outputs=["*"])
    if chosen_backend is Backend.DYNAMO and spec.attn_implementation is None and model_type == "t5":
        spec = attrs.evolve(spec, attn_implementation="eager")
    check_versions(spec, versions())
    files = plan(spec, merged=request.merged, monolith=request.monolith)
    edge = rope_boundary(request.model.config if source is None else config_from_json(config_json), switching_only=True)  # type: ignore[union-attr]
    shape_sets = request.validation_shapes
    if shape_sets is None and edge is not None:
        shape_sets = dict(zip(SHAPE_SET_NAMES, validation_shapes(request.shapes, boundary=edge), strict=True))
    stream = _stream_reason(request, source, files, dtypes)
    if stream and needs_vocoder(spec):  # the hollow model is built without the vocoder the last file runs
        if request.stream_weights is True:
            raise SpecError(f"{spec.model_type}/{spec.task}: cannot stream the weights from the checkpoint: the export also "
                            "runs a vocoder, a checkpoint of its own, which only a loaded model carries; leave --stream-weights out")
        stream = ""
    tries = backends_to_try(chosen_backend, named=named)
    if stream:
        if request.backend is not None and resolve_backend(request.backend) is not Backend.TORCHSCRIPT:
            raise SpecError(f"streamed weights ({stream}) are exported with the torchscript backend only; "
                            "leave --backend out or pass --backend torchscript")
        chosen_backend, tries = Backend.TORCHSCRIPT, (Backend.TORCHSCRIPT,)
    resolved = _Resolved(
        spec=spec, source=source, backend=chosen_backend, files=files, shape_sets=shape_sets, tries=tries, stream=stream,
    )
    return attrs.evolve(state, resolved=resolved)


STREAM_HEADROOM = 0.6
"""A folder's weights are streamed by default when their fp32 bytes exceed this share of the
memory available: a loaded model's export peaks at about 1.6x them (a folder is loaded in fp32,
an fp16 export converts it after)."""


def _stream_reason(request: _Request, source: ModelSource | None, files: Sequence[GraphSpec], dtypes: DTypes) -> str:
    """Why this export streams its weights from the checkpoint, or ``""`` when it loads the model.

    ``stream_weights=True`` asks for it, ``False`` refuses it, ``None`` streams a safetensors
    folder whose weights would not fit (:data:`STREAM_HEADROOM`). Streaming needs a transformers
    folder of safetensors files, one graph per traced file and no merged decoder (merging reads
    both decoders whole), and an fp32 or fp16 export."""
    if request.stream_weights is False:
        return ""
    asked = request.stream_weights is True
    problem = ""
    if source is None:
        problem = "a torch.nn.Module was passed (its weights are in memory already); pass its saved folder"
    elif source.is_gguf:
        problem = f"{source.gguf_file!r} is a GGUF file, whose weights are quantized"
    elif any(g.kind.is_merged for g in files):
        problem = "a merged decoder reads both decoders whole; pass merged=False (--no-merged)"
    elif dtypes.float_dtype is FloatDtype.BF16:
        problem = "bf16 is exported with the dynamo backend, which traces real weights; export fp32 or fp16"
    if problem:
        if asked:
            raise SpecError(f"cannot stream the weights from the checkpoint: {problem}")
        return ""
    from onnxspec.build.streamed import checkpoint_bytes
    from onnxspec.judge.reference import available_memory

    if asked:
        return "asked for"
    try:
        size = checkpoint_bytes(source.folder)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no safetensors checkpoint: the model is loaded as usual
        return ""
    free = available_memory()
    if free is not None and size > STREAM_HEADROOM * free:
        return f"the fp32 weights take {size / 2**30:.1f} GiB, {free / 2**30:.1f} GiB of memory is available"
    return ""


def _load(job: _Job, state: _State) -> _State:
    """The model to trace: the caller's (a copy for fp16 and bf16) or the one loaded from the folder,
    or, streaming, the folder's model built hollow (its weights stay in the checkpoint)."""
    request, spec, source = job.request, job.resolved.spec, job.resolved.source
    if job.resolved.stream:
        try:
            model, weights = load_hollow_model(
                source, spec.task, torch_dtype(Kind.FLOAT, request.dtypes), trust_remote_code=request.trust_remote_code,  # type: ignore[arg-type]
            )
        except ModelLoadError as e:
            if request.stream_weights:
                raise
            raise ModelLoadError(f"{e} (the weights are streamed because {job.resolved.stream}; "
                                 "stream_weights=False (--no-stream-weights) loads the model instead)") from e
        if spec.attn_implementation is not None and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(spec.attn_implementation)
        return attrs.evolve(state, model=model, weights=weights)
    low = request.dtypes.float_dtype in (FloatDtype.FP16, FloatDtype.BF16)
    if source is None:
        model = copy.deepcopy(request.model) if low else request.model
        model = model.eval()  # type: ignore[union-attr]
    else:
        model = load_source_model(source, spec.task, trust_remote_code=request.trust_remote_code)
    if request.vocoder is not None:  # a caller's model gets it back without (see export)
        setattr(model, VOCODER_ATTRIBUTE, load_vocoder(request.vocoder))
    if spec.attn_implementation is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(spec.attn_implementation)
    if low:
        model = model.to(torch_dtype(Kind.FLOAT, request.dtypes))
    return attrs.evolve(state, model=model)


def _dummies(job: _Job, sub: GraphSpec, state: _State) -> _State:
    """The graph's dummy inputs, and the module calling the model as the graph does."""
    request = job.request
    ctx = context(request.shapes, request.dtypes, sub.dims, past=sub.past, padding_side=sub.padding_side)
    dummies = make_dummies(sub.inputs, sub.generators, ctx, request.seed)
    return attrs.evolve(state, graph=_InFlight(module=graph_module(state.model, sub), dummies=dummies))  # type: ignore[arg-type]


def _trace(job: _Job, sub: GraphSpec, state: _State) -> _State:
    """Trace the graph's module at its dummies with the chosen exporter, or its fallback.

    The fallback is per graph: a graph TorchScript traces keeps its (much faster) export, and
    only a graph it cannot trace pays for torch.export. No backend left raises
    :class:`TraceError`, naming each failure in one line and the fix.
    """
    t0 = time.perf_counter()
    tries = job.resolved.tries or (job.resolved.backend,)
    failures: list[BackendError] = []
    for backend in tries:
        try:
            with patched(sub.patches):
                proto = export_graph(state.graph.module, tuple(state.graph.dummies.values()), sub, backend, job.workdir,  # type: ignore[arg-type]
                                     stream=state.weights)
        except BackendError as e:
            failures.append(e)
            continue
        fallback = f"{failures[0].backend}: {failures[0].reason}" if failures else ""
        graph = attrs.evolve(state.graph, proto=[proto], export_seconds=time.perf_counter() - t0, backend=backend.value,
                             fallback=fallback)
        return attrs.evolve(state, graph=graph)
    raise TraceError(f"{sub.model_type}/{sub.task}", sub.filename, tuple(failures), _trace_fix(job, tries)) from failures[-1]


def _trace_fix(job: _Job, tries: tuple[Backend, ...]) -> str:
    """What to do when every backend in ``tries`` failed."""
    debug = "--debug shows the exporters' full output"
    if tries == (Backend.TORCHSCRIPT,):
        if Backend.DYNAMO not in available_backends():
            return f"install onnxscript and onnx-ir so that onnxspec can fall back to the dynamo exporter; {debug}"
        return (f"export with backend='dynamo' (--backend dynamo), or leave the backend out so that onnxspec falls back "
                f"to it; {debug}")
    if tries == (Backend.DYNAMO,) and Backend.TORCHSCRIPT in available_backends() and job.request.dtypes.float_dtype is FloatDtype.FP32:
        return (f"try backend='torchscript' (--backend torchscript), or give the spec a Patch replacing the code the "
                f"exporter cannot trace (README: Adding an architecture); {debug}")
    return (f"the model's code cannot be traced as is: give its spec a Patch replacing the part the exporters refuse "
            f"(README: Adding an architecture); {debug}")


def _check(job: _Job, sub: GraphSpec, state: _State) -> _State:
    """Check the graph against its spec, stamp its contract, save it, run onnx's checker.
    A merged file's metadata also names the two files it joins."""
    metadata = {"onnxspec.version": __version__, "onnxspec.backend": state.graph.backend or job.resolved.backend.value}
    if sub.kind.is_merged:
        first, later = sub.branches
        metadata["onnxspec.merged_from"] = f"{first.filename} ({BRANCH_INPUT}=False), {later.filename} ({BRANCH_INPUT}=True)"
    proto = state.graph.proto.pop()
    problems = check_graph(proto, sub, job.request.dtypes)
    interface_ok = [v.name for v in proto.graph.input] == [t.name for t in sub.inputs] and [
        v.name for v in proto.graph.output
    ] == [t.name for t in sub.outputs]
    stamp(proto, sub, job.request.dtypes, metadata)
    path = os.path.join(job.workdir, sub.filename)
    _save(proto, path, job.request.external_data_threshold)
    del proto
    onnx.checker.check_model(path)
    return attrs.evolve(state, graph=attrs.evolve(state.graph, problems=tuple(problems), interface_ok=interface_ok, path=path))


LOW_MEMORY_RUNTIME = "onnxruntime (unoptimized, low-memory)"
"""``GraphReport.runtime`` of a graph validated by the low-memory session of :func:`_session`:
onnxruntime's CPU provider with graph optimizations off (``ORT_DISABLE_ALL``), no memory arena and
``PRIORITY_BASED`` execution order."""


def _session(path: str, runtime: str = "onnxruntime", *, low_memory: bool = False) -> Any:
    """The runtime that validates the graph at ``path``: onnxruntime's CPU provider, or onnx's
    reference evaluator for what onnxruntime cannot run (bf16: :func:`onnxspec.judge.validate.runtime_for`).

    ``low_memory``: the session for an fp16 graph whose weights' fp32 copies do not fit in memory
    (:func:`_fp16_upcast_room`). The CPU provider has no fp16 MatMul: it puts a Cast to fp32 before
    each one, and its graph optimizations fold the Casts of the weights into fp32 initializers in
    anonymous memory when the session opens (4 bytes a weight). With optimizations off each Cast
    runs right before its MatMul; without the memory arena, and in ``PRIORITY_BASED`` order, its
    fp32 output is freed once the MatMul has read it, so memory holds the memory-mapped fp16
    weights and about one fp32 weight at a time. The graph then runs as written, unfused, which
    the report says (:data:`LOW_MEMORY_RUNTIME`)."""
    if runtime != "onnxruntime":
        from onnxspec.judge.validate import reference_session

        return reference_session(path)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # onnxruntime's CPU provider memory-maps a graph's external data and uses the mapped bytes
    # as the initializers; prepacking would copy every MatMul weight into anonymous memory (a
    # second copy of the weights for a few validation runs). Without it the weights stay
    # file-backed pages the kernel can reclaim, and the session opens faster.
    options.add_session_config_entry("session.disable_prepacking", "1")
    # validation runs the graph a few times, between PyTorch's runs in the same process: idle
    # onnxruntime threads that spin waiting for the next op only take the cores from PyTorch's
    # threads and from each other (three bert-base runs: 0.9 s without spinning, 1.4 s with it,
    # on two busy cores); waiting threads sleep instead
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # the memory pattern plans, at a run's input shapes, one block for all the run's buffers,
    # allocated when a later run has the same shapes: validation runs each set once, so the
    # block only adds to the peak where two sets feed a graph the same shapes (the tiny
    # Whisper's encoder at large and decode: +100 MiB, its [3, 4, 1500, 1500] attention tensors)
    options.enable_mem_pattern = False
    # the memory arena keeps what a run freed for later runs, never for the process: a large
    # set's buffers (gemma-3-270m: the head's 2-D product, 72 MiB) stayed resident through the
    # decode run and PyTorch's judging after it (the onnxruntime runs' peak 0.92 -> 0.79 GiB);
    # without it each buffer goes back to the C heap, large ones to the system, when freed. A
    # graph with less external data than RELEASE_FROM (a small model, whose weights' pages are
    # kept too) keeps the arena: its runs reuse the blocks instead of faulting in fresh pages
    # (the tiny Whisper's encoder, 300 MB of attention buffers a run: 0.2-0.3 s of CPU more
    # without it)
    data = _data_files(path)
    options.enable_cpu_mem_arena = not (data or low_memory)
    if low_memory:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED

    def opened() -> Any:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    # a run reads every mapped weight: the pages of the data file are given back while it runs
    # and after, so the weights are not all resident at once (a small graph keeps them)
    return giving_back(opened, data) if data else opened()


def _data_files(path: str) -> list[str]:
    """The files holding the external data of the graph at ``path`` if they take
    :data:`~onnxspec.build.exporters.RELEASE_FROM` bytes or more together, else none."""
    if not os.path.isfile(path):
        return []  # onnxruntime says what is missing
    folder = os.path.dirname(os.path.abspath(path))
    named = external_data_files(onnx.load(path, load_external_data=False))
    files = sorted(f for f in (os.path.join(folder, n) for n in named) if os.path.isfile(f))
    return files if sum(os.path.getsize(f) for f in files) >= RELEASE_FROM else []


_NOT_RUN = ("not run against PyTorch: the graph's interface differs from the spec",)


def _releasable(job: _Job, sub: GraphSpec) -> bool:
    """Whether the torch weights can be dropped once PyTorch's references of ``sub`` are made,
    before onnxruntime opens the graph: the pipeline loaded the model itself (a caller's model is
    never touched) and ``sub`` is the last file, so no later graph or merged decoder runs it.
    The weights then go to the ``meta`` device; the write stage reads only the configs."""
    return job.resolved.source is not None and job.resolved.files[-1] is sub


def _fp16_upcast_room(path: str) -> str:
    """Why onnxruntime's CPU provider, as it is set up by default, cannot open the fp16 graph at
    ``path`` in the memory available, or ``""``. It has no fp16 MatMul and converts each fp16
    weight a MatMul or Gemm reads (in the graph or in its subgraphs: a merged decoder's branches)
    into an fp32 copy in anonymous memory when the session opens (measured: 1.31 GB for a Llama
    layer of Llama-2-7B's width and its 32000-word head, 4 bytes a weight); a graph whose copies
    take more than 3/4 of the available memory is validated by the low-memory session instead
    (``_session(..., low_memory=True)``), which makes one copy at a time as the graph runs."""
    from onnxspec.judge.reference import available_memory

    model = onnx.load(path, load_external_data=False)
    fp16 = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    read = {name for node in all_nodes(model.graph) if node.op_type in ("MatMul", "Gemm") for name in node.input if name in fp16}
    need = 0
    for name in read:
        count = 1
        for d in fp16[name].dims:
            count *= d
        need += 4 * count
    free = available_memory()
    if free is None or need <= 0.75 * free:
        return ""
    return (f"onnxruntime's CPU provider makes an fp32 copy of every fp16 MatMul weight when it opens the graph: "
            f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB of memory is available")


def low_memory_needed(path: str, runtime: str, dtypes: DTypes) -> bool:
    """Whether the graph at ``path`` is validated by the low-memory session (``validation_session(...,
    low_memory=True)``, reported as :data:`LOW_MEMORY_RUNTIME`): an fp16 graph run by onnxruntime
    whose weights' fp32 copies would not fit (:func:`_fp16_upcast_room`). ``onnxspec validate``
    decides the same way."""
    return bool(runtime == "onnxruntime" and dtypes.float_dtype is FloatDtype.FP16 and _fp16_upcast_room(path))


validation_session = _session
"""The session an export validates a graph with (:func:`_session`), under the name
:mod:`onnxspec.post.recheck` opens it by."""


def _low_memory(graph: _InFlight, runtime: str, dtypes: DTypes) -> bool:
    """Whether the written graph is validated by the low-memory session (:func:`low_memory_needed`)."""
    return bool(graph.interface_ok and low_memory_needed(graph.path, runtime, dtypes))


def _validate(job: _Job, sub: GraphSpec, state: _State) -> _State:
    """Run the saved graph with onnxruntime against the PyTorch module at the validation shapes."""
    request, graph = job.request, state.graph
    runtime = runtime_for(request.dtypes)
    low_memory = _low_memory(graph, runtime, request.dtypes)
    if graph.interface_ok:
        # the session opens only once PyTorch's references are made (float64 included), so the
        # graph's weights and the reference run are not in memory at the same time
        release = _releasable(job, sub)

        def session() -> Any:
            if release:
                state.model.to("meta")  # type: ignore[union-attr]
            release_heap()  # what PyTorch's references freed, before onnxruntime maps the weights
            return _session(graph.path, runtime, low_memory=low_memory)

        # checkpoint pages given back module by module (a small model keeps them: releases_pages),
        # a large mapped head's a slice of rows at a time (heads_in_slices)
        give_back = state.weights is not None or releases_pages(graph.module)  # type: ignore[arg-type]
        with released_after_forward(graph.module) if give_back else contextlib.nullcontext(), \
                heads_in_slices(graph.module) if give_back else contextlib.nullcontext():  # type: ignore[arg-type]
            checks, run_problems, seconds, ran = validate_with_references(
                session, graph.module, sub, request.shapes, request.dtypes, request.seed,  # type: ignore[arg-type]
                sub.filename, shape_sets=job.resolved.shape_sets,
            )
    else:  # the graph cannot be fed the spec's inputs; the check's problems say why
        checks, run_problems, seconds, ran = (), _NOT_RUN, 0.0, None
    references = dict(state.references)
    if ran is not None and _merges_needing(job.resolved.merges, sub.filename):
        references[sub.filename] = ran  # a merged decoder's branch is fed these very inputs
    float64_how = ran.float64_how if ran is not None else ""
    del ran
    report = _graph_report(
        request, graph, sub.filename, sub, (sub.inputs, sub.outputs), (checks, run_problems, seconds),
        backend=graph.backend or job.resolved.backend.value, runtime=LOW_MEMORY_RUNTIME if low_memory else runtime,
    )
    report = attrs.evolve(report, float64_reference=float64_how)
    return attrs.evolve(state, graph=_InFlight(), reports=(*state.reports, report), references=references)


def _graph_report(
    request: _Request,
    graph: _InFlight,
    filename: str,
    spec: GraphSpec,
    interface: tuple[Sequence[TensorSpec], Sequence[TensorSpec]],
    outcome: tuple[tuple[OutputCheck, ...], tuple[str, ...], float],
    *,
    backend: str,
    runtime: str,
) -> GraphReport:
    """The report of one written graph: how it was traced, its interface, what validation found."""
    checks, run_problems, seconds = outcome
    return GraphReport(
        filename=filename,
        behavior=spec.role,
        kind=spec.kind.name,
        use_past=spec.use_past,
        use_past_in_inputs=spec.use_past_in_inputs,
        backend=backend,
        fallback=graph.fallback,
        runtime=runtime,
        trace_shapes={k: v for k, v in attrs.asdict(request.shapes).items()},
        export_seconds=round(graph.export_seconds, 4),
        validate_seconds=round(seconds, 4),
        inputs=tuple(t.name for t in interface[0]),
        outputs=tuple(t.name for t in interface[1]),
        checks=checks,
        problems=graph.problems + run_problems,
    )


def _merges_needing(merges: Sequence[GraphSpec], filename: str) -> tuple[GraphSpec, ...]:
    """The merged decoders built from the graph ``filename``."""
    return tuple(m for m in merges if filename in (b.filename for b in m.branches))


def _merge(job: _Job, merged: GraphSpec, state: _State) -> _State:
    """The ``trace`` stage of a merged decoder: join the two decoders already written and validated."""
    t0 = time.perf_counter()
    first, later = merged.branches
    proto = merge_decoders(
        onnx.load(os.path.join(job.workdir, first.filename)), onnx.load(os.path.join(job.workdir, later.filename))
    )
    return attrs.evolve(state, graph=_InFlight(proto=[proto], export_seconds=time.perf_counter() - t0))


def _validate_merged(job: _Job, merged: GraphSpec, state: _State) -> _State:
    """Run each branch of a merged decoder against the PyTorch module of the graph it came from."""
    request, graph = job.request, state.graph
    first, later = merged.branches
    runtime = runtime_for(request.dtypes)
    low_memory = _low_memory(graph, runtime, request.dtypes)
    if graph.interface_ok:
        session = _session(graph.path, runtime, low_memory=low_memory)
        branches = (
            (False, "no-cache", graph_module(state.model, first), first),  # type: ignore[arg-type]
            (True, "cache", graph_module(state.model, later), later),  # type: ignore[arg-type]
        )
        checks, run_problems, seconds = validate_merged(
            session, branches, request.shapes, request.dtypes, request.seed, merged.filename, BRANCH_INPUT,
            shape_sets=job.resolved.shape_sets,
            reuse=(state.references.get(first.filename), state.references.get(later.filename)),
        )
        del session
    else:
        checks, run_problems, seconds = (), _NOT_RUN, 0.0
    merges = job.resolved.merges
    later_merges = merges[merges.index(merged) + 1 :]
    references = {
        name: kept for name, kept in state.references.items() if any(_merges_needing(later_merges, name))
    }
    report = _graph_report(
        request, graph, merged.filename, merged, (merged.inputs, merged.outputs), (checks, run_problems, seconds),
        backend=job.resolved.backend.value, runtime=LOW_MEMORY_RUNTIME if low_memory else runtime,
    )
    return attrs.evolve(state, graph=_InFlight(), reports=(*state.reports, report), references=references)


def _write(job: _Job, state: _State) -> _State:
    """Write the report, the contract and the model's side files into the temporary folder.

    A report with failures moves the folder to ``<output_dir>.onnxspec-failed`` and raises
    :class:`ValidationError`; moving a good folder into place is left to :func:`export`, after
    the stage is done (the ``fault`` seam runs before anything reaches the destination).
    """
    request, resolved = job.request, job.resolved
    spec, dtypes = resolved.spec, request.dtypes
    report = ExportReport(
        model_type=spec.model_type,
        task=spec.full_task,
        backend=resolved.backend.value,
        output_dir=os.path.abspath(request.output_dir),
        graphs=state.reports,
        versions=versions(),
        seed=request.seed,
        seconds=round(time.perf_counter() - request.start, 3),
        source={**_source_record(resolved.source),
                **({"weights": f"streamed from the safetensors shards ({resolved.stream})"} if resolved.stream else {})},
    )
    files, notes = _write_side_files(job.workdir, resolved.source, state.model, resolved.files, dtypes)  # type: ignore[arg-type]
    warning = notes.pop("warning", "")
    report = attrs.evolve(report, files=tuple(sorted(files)), source={**report.source, **notes}, notes=(warning,) if warning else ())
    report = write_report(report, job.workdir)  # with its runtimes, wall time and the folder's size
    if report.failures:  # an export run with no shape set is written, marked not validated
        failed_dir = keep_failed(job.workdir, request.output_dir)
        raise ValidationError(
            f"{spec.model_type}/{spec.task}: the exported graphs disagree with PyTorch:\n  - "
            + "\n  - ".join(report.failures)
            + f"\nNothing was written to {request.output_dir!r}; the graphs and the full report are in {failed_dir!r}",
            report,
        )
    return attrs.evolve(state, report=report)


_GRAPH_STAGES: tuple[tuple[str, Callable[..., _State]], ...] = (
    ("dummies", _dummies),
    ("trace", _trace),
    ("check", _check),
    ("validate", _validate),
)
"""The stages of each traced file, as ``(name, step(job, graph_spec, state))``."""
_MERGE_STAGES: tuple[tuple[str, Callable[..., _State]], ...] = (
    ("trace", _merge),
    ("check", _check),
    ("validate", _validate_merged),
)
"""The stages of each merged file, as ``(name, step(job, graph_spec, state))``."""


def export_stages(job: _Job) -> tuple[Stage[_State], ...]:
    """The stages after ``resolve``, as data: ``load``; ``dummies``, ``trace``, ``check``,
    ``validate`` for each planned graph; ``trace`` (the merge), ``check``, ``validate`` for each
    merged decoder; ``write``. Per-graph stages carry the graph's file name as their detail."""
    request, resolved = job.request, job.resolved
    source = resolved.source
    load = Stage(
        name="load",
        detail=type(request.model).__name__ if source is None else source.path,
        run=partial(_load, job),
    )
    per_file = tuple(
        Stage(name=name, detail=sub.filename, run=partial(step, job, sub))
        for sub in resolved.files
        for name, step in (_MERGE_STAGES if sub.kind.is_merged else _GRAPH_STAGES)
    )
    return (load, *per_file, Stage(name="write", run=partial(_write, job)))


@attrs.frozen(kw_only=True, eq=False)
class _Saved:
    """What the pipeline may change on a caller's model, as it was: each submodule's training
    flag and each config's attention implementation (``set_attn_implementation`` sets
    ``_attn_implementation_internal`` on the model's config, its sub-configs and those of its
    sub-models)."""

    training: tuple[tuple[torch.nn.Module, bool], ...]
    attention: tuple[tuple[Any, Any], ...]


_ATTN = "_attn_implementation_internal"


def _configs(model: torch.nn.Module) -> list[Any]:
    """Every config reachable from ``model``: its submodules' and their sub-configs, once each."""
    found: dict[int, Any] = {}
    todo = [getattr(m, "config", None) for m in model.modules()]
    while todo:
        config = todo.pop()
        if config is None or id(config) in found or not hasattr(config, _ATTN):
            continue
        found[id(config)] = config
        todo += [getattr(config, key, None) for key in getattr(config, "sub_configs", {}) or {}]
    return list(found.values())


def _remember(model: torch.nn.Module) -> _Saved:
    return _Saved(
        training=tuple((m, m.training) for m in model.modules()),
        attention=tuple((c, getattr(c, _ATTN)) for c in _configs(model)),
    )


def _restore(saved: _Saved) -> None:
    for module, training in saved.training:
        module.training = training
    for config, attention in saved.attention:
        setattr(config, _ATTN, attention)


def export(
    model_or_folder: str | os.PathLike[str] | torch.nn.Module,
    output_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    spec: ModelSpec | None = None,
    shapes: Shapes = Shapes(),
    dtypes: DTypes = DTypes(),
    backend: Backend | str | None = None,
    opset: int | None = None,
    atol: float | None = None,
    monolith: bool = False,
    merged: bool | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    seed: int = 0,
    registry: Registry = REGISTRY,
    validation_shapes: tuple[Shapes, ...] | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    stream_weights: bool | None = None,
    vocoder: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    _fault: Fault | None = None,
) -> ExportReport:
    """Export a model (or a local model folder) to ONNX, validate every graph, write atomically.

    Returns the :class:`ExportReport`. Raises :class:`ValidationError` (carrying the report)
    when any graph disagrees with PyTorch, :class:`ExportError` naming the stage on other
    failures, and the input errors of :mod:`onnxspec.errors` on bad input; in every failure
    the destination is left as it was.

    A folder is read as a transformers checkpoint (``config.json`` and weights) or as a GGUF
    file: ``gguf_file`` names one, and a folder without ``config.json`` holding a single
    ``*.gguf`` file reads that one (see :mod:`onnxspec.pipeline.loading`).

    A ``torch.nn.Module`` given is left as it was (training flags, attention implementation,
    weights and dtypes); an fp16 or bf16 export works on a copy of it (see the module docstring).
    bf16 graphs are traced with dynamo and validated with onnx's reference evaluator, since
    onnxruntime's CPU provider cannot run them (``GraphReport.runtime`` says which ran).

    Seq2seq ``-with-past`` exports also write ``decoder_model_merged.onnx`` (the two decoders
    in one graph, validated on both branches); ``merged=False`` skips it, ``merged=True``
    insists on it (see :func:`onnxspec.pieces.spec.plan`).

    ``stream_weights``: build the folder's model hollow and read each weight from its safetensors
    shards only when it is written or run (a model larger than memory; see
    :mod:`onnxspec.build.streamed`). ``None`` streams when the weights would not fit in the memory
    available, ``True`` insists (or raises :class:`SpecError` saying why not), ``False`` loads.

    ``vocoder``: the folder of the vocoder a text-to-speech export runs last (SpeechT5's
    ``decoder_postnet_and_vocoder.onnx``: a ``SpeechT5HifiGan``), attached to the model as
    ``model.vocoder`` for the export (a caller's model gets back what it had). Required by such
    an export unless the caller's model has a vocoder attached already; refused by others.
    """
    module = model_or_folder if isinstance(model_or_folder, torch.nn.Module) else None
    request = _Request(
        model=module,
        folder=None if module is not None else os.fspath(model_or_folder),  # type: ignore[arg-type]
        output_dir=os.fspath(output_dir),
        task=task,
        spec=spec,
        shapes=shapes,
        dtypes=dtypes,
        backend=backend,
        opset=opset,
        atol=atol,
        monolith=monolith,
        merged=merged,
        overwrite=overwrite,
        trust_remote_code=trust_remote_code,
        gguf_file=gguf_file,
        seed=seed,
        registry=registry,
        validation_shapes=validation_shapes,
        external_data_threshold=external_data_threshold,
        start=time.perf_counter(),
        stream_weights=stream_weights,
        vocoder=os.fspath(vocoder) if vocoder is not None else None,
    )
    saved = _remember(module) if module is not None else None
    own_vocoder = getattr(module, VOCODER_ATTRIBUTE, None) if module is not None else None
    workdir, created, finished = "", [], False
    try:
        resolved = run_stages((Stage(name="resolve", run=partial(_resolve, request)),), _State(), progress=progress, fault=_fault)
        workdir, created = make_workdir(request.output_dir)
        job = _Job(request=request, resolved=resolved.state.resolved, workdir=workdir)  # type: ignore[arg-type]
        ran = run_stages(export_stages(job), resolved.state, progress=progress, fault=_fault, done=resolved.done,
                         memory=resolved.memory)
        report = _with_stage_memory(workdir, ran.state.report, ran.memory)  # type: ignore[arg-type]
        try:
            move_into_place(workdir, request.output_dir)
        except OSError as e:
            raise ExportError("write", ran.done, f"cannot move the finished export into {request.output_dir!r}: {e}") from e
        finished = True
        return report
    finally:
        if workdir and not finished:
            shutil.rmtree(workdir, ignore_errors=True)
            remove_created(created)
        if saved is not None:
            _restore(saved)
        if module is not None and vocoder is not None:  # the vocoder the pipeline attached goes, the caller's own stays
            if own_vocoder is not None:
                setattr(module, VOCODER_ATTRIBUTE, own_vocoder)
            elif hasattr(module, VOCODER_ATTRIBUTE):
                delattr(module, VOCODER_ATTRIBUTE)


def _with_stage_memory(workdir: str, report: ExportReport, memory: Mapping[str, int]) -> ExportReport:
    """``report`` with each stage's peak memory, rewritten into the folder's report file (the
    ``write`` stage wrote it before its own peak was known)."""
    if not memory:
        return report
    return write_report(attrs.evolve(report, stage_memory=memory), workdir)


def _source_record(source: ModelSource | None) -> dict[str, str]:
    """What the report says the model was read from."""
    if source is None:
        return {"format": "module"}
    if source.gguf_file is None:
        return {"format": "transformers", "folder": os.path.abspath(source.folder)}
    return {
        "format": "gguf",
        "folder": os.path.abspath(source.folder),
        "gguf_file": source.gguf_file,
        "weights": "dequantized to float32 when loaded",
    }


def _write_side_files(
    workdir: str,
    source: ModelSource | None,
    model: torch.nn.Module,
    graphs: Sequence[GraphSpec],
    dtypes: DTypes,
) -> tuple[list[str], dict[str, str]]:
    """Write the files beside the graphs; return every file name and notes for the report.

    A transformers folder's config, tokenizer and processor files are copied. A GGUF file holds
    them all as metadata: its config (without the quantization marks), generation config and
    tokenizer are written from what transformers rebuilt, so the folder is usable by a runtime.
    """
    files = [g.filename for g in graphs]
    notes: dict[str, str] = {}
    if source is not None and not source.is_gguf:
        side = side_files(source.folder, source.config_json)
        files += copy_side_files(side, workdir)
        if side.warning:
            notes["warning"] = side.warning
    if source is not None and source.is_gguf:
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.to_json_file(os.path.join(workdir, "generation_config.json"))
            files.append("generation_config.json")
        written, problem = save_gguf_tokenizer(source, workdir)
        files += [n for n in written if n not in files]
        notes["tokenizer"] = problem or "saved from the GGUF metadata: " + ", ".join(written)
    if "config.json" not in files:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(exported_config_json(model), f, indent=2, sort_keys=True)
            f.write("\n")
        files.append("config.json")
    contracts = {g.filename: contract(g, dtypes) for g in graphs}
    with open(os.path.join(workdir, "onnxspec_contract.json"), "w", encoding="utf-8") as f:
        json.dump(contracts, f, indent=2, sort_keys=True)
    files += ["onnxspec_contract.json", "onnxspec_report.json"]
    files += [n for n in os.listdir(workdir) if n.endswith(".onnx.data")]
    return files, notes


