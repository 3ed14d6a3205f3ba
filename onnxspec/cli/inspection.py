"""What an export folder holds, read without loading any weight: its graphs, their inputs and
outputs with dtypes and axes, the I/O contract embedded in each graph, the validation report,
versions and sizes (``onnxspec inspect FOLDER``).

Graphs are read with ``onnx.load(path, load_external_data=False)``: the graph and the names of
its external data files, never the weights in them. A folder written by another tool
(Optimum's ``optimum-cli export onnx`` layout, transformers.js's ``onnx/`` subfolder) has no
report and no contract; :func:`inspect_folder` reads what the ONNX files say and marks the rest
missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from onnxspec.errors import OutputDirError

__all__ = ["CONTRACT_KEY", "FolderInfo", "GraphInfo", "GraphSummary", "TensorInfo", "inspect_folder"]

CONTRACT_KEY = "onnxspec.contract"
"""The metadata key of the I/O contract every graph onnxspec writes carries."""

REPORT_FILE = "onnxspec_report.json"
VARIANT_REPORTS = ("onnxspec_report_fp16.json",)
"""The reports a layout's variants carry beside the main one (``--layout transformers.js
--variants fp16``: the fp16 export's, naming ``onnx/model_fp16.onnx`` ... by ``path``)."""


def _read_only(mapping: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if mapping is None else MappingProxyType(dict(mapping))


@attrs.frozen(kw_only=True)
class TensorInfo:
    """A graph input or output: its name, element type and axes (a size, or a symbol)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...] | None
    """``None`` when the graph declares no shape; ``"?"`` for an unnamed unknown axis."""


@attrs.frozen(kw_only=True)
class GraphSummary:
    """What the export's report says about one graph: checks run and passed, the check that
    came closest to its bound (or failed worst)."""

    checks: int
    failed: int
    passed: bool
    worst_error: float | None = None
    worst_bound: float | None = None
    worst_set: str = ""
    worst_output: str = ""


@attrs.frozen(kw_only=True)
class GraphInfo:
    """One ``.onnx`` file: path relative to the folder, size with its external data, opset,
    interface, embedded contract (``None`` if absent) and whether it names the graph's I/O."""

    file: str
    size: int
    external_data: tuple[str, ...]
    opset: int | None
    producer: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    contract: Mapping[str, Any] | None = attrs.field(default=None, converter=_read_only, hash=False)
    contract_problems: tuple[str, ...] = ()
    summary: GraphSummary | None = None


@attrs.frozen(kw_only=True)
class FolderInfo:
    """An export folder: its graphs, other files with sizes, total size and the report (as read
    from ``onnxspec_report.json``, or ``None`` when the folder has none)."""

    folder: str
    graphs: tuple[GraphInfo, ...]
    files: tuple[tuple[str, int], ...]
    report: Mapping[str, Any] | None = attrs.field(default=None, converter=_read_only, hash=False)
    config: Mapping[str, Any] | None = attrs.field(default=None, converter=_read_only, hash=False)
    reports: tuple[str, ...] = ()
    """The report files the graphs' summaries were read from (``onnxspec_report.json``, and a
    variant's such as ``onnxspec_report_fp16.json``)."""

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def written_by_onnxspec(self) -> bool:
        return self.report is not None or any(g.contract is not None for g in self.graphs)


def _dtype(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)  # float32, int64, bool ... as contracts say
    except (KeyError, ValueError, TypeError):
        try:
            return onnx.TensorProto.DataType.Name(elem_type).lower()
        except ValueError:
            return f"type {elem_type}"


def _tensor(value: Any) -> TensorInfo:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorInfo(name=value.name, dtype=kind or "?", shape=None)
    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
        )
    return TensorInfo(name=value.name, dtype=_dtype(tensor.elem_type), shape=shape)


def _tensors(model: Any) -> Iterator[Any]:
    """Every initializer of the graph and of its subgraphs (an ``If``'s branches ...)."""
    from onnxspec.build.graphs import nested_graphs

    for graph in nested_graphs(model.graph):
        yield from graph.initializer


def _external_files(model: Any) -> tuple[str, ...]:
    from onnxspec.build.graphs import external_data_files

    return tuple(sorted(external_data_files(model)))


def _contract_problems(contract: Mapping[str, Any], inputs: tuple[TensorInfo, ...], outputs: tuple[TensorInfo, ...]) -> tuple[str, ...]:
    """Where the embedded contract and the graph's interface disagree (names, then dtypes)."""
    problems = []
    for side, declared, actual in (("inputs", contract.get("inputs", ()), inputs), ("outputs", contract.get("outputs", ()), outputs)):
        names = [t.get("name") for t in declared]
        got = {t.name: t for t in actual}
        missing = [n for n in names if n not in got]
        extra = [n for n in got if n not in names]
        if missing:
            problems.append(f"{side} in the contract but not in the graph: {', '.join(map(str, missing))}")
        if extra:
            problems.append(f"{side} in the graph but not in the contract: {', '.join(extra)}")
        for t in declared:
            dtype = t.get("dtype")
            if t.get("name") in got and dtype and got[t["name"]].dtype != str(dtype):
                problems.append(f"{t['name']}: dtype {got[t['name']].dtype} in the graph, {dtype} in the contract")
    return tuple(problems)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _summary(graph: Mapping[str, Any]) -> GraphSummary:
    """A graph's entry of ``onnxspec_report.json`` in brief."""
    checks = list(graph.get("checks", ()))
    failed = [c for c in checks if not c.get("passed")]

    def closeness(c: Mapping[str, Any]) -> float:
        error, bound = _number(c.get("error")), _number(c.get("bound"))
        if not c.get("passed") or error is None:
            return float("inf")
        return error / bound if bound else 0.0

    worst = max(checks, key=closeness, default=None)
    return GraphSummary(
        checks=len(checks),
        failed=len(failed),
        passed=bool(checks) and not failed and not graph.get("problems"),
        worst_error=None if worst is None else _number(worst.get("error")),
        worst_bound=None if worst is None else _number(worst.get("bound")),
        worst_set="" if worst is None else str(worst.get("shape_set", "")),
        worst_output="" if worst is None else str(worst.get("output", "")),
    )


def _read_json(path: str) -> Mapping[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else None


def _graph(folder: str, file: str, summaries: Mapping[str, GraphSummary]) -> GraphInfo:
    import onnx

    path = os.path.join(folder, file)
    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_tensor(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor(v) for v in model.graph.output)
    external = _external_files(model)
    here = os.path.dirname(path)
    size = os.path.getsize(path) + sum(
        os.path.getsize(os.path.join(here, n)) for n in external if os.path.isfile(os.path.join(here, n))
    )
    metadata = {p.key: p.value for p in model.metadata_props}
    contract = json.loads(metadata[CONTRACT_KEY]) if CONTRACT_KEY in metadata else None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return GraphInfo(
        file=file,
        size=size,
        external_data=external,
        opset=opset,
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        inputs=inputs,
        outputs=outputs,
        contract=contract,
        contract_problems=() if contract is None else _contract_problems(contract, inputs, outputs),
        summary=summaries.get(file),
    )


def inspect_folder(folder: str | os.PathLike[str]) -> FolderInfo:
    """Read an export folder: every ``*.onnx`` file in it or its subfolders, the report (and
    a layout's variant reports: :data:`VARIANT_REPORTS`), the model config, and every file's size. Raises :class:`OutputDirError` for a folder that does
    not exist or holds no ONNX file."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise OutputDirError(f"{folder!r} is not a folder; pass the folder an export wrote (onnxspec inspect OUTPUT_DIR)")
    files: list[tuple[str, int]] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(root, name)
            files.append((os.path.relpath(path, folder).replace(os.sep, "/"), os.path.getsize(path)))
    onnx_files = [n for n, _ in files if n.endswith(".onnx")]
    if not onnx_files:
        listed = ", ".join(n for n, _ in files[:8]) or "nothing"
        raise OutputDirError(
            f"{folder!r} holds no .onnx file (it holds: {listed}); pass the folder an export wrote "
            "(onnxspec export ... OUTPUT_DIR, or optimum-cli export onnx ... OUTPUT_DIR)"
        )
    report = _read_json(os.path.join(folder, REPORT_FILE))
    # a graph's entry by where it is in the folder: its laid-out path (onnx/model.onnx), else its name
    summaries = {str(g.get("path") or g.get("filename")): _summary(g) for g in (report or {}).get("graphs", ())}
    read = [REPORT_FILE] if report is not None else []
    for name in VARIANT_REPORTS:  # a variant's graphs by their laid-out path only: their flat names are the main report's
        variant = _read_json(os.path.join(folder, name))
        found = {str(g["path"]): _summary(g) for g in (variant or {}).get("graphs", ()) if g.get("path") and str(g["path"]) not in summaries}
        summaries.update(found)
        read += [name] if found else []
    return FolderInfo(
        folder=folder,
        graphs=tuple(_graph(folder, n, summaries) for n in onnx_files),
        files=tuple(files),
        report=report,
        config=_read_json(os.path.join(folder, "config.json")),
        reports=tuple(read),
    )
