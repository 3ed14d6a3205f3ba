"""Re-validate an export folder against PyTorch, at shapes the caller chooses.

:func:`validate_folder` takes a folder of ONNX graphs (written by onnxspec, or by another tool
in Optimum's layout) and the model they were exported from (a local folder or a Hub ID), and
runs every graph it can match against the PyTorch model, as an export validates what it
writes. It returns the same :class:`~onnxspec.judge.report.ExportReport`, and raises
:class:`~onnxspec.errors.ValidationError` (carrying the report) when a graph disagrees with
PyTorch or cannot be matched.

How the folder is read:

- the graphs are found by file name: the files onnxspec's plan for the model writes
  (``model.onnx``; ``encoder_model.onnx``, ``decoder_model.onnx``,
  ``decoder_with_past_model.onnx``, ``decoder_model_merged.onnx``), whichever are there, in
  the folder or, when only it holds graphs, its ``onnx/`` subfolder (transformers.js's layout);
- the task is ``task`` when given, else the one in the graphs' onnxspec contract (the
  ``onnxspec.contract`` metadata, or ``onnxspec_contract.json``), else inferred from the
  model's config, with a KV cache when the graphs take or return one (``past_key_values.*``,
  ``present.*``);
- each graph's inputs and outputs are matched by name against the spec onnxspec uses for that
  file; a graph whose inputs differ, or that lacks an output, is not run and the report says
  which names did not match; outputs the spec does not have are not checked (a note says so);
- the dtypes are read from the graphs (fp16, bf16, int32 ... inputs), unless given;
- a graph that runs a vocoder the model folder does not hold (SpeechT5's
  ``decoder_postnet_and_vocoder.onnx``) needs its folder as ``vocoder`` (``--vocoder PATH``):
  it is loaded and attached to the model as an export attaches it.

Nothing in the folder is changed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import onnx

from onnxspec.errors import SpecError, ValidationError
from onnxspec.judge.report import ExportReport, GraphReport
from onnxspec.judge.validate import runtime_for, validate_merged, validate_with_references
from onnxspec.pieces.axes import Kind
from onnxspec.pieces.shapes import DTypes, FloatDtype, Shapes, torch_dtype
from onnxspec.pipeline.hub import model_folder

__all__ = ["FolderGraph", "read_graphs", "validate_folder"]

Progress = Callable[[str, str], None]

_FLOATS = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
_INTS = {onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8"}


@attrs.frozen(kw_only=True)
class FolderGraph:
    """One ``.onnx`` file of a folder, read without its weights: its I/O names and element
    types, its onnxspec contract (``None`` when it has none) and what wrote it (``producer``:
    the torch exporter of an onnxspec graph, else the file's producer name and version)."""

    file: str
    inputs: Mapping[str, int] = attrs.field(converter=dict, hash=False)
    outputs: Mapping[str, int] = attrs.field(converter=dict, hash=False)
    contract: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    producer: str = ""


def graph_folder(folder: str | os.PathLike[str]) -> str:
    """Where the graphs of an export folder are: the folder itself, or its ``onnx/`` subfolder
    when only that holds ``.onnx`` files (transformers.js's layout)."""
    folder = os.fspath(folder)

    def has_graphs(path: str) -> bool:
        return os.path.isdir(path) and any(n.endswith(".onnx") for n in os.listdir(path))

    inner = os.path.join(folder, "onnx")
    return inner if not has_graphs(folder) and has_graphs(inner) else folder


def read_graphs(folder: str | os.PathLike[str]) -> tuple[FolderGraph, ...]:
    """The ``.onnx`` files directly in ``folder`` (sorted), their interfaces and contracts."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise SpecError(f"export folder {folder!r} does not exist (or is not a folder); pass the folder an export wrote")
    shared = _read_json(os.path.join(folder, "onnxspec_contract.json")) or {}
    found = []
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".onnx") and os.path.isfile(os.path.join(folder, n))):
        try:
            proto = onnx.load(os.path.join(folder, name), load_external_data=False)
        except Exception as e:  # a truncated or foreign file
            raise SpecError(f"{os.path.join(folder, name)} is not a readable ONNX file ({type(e).__name__}: {e})") from e
        initialized = {t.name for t in proto.graph.initializer}
        metadata = {p.key: p.value for p in proto.metadata_props}
        contract = json.loads(metadata["onnxspec.contract"]) if "onnxspec.contract" in metadata else shared.get(name)
        backend = metadata.get("onnxspec.backend")
        producer = backend or f"{proto.producer_name} {proto.producer_version}".strip()
        found.append(FolderGraph(
            file=name,
            inputs={v.name: v.type.tensor_type.elem_type for v in proto.graph.input if v.name not in initialized},
            outputs={v.name: v.type.tensor_type.elem_type for v in proto.graph.output},
            contract=contract,
            producer=producer,
        ))
        del proto
    if not found:
        raise SpecError(f"{folder!r} holds no .onnx file; pass the folder an export wrote (model.onnx, encoder_model.onnx ...)")
    return tuple(found)


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def graph_dtypes(graphs: Sequence[FolderGraph]) -> DTypes:
    """The dtypes an export wrote ``graphs`` with, read from their inputs and outputs."""
    types = [t for g in graphs for t in (*g.inputs.values(), *g.outputs.values())]
    floating = next((_FLOATS[t] for t in types if t in _FLOATS), "fp32")
    ints = [t for g in graphs for n, t in g.inputs.items() if n in ("input_ids", "attention_mask", "decoder_input_ids")]
    integer = next((_INTS[t] for t in ints if t in _INTS), "int64")
    return DTypes(int_dtype=integer, float_dtype=floating)


def _has_cache(graphs: Sequence[FolderGraph]) -> bool:
    return any(n.startswith("past_key_values") for g in graphs for n in g.inputs) or any(
        n.startswith("present") for g in graphs for n in g.outputs
    )


def _contract_task(graphs: Sequence[FolderGraph]) -> str | None:
    for g in graphs:
        if g.contract and g.contract.get("task"):
            task = str(g.contract["task"])
            cached = g.contract.get("use_past") or g.contract.get("use_past_in_inputs")
            return f"{task}-with-past" if cached and not task.endswith("-with-past") else task
    return None


@attrs.frozen(kw_only=True)
class _Planned:
    """A file onnxspec's plan writes: its spec, and for a merged decoder its two branches."""

    filename: str
    spec: Any
    branches: tuple[Any, ...] = ()


def _plan(spec: Any, monolith: bool) -> tuple[_Planned, ...]:
    """The files an export of ``spec`` writes, merged decoders included (the pipeline's plan)."""
    from onnxspec.pieces.spec import plan

    return tuple(_Planned(filename=g.filename, spec=g, branches=g.branches) for g in plan(spec, monolith=monolith))


def _match(graph: FolderGraph, inputs: Sequence[str], outputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Why ``graph`` cannot be run as the spec says (empty: it can), and notes on what is not checked."""
    problems, notes = [], []
    lacks = [n for n in inputs if n not in graph.inputs]
    unfed = [n for n in graph.inputs if n not in inputs]
    missing = [n for n in outputs if n not in graph.outputs]
    extra = [n for n in graph.outputs if n not in outputs]
    if lacks or unfed or missing:
        parts = []
        if lacks:
            parts.append(f"the spec's inputs {', '.join(lacks)} are not inputs of the graph")
        if unfed:
            parts.append(f"the graph's inputs {', '.join(unfed)} are not in the spec (nothing to feed them)")
        if missing:
            parts.append(f"the spec's outputs {', '.join(missing)} are not outputs of the graph")
        problems.append(
            "not run against PyTorch: its inputs and outputs do not match the spec onnxspec uses for this file: "
            + "; ".join(parts) + " (pass --task if the task inferred is not the one it was exported for)"
        )
    if extra:
        notes.append(f"{graph.file}: outputs {', '.join(extra)} are not in onnxspec's spec and were not checked")
    return problems, notes


def _check_vocoder(spec: Any, matched: Sequence[_Planned], vocoder: str | os.PathLike[str] | None) -> None:
    """A matched graph that runs a vocoder (SpeechT5's last file) needs its folder, as an export
    does; a folder with no such graph takes none."""
    from onnxspec.catalog.speecht5 import speecht5_postnet_and_vocoder

    who = f"{spec.model_type}/{spec.task}"
    runs = [p.filename for p in matched if getattr(getattr(p.spec, "call", None), "function", None) is speecht5_postnet_and_vocoder]
    if runs and vocoder is None:
        raise SpecError(
            f"{who}: the waveform comes from a HiFi-GAN vocoder, a checkpoint of its own ({', '.join(runs)} runs it); "
            "pass its folder as vocoder=PATH (--vocoder PATH), e.g. a download of microsoft/speecht5_hifigan"
        )
    if vocoder is not None and not runs:
        raise SpecError(f"{who}: vocoder={os.fspath(vocoder)!r} is given, but no graph of this folder runs a vocoder; leave it out")


def _names(tensors: Sequence[Any]) -> list[str]:
    return [t.name for t in tensors]


def _behavior(spec: Any) -> str:
    behavior = getattr(spec, "behavior", None)
    return str(getattr(behavior, "value", behavior or getattr(spec, "role", "")))


def _placeholders(graph: FolderGraph, checks: Sequence[Any]) -> tuple[tuple[Any, ...], list[str]]:
    """Leave out the cache-branch checks of the cross-attention cache outputs a merged decoder
    written by another tool fills with empty placeholders, and say so.

    Optimum's merged decoder returns ``present.*.encoder.*`` of a zero-size shape in its cache
    branch: runtimes keep the cross-attention cache of the first step (Optimum's ORTModel,
    transformers.js), so no runtime reads them. onnxspec's own merged decoder passes the cache
    inputs through, and is held to it (a graph with an onnxspec contract keeps every check).
    Only empty outputs are left out: a placeholder with values is still compared.
    """
    from onnxspec.pieces.cache_names import is_cross

    if graph.contract is not None:
        return tuple(checks), []
    skipped = [c for c in checks if c.shape_set.endswith("/cache") and is_cross(c.output) and 0 in tuple(c.onnx_shape)]
    if not skipped:
        return tuple(checks), []
    names = list(dict.fromkeys(c.output for c in skipped))
    note = (f"{graph.file}: in the cache branch, {', '.join(names)} are empty placeholders (shape "
            f"{tuple(skipped[0].onnx_shape)}): runtimes keep the first step's cross-attention cache; not checked")
    return tuple(c for c in checks if c not in skipped), [note]


def _verdicts(report: ExportReport) -> list[str]:
    """Per failing graph, in a few words: the outputs that disagree, or why it was not run."""
    verdicts = []
    for g in report.graphs:
        if g.passed:
            continue
        bad = list(dict.fromkeys(repr(c.output) for c in g.checks if not c.passed))
        what = [f"output{'s' if len(bad) > 1 else ''} {', '.join(bad)} disagree{'' if len(bad) > 1 else 's'} with PyTorch"] if bad else []
        verdicts.append(f"{g.filename}: " + "; ".join(what + list(g.problems)))
    return verdicts


def validate_folder(
    folder: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    task: str | None = None,
    spec: Any = None,
    shapes: Shapes | Sequence[Shapes] | None = None,
    dtypes: DTypes | None = None,
    atol: float | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    registry: Any = None,
    vocoder: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Re-validate the graphs of ``folder`` against the PyTorch model ``model`` (see the module doc).

    ``spec``: the spec the folder was exported with, when it is not the registered one of its
    task (a composed spec); it is bound to the model's config. ``shapes``: the shape set to run at (a :class:`Shapes`, or several); default: the shape
    sets an export validates at (other sizes than the traced ones). ``model`` is a local folder
    or a Hub ID (``revision``, ``cache_dir``: :func:`onnxspec.pipeline.hub.model_folder`).
    ``vocoder``: the folder of the vocoder a text-to-speech folder's last graph runs (SpeechT5's
    ``decoder_postnet_and_vocoder.onnx``), attached to the model as the export attached it;
    required when the folder holds such a graph, refused otherwise.
    Returns the report when every graph matched and passed; raises
    :class:`~onnxspec.errors.ValidationError` carrying it otherwise.
    """
    from onnxspec.build.merge import BRANCH_INPUT
    from onnxspec.build.wrappers import graph_module
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.catalog.registry import lookup
    from onnxspec.pieces.spec import with_tolerance
    from onnxspec.pieces.tasks import parse_task
    from onnxspec.pipeline.core import LOW_MEMORY_RUNTIME, low_memory_needed, resolve_spec, validation_session, versions
    from onnxspec.pipeline.loading import config_from_json, default_task, load_source_model, read_source

    start = time.perf_counter()
    say = progress or (lambda stage, detail: None)
    registry = REGISTRY if registry is None else registry
    folder = os.fspath(folder)
    say("resolve", os.path.basename(os.path.normpath(folder)))
    graphs = read_graphs(graph_folder(folder) if os.path.isdir(folder) else folder)
    by_file = {g.file: g for g in graphs}
    if task is not None:
        parse_task(task)
    source = read_source(model_folder(model, revision=revision, cache_dir=cache_dir, gguf_file=gguf_file), gguf_file,
                         trust_remote_code=trust_remote_code)
    config_json = source.config_json
    model_type = config_json["model_type"]
    config = config_from_json(config_json)
    chosen = task or _contract_task(graphs)

    def resolve(name: str | None) -> Any:
        return resolve_spec(model_type, config, name, registry, inferred_from=config_json, default_task=default_task(source))

    composed = spec is not None
    if composed:
        from onnxspec.pieces.spec import bind

        spec = bind(spec, config) if spec.dims is None else spec
    else:
        spec = resolve(chosen)
    if chosen is None and not composed:  # inferred: with a cache exactly when the graphs have one
        name = parse_task(spec.task).name
        full = f"{name}-with-past" if _has_cache(graphs) else name
        if full != spec.task and full in lookup(registry, model_type).tasks:
            spec = resolve(full)
    if atol is not None:
        spec = with_tolerance(spec, atol, outputs=["*"])
    planned = _plan(spec, monolith=False)
    if not any(p.filename in by_file for p in planned) and "model.onnx" in by_file and len(planned) > 1:
        try:
            planned = _plan(spec, monolith=True)
        except SpecError:
            pass
    matched = [p for p in planned if p.filename in by_file]
    notes = [f"{name}: not a file of onnxspec's plan for {spec.model_type}/{spec.task} "
             f"({', '.join(p.filename for p in planned)}); not validated" for name in by_file if name not in {p.filename for p in planned}]
    notes += [f"{p.filename}: in onnxspec's plan for {spec.model_type}/{spec.task}, but not in the folder" for p in planned
              if p.filename not in by_file]
    if not matched:
        raise SpecError(
            f"no graph of {folder!r} ({', '.join(by_file)}) is a file onnxspec writes for {spec.model_type}/{spec.task} "
            f"({', '.join(p.filename for p in planned)}); pass --task with the task the folder was exported for"
        )
    _check_vocoder(spec, matched, vocoder)
    dtypes = dtypes if dtypes is not None else graph_dtypes([by_file[p.filename] for p in matched])
    sets: tuple[Shapes, ...] | None = None
    traced = Shapes()
    if isinstance(shapes, Shapes):
        sets, traced = (shapes,), shapes
    elif shapes is not None:
        sets = tuple(shapes)
        traced = sets[0] if sets else traced

    say("load", str(model))
    module = load_source_model(source, spec.task, trust_remote_code=trust_remote_code)
    if vocoder is not None:  # before the dtype below, which converts it with the model
        from onnxspec.catalog.speecht5 import VOCODER_ATTRIBUTE
        from onnxspec.pipeline.loading import load_vocoder

        setattr(module, VOCODER_ATTRIBUTE, load_vocoder(vocoder))
    if spec.attn_implementation is not None and hasattr(module, "set_attn_implementation"):
        module.set_attn_implementation(spec.attn_implementation)
    if dtypes.float_dtype in (FloatDtype.FP16, FloatDtype.BF16):
        module = module.to(torch_dtype(Kind.FLOAT, dtypes))
    runtime = runtime_for(dtypes)
    reports: list[GraphReport] = []
    for p in matched:
        graph = by_file[p.filename]
        path = os.path.join(graph_folder(folder), p.filename)
        say("validate", p.filename)
        if p.branches:
            first, later = p.branches
            inputs = list(dict.fromkeys([*_names(first.inputs), *_names(later.inputs), BRANCH_INPUT]))
            outputs = _names(first.outputs)
        else:
            inputs, outputs = _names(p.spec.inputs), _names(p.spec.outputs)
        problems, more = _match(graph, inputs, outputs)
        notes += more
        # an fp16 graph whose weights' fp32 copies would not fit: the export's low-memory session
        low_memory = not problems and low_memory_needed(path, runtime, dtypes)
        checks: tuple[Any, ...] = ()
        seconds = 0.0
        if not problems:
            if p.branches:
                branches = ((False, "no-cache", graph_module(module, first), first), (True, "cache", graph_module(module, later), later))
                checks, found, seconds = validate_merged(
                    validation_session(path, runtime, low_memory=low_memory), branches, traced, dtypes, seed, p.filename, BRANCH_INPUT, shape_sets=sets
                )
                checks, more = _placeholders(graph, checks)
                notes += more
            else:
                checks, found, seconds, _ = validate_with_references(
                    lambda path=path, low=low_memory: validation_session(path, runtime, low_memory=low), graph_module(module, p.spec), p.spec, traced, dtypes, seed,
                    p.filename, shape_sets=sets,
                )
            problems = list(found)
        reports.append(GraphReport(
            filename=p.filename,
            behavior=_behavior(p.spec),
            use_past=bool(p.spec.use_past),
            use_past_in_inputs=bool(p.spec.use_past_in_inputs),
            backend=graph.producer or "unknown",
            runtime=LOW_MEMORY_RUNTIME if low_memory else runtime,
            trace_shapes=attrs.asdict(traced),
            export_seconds=0.0,
            validate_seconds=round(seconds, 4),
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            checks=tuple(checks),
            problems=tuple(problems),
        ))
    del module
    producers = sorted({by_file[p.filename].producer for p in matched if by_file[p.filename].producer})
    report = ExportReport(
        model_type=spec.model_type,
        task=spec.task,
        backend=", ".join(producers) or "unknown",
        output_dir=folder,
        graphs=tuple(reports),
        versions=versions(),
        seed=seed,
        seconds=round(time.perf_counter() - start, 3),
        files=(),
        source={"format": "gguf" if source.is_gguf else "transformers", "folder": os.path.abspath(source.folder),
                **({"gguf_file": source.gguf_file} if source.gguf_file else {}), "model": os.fspath(model)},
        notes=tuple(notes),
    )
    if not report.passed:
        raise ValidationError(f"re-validation of {folder} failed: " + "; ".join(_verdicts(report)), report)
    return report
