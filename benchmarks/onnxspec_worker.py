"""Runs in the project's venv and prints one JSON line of measurements (imports excluded).

Modes:
  inproc  MODEL_DIR TASK OUT_DIR        seconds inside ``onnxspec.pipeline.core.export`` (with validation),
                                        first and second call in the process
  floor   MODEL_DIR TASK WORK_DIR RUNS  pipeline export without validation vs plain torch.onnx.export
                                        of the same modules and inputs, interleaved, after a warm-up
  merged  MODEL_DIR TASK OUT_DIR MERGED  seconds inside one ``export`` with the merged decoder (MERGED=1,
                                        the default) or without it (0: three files), and the file sizes
  peak    MODEL_DIR TASK WORK_DIR STEP  load the model (STEP=load) or also run the bare exports (STEP=raw)
  stages  MODEL_DIR TASK OUT_DIR        peak RSS during each pipeline stage of one export
  latency SPEC_JSON                     onnxruntime latency and node count of several graphs
  batch   JOBS_JSON                     several of the above in one process (the smoke run: one import)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from typing import Any

warnings.simplefilter("ignore")


def inproc(folder: str, task: str, out: str) -> dict[str, Any]:
    """Two exports in one process: the first pays the lazy imports and torch's first-trace
    warm-up (``seconds``), the second shows the steady cost with every import excluded
    (``warm_seconds``)."""
    import onnxruntime  # noqa: F401  (imports are excluded on both sides: Optimum's worker
    import transformers  # noqa: F401  imports main_export, which pulls these in, before its clock)

    from onnxspec.pipeline.core import export

    start = time.perf_counter()
    report = export(folder, out, task=task, overwrite=True)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    warm = export(folder, out + "-warm", task=task, overwrite=True)
    warm_seconds = time.perf_counter() - start
    shutil.rmtree(out + "-warm", ignore_errors=True)
    return {
        "seconds": seconds,
        "warm_seconds": warm_seconds,
        "trace_seconds": sum(g.export_seconds for g in report.graphs),
        "validate_seconds": sum(g.validate_seconds for g in report.graphs),
        "warm_trace_seconds": sum(g.export_seconds for g in warm.graphs),
        "warm_validate_seconds": sum(g.validate_seconds for g in warm.graphs),
        "checks": sum(len(g.checks) for g in report.graphs),
        "passed": report.passed and warm.passed,
    }


def merged_export(folder: str, task: str, out: str, merged: bool) -> dict[str, Any]:
    """One export (with validation) in a fresh process, imports done before the clock, with
    ``merged=True`` (encoder, decoder, decoder with past and the merged decoder) or ``False``
    (the three files of the layout before merged decoders); its seconds, the time of each
    stage kind and the written files' sizes."""
    import onnxruntime  # noqa: F401
    import transformers  # noqa: F401

    from onnxspec.pipeline.core import export

    stages: dict[str, float] = {}  # seconds per stage kind (load, dummies, trace, check, validate, write), summed over graphs
    merge_seconds = [0.0]  # seconds in the merged decoder's own stages (its trace = the merge, check, validate)
    last: list[Any] = [None, "", time.perf_counter()]

    def progress(stage: str, detail: str = "") -> None:
        now = time.perf_counter()
        if last[0] is not None:
            stages[last[0]] = stages.get(last[0], 0.0) + now - last[2]
            if "merged" in (last[1] or ""):
                merge_seconds[0] += now - last[2]
        last[:] = [stage, detail, now]

    start = time.perf_counter()
    report = export(folder, out, task=task, merged=merged, overwrite=True, progress=progress)
    seconds = time.perf_counter() - start
    progress("end")
    files = {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out))}
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "merged": merged,
        "passed": report.passed,
        "graphs": {g.filename: {"export_seconds": g.export_seconds, "validate_seconds": g.validate_seconds} for g in report.graphs},
        "stage_seconds": stages,
        "merge_stages_seconds": merge_seconds[0],
        "files": files,
    }


def _prepare(folder: str, task: str) -> tuple[Any, Any]:
    """The model loaded as the pipeline loads it, and the traced files of the pipeline's plan."""
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.pipeline.core import load_model, plan, resolve_spec
    from onnxspec.pieces.tasks import parse_task

    model = load_model(folder, parse_task(task).name)
    spec = resolve_spec(model.config.model_type, model.config, task, REGISTRY)
    if spec.attn_implementation is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(spec.attn_implementation)
    return model, plan(spec, merged=False)


def _raw_export(model: Any, graphs: Any, work: str) -> float:
    """Only the ``torch.onnx.export`` calls the pipeline makes (same module, inputs, names, axes,
    opset); returns their seconds. Files go to ``work`` and are removed."""
    import torch

    from onnxspec.pieces.axes import axes_view
    from onnxspec.pieces.generators import context, make_dummies
    from onnxspec.pieces.patches import patched
    from onnxspec.pieces.shapes import DTypes, Shapes
    from onnxspec.build.wrappers import graph_module

    os.makedirs(work, exist_ok=True)
    spent = 0.0
    for sub in graphs:
        ctx = context(Shapes(), DTypes(), sub.dims, past=sub.past, padding_side=sub.padding_side)
        dummies = make_dummies(sub.inputs, sub.generators, ctx, 0)
        module = graph_module(model, sub)
        dynamic = {**axes_view(sub.inputs), **axes_view(sub.outputs)}
        path = os.path.join(work, "raw-" + sub.filename)
        with warnings.catch_warnings(), torch.no_grad(), patched(sub.patches):
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            torch.onnx.export(
                module,
                tuple(dummies.values()),
                path,
                input_names=[t.name for t in sub.inputs],
                output_names=[t.name for t in sub.outputs],
                dynamic_axes={k: v for k, v in dynamic.items() if v},
                opset_version=sub.opset,
                do_constant_folding=True,
                dynamo=False,
            )
            spent += time.perf_counter() - t0
        for name in os.listdir(work):
            if name.startswith("raw-"):
                os.remove(os.path.join(work, name))
    return spent


def peak(folder: str, task: str, work: str, step: str) -> dict[str, Any]:
    """One step in its own process, so that its peak RSS can be read: ``load`` (the model only) or
    ``raw`` (the model and the bare torch.onnx.export calls: the memory floor of any exporter
    built on the TorchScript exporter)."""
    t0 = time.perf_counter()
    model, graphs = _prepare(folder, task)
    out: dict[str, Any] = {"load_seconds": time.perf_counter() - t0}
    if step == "raw":
        out["export_seconds"] = _raw_export(model, graphs, work)
    return out


def stage_peaks(folder: str, task: str, out: str) -> dict[str, Any]:
    """Peak RSS during each pipeline stage of one export, to show where an export's memory goes
    (``memory_worker.sampled_export``: a thread samples /proc/self/status every 20 ms)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from memory_worker import sampled_export

    got = sampled_export(folder, task, out)
    return {**{k: got[k] for k in ("seconds", "passed", "stages", "process_peak_rss", "report_stage_memory")},
            "peak_rss_by_stage": {stage: peak["VmRSS"] for stage, peak in got["peaks"].items()}}


def floor(folder: str, task: str, work: str, runs: int, warm_up: bool = True) -> dict[str, Any]:
    """Time ``export(model, validation_shapes=())`` against the bare ``torch.onnx.export`` calls it
    makes (same module, same dummy inputs, same names, axes and opset), interleaved."""
    from onnxspec.pipeline.core import export

    model, graphs = _prepare(folder, task)
    os.makedirs(work, exist_ok=True)

    def raw() -> float:
        return _raw_export(model, graphs, work)

    def pipeline() -> tuple[float, float, dict[str, float]]:
        out = os.path.join(work, "pipeline-out")
        marks: list[tuple[str, float]] = []
        t0 = time.perf_counter()
        report = export(model, out, task=task, overwrite=True, validation_shapes=(),
                        progress=lambda stage, detail: marks.append((stage, time.perf_counter())))
        end = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        stages: dict[str, float] = {}
        for (stage, at), (_, nxt) in zip(marks, [*marks[1:], ("end", end)]):
            stages[stage] = stages.get(stage, 0.0) + nxt - at  # a stage runs until the next one starts
        return end - t0, sum(g.export_seconds for g in report.graphs), stages

    if warm_up:  # first traces pay torch's lazy initialisation
        raw()
        pipeline()
    raws, pipes, traces, stage_runs = [], [], [], []
    for r in range(runs):
        order = ("raw", "pipe") if r % 2 == 0 else ("pipe", "raw")
        for side in order:
            if side == "raw":
                raws.append(raw())
            else:
                total, trace, stages = pipeline()
                pipes.append(total)
                traces.append(trace)
                stage_runs.append(stages)
    stage_medians = {k: statistics.median(r.get(k, 0.0) for r in stage_runs) for k in stage_runs[0]} if stage_runs else {}
    return {"raw_seconds": raws, "pipeline_seconds": pipes, "pipeline_trace_seconds": traces,
            "pipeline_stage_seconds": stage_medians, "graphs": [s.filename for s in graphs]}


def _count_nodes(graph: Any) -> int:
    n = 0
    for node in graph.node:
        n += 1
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                n += _count_nodes(attr.g)
            for g in attr.graphs:
                n += _count_nodes(g)
    return n


def _feeds(session: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Inputs for one case: ``{"batch": b, "sequence": s}`` (full pass) or ``{"batch": b, "past": p}``
    (one decode step: one new token over ``p`` cached ones)."""
    import numpy as np

    rng = np.random.default_rng(0)
    b = case["batch"]
    past = case.get("past")
    s = 1 if past is not None else case["sequence"]
    total = s + (past or 0)
    feeds = {}
    for value in session.get_inputs():
        name, kind = value.name, value.type
        if name == "input_ids":
            feeds[name] = rng.integers(0, 100, size=(b, s), dtype=np.int64)  # every vocabulary here has >= 100 ids
        elif name == "attention_mask":
            feeds[name] = np.ones((b, total), dtype=np.int64)
        elif name == "token_type_ids":
            feeds[name] = np.zeros((b, s), dtype=np.int64)
        elif name == "position_ids":
            feeds[name] = np.tile(np.arange(total - s, total, dtype=np.int64), (b, 1))
        elif name.startswith("past_key_values."):
            heads, head_dim = value.shape[1], value.shape[3]
            feeds[name] = rng.standard_normal((b, heads, past or 0, head_dim), dtype=np.float32)
        elif name == "use_cache_branch":
            feeds[name] = np.array([past is not None and past > 0])
        else:
            raise ValueError(f"no feed rule for graph input {name!r} ({kind})")
    return feeds


def latency(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-call latency (ms, mean over ``iters`` calls) of each graph, each thread setting and
    case; ``runs`` blocks interleaved across graphs; node counts (subgraphs included)."""
    import onnx
    import onnxruntime as ort

    graphs: dict[str, str] = spec["graphs"]
    result: dict[str, Any] = {"nodes": {}, "latency_ms": {}}
    for side, path in graphs.items():
        result["nodes"][side] = _count_nodes(onnx.load(path, load_external_data=False).graph)
    for threads in spec["threads"]:
        sessions = {}
        for side, path in graphs.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            sessions[side] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for case in spec["cases"]:
            key = f"threads={threads or 'all'} " + " ".join(f"{k}={v}" for k, v in case.items())
            feeds = {side: _feeds(s, case) for side, s in sessions.items()}
            iters = case.get("iters", spec["iters"])
            for side, s in sessions.items():
                for _ in range(2):
                    s.run(None, feeds[side])
            times: dict[str, list[float]] = {side: [] for side in sessions}
            for r in range(spec["runs"]):
                order = list(sessions) if r % 2 == 0 else list(reversed(list(sessions)))
                for side in order:
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        sessions[side].run(None, feeds[side])
                    times[side].append((time.perf_counter() - t0) / iters * 1000)
            result["latency_ms"][key] = times
        del sessions
    return result


def run(mode: str, args: list[Any]) -> Any:
    if mode == "inproc":
        return inproc(args[0], args[1], args[2])
    if mode == "floor":
        return floor(args[0], args[1], args[2], int(args[3]), *(bool(a) for a in args[4:5]))
    if mode == "stages":
        return stage_peaks(args[0], args[1], args[2])
    if mode == "merged":
        return merged_export(args[0], args[1], args[2], args[3] in ("1", "true", True))
    if mode == "peak":
        return peak(args[0], args[1], args[2], args[3])
    if mode == "latency":
        with open(args[0]) as f:
            return latency(json.load(f))
    if mode == "batch":
        with open(args[0]) as f:
            return [run(job[0], job[1:]) for job in json.load(f)]
    raise SystemExit(f"unknown mode {mode!r}: use inproc, floor, merged, stages, peak, latency or batch")


def main() -> None:
    mode, *args = sys.argv[1:]
    with contextlib.redirect_stdout(sys.stderr):
        out = run(mode, args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
