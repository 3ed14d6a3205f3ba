"""The export pipeline: one function, named stages, atomic output.

``export(model_or_folder, output_dir, task=..., spec=...)`` runs::

    resolve -> load -> (for each sub-graph: dummies -> trace -> check -> validate) -> write

A failure names its stage and the stages done before it, and chains the cause. Files are built
in a temporary folder beside ``output_dir`` and moved into place only when every graph
validated; a failed export leaves the destination as it was. The temporary folder is named
``.<name>.onnxspec-tmp-<pid>-<random>``: if the process is killed, the next export to the same
destination removes it (and puts back a previous output caught mid-swap). A validation failure
is an error; its graphs and report are kept in ``<output_dir>.onnxspec-failed``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import onnx
import torch

from onnxspec import __version__
from onnxspec.errors import (
    ExportError,
    OnnxSpecError,
    OutputDirError,
    SpecError,
    UnsupportedTaskError,
    ValidationError,
)
from onnxspec.exporters import Backend, available_backends, export_graph, resolve_backend
from onnxspec.generators import context, make_dummies
from onnxspec.loading import (
    ModelSource,
    config_from_json,
    default_task,
    exported_config_json,
    load_model,  # re-exported: onnxspec.pipeline.load_model predates onnxspec.loading
    load_source_model,
    read_source,
    save_gguf_tokenizer,
)
from onnxspec.merge import BRANCH_INPUT, Merge, merge_decoders, merged_interface, merges_for, stamp_interface
from onnxspec.models import REGISTRY
from onnxspec.patches import patched
from onnxspec.registry import Registry, lookup, spec_for
from onnxspec.report import ExportReport, GraphReport, report_json
from onnxspec.shapes import DTypes, FloatDtype, Shapes
from onnxspec.spec import Behavior, ExportSpec, Split, bind, check_versions, contract, with_behavior, with_tolerance
from onnxspec.tasks import TASKS, infer_task, parse_task
from onnxspec.validate import check_graph, stamp, validate, validate_merged
from onnxspec.wrappers import graph_module

__all__ = ["MIN_OPSET", "STAGES", "export", "load_model", "max_opset", "plan", "plan_merges", "resolve_spec", "versions"]

STAGES = ("resolve", "load", "dummies", "trace", "check", "validate", "write")

EXTERNAL_DATA_THRESHOLD = 1_800_000_000
"""Graphs whose weights exceed this many bytes are saved with external data (protobuf caps at 2 GB)."""

_COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "chat_template.jinja",
)

MIN_OPSET = 14
"""Lowest opset onnxspec exports at: the attention of every registered model traces to
``aten::scaled_dot_product_attention``, which the torch exporter supports from opset 14 on
(measured on bert, gpt2, llama, t5 and vit: opsets 9, 11 and 13 fail in tracing)."""

Progress = Callable[[str, str], None]
Fault = Callable[[str, str], None]
"""Test seam of :func:`export`: called as ``fault(stage, detail)`` at the end of every stage's
work (before the stage counts as done); an exception raised there behaves exactly like a
failure of that stage. Production code never passes one."""

_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT)


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


class _Stages:
    """Tracks the stage running and those done, and wraps failures as :class:`ExportError`."""

    def __init__(self, progress: Progress | None, fault: Fault | None = None) -> None:
        self.done: list[str] = []
        self.progress = progress
        self.fault = fault

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        if self.progress is not None:
            self.progress(name, detail)
        where = f"{name} ({detail})" if detail else name
        try:
            yield
            if self.fault is not None:
                self.fault(name, detail)
        except OnnxSpecError:
            raise
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise ExportError(
                    where,
                    tuple(self.done),
                    f"no space left on the device ({e}); nothing was written to the output folder: free some space "
                    "or choose an output folder on another disk",
                ) from e
            raise ExportError(where, tuple(self.done), f"{type(e).__name__}: {e}") from e
        except Exception as e:
            raise ExportError(where, tuple(self.done), f"{type(e).__name__}: {e}") from e
        self.done.append(f"{name}:{detail}" if detail else name)


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder without ``overwrite``.

    Whether the folder is writable is found out by really creating the temporary folder
    (:func:`_make_workdir`): ``os.access`` answers "yes" to root even where writing fails.
    """
    if os.path.isfile(output_dir):
        raise OutputDirError(f"output path {output_dir!r} is a file; give a folder path (it will be created)")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise OutputDirError(
            f"output folder {output_dir!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it, "
            "or choose another folder"
        )
    probe = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise OutputDirError(f"cannot create {output_dir!r}: {probe!r} is a file, not a folder; choose another output folder")


_TEMP = re.compile(r"^\.(?P<name>.+)\.onnxspec-(?P<what>tmp|old)-(?P<pid>\d+)-")


def _temp_prefix(target: str, what: str) -> str:
    """Name prefix of this process's temporary folders beside ``target`` (``tmp``: the export
    being built; ``old``: the previous folder while it is swapped). The PID lets a later run
    tell a dead run's leftovers from a live one's."""
    return f".{os.path.basename(target)}.onnxspec-{what}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover_stale(target: str) -> list[str]:
    """Clean up after earlier runs on ``target`` that were killed; return what was done.

    A dead run's ``tmp`` folder is removed. A dead run's ``old`` folder is the user's previous
    output, moved aside at the last step: it is put back when ``target`` is missing (the run
    died between the two renames), else removed (the new output was already in place). Folders
    of live processes are left alone.
    """
    parent, name = os.path.dirname(target), os.path.basename(target)
    actions: list[str] = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return actions
    for entry in entries:
        m = _TEMP.match(entry)
        if m is None or m["name"] != name or _alive(int(m["pid"])):
            continue
        path = os.path.join(parent, entry)
        try:
            if m["what"] == "old" and not os.path.exists(target):
                os.replace(path, target)
                actions.append(f"restored {target!r} from {entry!r}")
            else:
                shutil.rmtree(path)
                actions.append(f"removed {entry!r}")
        except OSError:  # best effort: a folder we cannot clean stays, clearly named
            continue
    return actions


def _make_workdir(output_dir: str) -> tuple[str, list[str]]:
    """Create the temporary folder beside ``output_dir`` (and any missing parents).

    Returns the folder and the parents created (removed again if the export fails). A folder
    that cannot be written raises :class:`OutputDirError`.
    """
    target = os.path.abspath(output_dir)
    parent = os.path.dirname(target)
    created: list[str] = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        workdir = _unique_dir(parent, _temp_prefix(target, "tmp"))
    except OSError as e:
        _remove_created(created)
        if e.errno in _NOT_WRITABLE:
            raise OutputDirError(
                f"cannot write the output folder {output_dir!r}: {e.strerror} ({probe!r} is not writable); "
                "choose another output folder or fix its permissions"
            ) from e
        raise OutputDirError(f"cannot create a temporary folder beside {output_dir!r}: {e}") from e
    return workdir, created


def _unique_dir(parent: str, prefix: str) -> str:
    """Create a new folder ``<parent>/<prefix><random>`` with the user's umask (mkdtemp would
    make it 0700, and it becomes the output folder)."""
    for _ in range(100):
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary folder name", os.path.join(parent, prefix))


def _remove_created(created: list[str]) -> None:
    """Remove parent folders an export created, deepest first, if they are still empty."""
    for path in created:
        with contextlib.suppress(OSError):
            os.rmdir(path)


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
) -> ExportSpec:
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


def plan(spec: ExportSpec, *, monolith: bool = False) -> tuple[tuple[Split, ExportSpec], ...]:
    """The files to write and the sub-graph spec of each (``monolith``: one graph)."""
    splits = spec.splits
    if monolith and len(splits) > 1:
        if Behavior.MONOLITH not in spec.graphs:
            raise SpecError(f"spec {spec.model_type}/{spec.task} has no single-graph form; export it split")
        if any(s.use_past for s in splits):
            raise SpecError(
                f"spec {spec.model_type}/{spec.task}: the single graph of the monolith option takes no KV cache, but a "
                "cache was asked for; drop '-with-past' to export one graph, or drop the monolith option to get "
                "encoder / decoder / decoder-with-past graphs"
            )
        splits = (Split(filename="model.onnx", behavior=Behavior.MONOLITH),)
    return tuple(
        (s, with_behavior(spec, s.behavior, use_past=s.use_past, use_past_in_inputs=s.use_past_in_inputs)) for s in splits
    )


def plan_merges(
    spec: ExportSpec, graphs: tuple[tuple[Split, ExportSpec], ...], *, merged: bool | None = None, monolith: bool = False
) -> tuple[Merge, ...]:
    """The merged decoders to write beside ``graphs`` (the files :func:`plan` chose).

    ``merged=None`` (default): one for each sub-graph exported both without and with cache
    inputs (seq2seq ``-with-past`` tasks: ``decoder_model_merged.onnx``), none otherwise.
    ``False``: none. ``True``: the same, but a plan without such a pair is an error.
    """
    if merged is False:
        return ()
    who = f"spec {spec.model_type}/{spec.task}"
    if merged and monolith:
        raise SpecError(
            f"{who}: a merged decoder (merged=True, decoder_model_merged.onnx) joins the decoders with and without cache, "
            "but monolith=True exports one graph without cache; drop one of the two options"
        )
    found = merges_for(s for s, _ in graphs)
    if merged and not found:
        decoder_only = any(s.use_past_in_inputs for s, _ in graphs)
        raise SpecError(
            f"{who}: merged=True asks for decoder_model_merged.onnx, but this export has no decoder pair with and without "
            "cache inputs to merge"
            + (
                " (a decoder-only model's model.onnx already serves every step: feed an empty past on the first one)"
                if decoder_only
                else "; export a seq2seq task with '-with-past' (e.g. text2text-generation-with-past)"
            )
            + "; or leave merged out (--no-merged skips it)"
        )
    return found


def _merged_contract(first: ExportSpec, later: ExportSpec, dtypes: DTypes) -> dict[str, Any]:
    """The I/O contract of a merged decoder, from those of its two branches."""
    a, b = contract(first, dtypes), contract(later, dtypes)
    inputs = a["inputs"] + [t for t in b["inputs"] if t["name"] not in {x["name"] for x in a["inputs"]}]
    inputs.append({"name": BRANCH_INPUT, "dtype": "bool", "dynamic_axes": {}, "rank": 1})
    later_outputs = {t["name"]: t for t in b["outputs"]}
    return {
        **b,
        "merged": {"branch_input": BRANCH_INPUT, "false": "first step (empty past)", "true": "later steps (the cache)"},
        "inputs": inputs,
        "outputs": [later_outputs.get(t["name"], t) for t in a["outputs"]],
    }


def _task_heads(task: str, model_type: str) -> set[str]:
    """Names of the model classes the auto classes of ``task`` load for ``model_type``."""
    import transformers

    names: set[str] = set()
    for auto_name in TASKS[task].auto_classes:
        mapping = getattr(transformers, auto_name, None)
        table = getattr(getattr(mapping, "_model_mapping", None), "_model_mapping", {})
        found = table.get(model_type)
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
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > threshold:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)


def export(
    model_or_folder: str | os.PathLike[str] | torch.nn.Module,
    output_dir: str | os.PathLike[str],
    *,
    task: str | None = None,
    spec: ExportSpec | None = None,
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
    ``*.gguf`` file reads that one (see :mod:`onnxspec.loading`).

    Seq2seq ``-with-past`` exports also write ``decoder_model_merged.onnx`` (the two decoders
    in one graph, validated on both branches); ``merged=False`` skips it, ``merged=True``
    insists on it (see :func:`plan_merges`).
    """
    start = time.perf_counter()
    output_dir = os.fspath(output_dir)
    stages = _Stages(progress, _fault)
    folder = None if isinstance(model_or_folder, torch.nn.Module) else os.fspath(model_or_folder)

    workdir, created = "", []
    reports: list[GraphReport] = []
    try:
        with stages.stage("resolve"):
            _recover_stale(os.path.abspath(output_dir))
            _check_output_dir(output_dir, overwrite)
            chosen_backend = resolve_backend(backend)
            if backend is None and dtypes.float_dtype is FloatDtype.FP16 and Backend.DYNAMO in available_backends():
                # TorchScript writes LayerNormalization with mixed fp16/fp32 operands, which
                # onnxruntime refuses to load; torch.export's exporter keeps them consistent.
                chosen_backend = Backend.DYNAMO
            if dtypes.float_dtype is FloatDtype.BF16:
                raise SpecError(
                    "float dtype bf16 cannot be exported and validated here: onnxruntime has no bf16 kernels on this CPU; "
                    "use fp32 (default) or fp16"
                )
            if folder is None and gguf_file is not None:
                raise SpecError(
                    f"gguf_file={gguf_file!r} names a file in a model folder, but a torch.nn.Module was passed; "
                    "pass the folder holding the GGUF file instead of a model, or leave gguf_file out"
                )
            source = read_source(folder, gguf_file, trust_remote_code=trust_remote_code) if folder is not None else None
            config_json = source.config_json if source is not None else model_or_folder.config.to_dict()
            model_type = config_json["model_type"]
            if spec is None:
                lookup(registry, model_type)
                config = model_or_folder.config if source is None else config_from_json(config_json)
                spec = resolve_spec(
                    model_type,
                    config,
                    task,
                    registry,
                    inferred_from=config_json,
                    default_task="feature-extraction" if source is None else default_task(source),
                )
            elif spec.dims is None:
                spec = bind(spec, model_or_folder.config if folder is None else config_json)
            if source is not None and source.is_gguf:
                _check_gguf_head(source, spec.task)
            elif source is not None:
                _check_head(config_json, spec.task, model_type, registry)
            if opset is not None:
                spec = attrs.evolve(spec, opset=opset)
            _check_opset(spec.opset, chosen_backend, f"{spec.model_type}/{spec.task}")
            if atol is not None:
                spec = with_tolerance(spec, atol, outputs=["*"])
            if chosen_backend is Backend.DYNAMO and spec.attn_implementation is None and model_type == "t5":
                spec = attrs.evolve(spec, attn_implementation="eager")
            check_versions(spec, versions())
            graphs = plan(spec, monolith=monolith)
            merges = plan_merges(spec, graphs, merged=merged, monolith=monolith)
            workdir, created = _make_workdir(output_dir)

        with stages.stage("load", type(model_or_folder).__name__ if source is None else source.path):
            if source is None:
                model = model_or_folder.eval()
            else:
                model = load_source_model(source, spec.task, trust_remote_code=trust_remote_code)
            if spec.attn_implementation is not None and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation(spec.attn_implementation)
            if dtypes.float_dtype is FloatDtype.FP16:
                model = model.to(torch.float16)

        for split, sub in graphs:
            name = split.filename
            with stages.stage("dummies", name):
                ctx = context(shapes, dtypes, sub.dims, past=sub.past, padding_side=sub.padding_side)
                dummies = make_dummies(sub.inputs, sub.generators, ctx, seed)
                module = graph_module(model, sub)
            with stages.stage("trace", name):
                t0 = time.perf_counter()
                with patched(sub.patches):
                    proto = export_graph(module, tuple(dummies.values()), sub, chosen_backend, workdir)
                export_seconds = time.perf_counter() - t0
            with stages.stage("check", name):
                problems = check_graph(proto, sub, dtypes)
                interface_ok = [v.name for v in proto.graph.input] == [t.name for t in sub.inputs] and [
                    v.name for v in proto.graph.output
                ] == [t.name for t in sub.outputs]
                stamp(proto, sub, dtypes, {"onnxspec.version": __version__, "onnxspec.backend": chosen_backend.value})
                path = os.path.join(workdir, name)
                _save(proto, path, external_data_threshold)
                del proto
                onnx.checker.check_model(path)
            with stages.stage("validate", name):
                import onnxruntime

                if interface_ok:
                    options = onnxruntime.SessionOptions()
                    options.log_severity_level = 3
                    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                    checks, run_problems, seconds = validate(
                        session, module, sub, shapes, dtypes, seed, name, shape_sets=validation_shapes
                    )
                    del session
                else:  # the graph cannot be fed the spec's inputs; the check's problems say why
                    checks, run_problems, seconds = (), ("not run against PyTorch: the graph's interface differs from the spec",), 0.0
            reports.append(
                GraphReport(
                    filename=name,
                    behavior=sub.behavior.value,
                    use_past=sub.use_past,
                    use_past_in_inputs=sub.use_past_in_inputs,
                    backend=chosen_backend.value,
                    trace_shapes={k: v for k, v in attrs.asdict(shapes).items()},
                    export_seconds=round(export_seconds, 4),
                    validate_seconds=round(seconds, 4),
                    inputs=tuple(t.name for t in sub.inputs),
                    outputs=tuple(t.name for t in sub.outputs),
                    checks=checks,
                    problems=tuple(problems) + run_problems,
                )
            )
        for merge in merges:
            reports.append(_merged_graph(merge, graphs, model, workdir, shapes, dtypes, seed, validation_shapes,
                                         external_data_threshold, chosen_backend, stages))
        report = ExportReport(
            model_type=spec.model_type,
            task=spec.task + ("-with-past" if any(s.use_past for s in spec.splits) else ""),
            backend=chosen_backend.value,
            output_dir=os.path.abspath(output_dir),
            graphs=tuple(reports),
            versions=versions(),
            seed=seed,
            seconds=round(time.perf_counter() - start, 3),
            source=_source_record(source),
        )
        with stages.stage("write"):
            merged_contracts = {
                m.filename: _merged_contract(_sub_of(graphs, m.no_past), _sub_of(graphs, m.with_past), dtypes) for m in merges
            }
            files, notes = _write_side_files(workdir, source, model, [(s, sub) for s, sub in graphs], dtypes, merged_contracts)
            report = attrs.evolve(report, files=tuple(sorted(files)), source={**report.source, **notes})
            with open(os.path.join(workdir, "onnxspec_report.json"), "w", encoding="utf-8") as f:
                f.write(report_json(report))
            if report.failures:  # an export run with no shape set is written, marked not validated
                failed_dir = _keep_failed(workdir, output_dir)
                workdir = ""
                raise ValidationError(
                    f"{spec.model_type}/{spec.task}: the exported graphs disagree with PyTorch:\n  - "
                    + "\n  - ".join(report.failures)
                    + f"\nNothing was written to {output_dir!r}; the graphs and the full report are in {failed_dir!r}",
                    report,
                )
        try:
            _move_into_place(workdir, output_dir)
        except OSError as e:
            raise ExportError(
                "write", tuple(stages.done), f"cannot move the finished export into {output_dir!r}: {e}"
            ) from e
        workdir = ""
        return report
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
            _remove_created(created)


def _sub_of(graphs: tuple[tuple[Split, ExportSpec], ...], filename: str) -> ExportSpec:
    return next(sub for s, sub in graphs if s.filename == filename)


def _merged_graph(
    merge: Merge,
    graphs: tuple[tuple[Split, ExportSpec], ...],
    model: torch.nn.Module,
    workdir: str,
    shapes: Shapes,
    dtypes: DTypes,
    seed: int,
    shape_sets: tuple[Shapes, ...] | None,
    threshold: int,
    backend: Backend,
    stages: _Stages,
) -> GraphReport:
    """Build, check and validate one merged decoder from two graphs already written and validated.

    The merge is the ``trace`` stage of its file (it is how the graph is made); validation runs
    each branch against the PyTorch module of the graph it came from, at the usual shape sets.
    """
    import onnxruntime

    name = merge.filename
    first, later = _sub_of(graphs, merge.no_past), _sub_of(graphs, merge.with_past)
    interface = merged_interface(first.inputs, first.outputs, later.inputs, later.outputs)
    with stages.stage("trace", name):
        t0 = time.perf_counter()
        proto = merge_decoders(onnx.load(os.path.join(workdir, merge.no_past)), onnx.load(os.path.join(workdir, merge.with_past)))
        merge_seconds = time.perf_counter() - t0
    with stages.stage("check", name):
        problems = check_graph(proto, interface, dtypes)  # type: ignore[arg-type]
        interface_ok = [v.name for v in proto.graph.input] == [t.name for t in interface.inputs] and [
            v.name for v in proto.graph.output
        ] == [t.name for t in interface.outputs]
        metadata = {
            "onnxspec.contract": json.dumps(_merged_contract(first, later, dtypes), indent=2, sort_keys=True),
            "onnxspec.version": __version__,
            "onnxspec.backend": backend.value,
            "onnxspec.merged_from": f"{merge.no_past} (use_cache_branch=False), {merge.with_past} (use_cache_branch=True)",
        }
        stamp_interface(proto, interface, metadata)
        path = os.path.join(workdir, name)
        _save(proto, path, threshold)
        del proto
        onnx.checker.check_model(path)
    with stages.stage("validate", name):
        if interface_ok:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            branches = (
                (False, "no-cache", graph_module(model, first), first),
                (True, "cache", graph_module(model, later), later),
            )
            checks, run_problems, seconds = validate_merged(
                session, branches, shapes, dtypes, seed, name, BRANCH_INPUT, shape_sets=shape_sets
            )
            del session
        else:
            checks, run_problems, seconds = (), ("not run against PyTorch: the graph's interface differs from the spec",), 0.0
    return GraphReport(
        filename=name,
        behavior=later.behavior.value,
        use_past=True,
        use_past_in_inputs=True,
        backend=backend.value,
        trace_shapes={k: v for k, v in attrs.asdict(shapes).items()},
        export_seconds=round(merge_seconds, 4),
        validate_seconds=round(seconds, 4),
        inputs=tuple(t.name for t in interface.inputs),
        outputs=tuple(t.name for t in interface.outputs),
        checks=checks,
        problems=tuple(problems) + run_problems,
    )


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
    graphs: list[tuple[Split, ExportSpec]],
    dtypes: DTypes,
    merged_contracts: Mapping[str, dict[str, Any]] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Write the files beside the graphs; return every file name and notes for the report.

    A transformers folder's config, tokenizer and processor files are copied. A GGUF file holds
    them all as metadata: its config (without the quantization marks), generation config and
    tokenizer are written from what transformers rebuilt, so the folder is usable by a runtime.
    """
    files = [s.filename for s, _ in graphs] + list(merged_contracts or {})
    notes: dict[str, str] = {}
    if source is not None and not source.is_gguf:
        for name in _COPIED_FILES:
            path = os.path.join(source.folder, name)
            if os.path.isfile(path):
                shutil.copy2(path, os.path.join(workdir, name))
                files.append(name)
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
    contracts = {**{s.filename: contract(sub, dtypes) for s, sub in graphs}, **(merged_contracts or {})}
    with open(os.path.join(workdir, "onnxspec_contract.json"), "w", encoding="utf-8") as f:
        json.dump(contracts, f, indent=2, sort_keys=True)
    files += ["onnxspec_contract.json", "onnxspec_report.json"]
    files += [n for n in os.listdir(workdir) if n.endswith(".onnx.data")]
    return files, notes


def _keep_failed(workdir: str, output_dir: str) -> str:
    """Move a failed export's files to ``<output_dir>.onnxspec-failed`` for inspection."""
    failed = os.path.abspath(output_dir).rstrip(os.sep) + ".onnxspec-failed"
    if os.path.isdir(failed):
        shutil.rmtree(failed)
    os.replace(workdir, failed)
    return failed


def _move_into_place(workdir: str, output_dir: str) -> None:
    """Swap the finished folder in; an old folder is moved aside first and removed last.

    If the process dies between the two renames, the next run on the same target puts the old
    folder back before anything else (:func:`_recover_stale`)."""
    target = os.path.abspath(output_dir)
    backup = ""
    if os.path.exists(target):
        backup = _unique_dir(os.path.dirname(target), _temp_prefix(target, "old"))
        os.rmdir(backup)
        os.replace(target, backup)
    try:
        os.replace(workdir, target)
    except OSError:
        if backup:
            os.replace(backup, target)
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
