"""Validation and export reports: frozen records that print as tables and serialise to JSON."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import attrs
import psutil

from onnxspec.judge.runtimes import Runtime, main_graph, runtimes_for

__all__ = [
    "ExportReport", "GraphReport", "OutputCheck", "folder_bytes", "process_seconds", "report_json", "to_plain", "why_failed", "write_report",
]


@attrs.frozen(kw_only=True)
class OutputCheck:
    """One output compared at one shape set.

    ``passed`` is ``error <= bound``. ``criterion`` says how the bound was set: ``"noise"``
    (the bound is a multiple of ``noise``, PyTorch's own error against float64: with
    ``reference`` ``"float64"`` measured at this set; with ``"torch"``, measured at the set
    ``note`` names and scaled to this output's size ``scale``, the error then being against
    PyTorch at the export dtype) or ``"tolerance"`` (a fixed ``atol + rtol * |torch|`` against
    PyTorch at the export dtype; ``note`` says why when it stands in for a float64 reference).
    ``max_abs`` / ``max_rel`` are always onnxruntime against PyTorch at the export dtype.
    """

    graph: str
    output: str
    shape_set: str
    torch_shape: tuple[int, ...]
    onnx_shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    compared: int
    passed: bool
    problem: str = ""
    criterion: str = "tolerance"
    reference: str = "torch"
    error: float = float("nan")
    bound: float = float("nan")
    noise: float = float("nan")
    note: str = ""
    scale: float = float("nan")
    """The output's size (``max |reference|``) the bound's floor and cap scale with."""

    @property
    def error_over_bound(self) -> float:
        """``error / bound``: what the verdict judges (``passed`` is this <= 1). Unlike ``max_rel``,
        it stays meaningful on outputs whose values are near 0."""
        if math.isnan(self.error) or math.isnan(self.bound):
            return math.nan
        return self.error / self.bound if self.bound > 0 else (0.0 if self.error == 0 else math.inf)


@attrs.frozen(kw_only=True)
class GraphReport:
    """One exported file: how it was traced, what the graph check found, every output check."""

    filename: str
    behavior: str
    kind: str = ""
    """The file's graph kind (``encoder``, ``decoder-with-past``, ``merged-decoder``...)."""
    use_past: bool
    use_past_in_inputs: bool
    backend: str
    trace_shapes: Mapping[str, int] = attrs.field(converter=dict, hash=False)
    export_seconds: float
    validate_seconds: float
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    checks: tuple[OutputCheck, ...] = ()
    problems: tuple[str, ...] = ()
    fallback: str = ""
    """Why ``backend`` is not the backend chosen first: the first backend and its one-line
    failure (``"torchscript: UnsupportedOperatorError: ..."``); empty when it traced the graph."""
    runtime: str = "onnxruntime"
    """What ran the graph for validation: ``"onnxruntime"`` (CPU provider), ``"onnxruntime
    (unoptimized, low-memory)"`` (an fp16 graph whose weights' fp32 copies would not fit: graph
    optimizations off, no arena, each weight cast right before its use), or ``"onnx.reference"``
    (onnx's reference evaluator, for bf16 graphs onnxruntime's CPU kernels cannot run)."""
    float64_reference: str = ""
    """How PyTorch's float64 run was made: ``"streamed"`` (one module in float64 at a time),
    ``"whole model: <why not streamed>"``, or empty (none: each check's ``reference`` says why)."""
    path: str = attrs.field(default=attrs.Factory(lambda self: self.filename, takes_self=True))
    """Where the file is, relative to the output folder: ``filename`` (the name in onnxspec's plan,
    which the checks' ``graph`` names) unless a layout put it elsewhere: ``onnx/model.onnx`` in
    transformers.js', ``onnx/model_fp16.onnx`` for the graph of the fp16 export's report; ``""``
    when the layout left the file out (transformers.js loads ``decoder_model_merged.onnx``, not
    the two decoders it was merged from, which were validated all the same)."""

    @property
    def validated(self) -> bool:
        """Whether the graph was compared with PyTorch at all (at least one check ran)."""
        return bool(self.checks)

    @property
    def passed(self) -> bool:
        """Validated, and every check passed with no problem found: never true without checks."""
        return self.validated and not self.problems and all(c.passed for c in self.checks)


@attrs.frozen(kw_only=True)
class ExportReport:
    """The outcome of one export: every graph's report, versions and where files went."""

    model_type: str
    task: str
    backend: str
    output_dir: str
    graphs: tuple[GraphReport, ...]
    versions: Mapping[str, str] = attrs.field(converter=dict, hash=False)
    seed: int
    seconds: float
    files: tuple[str, ...] = ()
    source: Mapping[str, str] = attrs.field(factory=dict, converter=dict, hash=False)
    """What the model was read from: ``format`` (``transformers``, ``gguf`` or ``module``), the
    folder, the GGUF file, notes (``tokenizer``: saved, or why not)."""
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Warnings that do not fail the export (e.g. no tokenizer or preprocessor to copy)."""
    total_bytes: int | None = None
    """The size of every file in the output folder, this report included (``None``: not measured)."""
    process_seconds: float | None = None
    """Wall time from the start of the process to the report: the interpreter's start-up and the
    imports as well as ``seconds``, the export itself. In a long-lived process (a notebook) it also
    counts what ran before."""
    stage_memory: Mapping[str, int] = attrs.field(factory=dict, converter=dict, hash=False)
    """The process's peak resident bytes during each stage, by stage label (``trace:model.onnx``),
    in the order they ran (:func:`onnxspec.pipeline.stages.watch_memory`); empty where the system
    does not report memory. The ``write`` stage writes the report, so its own figure is added to
    the report file after the stage."""
    runtimes: tuple[Runtime, ...] = attrs.field(default=(), converter=tuple)
    """What loads the folder, each with a snippet to run it (:func:`~onnxspec.judge.runtimes.runtimes_for`)."""

    @property
    def validated(self) -> bool:
        return bool(self.graphs) and all(g.validated for g in self.graphs)

    @property
    def passed(self) -> bool:
        return bool(self.graphs) and all(g.passed for g in self.graphs)

    @property
    def failures(self) -> tuple[str, ...]:
        out = [f"{g.filename}: {p}" for g in self.graphs for p in g.problems]
        out += [
            f"{c.graph}: output {c.output!r} at {c.shape_set}: "
            + (c.problem or why_failed(c))
            for g in self.graphs
            for c in g.checks
            if not c.passed
        ]
        return tuple(out)


def why_failed(c: OutputCheck) -> str:
    """A failed check in words: the error, its bound, and what the bound is made of."""
    if c.criterion == "noise" and c.reference != "float64":
        return (f"error {c.error:.3g} against PyTorch > bound {c.bound:.3g} (PyTorch's own float error, "
                f"{c.note or 'scaled from another shape set'}: {c.noise:.3g}; the graph is "
                f"{c.error / max(c.noise, 1e-300):.3g}x that)")
    if c.criterion == "noise":
        return (f"error {c.error:.3g} against float64 > bound {c.bound:.3g} "
                f"(PyTorch's own float error is {c.noise:.3g}; the graph is {c.error / max(c.noise, 1e-300):.3g}x that)")
    return f"error {c.error:.3g} > bound {c.bound:.3g} (atol {c.atol:.3g} + rtol {c.rtol:.3g} x |torch|)" + (
        f"; {c.note}" if c.note else "")


def to_plain(value: Any) -> Any:
    """``value`` (a report, a check, or what they hold) as JSON-ready data: records and mappings as dicts
    (a check with its ``error_over_bound``), sequences as lists, non-finite floats as strings."""
    if isinstance(value, OutputCheck):
        data = {k: to_plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
        return {**data, "error_over_bound": to_plain(value.error_over_bound)}
    if attrs.has(type(value)):
        return {k: to_plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def report_json(report: ExportReport | GraphReport) -> str:
    """The report as JSON text, with the overall verdict first."""
    data = {"passed": report.passed, "validated": report.validated, **to_plain(report)}
    return json.dumps(data, indent=2, sort_keys=False)


def process_seconds() -> float:
    """Wall time since this process started (interpreter start-up and imports included)."""
    return time.time() - psutil.Process().create_time()


def folder_bytes(folder: str) -> int:
    """The total size of the files under ``folder``."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def write_report(report: ExportReport, folder: str) -> ExportReport:
    """Fill the runtimes, the wall time and the folder's size into ``report`` and write it to
    ``folder/onnxspec_report.json``; return the report written.

    ``folder`` is where the files are now (the export's temporary folder); the snippets name
    ``report.output_dir``, where they end up. The size counts the report itself: it is written
    again until the size it states is the size of the folder.
    """
    graphs = [g.filename for g in report.graphs]
    main = next((g for g in report.graphs if g.filename == main_graph(graphs)), None)
    report = attrs.evolve(
        report,
        runtimes=runtimes_for(report.task, report.output_dir, graphs, main.inputs if main is not None else (),
                              main.outputs if main is not None else ()),
        process_seconds=round(process_seconds(), 3),
    )
    path = os.path.join(folder, "onnxspec_report.json")
    for _ in range(5):
        with open(path, "w", encoding="utf-8") as f:
            f.write(report_json(report))
        size = folder_bytes(folder)
        if size == report.total_bytes:
            return report
        report = attrs.evolve(report, total_bytes=size)
    raise AssertionError(f"the size of {folder!r} did not settle while writing its report")  # the digits of a size settle in 2 writes
