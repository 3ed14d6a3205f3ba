"""The ``onnxspec`` command line: ``export``, ``models``, ``tasks``, ``describe``, ``inspect`` and ``validate``.

Modelled on ``optimum-cli export onnx``::

    onnxspec export --model ./my-bert --task text-classification ./my-bert-onnx

Exit codes: 0 success; 1 the export ran but disagrees with PyTorch (the validation table and
the failures are printed); 3 the export failed in a stage (no backend could trace a graph, the
disk filled up: every :class:`~onnxspec.errors.ExportError`), printed as an ``error:`` line
(the exporters' output only under ``--debug``); 2 a usage error (bad option, unknown task,
existing output folder, unreadable model folder ... every other
:class:`~onnxspec.errors.OnnxSpecError`), printed as ``error: <message>`` without a traceback
unless ``--debug``.

Heavy modules (torch, transformers, onnx) are imported only by the commands that need them, so
``onnxspec tasks`` and ``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from onnxspec.pieces.cache_names import OUTPUT_PATTERN, is_cache_output
from onnxspec.errors import ConfigError, ExportError, OnnxSpecError, ValidationError, close_matches

if TYPE_CHECKING:
    from onnxspec.judge.report import ExportReport, OutputCheck

__all__ = ["build_parser", "cli_message", "files_table", "inspect_tables", "main", "models_table", "print_report", "run", "runtimes_table", "stage_printer", "tasks_table", "validation_table"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_EXPORT = 0, 1, 2, 3



# --------------------------------------------------------------------------------------------
# tables (reused by scripts/demo.py)


def _num(value: float) -> str:
    """A number in 8 characters at most (``1.79e-07``): never cut by a table (its column does not wrap)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return "inf" if isinstance(value, float) and math.isinf(value) else f"{value:.2e}"


def _ratio(value: float) -> str:
    """``error / bound`` in 6 characters at most: ``0.013``, ``0.5``, ``19``, ``2e-05``, ``2e+04``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.2g}" if value == 0 or 1e-3 <= value < 100 else f"{value:.0e}"


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _row_checks(checks: Sequence[OutputCheck], collapse_cache: bool) -> list[tuple[str, list[OutputCheck]]]:
    """Checks grouped into table rows: one per output, cache outputs folded per shape set."""
    rows: list[tuple[str, list[OutputCheck]]] = []
    folded: dict[tuple[str, str], list[OutputCheck]] = {}
    for c in checks:
        if collapse_cache and c.passed and is_cache_output(c.output):
            key = (c.graph, c.shape_set)
            if key not in folded:
                folded[key] = []
                rows.append((OUTPUT_PATTERN, folded[key]))
            folded[key].append(c)
        else:
            rows.append((c.output, [c]))
    return rows


_CHECK_COLUMNS = (("output", "left"), ("set", "left"), ("shape", "left"), ("error", "right"), ("bound", "right"),
                  ("ratio", "right"), ("vs", "left"), ("result", "left"))
"""The columns of a check row; ``ratio`` is ``error / bound``, what the verdict judges (<= 1 passes)."""


def _checks_table(checks: Sequence[OutputCheck], collapse_cache: bool, graph_column: bool, *, stacked: bool = False,
                  names: dict[str, str] | None = None, **table: Any) -> Table:
    """Check rows in a table. The shape cells fold onto more lines when the console is narrow;
    the numbers and the names never wrap, so they are never cut. ``stacked`` puts the set and
    shape under the output's name, in one column that folds (for narrow consoles). ``names``:
    how to show a check's graph (:func:`_graph_names`)."""
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, **table)
    if graph_column:
        t.add_column("graph", no_wrap=True)
    for name, justify in _CHECK_COLUMNS[2:] if stacked else _CHECK_COLUMNS:
        header = "output / set, shape" if stacked and name == "shape" else name
        t.add_column(header, justify=justify, no_wrap=name != "shape", overflow="fold")  # type: ignore[arg-type]
    for output, group in _row_checks(checks, collapse_cache):
        worst = max(group, key=_closeness)
        label = escape(output if len(group) == 1 else f"{output} ({len(group)})")
        ok = all(c.passed for c in group)
        where = [f"{label}\n[dim]{escape(worst.shape_set)}\n{_shape(worst.onnx_shape)}[/dim]"] if stacked else [
            label, worst.shape_set, _shape(worst.onnx_shape)]
        row = [
            *where,
            _num(worst.error),
            _num(worst.bound),
            _ratio(worst.error_over_bound),
            _versus(group),
            "[green]pass[/green]" if ok else "[bold red]FAIL[/bold red]",
        ]
        t.add_row(*([escape((names or {}).get(worst.graph, worst.graph))] if graph_column else []), *row)
    return t


def _versus(group: Sequence[OutputCheck]) -> str:
    """What a row's checks were judged against: ``f64``, ``carried`` (PyTorch, with the noise measured
    against float64 at another set), ``torch`` (a fixed bound), or ``mixed`` (a folded row of several)."""
    found = {"f64" if c.reference == "float64" else "carried" if c.criterion == "noise" else "torch" for c in group}
    return found.pop() if len(found) == 1 else "mixed"


def _fits(table: Table, width: int, *, folded: bool = False) -> bool:
    """Whether ``table`` fits ``width`` columns: unwrapped, or with its foldable cells folded."""
    from rich.measure import Measurement

    wide = Console(width=10_000)  # a measurement is clamped to the console's width
    measured = Measurement.get(wide, wide.options, table)
    return (measured.minimum if folded else measured.maximum) <= width


def _graph_names(report: ExportReport) -> dict[str, str]:
    """Each graph's file as the report shows it: where it is in the folder (a layout's
    ``onnx/model.onnx``), or its name and ``(not written)`` when the layout left it out."""
    return {g.filename: getattr(g, "path", g.filename) or f"{g.filename} (not written)" for g in report.graphs}


def validation_table(report: ExportReport, *, collapse_cache: bool = True, width: int = 80) -> Group:
    """The per-output validation table of ``report``: one row per (graph, output, shape set),
    fitted to ``width`` columns without cutting a number or a graph name.

    With ``collapse_cache`` the passing ``present.*`` outputs of one graph and shape set share
    a row (the one closest to its bound is shown), so a 32-layer decoder stays readable; failing
    cache outputs keep their own rows. When one table with a ``graph`` column is wider than
    ``width``, each graph gets its own table under its name; narrower, the shape cells fold onto
    more lines; narrower still, the set and shape go under the output's name.
    """
    checks = [c for g in report.graphs for c in g.checks]
    failed = sum(not c.passed for c in checks)
    used = sorted({g.backend for g in report.graphs if g.backend} or {report.backend})  # a graph may have fallen back
    title = f"Validation of {escape(report.model_type)} / {escape(report.task)} against PyTorch ({', '.join(used)})"
    caption = (
        "NOT VALIDATED: no shape set was run"
        if not report.validated
        else f"{len(checks)} checks, all passed"
        if not failed and report.passed
        else f"{failed} of {len(checks)} checks FAILED"
    )
    names = _graph_names(report)
    whole = _checks_table(checks, collapse_cache, True, names=names, title=title, caption=caption)
    if _fits(whole, width):
        return Group(whole)
    parts: list[Any] = [Text.from_markup(f"[italic]{title}[/italic]", justify="center")]
    for g in report.graphs:
        if g.checks:
            table = _checks_table(g.checks, collapse_cache, False)
            if not _fits(table, width, folded=True):  # narrower still: set and shape under the output's name
                table = _checks_table(g.checks, collapse_cache, False, stacked=True)
            parts += ["", Text(names[g.filename], style="bold"), table]
    return Group(*parts, Text(caption, justify="center", style="italic"))


def _closeness(check: OutputCheck) -> float:
    """How close a check came to its bound (a failure, or NaN, ranks first)."""
    if not check.passed or math.isnan(check.error):
        return math.inf
    return check.error_over_bound


def criteria_legend(report: ExportReport) -> str:
    """A few lines saying what the error, bound and ratio columns of the table mean (each under
    80 columns)."""
    checks = [c for g in report.graphs for c in g.checks]
    runtime = " / ".join(sorted({getattr(g, "runtime", "onnxruntime") for g in report.graphs})) or "onnxruntime"
    lines = []
    if any(c.reference == "float64" for c in checks):
        lines += [f"f64: error = max |{runtime} - PyTorch in float64|",
                  "     bound = k x PyTorch's own error (its float32 against float64)"]
    if any(c.reference != "float64" and c.criterion == "noise" for c in checks):
        lines += [f"carried: error = max |{runtime} - PyTorch|",
                  "         bound = k x PyTorch's own error against float64, measured at",
                  "         the set named below"]
    if any(c.reference != "float64" and c.criterion != "noise" for c in checks):
        lines += [f"torch: error = |{runtime} - PyTorch|",
                  "       bound = atol + rtol x |PyTorch| (the worst element)"]
    if any(_versus(group) == "mixed" for _, group in _row_checks(checks, True)):
        lines.append("mixed: a folded row of outputs judged both ways (the worst is shown)")
    if checks:
        lines.append("ratio = error / bound: a check passes when it is at most 1")
    notes = sorted({c.note for c in checks if c.note})
    lines += [f"  ({n})" for n in notes]
    return "\n".join(lines)


def files_table(report: ExportReport) -> Table:
    """The files an export wrote, with their sizes, and the whole folder's size when the report
    states it (names fold, never cut)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    for name in report.files:
        path = os.path.join(report.output_dir, name)
        size = os.path.getsize(path) if os.path.isfile(path) else None
        table.add_row(escape(name), "?" if size is None else _size(size))
    if report.total_bytes is not None:
        table.add_section()
        table.add_row(f"total ({len(report.files)} files)", _size(report.total_bytes), style="bold")
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _seconds(report: ExportReport) -> str:
    took = f"Took {report.seconds:.1f}s to export"
    if report.process_seconds is not None:
        took += f", {report.process_seconds:.1f}s since the process started (imports included)"
    return took + "."


def runtimes_table(report: ExportReport) -> Table:
    """What loads the folder: each runtime, its class or call, and what the folder lacks for it."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    table.add_column("runtime", no_wrap=True)
    table.add_column("loads it", no_wrap=True)
    table.add_column("as written?", overflow="fold")
    for r in report.runtimes:
        ready = "yes" if not r.needs or r.name == "onnxruntime" else f"needs {r.needs}"
        if r.name == "onnxruntime" and r.needs:
            ready = f"yes, {r.needs}"
        table.add_row(r.name, escape(r.loader), escape(ready))
    return table


def print_report(console: Console, report: ExportReport, *, files: bool = True) -> None:
    """Print the validation table, graph-level problems and failures, then the files written,
    their size, the time taken and how to run the folder (a snippet for the first runtime that
    loads it as written)."""
    console.print(validation_table(report, width=console.width))
    legend = criteria_legend(report)
    if legend:
        console.print(escape(legend), style="dim")
    problems = report.failures
    if problems:
        console.print("[bold red]Failures:[/bold red]")
        for p in problems:
            console.print(f"  - {escape(p)}")
    if files and report.files and os.path.isdir(report.output_dir):
        console.print(f"Files written to {escape(report.output_dir)}:")
        console.print(files_table(report))
        console.print(_seconds(report))
        if report.runtimes:
            console.print("Run it with:")
            console.print(runtimes_table(report))
            ready = next((r for r in report.runtimes if not r.needs or r.name == "onnxruntime"), None)
            if ready is not None:
                # printed as is: a long path runs past the edge rather than breaking a line of code
                console.print(ready.snippet, markup=False, highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"[yellow]warning:[/yellow] {escape(note)}")


def models_table(registry: Any) -> Table:
    """Supported model types, their family and tasks (``-with-past``: also with a KV cache)."""
    pairs = sum(len(registry[model_type].tasks) for model_type in registry)
    table = Table(
        title=f"Supported model types: {len(registry)}, with {pairs} (model type, task) pairs",
        box=box.SIMPLE_HEAD,
        caption="tasks marked +past also export with a KV cache (--task <task>-with-past)",
    )
    table.add_column("model type")
    table.add_column("family")
    table.add_column("tasks")
    for model_type in sorted(registry):
        e = registry[model_type]
        plain = [t for t in e.tasks if not t.endswith("-with-past")]
        tasks = ", ".join(t + (" +past" if f"{t}-with-past" in e.tasks else "") for t in plain)
        table.add_row(model_type, getattr(e.family, "__name__", str(e.family)), tasks)
    return table


def tasks_table() -> Table:
    """Every task, its synonyms, the outputs it exports and the model heads it loads: its auto
    classes, then the heads a model type loads by class name (``NAMED_HEADS``, e.g.
    ``PatchTSTForPrediction (patchtst)``)."""
    from onnxspec.pieces.tasks import NAMED_HEADS, SYNONYMS, TASKS

    table = Table(title="Tasks", box=box.SIMPLE_HEAD, caption="append -with-past to a task to export it with a KV cache")
    table.add_column("task")
    table.add_column("synonyms")
    table.add_column("outputs (dynamic axes)")
    table.add_column("model heads", overflow="fold")  # class names are long: fold them rather than cut them
    for name, info in TASKS.items():
        synonyms = ", ".join(s for s, t in SYNONYMS.items() if t == name)
        outputs = "\n".join(f"{o.name} {dict(o.axes)}" for o in info.outputs)
        named = [f"{head} ({model_type})" for (model_type, task), head in sorted(NAMED_HEADS.items()) if task == name]
        table.add_row(name, synonyms, escape(outputs), ", ".join((*info.auto_classes, *named)))
    return table


def _axes(shape: tuple[int | str, ...] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


_LAYER = re.compile(r"\.\d+\.")


def _io_rows(tensors: Sequence[Any], fold: bool) -> list[tuple[str, str, str]]:
    """(name, dtype, axes) rows; with ``fold`` the cache tensors of one kind share a row
    (``present.*.decoder.* (4)``: its first tensor's dtype and axes)."""
    from onnxspec.pieces.cache_names import parse

    rows: list[tuple[str, str, str]] = []
    groups: dict[str, list[Any]] = {}
    for t in tensors:
        if fold and parse(t.name) is not None:
            key = _LAYER.sub(".*.", t.name).rsplit(".", 1)[0] + ".*"
            if key not in groups:
                groups[key] = []
                rows.append((key, "", ""))
            groups[key].append(t)
        else:
            rows.append((t.name, t.dtype, _axes(t.shape)))
    out = []
    for name, dtype, axes in rows:
        if name in groups:
            first = groups[name][0]
            name, dtype, axes = f"{name} ({len(groups[name])})", first.dtype, _axes(first.shape)
        out.append((name, dtype, axes))
    return out


def _contract_title(contract: Any) -> str:
    if contract is None:
        return "no onnxspec contract"
    cache = "cache in and out" if contract.get("use_past_in_inputs") else "cache out" if contract.get("use_past") else "no cache"
    return f"contract: {contract.get('model_type')} / {contract.get('task')}, {contract.get('behavior')}, {cache}"


def inspect_tables(info: Any, *, fold: bool = True) -> list[Any]:
    """What ``onnxspec inspect`` prints for a :class:`~onnxspec.cli.inspection.FolderInfo`: a header,
    the graphs, the validation summary, each graph's inputs and outputs, versions (each table
    fits 80 columns: long cells wrap, numbers are never cut)."""
    parts: list[Any] = []
    report, total = info.report, _size(info.total_size)
    parts.append(f"[bold]{escape(info.folder)}[/bold]: {len(info.graphs)} graph(s), {len(info.files)} files, {total}")
    if report is not None:
        verdict = (
            "[green]validated against PyTorch, passed[/green]" if report.get("passed")
            else "[bold red]NOT validated[/bold red]" if not report.get("validated")
            else "[bold red]validation FAILED[/bold red]"
        )
        parts.append(f"onnxspec export of {escape(str(report.get('model_type')))} / {escape(str(report.get('task')))} "
                     f"({escape(str(report.get('backend')))}): {verdict}")
    elif info.written_by_onnxspec:
        parts.append("[yellow]no onnxspec_report.json: the graphs carry onnxspec contracts, but the validation report is missing[/yellow]")
    else:
        parts.append("[yellow]not written by onnxspec: no onnxspec_report.json and no embedded contract (Optimum's layout or "
                     "another tool's); what follows is read from the ONNX files alone, nothing says they were validated[/yellow]")
    if info.config is not None:
        archs = ", ".join(info.config.get("architectures") or ()) or "-"
        parts.append(f"config.json: model_type {escape(str(info.config.get('model_type')))}, architectures {escape(archs)}")

    graphs = Table(title="Graphs", box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("file", "left"), ("size", "right"), ("external data", "left"), ("opset", "right"), ("contract", "left")):
        graphs.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for g in info.graphs:
        contract = "none" if g.contract is None else "[bold red]differs[/bold red]" if g.contract_problems else "matches"
        graphs.add_row(escape(g.file), _size(g.size), escape(", ".join(g.external_data)) or "-", str(g.opset or "?"), contract)
    parts.append(graphs)
    for g in info.graphs:
        parts += [f"  [bold red]{escape(g.file)}[/bold red]: {escape(p)}" for p in g.contract_problems]

    if any(g.summary is not None for g in info.graphs):
        checks = Table(title=f"Validation ({', '.join(info.reports) or 'onnxspec_report.json'})", box=box.SIMPLE_HEAD, title_justify="left",
                       padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
        checks.add_column("graph", no_wrap=True)
        for name, justify in (("checks", "left"), ("error", "right"), ("bound", "right"), ("ratio", "right"), ("set", "left")):
            checks.add_column(name, justify=justify, no_wrap=name != "set", overflow="fold")  # type: ignore[arg-type]
        for g in info.graphs:
            s = g.summary
            if s is None:
                checks.add_row(escape(g.file), "[yellow]not in report[/yellow]", "", "", "", "")
                continue
            result = (f"[green]{s.checks} pass[/green]" if s.passed
                      else f"[bold red]{s.failed} of {s.checks} FAIL[/bold red]" if s.failed else "[yellow]none run[/yellow]")
            known = s.worst_error is not None and s.worst_bound is not None
            ratio = math.inf if known and s.worst_bound == 0 and s.worst_error else (
                s.worst_error / s.worst_bound if known and s.worst_bound else 0.0)
            checks.add_row(
                escape(g.file), result,
                "" if s.worst_error is None else _num(s.worst_error),
                "" if s.worst_bound is None else _num(s.worst_bound),
                _ratio(ratio) if known else "",
                escape(s.worst_set),
            )
        parts += [checks, "[dim]error, bound, ratio = error / bound: the check closest to its bound[/dim]"]

    for g in info.graphs:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("", style="dim")
        table.add_column("name", no_wrap=True, overflow="fold")
        table.add_column("dtype", no_wrap=True)
        table.add_column("axes", overflow="fold")
        for side, tensors in (("in", g.inputs), ("out", g.outputs)):
            for i, (name, dtype, axes) in enumerate(_io_rows(tensors, fold)):
                table.add_row(side if i == 0 else "", escape(name), dtype, escape(axes))
        parts += ["", f"[bold]{escape(g.file)}[/bold]: {escape(_contract_title(g.contract))}", table]

    parts.append("")
    runtimes = [r for r in (report or {}).get("runtimes", ()) if isinstance(r, dict)]
    if runtimes:  # as the export recorded them; the folder may have moved since
        parts.append("loaded by: " + escape("; ".join(
            f"{r.get('name')} {r.get('loader')}" + (f" (needs {r['needs']})" if r.get("needs") and r.get("name") != "onnxruntime" else "")
            for r in runtimes)))
    if report is not None and report.get("versions"):
        parts.append("versions: " + escape(", ".join(f"{k} {v}" for k, v in report["versions"].items())))
    producers = sorted({g.producer for g in info.graphs if g.producer})
    if producers:
        parts.append("produced by: " + escape(", ".join(producers)))
    for note in (report or {}).get("notes", ()):
        parts.append(f"[yellow]warning:[/yellow] {escape(str(note))}")
    others = [n for n, _ in info.files if not n.endswith(".onnx") and not any(n.endswith("/" + e) or n == e for g in info.graphs for e in g.external_data)]
    if others:
        parts.append("other files: " + escape(", ".join(others)))
    parts.append(f"total size: {total}")
    return parts


def _run_inspect(args: argparse.Namespace, out: Console) -> int:
    from onnxspec.cli.inspection import inspect_folder

    for part in inspect_tables(inspect_folder(args.folder), fold=not args.all):
        out.print(part, highlight=False)
    return EXIT_OK


def post_tables(report: Any) -> list[Any]:
    """The tables of a quantize / optimize report: sizes, then the figures it was judged by
    (cache outputs folded per shape set into their worst row)."""
    sizes = Table(box=box.SIMPLE_HEAD, title="Sizes")
    for name in ("graph", "before", "after", "after / before"):
        sizes.add_column(name, justify="left" if name == "graph" else "right")
    for g in report.graphs:
        sizes.add_row(escape(g.filename), _size(g.bytes_before), _size(g.bytes_after), f"{g.bytes_after / max(g.bytes_before, 1):.2f}")
    judged = Table(box=box.SIMPLE_HEAD, title=f"Against PyTorch ({report.judged_by})")
    worst: dict[tuple[str, str, str, str], Any] = {}
    if report.judged_by == "agreement":
        for name in ("graph", "output", "set", "metric", "value", "threshold", "result"):
            judged.add_column(name, justify="right" if name in ("value", "threshold") else "left")
        for g in report.graphs:
            for m in g.measures:
                key = (m.graph, "present.*" if is_cache_output(m.output) else m.output, m.shape_set, m.metric)
                if key not in worst or (m.passed, m.value) < (worst[key].passed, worst[key].value):
                    worst[key] = m
        for (graph, output, shape_set, metric), m in worst.items():
            judged.add_row(escape(graph), escape(output), escape(shape_set), metric, f"{m.value:.4f}", f"{m.threshold:.4f}",
                           "pass" if m.passed else "[red]FAIL[/red]")
    else:
        for name in ("graph", "output", "set", "error", "bound", "result"):
            judged.add_column(name, justify="right" if name in ("error", "bound") else "left")
        for g in report.graphs:
            for c in g.checks:
                key = (c.graph, "present.*" if is_cache_output(c.output) else c.output, c.shape_set, "")
                if key not in worst or (c.passed, -_closeness(c)) < (worst[key].passed, -_closeness(worst[key])):
                    worst[key] = c
        for (graph, output, shape_set, _), c in worst.items():
            judged.add_row(escape(graph), escape(output), escape(shape_set), _num(c.error), _num(c.bound),
                           "pass" if c.passed else "[red]FAIL[/red]")
    return [sizes, judged]


def _thresholds(args: argparse.Namespace, method: str) -> Any:
    """The default thresholds of ``method`` with the ones given as flags."""
    from onnxspec.post.agreement import DEFAULTS

    given = {k: getattr(args, k) for k in ("cosine", "top1", "greedy", "greedy_steps") if getattr(args, k) is not None}
    return attrs.evolve(DEFAULTS[method], **given)


def _run_post(args: argparse.Namespace, out: Console, err: Console, run: Callable[[], Any], what: str) -> int:
    err.print(f"{what} [bold]{escape(args.folder)}[/bold] -> {escape(args.output)}, then comparing with PyTorch", highlight=False)
    try:
        report = run()
    except ValidationError as e:  # its report is a post report: print its tables, not the export's
        if e.report is not None:
            for part in post_tables(e.report):
                out.print(part, highlight=False)
        raise ValidationError(str(e)) from e
    for part in post_tables(report):
        out.print(part, highlight=False)
    out.print(f"Files written to {escape(_near(report.output_dir))} (figures in onnxspec_post.json); compared with the model "
              f"in {escape(_near(report.model_folder))}", highlight=False)
    out.print(f"[green]{what} {report.model_type} / {report.task}: every graph agrees with PyTorch ({report.seconds:.1f}s).[/green]")
    return EXIT_OK


def _near(path: str) -> str:
    """``path`` relative to the working folder when it is inside it, else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _run_quantize(args: argparse.Namespace, out: Console, err: Console) -> int:
    from onnxspec.post.quantize import quantize

    def run() -> Any:
        return quantize(args.folder, args.output, method=args.method, model=args.model, overwrite=args.overwrite,
                        thresholds=_thresholds(args, args.method))

    return _run_post(args, out, err, run, f"Quantizing ({args.method})")


def _run_optimize(args: argparse.Namespace, out: Console, err: Console) -> int:
    from onnxspec.post.optimize import optimize

    def run() -> Any:
        return optimize(args.folder, args.output, level=args.level, fp16=args.fp16, fusions=args.fusions, model=args.model,
                        overwrite=args.overwrite, thresholds=_thresholds(args, "fp16") if args.fp16 else None)

    return _run_post(args, out, err, run, "Optimizing")


def _add_post(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """The arguments ``quantize`` and ``optimize`` share."""
    p = sub.add_parser(name, help=help, description=description, allow_abbrev=False)
    p.add_argument("folder", metavar="FOLDER", help="a folder `onnxspec export` wrote")
    p.add_argument("output", metavar="OUTPUT_DIR", help="the folder to write (refused if it exists and is not empty, "
                                                        "unless --overwrite)")
    p.add_argument("-m", "--model", default=None, metavar="FOLDER",
                   help="the model folder to compare with (default: the one the export read, if it still exists)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists and is not empty")
    p.add_argument("--min-cosine", dest="cosine", type=float, default=None, metavar="X",
                   help="least cosine similarity of each float output with PyTorch's (lossy results)")
    p.add_argument("--min-top1", dest="top1", type=float, default=None, metavar="X",
                   help="least fraction of positions whose top-1 logit is PyTorch's (lossy results)")
    p.add_argument("--min-greedy", dest="greedy", type=float, default=None, metavar="X",
                   help="least mean agreeing prefix of greedy decoding, over the steps (lossy results, decoders)")
    p.add_argument("--greedy-steps", dest="greedy_steps", type=int, default=None, metavar="N",
                   help="tokens decoded greedily for --min-greedy (default 8)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


# --------------------------------------------------------------------------------------------
# progress


def stage_printer(console: Console) -> tuple[Callable[[str, str], None], Callable[[bool], None]]:
    """A ``progress(stage, detail)`` callback for :func:`onnxspec.export`, and a ``finish(ok)``.

    Each stage gets a line with its duration when the next one starts; on a terminal a spinner
    shows the stage running.
    """
    status = console.status("starting", spinner="dots") if console.is_terminal else None
    current: dict[str, Any] = {}

    def close(ok: bool) -> None:
        if current:
            mark = "[green]✓[/green]" if ok else "[bold red]✗[/bold red]"
            seconds = time.perf_counter() - current["start"]
            detail = current["detail"] if len(current["detail"]) <= 32 else "…" + current["detail"][-31:]
            console.print(f"  {mark} {current['stage']:<9} {escape(detail):<32} {seconds:7.2f}s", highlight=False)
            current.clear()

    def progress(stage: str, detail: str) -> None:
        close(True)
        current.update(stage=stage, detail=detail, start=time.perf_counter())
        if status is not None:
            status.update(f"{stage} {escape(detail)}")
            status.start()

    def finish(ok: bool) -> None:
        if status is not None:
            status.stop()
        close(ok)

    return progress, finish


# --------------------------------------------------------------------------------------------
# parser


def _spellings(name: str) -> list[str]:
    """``--a_b`` and ``--a-b`` for a multi-word option (first spelling shown in help)."""
    dash, under = "--" + name.replace("_", "-"), "--" + name.replace("-", "_")
    return [dash] if dash == under else [dash, under]


def _shape_fields() -> tuple[tuple[str, int], ...]:
    """(name, default) of every :class:`~onnxspec.pieces.shapes.Shapes` knob, read from the record."""
    from onnxspec.pieces.shapes import Shapes

    return tuple((f.name, f.default) for f in attrs.fields(Shapes))


def _add_hub_options(p: argparse.ArgumentParser) -> None:
    """``--revision`` and ``--cache-dir``: how a Hub ID given as ``--model`` is resolved."""
    p.add_argument("--revision", default=None, metavar="REV",
                   help="with a Hub ID: the branch, tag or commit to read (default: main)")
    p.add_argument(*_spellings("cache_dir"), dest="cache_dir", default=None, metavar="DIR",
                   help="with a Hub ID: the Hugging Face cache to download to and read from "
                        "(default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)")


def _add_export(sub: Any, shapes: bool) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a local model folder (or a Hub ID) to ONNX and validate it against PyTorch",
        description=(
            "Export a local Hugging Face model folder to ONNX, validate every graph against PyTorch with "
            "onnxruntime at shapes other than the traced ones, and write the files atomically."
        ),
        allow_abbrev=False,
    )
    p.add_argument("output", metavar="OUTPUT_DIR", help="folder to write the ONNX files to (created; see --overwrite)")
    p.add_argument("-m", "--model", required=True,
                   help="local model folder (holding config.json and the weights, or a .gguf file), or a Hub ID (org/name): "
                        "its config, weights and tokenizer files are downloaded to the Hugging Face cache, or read from it "
                        "offline (HF_HUB_OFFLINE=1); a local folder of the same name wins")
    _add_hub_options(p)
    p.add_argument(*_spellings("gguf_file"), dest="gguf_file", default=None, metavar="NAME",
                   help="export this GGUF file of the model folder (default: its only .gguf file when it has no config.json)")
    p.add_argument(
        "--task",
        default=None,
        help="task to export (see `onnxspec tasks`); add -with-past for a KV cache. Default: inferred from config.json",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the spec's, 18)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="floating dtype of the model and its float inputs (default fp32)")
    p.add_argument(*_spellings("int_dtype"), dest="int_dtype", choices=("int64", "int32", "int8"), default="int64",
                   help="dtype of token ids, masks and positions (default int64)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance for every output (default: the spec's per output)")
    p.add_argument("--monolith", action="store_true", help="export an encoder-decoder model as one graph instead of split files")
    p.add_argument("--vocoder", default=None, metavar="PATH",
                   help="text to speech (speecht5): the folder (or Hub ID) of the HiFi-GAN vocoder decoder_postnet_and_vocoder.onnx "
                        "runs, a checkpoint of its own (e.g. microsoft/speecht5_hifigan)")
    p.add_argument("--stream-weights", dest="stream_weights", action="store_const", const=True, default=None,
                   help="never load the model: build it hollow and read each weight from the folder's safetensors shards "
                        "only when it is written or run (the default when the weights would not fit in memory)")
    p.add_argument("--no-stream-weights", dest="stream_weights", action="store_const", const=False,
                   help="load the model even when its weights would not fit in memory")
    p.add_argument("--no-merged", dest="merged", action="store_const", const=False, default=None,
                   help="seq2seq -with-past: skip decoder_model_merged.onnx (the two decoders in one graph with use_cache_branch)")
    p.add_argument(*_spellings("trust_remote_code"), dest="trust_remote_code", action="store_true",
                   help="allow running the model folder's own code (config.json auto_map)")
    p.add_argument("--backend", choices=("torchscript", "dynamo"), default=None,
                   help="torch exporter (default: torchscript while torch has it, else dynamo)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists and is not empty")
    p.add_argument("--layout", choices=("flat", "transformers.js", "genai"), default="flat",
                   help="folder layout: flat (default: the graphs beside config.json, as Optimum loads them); transformers.js "
                        "(graphs in onnx/ with model_fp16.onnx, an fp16 export also validated, and model_quantized.onnx, int8 judged "
                        "by agreement with PyTorch; see --variants); "
                        "genai (adds genai_config.json for onnxruntime-genai; --task text-generation-with-past)")
    p.add_argument("--variants", default=None, metavar="LIST", type=lambda text: tuple(v.strip() for v in text.split(",") if v.strip()),
                   help="--layout transformers.js: the variants beside each graph, comma-separated: fp16 (an fp16 export, "
                        "validated), q8 (int8), q4 (int4), both judged by agreement with PyTorch; default fp16,q8; '' for none")
    p.add_argument("--seed", type=int, default=0, help="seed of the dummy inputs (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    if not shapes:
        return p
    group = p.add_argument_group("dummy shapes", "sizes of the dummy inputs used to trace (validation uses other sizes)")
    for name, default in _shape_fields():
        group.add_argument(*_spellings(name), dest=name, type=int, default=None, metavar="N", help=f"default {default}")
    return p


def _add_validate(sub: Any, shapes: bool) -> argparse.ArgumentParser:
    v = sub.add_parser(
        "validate",
        help="re-check an export folder against PyTorch, at shapes you choose",
        description="Run the graphs of an export folder again against the PyTorch model they come from, at the shapes "
                    "given (default: the shape sets an export validates at), and print the validation table. Works on "
                    "folders written by other tools in Optimum's layout: the graphs are found by file name and matched "
                    "by input and output names against the spec onnxspec uses. Exit code 1 when a graph disagrees.",
        allow_abbrev=False,
    )
    v.add_argument("folder", metavar="FOLDER", help="a folder an export wrote (model.onnx, encoder_model.onnx ...)")
    v.add_argument("-m", "--model", required=True,
                   help="the model the folder was exported from: a local model folder or a Hub ID (org/name)")
    _add_hub_options(v)
    v.add_argument(*_spellings("gguf_file"), dest="gguf_file", default=None, metavar="NAME",
                   help="read the model from this GGUF file of the --model folder")
    v.add_argument("--task", default=None,
                   help="the task the folder was exported for (default: its onnxspec contract, else inferred from the "
                        "model's config, with -with-past when the graphs take a KV cache)")
    v.add_argument("--atol", type=float, default=None, help="absolute tolerance for every output (default: the spec's per output)")
    v.add_argument(*_spellings("trust_remote_code"), dest="trust_remote_code", action="store_true",
                   help="allow running the model folder's own code (config.json auto_map)")
    v.add_argument("--vocoder", default=None, metavar="PATH",
                   help="text to speech (speecht5): the folder (or Hub ID) of the HiFi-GAN vocoder "
                        "decoder_postnet_and_vocoder.onnx runs, as given to the export")
    v.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    v.add_argument("--debug", action="store_true", help="show tracebacks")
    if shapes:
        group = v.add_argument_group("shapes", "sizes of the inputs to validate at (any of them given: one shape set, "
                                               "the others at their defaults)")
        for name, default in _shape_fields():
            group.add_argument(*_spellings(name), dest=name, type=int, default=None, metavar="N", help=f"default {default}")
    return v


def build_parser(*, export_shapes: bool = True) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its sub-parsers by command name.

    The shape flags of ``export`` are generated from :class:`~onnxspec.pieces.shapes.Shapes`, whose
    module imports torch; ``export_shapes=False`` leaves them out so other commands start fast.
    """
    from onnxspec import __version__

    parser = argparse.ArgumentParser(
        prog="onnxspec",
        description="Export Hugging Face transformers models to ONNX from composable specs, and prove every export correct.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"onnxspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {"export": _add_export(sub, export_shapes)}
    commands["models"] = sub.add_parser("models", help="list supported model types and their tasks", allow_abbrev=False)
    commands["tasks"] = sub.add_parser("tasks", help="list tasks, their synonyms and outputs", allow_abbrev=False)
    d = sub.add_parser(
        "describe",
        help="print the spec of a model type and task: graphs, inputs, outputs, axes",
        allow_abbrev=False,
    )
    d.add_argument("model_type", help="a model type from `onnxspec models`")
    d.add_argument("task", help="a task from `onnxspec tasks` (-with-past for a KV cache)")
    d.add_argument("-m", "--model", default=None,
                   help="a local model folder whose config.json (or GGUF file) sets the dimensions (layers, heads)")
    d.add_argument(*_spellings("gguf_file"), dest="gguf_file", default=None, metavar="NAME",
                   help="read the dimensions from this GGUF file of the --model folder")
    d.add_argument("--debug", action="store_true", help="show tracebacks")
    commands["describe"] = d
    i = sub.add_parser(
        "inspect",
        help="show what an export folder holds: graphs, inputs and outputs, contract, report, sizes",
        description="Show an export folder's graphs (sizes, external data, opset), their inputs and outputs with dtypes "
                    "and axes, the embedded contract, the validation report's summary, versions and sizes. Weights are "
                    "not loaded. Works on folders written by other tools (Optimum's layout) too.",
        allow_abbrev=False,
    )
    i.add_argument("folder", metavar="FOLDER", help="a folder an export wrote")
    i.add_argument("--all", action="store_true", help="list every cache tensor (default: one row per kind)")
    i.add_argument("--debug", action="store_true", help="show tracebacks")
    commands["inspect"] = i
    commands["validate"] = _add_validate(sub, export_shapes)
    q = _add_post(sub, "quantize", "quantize an export folder (int8 or int4) and compare the result with PyTorch",
                  "Quantize every graph of an export folder with onnxruntime (int8: 8-bit MatMulNBits computed with int8 "
                  "activations, faster and smaller than float32 on CPU, down_proj, attention, the first tenth of the blocks, "
                  "a tied head and embeddings kept float32; int8-dynamic: "
                  "MatMulInteger with activations quantized at run time, fast and small, but it can fail agreement on "
                  "trained LLMs; int4: weight-only MatMulNBits) into a new folder, and compare each with the PyTorch model: cosine similarity, top-1 "
                  "agreement, greedy tokens for decoders. A figure below its threshold exits 1 and writes nothing.")
    q.add_argument("--method", choices=("int8", "int8-dynamic", "int4"), default="int8", help="int8 (default), int8-dynamic or int4")
    commands["quantize"] = q
    o = _add_post(sub, "optimize", "optimize an export folder (graph levels, fusions, fp16) and validate it again",
                  "Optimize every graph of an export folder with onnxruntime into a new folder, and validate each against "
                  "the PyTorch model again: graph levels and fusions with the export's own bounds, fp16 by agreement.")
    o.add_argument("--level", choices=("basic", "extended", "all"), default=None,
                   help="onnxruntime's graph optimization level to write out (default basic when nothing else is asked)")
    o.add_argument("--fp16", action="store_true", help="convert the weights and computation to float16 (inputs and "
                                                        "outputs stay float32)")
    o.add_argument("--fusions", default=None, metavar="MODEL_TYPE",
                   help="run onnxruntime's transformer optimizer for this model type (bert, gpt2, ...)")
    commands["optimize"] = o
    return parser, commands


def _canonical_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every long option spelling of ``parser`` -> the spelling shown in help."""
    table: dict[str, str] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        table.update((s, longs[0]) for s in longs)
    return table


OPTIMUM_FLAGS: dict[str, str] = {
    "--device": "onnxspec traces and validates on the CPU only (the graphs it writes run on any onnxruntime "
                "provider); drop --device",
    "--fp16": "use --dtype fp16 (the model is exported and validated in float16, on the CPU)",
    "--optimize": "onnxspec export writes the graph it validated against PyTorch; drop --optimize and run "
                  "`onnxspec optimize FOLDER OUT --level all` (or `--fusions`, `--fp16`) afterwards, which validates the "
                  "optimized graph again",
    "--no-post-process": "onnxspec's only post-processing is the merged seq2seq decoder (decoder_model_merged.onnx): "
                         "use --no-merged to skip it",
    "--framework": "onnxspec exports PyTorch models only; drop --framework",
    "--library-name": "onnxspec exports transformers models (read from config.json, or a GGUF file); drop --library-name",
    "--pad-token-id": "onnxspec reads pad_token_id from config.json; set it there if the model needs one",
    "--legacy": "onnxspec always writes Optimum's current layout (split seq2seq graphs plus decoder_model_merged.onnx); "
                "--no-merged drops the merged decoder, --monolith exports one graph",
    "--no-dynamic-axes": "onnxspec's graphs always keep their batch and sequence axes dynamic, and validation runs them "
                         "at shapes other than the traced ones; drop --no-dynamic-axes",
    "--for-ort": "deprecated in Optimum too: onnxspec's folders load in Optimum's ORTModel classes as written; drop --for-ort",
    "--variant": "onnxspec exports the weights of the model folder as they are; drop --variant",
    "--model-kwargs": "onnxspec does not pass extra arguments to the model's forward; compose a spec in Python "
                      "(with_behavior, a Patch) for a custom call",
    "--no-constant-folding": "onnxspec chooses the exporter's settings itself and validates the graph it writes; "
                             "drop --no-constant-folding",
    "--slim": "onnxspec does not run onnxslim: it writes the graph it validated; drop --slim",
}
"""``optimum-cli export onnx`` flags with no onnxspec equivalent -> what onnxspec does instead
(keys in dash spelling; ``--cache_dir`` and ``--pad_token_id`` are found too)."""


def _optimum_flag(option: str) -> str | None:
    """The message for an Optimum flag onnxspec lacks, or ``None``."""
    what = OPTIMUM_FLAGS.get(option.replace("_", "-"))
    return None if what is None else f"{option} is an optimum-cli option with no onnxspec equivalent: {what}"


PARAMETER_FLAGS: dict[str, str] = {
    "overwrite": "--overwrite",
    "trust_remote_code": "--trust-remote-code",
    "monolith": "--monolith",
    "stream_weights": "--stream-weights",
    "vocoder": "--vocoder",
    "gguf_file": "--gguf-file",
    "backend": "--backend",
    "opset": "--opset",
    "atol": "--atol",
    "task": "--task",
    "seed": "--seed",
    "variants": "--variants",
}
"""Keyword arguments of :func:`onnxspec.export` -> the flag that sets them."""

_PARAM = "|".join(PARAMETER_FLAGS)
_WITH_FLAG = re.compile(rf"\b(?:{_PARAM})=\S+? \((--[\w-]+(?: [^()]*)?)\)")
_BARE = re.compile(rf"\b({_PARAM})=('[^']*'|\"[^\"]*\"|True)")


def cli_message(message: str) -> str:
    """A library error message in command-line words: ``pass overwrite=True (--overwrite)`` ->
    ``pass --overwrite``, ``backend='dynamo'`` -> ``--backend dynamo``, ``merged=False`` ->
    ``--no-merged``; other text is unchanged.

    >>> cli_message("pass overwrite=True (--overwrite) to replace it")
    'pass --overwrite to replace it'
    """
    message = _WITH_FLAG.sub(lambda m: m.group(1), message)
    message = message.replace("merged=False", "--no-merged").replace(" as gguf_file (--gguf-file NAME)", " as --gguf-file NAME")

    def flag(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2).strip("'\"")
        return PARAMETER_FLAGS[name] if value == "True" else f"{PARAMETER_FLAGS[name]} {value}"

    return _BARE.sub(flag, message)


def _unknown_option(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """An error message for the first long option in ``argv`` that ``parser`` does not know
    (an Optimum flag of ``export`` gets what onnxspec does instead, not a "did you mean")."""
    known = _canonical_options(parser)
    for arg in argv:
        if arg == "--":
            break
        option = arg.split("=", 1)[0]
        if option.startswith("--") and option not in known and parser.prog.endswith(" export") and _optimum_flag(option):
            return _optimum_flag(option)
        if option.startswith("--") and option not in known:
            hint = list(dict.fromkeys(known[m] for m in close_matches(option, known)))
            return f"unrecognized option {option}" + (f"; did you mean {' or '.join(hint)}?" if hint else f" (see {parser.prog} --help)")
    return None


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; misspelled commands and options exit 2 with a "did you mean" hint."""
    positional = next((a for a in argv if not a.startswith("-")), None)
    parser, commands = build_parser(export_shapes=positional in ("export", "validate"))
    if positional is not None and positional not in commands and not any(a in ("-h", "--help", "--version") for a in argv):
        hint = close_matches(positional, commands)
        parser.error(
            f"unknown command {positional!r}"
            + (f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "")
            + f" (commands: {', '.join(commands)})"
        )
    target = commands.get(positional or "", parser)
    message = _unknown_option(target, argv[argv.index(positional) + 1 :] if positional in commands else argv)
    if message:
        target.error(message)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# commands


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), wide enough for the tables when not on a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=120)
    return console


def _quiet_libraries(debug: bool) -> None:
    """Keep transformers' own log lines out of the output unless ``--debug``."""
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF reader draws its own progress bar


def _run_export(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.task is not None:
        from onnxspec.pieces.tasks import parse_task

        parse_task(args.task)  # fail fast, before torch is imported
    from onnxspec.pipeline.core import export
    from onnxspec.pieces.shapes import DTypes, Shapes

    shapes = Shapes(**{name: getattr(args, name) for name, _ in _shape_fields() if getattr(args, name) is not None})
    dtypes = DTypes(int_dtype=args.int_dtype, float_dtype=args.dtype)
    from onnxspec.pipeline.hub import model_folder

    model = model_folder(args.model, revision=args.revision, cache_dir=args.cache_dir, gguf_file=args.gguf_file)
    err.print(f"Exporting [bold]{escape(args.model)}[/bold] -> {escape(args.output)}", highlight=False)
    progress, finish = stage_printer(err)
    laid_out: list[Any] = []  # the LayoutResult of a --layout other than flat
    run = export if args.layout == "flat" and args.variants is None else _layout_export(args.layout, laid_out, args.variants)
    try:
        report = run(
            model,
            args.output,
            task=args.task,
            shapes=shapes,
            dtypes=dtypes,
            backend=args.backend,
            opset=args.opset,
            atol=args.atol,
            monolith=args.monolith,
            merged=args.merged,
            overwrite=args.overwrite,
            trust_remote_code=args.trust_remote_code,
            gguf_file=args.gguf_file,
            seed=args.seed,
            progress=progress,
            **({} if getattr(args, "stream_weights", None) is None else {"stream_weights": args.stream_weights}),
            **({} if args.vocoder is None else {"vocoder": args.vocoder}),
        )
    except BaseException:
        finish(False)
        raise
    finish(True)
    print_report(out, report)
    for result in laid_out:
        _print_layout(out, result)
    if report.source.get("format") == "gguf":
        out.print(f"Read from the GGUF file {escape(report.source['gguf_file'])} (weights dequantized to float32); "
                  f"tokenizer: {escape(report.source.get('tokenizer', 'not saved'))}")
    if report.source.get("weights", "").startswith("streamed"):
        out.print(f"Weights {escape(report.source['weights'])}: the model was never loaded", highlight=False)
    for graph in report.graphs:
        if graph.fallback:
            first, _, why = graph.fallback.partition(": ")
            out.print(f"{escape(graph.filename)}: the {first} exporter failed ({escape(why)}); exported with {graph.backend} instead",
                      highlight=False)
    out.print(f"[green]Exported {report.model_type} / {report.task} and validated it in {report.seconds:.1f}s.[/green]")
    return EXIT_OK


def _layout_export(layout: str, results: list[Any], variants: tuple[str, ...] | None = None) -> Callable[..., ExportReport]:
    """``export`` writing ``layout`` (:func:`onnxspec.post.layouts.export_with_layout`): returns the
    main export's report listing the laid-out files, and appends the whole result to ``results``."""
    from onnxspec.post.layouts import export_with_layout

    def run(model: str, output: str, **options: Any) -> ExportReport:
        result = export_with_layout(model, output, layout, variants=variants, **options)
        results.append(result)
        return attrs.evolve(result.report, files=result.files)

    return run


def _print_layout(out: Console, result: Any) -> None:
    """The validation of the fp16 variant (when the layout has one) and what each graph file is."""
    for name, report in result.reports.items():
        if name != "main":
            out.print(validation_table(report))
    for variant, post in getattr(result, "posts", {}).items():
        out.print(f"The {escape(variant)} variant, {escape(str(post.transformation.get('method')))} (onnxspec_post_{escape(variant)}.json):")
        for part in post_tables(post):
            out.print(part, highlight=False)
    out.print(f"Layout {escape(result.layout.name)}: the graphs and how each was checked (onnxspec_layout.json):")
    for name, what in result.graphs.items():
        out.print(f"  {escape(name)}: {escape(what)}", highlight=False)


def _run_validate(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.task is not None:
        from onnxspec.pieces.tasks import parse_task

        parse_task(args.task)  # fail fast, before torch is imported
    from onnxspec.pieces.shapes import Shapes
    from onnxspec.post.recheck import validate_folder

    given = {name: getattr(args, name) for name, _ in _shape_fields() if getattr(args, name, None) is not None}
    err.print(f"Re-validating [bold]{escape(args.folder)}[/bold] against {escape(args.model)}", highlight=False)
    progress, finish = stage_printer(err)
    try:
        report = validate_folder(
            args.folder,
            args.model,
            task=args.task,
            shapes=Shapes(**given) if given else None,
            atol=args.atol,
            seed=args.seed,
            trust_remote_code=args.trust_remote_code,
            gguf_file=args.gguf_file,
            revision=args.revision,
            cache_dir=args.cache_dir,
            vocoder=args.vocoder,
            progress=progress,
        )
    except BaseException:
        finish(False)
        raise
    finish(True)
    print_report(out, report, files=False)
    out.print(f"[green]Re-validated {escape(args.folder)} ({report.model_type} / {report.task}): every graph agrees with "
              f"PyTorch ({report.seconds:.1f}s).[/green]")
    return EXIT_OK


def _run_describe(args: argparse.Namespace, out: Console) -> int:
    import transformers

    from onnxspec.pipeline.loading import config_from_json, read_source
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.catalog.registry import spec_for
    from onnxspec.pieces.spec import bind, describe, plan

    spec = spec_for(REGISTRY, args.model_type, args.task)
    if args.model is not None:
        # config.json, or the config of the folder's GGUF file; only the config is read (no code runs)
        found = read_source(args.model, args.gguf_file, trust_remote_code=True)
        config_json = found.config_json
        if config_json["model_type"] != spec.model_type:
            gguf = f" --gguf-file {args.gguf_file}" if args.gguf_file else ""
            raise ConfigError(
                f"{args.model!r} holds a {config_json['model_type']!r} model, not {spec.model_type!r}; "
                f"run `onnxspec describe {config_json['model_type']} {args.task} --model {args.model}{gguf}`"
            )
        config = config_from_json(config_json)
        source = f"the config of {found.path}"
    else:
        config = transformers.AutoConfig.for_model(spec.model_type)
        source = f"transformers' default {type(config).__name__} (pass --model FOLDER for a real one)"
    spec = bind(spec, config)
    dims = {k: v for k, v in (spec.dims.values.items() if spec.dims is not None else ()) if v is not None}
    out.print(f"dimensions from {escape(source)}: {escape(str(dims))}", highlight=False)
    for sub in plan(spec):
        out.print(f"[bold]{escape(sub.filename)}[/bold]")
        out.print(escape(describe(sub)), highlight=False)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_libraries("--debug" in argv)  # before parsing: the export parser imports torch, which imports tqdm
    try:
        args = _parse(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for misuse
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    out, err = _console(), _console(stderr=True)
    debug = bool(getattr(args, "debug", False))
    try:
        if args.command == "export":
            return _run_export(args, out, err)
        if args.command == "models":
            from onnxspec.catalog.models import REGISTRY

            out.print(models_table(REGISTRY))
            return EXIT_OK
        if args.command == "tasks":
            out.print(tasks_table())
            return EXIT_OK
        if args.command == "describe":
            return _run_describe(args, out)
        if args.command == "inspect":
            return _run_inspect(args, out)
        if args.command == "validate":
            return _run_validate(args, out, err)
        if args.command == "quantize":
            return _run_quantize(args, out, err)
        if args.command == "optimize":
            return _run_optimize(args, out, err)
        raise AssertionError(f"unhandled command {args.command!r}")
    except ValidationError as e:
        if e.report is not None:
            print_report(out, e.report, files=False)
        err.print(f"[bold red]error:[/bold red] {escape(cli_message(str(e)))}", highlight=False)
        if debug:
            traceback.print_exc()
        return EXIT_INVALID
    except ExportError as e:  # a stage failed at run time: not a usage error
        if debug:
            traceback.print_exc()
            if getattr(e, "details", ""):
                print(e.details, file=sys.stderr)  # type: ignore[attr-defined]
        print(f"error: {cli_message(str(e))}", file=sys.stderr)
        return EXIT_EXPORT
    except OnnxSpecError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {cli_message(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


YOUNG_OBJECTS_PER_COLLECTION = 10_000
"""Youngest-generation threshold of Python's cyclic garbage collector while :func:`run` runs (Python's
default is 700)."""


def run() -> int:
    """The ``onnxspec`` program (the console script and ``python -m onnxspec``): :func:`main` on the
    process's arguments, in a process that ends when it returns.

    Python's cyclic garbage collector is set for such a process; reference counting still frees
    every tensor, model and file the moment its last reference goes, so only objects in reference
    cycles wait longer:

    - the youngest generation is scanned every :data:`YOUNG_OBJECTS_PER_COLLECTION` new container
      objects instead of every 700: importing torch, onnxruntime and transformers creates about
      600,000 objects that all stay alive, and scanning them 700 at a time as they arrive cost
      about a fifth of the imports' CPU time (0.6 s);
    - once :func:`main` has returned (every file written and closed, the report printed) the
      objects still alive are frozen (``gc.freeze``), and the interpreter's shutdown stops after
      the exit handlers (:func:`_leave`): it neither scans the millions of objects of those
      libraries' modules for cycles nor frees them one by one, work the operating system does at
      once when the process ends (unless an exit handler was registered before :func:`run` started,
      which would then be skipped).

    A command that raises (a bug: :func:`main` turns every onnxspec error into an exit code) ends
    with the interpreter's usual shutdown and traceback.
    """
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_OBJECTS_PER_COLLECTION), *older)
    returned: list[int] = []
    # registered before the libraries are imported, so it runs after their exit handlers (last in, first
    # out); an exit handler registered before the program started (a coverage tool's, a sitecustomize's)
    # would run after it and be skipped: then the interpreter shuts down as usual
    if getattr(atexit, "_ncallbacks", lambda: 1)() == 0:
        atexit.register(_leave, returned)
    code = main()
    gc.freeze()
    returned.append(code)
    return code


def _leave(returned: list[int]) -> None:
    """Exit handler of :func:`run`: once :func:`main` has returned ``returned[0]``, flush stdout and
    stderr and end the process with that code, skipping the rest of the interpreter's shutdown.
    Python has joined the non-daemon threads and run the exit handlers registered after
    :func:`run`'s (tempfile's clean-ups, logging's flush) by then."""
    if not returned:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: Python's own shutdown reports it
        return
    os._exit(returned[0])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
