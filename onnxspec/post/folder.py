"""Transform every graph of an export folder into a new folder, and judge the result against PyTorch.

:func:`transform_folder` is what :func:`onnxspec.post.quantize.quantize` and
:func:`onnxspec.post.optimize.optimize` run: it reads what the export recorded
(``onnxspec_report.json``: model type, task, seed, trace shapes, the model folder; the graphs'
contract: the dtypes), loads the PyTorch model (``model=``, else the folder the report names),
applies a file-level transformation to each graph in a temporary folder beside the destination,
copies the other files (config, tokenizer, contract), and judges each new graph:

- ``"lossless"``: the export's own validation (:func:`onnxspec.judge.validate.validate`, and
  :func:`~onnxspec.judge.validate.validate_merged` for a merged decoder), at the export's
  validation shape sets, with the same bounds;
- ``"agreement"``: the measures of :mod:`onnxspec.post.agreement` (cosine, top-1, greedy:
  decoder-only graphs alone, encoder-decoder folders through their encoder and decoders).

A merged decoder is not handed to the transformation: it is rebuilt from its two decoders,
transformed already (:func:`onnxspec.build.merge.merge_decoders`), unless the folder lacks them.
A folder whose graphs are lossy already (written by a lossy transformation) is judged by
agreement whatever the transformation, with thresholds no stricter than before.

The :class:`PostReport` is written as ``onnxspec_post.json`` beside the graphs. A result that
fails is an error (:class:`~onnxspec.errors.ValidationError`): nothing reaches the destination,
the files are kept in ``<output_dir>.onnxspec-failed``. The export's ``onnxspec_report.json``
is not copied (it judged the graphs before the transformation); ``onnxspec_post.json`` carries
what a later transformation of the new folder needs (its ``export`` section).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import numpy as np
import torch

from onnxspec.errors import ConfigError, ExportError, ModelLoadError, OnnxSpecError, ValidationError
from onnxspec.judge.report import OutputCheck, to_plain, why_failed
from onnxspec.judge.validate import branch_feed, mask_for, validate, validate_merged
from onnxspec.pieces.axes import Kind
from onnxspec.pieces.cache_names import is_cache_input
from onnxspec.pieces.past import PastKind
from onnxspec.build.merge import BRANCH_INPUT
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.pieces.shapes import DTypes, Shapes, torch_dtype, validation_shapes
from onnxspec.pipeline.output import check_output_dir, keep_failed, make_workdir, move_into_place, recover_stale, remove_created
from onnxspec.post.agreement import Measure, Thresholds, cosine_similarity, greedy_agreement, greedy_ids, measure, top1_agreement

__all__ = [
    "ExportFolder", "GraphResult", "PostReport", "graph_bytes", "post_json", "quiet_tools", "read_export_folder", "transform_folder",
]

REPORT = "onnxspec_report.json"
POST = "onnxspec_post.json"
SHAPE_SET_NAMES = ("small", "large", "decode")
_DONE = {"quantize": "quantized", "optimize": "optimized"}


@attrs.frozen(kw_only=True)
class ExportFolder:
    """What an export folder records about how it was made."""

    folder: str
    model_type: str
    task: str
    graphs: tuple[str, ...]
    seed: int
    trace_shapes: Shapes
    dtypes: DTypes
    model_folder: str | None
    """The model folder the export read, if it was one (``source.folder`` of the report)."""
    export: Mapping[str, Any] = attrs.field(converter=dict, hash=False)
    """The export's record carried into every transformed folder (``onnxspec_post.json``), with
    the transformations already applied (``earlier``)."""
    lossy: Thresholds | None = None
    """The thresholds a lossy transformation of this folder was judged by (``None``: the graphs
    are the export's, or only lossless transformations of them)."""


@contextlib.contextmanager
def quiet_tools() -> Iterator[None]:
    """Keep the log lines of onnxruntime's quantization and optimization tools (one INFO line per
    node, advice at WARNING) out of the output while they run; errors still show."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def _read_json(path: str) -> Mapping[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path!r}: {e}; export the model again with `onnxspec export`") from e


_FLOAT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _dtypes(folder: str, graphs: Sequence[str]) -> DTypes:
    """The export's dtypes, read from the contract of its graphs (``onnxspec_contract.json``)."""
    contracts = _read_json(os.path.join(folder, "onnxspec_contract.json")) or {}
    tensors = [t for g in graphs for part in ("inputs", "outputs") for t in contracts.get(g, {}).get(part, ())]
    floats = [_FLOAT[t["dtype"]] for t in tensors if t.get("dtype") in _FLOAT]
    ints = [t["dtype"] for t in tensors if t.get("name") == "input_ids" and t.get("dtype") in ("int64", "int32", "int8")]
    return DTypes(int_dtype=ints[0] if ints else "int64", float_dtype=floats[0] if floats else "fp32")


def read_export_folder(folder: str | os.PathLike[str], transformation: Mapping[str, Any] | None = None) -> ExportFolder:
    """Read an export folder's record: ``onnxspec_report.json`` (written by ``onnxspec export``),
    or the ``export`` section of ``onnxspec_post.json`` (a folder this module wrote).

    A folder a layout moved graphs in (``--layout transformers.js``: the report's ``path`` of a
    graph is not its flat ``filename``) is refused, saying what to run instead for
    ``transformation`` (its ``kind`` and ``method``, as :func:`transform_folder` takes it)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ModelLoadError(f"export folder {folder!r} does not exist; give a folder written by `onnxspec export`")
    report = _read_json(os.path.join(folder, REPORT))
    post = _read_json(os.path.join(folder, POST)) if report is None else None
    if post is not None:
        report = post.get("export")
    if report is None:
        raise ModelLoadError(
            f"{folder!r} has no {REPORT}: it was not written by `onnxspec export`, so nothing records which model and "
            "task its graphs come from; export the model with `onnxspec export` first"
        )
    if not report.get("passed", False):
        raise ValidationError(f"{folder!r}: its {REPORT} says the export did not pass validation; fix the export first")
    _refuse_laid_out(folder, report, transformation or {})
    graphs = tuple(g["filename"] for g in report["graphs"])
    missing = [g for g in graphs if not os.path.isfile(os.path.join(folder, g))]
    if missing:
        raise ModelLoadError(f"{folder!r}: the graphs {missing} its report lists are missing; export the model again")
    trace = report["graphs"][0].get("trace_shapes", {})
    known = {a.name for a in attrs.fields(Shapes)}
    source = report.get("source", {})
    record = {k: report[k] for k in ("passed", "model_type", "task", "backend", "seed", "source", "versions", "graphs") if k in report}
    record["graphs"] = [{"filename": g["filename"], "trace_shapes": g.get("trace_shapes", {})} for g in report["graphs"]]
    return ExportFolder(
        folder=folder,
        model_type=report["model_type"],
        task=report["task"],
        graphs=graphs,
        seed=int(report.get("seed", 0)),
        trace_shapes=Shapes(**{k: v for k, v in trace.items() if k in known}),
        dtypes=_dtypes(folder, graphs),
        model_folder=source.get("folder") if source.get("format") == "transformers" else None,
        export={**record, "earlier": _earlier(post)},
        lossy=_lossy(post),
    )


def _refuse_laid_out(folder: str, report: Mapping[str, Any], transformation: Mapping[str, Any]) -> None:
    """Refuse a folder whose report puts graphs elsewhere than their flat names: transforming the
    laid-out graphs into a copy would keep the layout's records (``onnxspec_layout.json``, the
    dtype suffixes a runtime picks files by) while they no longer describe the graphs."""
    moved = {g["filename"]: g["path"] for g in report.get("graphs", ()) if g.get("path", g["filename"]) != g["filename"]}
    if not moved:
        return
    layout = (_read_json(os.path.join(folder, "onnxspec_layout.json")) or {}).get("layout", "a runtime")
    where = ", ".join(f"{name} at {path}" if path else f"{name} left out" for name, path in moved.items())
    kind = transformation.get("kind", "quantize")
    if kind == "quantize":
        variant = {"int8": "q8", "int4": "q4"}.get(str(transformation.get("method", "int8")), "q8")
        instead = (f"export again with --layout {layout} --variants {variant}, which writes the quantized graphs beside "
                   f"the others under the names {layout} loads, judged against PyTorch; or export without --layout and run "
                   f"`onnxspec quantize` on that flat folder")
    elif transformation.get("fp16"):
        instead = (f"export again with --layout {layout} --variants fp16, which writes an fp16 export validated against "
                   f"PyTorch beside the others; or export without --layout and run `onnxspec {kind}` on that flat folder")
    else:
        instead = f"export without --layout and run `onnxspec {kind}` on that flat folder"
    raise ModelLoadError(
        f"{folder!r} is laid out for {layout} (its report puts {where}): `onnxspec {kind}` reads a flat export folder, "
        f"the graphs beside onnxspec_report.json, and would leave the layout's records describing graphs it changed; "
        f"{instead}"
    )


def _earlier(post: Mapping[str, Any] | None) -> list[Any]:
    """The transformations that made a folder, oldest first."""
    if post is None:
        return []
    return [*post.get("export", {}).get("earlier", []), {**post.get("transformation", {}), "judged_by": post.get("judged_by"),
                                                            "thresholds": post.get("thresholds")}]


def loosest(first: Thresholds, second: Thresholds) -> Thresholds:
    """Each threshold at the lower of the two; the greedy steps of ``second``."""
    return attrs.evolve(second, cosine=min(first.cosine, second.cosine), top1=min(first.top1, second.top1),
                        greedy=min(first.greedy, second.greedy))


def _lossy(post: Mapping[str, Any] | None) -> Thresholds | None:
    """The loosest thresholds the lossy transformations of a folder were judged by."""
    found = [Thresholds(**t["thresholds"]) for t in [*(post or {}).get("export", {}).get("earlier", []), post or {}]
             if t.get("thresholds")]
    return functools.reduce(loosest, found) if found else None


@attrs.frozen(kw_only=True, eq=False)
class PyTorchSide:
    """The model an export folder came from, and the spec of each of its graphs by file name
    (a merged decoder's holds its two ``branches``)."""

    model: torch.nn.Module
    folder: str
    subs: Mapping[str, Any]


def pytorch_side(info: ExportFolder, model: str | os.PathLike[str] | None) -> PyTorchSide:
    """Load the model to compare with: ``model``, else the folder the export read."""
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.pipeline.core import plan, resolve_spec
    from onnxspec.pipeline.loading import config_from_json, load_source_model, read_source

    folder = os.fspath(model) if model is not None else info.model_folder
    if folder is None:
        raise ModelLoadError(
            f"{info.folder!r} was exported from a model in memory, not a folder, so there is no PyTorch model to compare "
            "with; pass the model folder with --model FOLDER (model=...)"
        )
    if not os.path.isdir(folder):
        raise ModelLoadError(
            f"the model folder {folder!r} the export read no longer exists; pass the model folder with --model FOLDER (model=...)"
        )
    source = read_source(folder)
    if source.config_json.get("model_type") != info.model_type:
        raise ConfigError(
            f"{folder!r} holds a {source.config_json.get('model_type')!r} model, but {info.folder!r} is an export of "
            f"{info.model_type!r}; pass the model folder it was exported from with --model FOLDER"
        )
    spec = resolve_spec(info.model_type, config_from_json(source.config_json), info.task, REGISTRY)
    files = plan(spec)
    if not set(info.graphs) <= {g.filename for g in files}:
        files = plan(spec, monolith=True)
    subs = {g.filename: g for g in files}
    unknown = [g for g in info.graphs if g not in subs]
    if unknown:
        raise ConfigError(f"{info.folder!r}: no graph of the spec {spec.model_type}/{spec.task} is named {unknown}; export the model again")
    loaded = load_source_model(source, spec.task)
    if spec.attn_implementation is not None and hasattr(loaded, "set_attn_implementation"):
        loaded.set_attn_implementation(spec.attn_implementation)
    if info.dtypes.float_dtype.value != "fp32":
        loaded = loaded.to(torch_dtype(Kind.FLOAT, info.dtypes))
    return PyTorchSide(model=loaded.eval(), folder=folder, subs={k: v for k, v in subs.items() if k in info.graphs})


@attrs.frozen(kw_only=True)
class GraphResult:
    """One transformed graph: its sizes (with external data) before and after, and how it was judged:
    ``checks`` (lossless: the export's validation) or ``measures`` (agreement)."""

    filename: str
    bytes_before: int
    bytes_after: int
    checks: tuple[OutputCheck, ...] = ()
    measures: tuple[Measure, ...] = ()
    problems: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        judged = bool(self.checks) or bool(self.measures)
        return judged and not self.problems and all(c.passed for c in self.checks) and all(m.passed for m in self.measures)


@attrs.frozen(kw_only=True)
class PostReport:
    """The outcome of transforming an export folder (written as ``onnxspec_post.json``)."""

    transformation: Mapping[str, Any] = attrs.field(converter=dict, hash=False)
    """What was done: ``kind`` (``quantize``, ``optimize``) and its settings."""
    judged_by: str
    """``lossless`` (the export's validation) or ``agreement`` (cosine, top-1, greedy)."""
    thresholds: Thresholds | None
    source_dir: str
    output_dir: str
    model_folder: str
    model_type: str
    task: str
    graphs: tuple[GraphResult, ...]
    seconds: float
    export: Mapping[str, Any] = attrs.field(converter=dict, hash=False)
    versions: Mapping[str, str] = attrs.field(converter=dict, hash=False)
    files: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.graphs) and all(g.passed for g in self.graphs)

    @property
    def failures(self) -> tuple[str, ...]:
        out = [f"{g.filename}: {p}" for g in self.graphs for p in g.problems]
        out += [f"{c.graph}: output {c.output!r} at {c.shape_set}: {c.problem or why_failed(c)}" for g in self.graphs for c in g.checks
                if not c.passed]
        out += [f"{m.graph}: {m.output} at {m.shape_set}: {m.problem}" for g in self.graphs for m in g.measures if not m.passed]
        return tuple(out)


def post_json(report: PostReport) -> str:
    """The report as JSON text, the verdict first; ``export`` keeps the export's own record."""
    data = {"passed": report.passed, **to_plain(report)}
    return json.dumps(data, indent=2)


def graph_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of a graph file and of the external data files it names."""
    import onnx

    from onnxspec.build.graphs import external_data_files

    path = os.fspath(path)
    total = os.path.getsize(path)
    locations = external_data_files(onnx.load(path, load_external_data=False))
    return total + sum(os.path.getsize(os.path.join(os.path.dirname(path), loc)) for loc in locations)


def _is_graph_file(name: str) -> bool:
    return name.endswith(".onnx") or name.endswith(".onnx.data") or name.endswith(".onnx_data")


def _copy_side_files(src: str, dst: str) -> list[str]:
    """Copy everything but the graphs, their external data and the export's report."""
    copied = []
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if _is_graph_file(name) or name in (REPORT, POST) or not os.path.isfile(path):
            continue
        shutil.copy2(path, os.path.join(dst, name))
        copied.append(name)
    return copied


def _session(path: str) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy() if tensor.dtype.is_floating_point else tensor.detach().cpu().numpy()


def _feeds(spec: Any, info: ExportFolder) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The inputs of the export's validation shape sets, named as its report names them."""
    out = []
    for k, shapes in enumerate(validation_shapes(info.trace_shapes)):
        ctx = context(shapes, info.dtypes, spec.dims, past=spec.past, padding_side=spec.padding_side)
        out.append((SHAPE_SET_NAMES[k], make_dummies(spec.inputs, spec.generators, ctx, info.seed + 1 + k)))
    return out


def _agreement(
    run: Callable[[Sequence[str], Mapping[str, np.ndarray]], list[np.ndarray]],
    module: torch.nn.Module,
    spec: Any,
    info: ExportFolder,
    graph: str,
    thresholds: Thresholds,
    tag: str = "",
) -> list[Measure]:
    """Cosine of every float output at each validation shape set, and top-1 of ``logits`` over
    the positions of all shape sets together (one set may hold a single position)."""
    measures = []
    agree, rows_seen = 0.0, 0
    out_names = [t.name for t in spec.outputs]
    for label, feed in _feeds(spec, info):
        label = f"{label}/{tag}" if tag else label
        with torch.no_grad():
            expected = [_to_numpy(t) for t in module(*feed.values())]
        arrays = {n: _to_numpy(t) for n, t in feed.items()}
        got = run(out_names, arrays)
        for t, exp, act in zip(spec.outputs, expected, got):
            act = np.asarray(act)
            if not np.issubdtype(exp.dtype, np.floating):
                continue
            if exp.shape != act.shape:
                measures.append(measure(graph, t.name, label, "cosine", float("nan"), thresholds.cosine, 0))
                continue
            keep = mask_for(t, exp, arrays, spec)
            e, a = (exp[keep], act[keep]) if keep is not None else (exp, act)
            measures.append(measure(graph, t.name, label, "cosine", cosine_similarity(e, a), thresholds.cosine, int(e.size)))
            if t.name == "logits":
                value, n = top1_agreement(exp, act, keep[..., 0] if keep is not None else None)
                agree, rows_seen = agree + value * n, rows_seen + n
    if rows_seen:
        label = f"all/{tag}" if tag else "all"
        measures.append(measure(graph, "logits", label, "top1", agree / rows_seen, thresholds.top1, rows_seen))
    return measures


def _empty_past(spec: Any, info: ExportFolder, batch: int) -> dict[str, np.ndarray]:
    """Cache inputs of past length 0 for ``batch`` prompts."""
    shapes = attrs.evolve(info.trace_shapes, batch_size=batch, sequence_length=1, past_sequence_length=1)
    ctx = context(shapes, info.dtypes, spec.dims, past=spec.past, padding_side=spec.padding_side)
    dummies = make_dummies(spec.inputs, spec.generators, ctx, info.seed)
    past = {}
    for t in spec.inputs:
        if is_cache_input(t.name):
            axis = next(a for a, symbol in t.axes if "past" in symbol)
            array = _to_numpy(dummies[t.name])
            past[t.name] = np.take(array, np.arange(0), axis=axis)
    return past


def _greedy(session: Any, module: torch.nn.Module, spec: Any, info: ExportFolder, graph: str, thresholds: Thresholds) -> Measure:
    """Greedy decoding through the graph against PyTorch, from the same prompts."""
    batch, length = 4, 6
    shapes = attrs.evolve(info.trace_shapes, batch_size=batch, sequence_length=length, past_sequence_length=0)
    ctx = context(shapes, info.dtypes, spec.dims, past=spec.past, padding_side=spec.padding_side)
    prompt = _to_numpy(make_dummies(spec.inputs, spec.generators, ctx, info.seed + 11)["input_ids"])
    names = tuple(t.name for t in spec.inputs)
    out_names = [t.name for t in spec.outputs]
    past = _empty_past(spec, info, batch)

    def torch_step(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            got = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
        return {n: _to_numpy(t) for n, t in zip(out_names, got)}

    def onnx_step(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(out_names, session.run(out_names, dict(feed))))

    steps = thresholds.greedy_steps
    expected = greedy_ids(torch_step, prompt, past, names, steps)
    got = greedy_ids(onnx_step, prompt, past, names, steps)
    return measure(graph, "generated ids", f"{steps} steps", "greedy", greedy_agreement(expected, got), thresholds.greedy,
                   int(expected.size))


def _seq2seq_greedy(workdir: str, side: PyTorchSide, info: ExportFolder, thresholds: Thresholds) -> tuple[str, Measure] | None:
    """Greedy decoding through an encoder-decoder folder's graphs against PyTorch, from the same
    inputs: the encoder once, the first-step decoder, then the decoder with past (or the merged
    decoder's two branches). Returns the graph to file the measure under, or ``None`` for a
    folder without these graphs or whose decoder takes inputs other than ids, mask, encoder
    states and cache."""
    from onnxspec.build.wrappers import graph_module
    from onnxspec.pieces.cache_names import is_cache_output, to_past

    subs = side.subs
    merged = next((name for name, g in subs.items() if g.branches), None)
    if "encoder_model.onnx" not in subs:
        return None
    if {"decoder_model.onnx", "decoder_with_past_model.onnx"} <= set(subs):
        first, later, filed = subs["decoder_model.onnx"], subs["decoder_with_past_model.onnx"], "decoder_with_past_model.onnx"
    elif merged is not None:
        (first, later), filed = subs[merged].branches, merged
    else:
        return None
    start = getattr(side.model.config, "decoder_start_token_id", None)
    plain = {"input_ids", "encoder_attention_mask", "encoder_hidden_states"}
    if start is None or any(t.name not in plain and not is_cache_input(t.name) for t in (*first.inputs, *later.inputs)):
        return None
    encoder = subs["encoder_model.onnx"]
    shapes = attrs.evolve(info.trace_shapes, batch_size=4, sequence_length=6)
    ctx = context(shapes, info.dtypes, encoder.dims, past=encoder.past, padding_side=encoder.padding_side)
    encoder_feed = {n: _to_numpy(t) for n, t in make_dummies(encoder.inputs, encoder.generators, ctx, info.seed + 11).items()}
    sessions: dict[str, Any] = {}

    def onnx_run(spec: Any, flag: bool, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = merged if spec is not encoder and filed == merged else spec.filename
        if name not in sessions:
            sessions[name] = _session(os.path.join(workdir, name))
        session, out_names = sessions[name], [t.name for t in spec.outputs]
        full = dict(feed)
        if name == merged:
            declared = {i.name: (list(i.shape), i.type) for i in session.get_inputs()}
            full.update(branch_feed(declared, feed, flag, BRANCH_INPUT))
        return dict(zip(out_names, session.run(out_names, full)))

    def torch_run(spec: Any, flag: bool, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            got = graph_module(side.model, spec)(*(torch.from_numpy(np.ascontiguousarray(feed[t.name])) for t in spec.inputs))
        return {t.name: _to_numpy(v) for t, v in zip(spec.outputs, got)}

    def decode(run: Callable[[Any, bool, Mapping[str, np.ndarray]], dict[str, np.ndarray]]) -> np.ndarray:
        states = next(iter(run(encoder, False, encoder_feed).values()))
        mask = encoder_feed.get("attention_mask", np.ones(states.shape[:2], np.int64))
        ids = np.full((states.shape[0], 1), start, dtype=mask.dtype)
        known: dict[str, np.ndarray] = {"encoder_attention_mask": mask, "encoder_hidden_states": states}
        picked = []
        for step in range(thresholds.greedy_steps):
            spec = first if step == 0 else later
            out = run(spec, step > 0, {t.name: ids if t.name == "input_ids" else known[t.name] for t in spec.inputs})
            ids = np.argmax(out["logits"][:, -1, :], axis=-1).astype(mask.dtype)[:, None]
            picked.append(ids[:, 0])
            known.update({to_past(k): v for k, v in out.items() if is_cache_output(k)})
        return np.stack(picked, axis=1)

    expected, got = decode(torch_run), decode(onnx_run)
    steps = thresholds.greedy_steps
    return filed, measure(filed, "generated ids", f"{steps} steps", "greedy", greedy_agreement(expected, got), thresholds.greedy,
                          int(expected.size))


def _decoder_only(spec: Any) -> bool:
    """Whether the graph is a decoder fed its own cache and nothing but ids, mask and positions."""
    plain = {"input_ids", "attention_mask", "position_ids"}
    return (spec.use_past_in_inputs and spec.past is not None and spec.past.kind is PastKind.DECODER_ONLY
            and all(t.name in plain or is_cache_input(t.name) for t in spec.inputs))


def _judge(
    path: str, graph: str, side: PyTorchSide, info: ExportFolder, judged_by: str, thresholds: Thresholds | None
) -> tuple[tuple[OutputCheck, ...], tuple[Measure, ...], tuple[str, ...]]:
    from onnxspec.build.wrappers import graph_module

    session = _session(path)
    spec = side.subs[graph]
    if spec.branches:
        first, later = spec.branches
        branches = ((False, "no-cache", graph_module(side.model, first), first), (True, "cache", graph_module(side.model, later), later))
        if judged_by == "lossless":
            checks, problems, _ = validate_merged(session, branches, info.trace_shapes, info.dtypes, info.seed, graph, BRANCH_INPUT)
            return checks, (), problems
        declared = {i.name: (list(i.shape), i.type) for i in session.get_inputs()}
        measures: list[Measure] = []
        for flag, tag, module, spec in branches:
            def run(names: Sequence[str], feed: Mapping[str, np.ndarray], flag: bool = flag) -> list[np.ndarray]:
                return session.run(list(names), {**feed, **branch_feed(declared, feed, flag, BRANCH_INPUT)})

            measures += _agreement(run, module, spec, info, graph, thresholds, tag)  # type: ignore[arg-type]
        return (), tuple(measures), ()
    module = graph_module(side.model, spec)
    if judged_by == "lossless":
        checks, problems, _ = validate(session, module, spec, info.trace_shapes, info.dtypes, info.seed, graph)
        return checks, (), problems
    measures = _agreement(lambda names, feed: session.run(list(names), dict(feed)), module, spec, info, graph, thresholds)  # type: ignore[arg-type]
    if _decoder_only(spec):
        measures.append(_greedy(session, module, spec, info, graph, thresholds))  # type: ignore[arg-type]
    return (), tuple(measures), ()


def _topological(model: Any) -> Any:
    """``model`` with its nodes in an order where each comes after what it reads (onnxruntime
    sorts a main graph itself but not an If branch; the fp16 converter appends its casts last)."""
    graph = model.graph
    ready = {"", *(v.name for v in graph.input), *(t.name for t in graph.initializer)}
    waiting, ordered = list(range(len(graph.node))), []
    while waiting:
        now = [k for k in waiting if all(i in ready for i in graph.node[k].input)]
        if not now:  # a cycle, or an outer-scope name: keep the rest as they are
            ordered += waiting
            break
        for k in now:
            ready.update(graph.node[k].output)
        ordered += now
        taken = set(now)
        waiting = [k for k in waiting if k not in taken]
    ordered = [graph.node[k] for k in ordered]
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _merge_transformed(src: Path, dst: Path, branches: Sequence[str]) -> None:
    """A merged decoder rebuilt from its two branches' graphs, transformed already, as the export
    builds it (onnxruntime's tools do not all handle the If node: the fp16 converter writes an
    invalid one), with the original's metadata (its contract)."""
    import onnx

    from onnxspec.build.merge import merge_decoders

    merged = merge_decoders(*(_topological(onnx.load(b)) for b in branches))
    del merged.metadata_props[:]
    merged.metadata_props.extend(onnx.load(os.fspath(src), load_external_data=False).metadata_props)
    if merged.ByteSize() > 1_800_000_000:
        onnx.save_model(merged, os.fspath(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(merged, os.fspath(dst))


def transform_folder(
    folder: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    transform: Callable[[Path, Path], None],
    *,
    transformation: Mapping[str, Any],
    judged_by: str,
    thresholds: Thresholds | None = None,
    model: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> PostReport:
    """Apply ``transform(src, dst)`` to every graph of ``folder``, judge each result, write
    ``output_dir`` atomically (see the module docstring). Raises :class:`ValidationError`
    (carrying the :class:`PostReport`) when a result fails."""
    from onnxspec.pipeline.core import versions

    start = time.perf_counter()
    folder, output_dir = os.fspath(folder), os.fspath(output_dir)
    if os.path.abspath(folder) == os.path.abspath(output_dir):
        raise ConfigError(f"the output folder {output_dir!r} is the export folder itself; choose another output folder")
    info = read_export_folder(folder, transformation)
    if info.lossy is not None:  # the graphs are already lossy: judge by agreement, no stricter than before
        judged_by = "agreement"
        thresholds = info.lossy if thresholds is None else loosest(info.lossy, thresholds)
    recover_stale(os.path.abspath(output_dir))
    check_output_dir(output_dir, overwrite)
    side = pytorch_side(info, model)
    workdir, created = make_workdir(output_dir)
    finished = False
    try:
        files = _copy_side_files(folder, workdir)
        results = []
        for graph in info.graphs:
            t0 = time.perf_counter()
            src, dst = Path(folder) / graph, Path(workdir) / graph
            dst.parent.mkdir(parents=True, exist_ok=True)
            spec = side.subs[graph]
            branches = [os.path.join(workdir, b.filename) for b in spec.branches]
            try:
                with quiet_tools():
                    if branches and all(os.path.isfile(b) for b in branches):
                        _merge_transformed(src, dst, branches)
                    else:
                        transform(src, dst)
            except OnnxSpecError:
                raise
            except Exception as e:  # onnxruntime's tools fail with their own exceptions
                kind = transformation.get("kind", "transform")
                raise ExportError(
                    f"{kind} ({graph})", tuple(r.filename for r in results),
                    f"onnxruntime's tools failed on {graph} ({type(e).__name__}: {str(e)[:300]}); nothing was written to "
                    f"{output_dir!r}: run with --debug for the traceback, or choose another --method / --level",
                ) from e
            try:
                checks, measures, problems = _judge(os.fspath(dst), graph, side, info, judged_by, thresholds)
            except OnnxSpecError:
                raise
            except Exception as e:  # onnxruntime cannot load or run what the tools wrote
                raise ExportError(
                    f"judge ({graph})", tuple(r.filename for r in results),
                    f"onnxruntime cannot run the transformed {graph} ({type(e).__name__}: {str(e)[:300]}); nothing was written "
                    f"to {output_dir!r}: choose another --method / --level, or leave --fp16 out",
                ) from e
            results.append(GraphResult(
                filename=graph, bytes_before=graph_bytes(src), bytes_after=graph_bytes(dst), checks=checks, measures=measures,
                problems=problems, seconds=round(time.perf_counter() - t0, 3),
            ))
        if judged_by == "agreement":
            found = _seq2seq_greedy(workdir, side, info, thresholds)  # type: ignore[arg-type]
            if found is not None:
                results = [attrs.evolve(r, measures=(*r.measures, found[1])) if r.filename == found[0] else r for r in results]
        files += [n for n in sorted(os.listdir(workdir)) if _is_graph_file(n)]
        report = PostReport(
            transformation=transformation, judged_by=judged_by, thresholds=thresholds, source_dir=os.path.abspath(folder),
            output_dir=os.path.abspath(output_dir), model_folder=os.path.abspath(side.folder), model_type=info.model_type,
            task=info.task, graphs=tuple(results), seconds=round(time.perf_counter() - start, 3), export=info.export,
            versions=versions(), files=tuple(sorted([*files, POST])),
        )
        with open(os.path.join(workdir, POST), "w", encoding="utf-8") as f:
            f.write(post_json(report))
        if not report.passed:
            failed = keep_failed(workdir, output_dir)
            finished = True
            raise ValidationError(
                f"{info.model_type}/{info.task}: the {_DONE.get(transformation.get('kind', ''), 'transformed')} graphs disagree with PyTorch "
                f"beyond the thresholds:\n  - " + "\n  - ".join(report.failures)
                + f"\nNothing was written to {output_dir!r}; the graphs and {POST} are in {failed!r}",
                report,
            )
        move_into_place(workdir, output_dir)
        finished = True
        return report
    finally:
        if not finished:
            shutil.rmtree(workdir, ignore_errors=True)
            remove_created(created)
