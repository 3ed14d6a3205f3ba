"""Checking an exported graph: its structure against the spec, then its values against PyTorch.

``check_graph`` compares input and output names, dtypes and dynamic axes with the spec (an axis
the spec declares dynamic that the graph fixed to a number is an error) and ``stamp`` renames
the graph's symbolic dims to the spec's symbols. ``validate`` runs the graph with onnxruntime
and the module with PyTorch at shape sets that differ from the trace shapes, and compares every
output where the attention mask keeps a position: its shape, then its values by the output's
criterion (:mod:`onnxspec.pieces.criteria`; by default the error against a float64 run of the same
module, bounded by a multiple of PyTorch's own rounding noise).

The float64 run is made at one shape set, the one with the most input elements (``large``:
a prompt with padded rows, longer than the trace); at the other sets PyTorch's noise on each
output is the noise measured there, and the graph is compared with PyTorch at the export dtype
(:class:`~onnxspec.pieces.criteria.Calibration`).
On a full-size model a float64 forward costs three float32 ones (every weight widened), so the
sets of one token no longer pay it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import attrs
import numpy as np
import onnx
import torch

from onnxspec.pieces.axes import Kind, TensorSpec, names, symbol_size
from onnxspec.pieces.axes import spec as tensor_spec
from onnxspec.pieces.cache_names import Part, Which, cache_name, is_cache_input, is_cache_output, to_past
from onnxspec.pieces.criteria import Calibration, Criterion, NoiseBound, Tolerance, Verdict, judge
from onnxspec.errors import SpecError
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.build.merge import Interface, stamp_interface
from onnxspec.pieces.patches import patched
from onnxspec.judge.reference import finfo_of, float64_plan, float64_room, in_float64, streamed_float64, to_float64
from onnxspec.judge.report import OutputCheck
from onnxspec.pieces.shapes import DTypes, Shapes, size_table, torch_dtype, validation_shapes
from onnxspec.pieces.spec import GraphSpec, contract_json, tolerance_for

__all__ = [
    "RUNTIMES", "References", "Residual", "branch_feed", "calibrating_set", "check_graph", "compare", "mask_for", "reference_session",
    "residual", "runtime_for", "stamp", "validate", "validate_merged", "validate_with_references", "SHAPE_SET_NAMES",
]

_ONNX_DTYPE = {
    torch.float32: onnx.TensorProto.FLOAT,
    torch.float16: onnx.TensorProto.FLOAT16,
    torch.bfloat16: onnx.TensorProto.BFLOAT16,
    torch.int64: onnx.TensorProto.INT64,
    torch.int32: onnx.TensorProto.INT32,
    torch.int8: onnx.TensorProto.INT8,
    torch.bool: onnx.TensorProto.BOOL,
}

SHAPE_SET_NAMES = ("small", "large", "decode")

RUNTIMES = ("onnxruntime", "onnx.reference")
"""What can run a graph for validation: onnxruntime's CPU provider, or onnx's reference evaluator."""


def runtime_for(dtypes: DTypes) -> str:
    """The runtime that validates graphs of ``dtypes``: onnxruntime, except for bf16.

    onnxruntime's CPU provider has no bf16 kernels for the ops a transformer needs (``MatMul``
    and others fail to load: NOT_IMPLEMENTED), so bf16 graphs run in onnx's reference evaluator,
    which computes each op in numpy on ``ml_dtypes.bfloat16`` arrays. It is slow (numpy, one op
    at a time), fine for the tiny models the tests use, not for real checkpoints.
    """
    return "onnx.reference" if torch_dtype(Kind.FLOAT, dtypes) is torch.bfloat16 else "onnxruntime"


@attrs.frozen(kw_only=True)
class _Port:
    """An input or output as onnxruntime's session describes it (``name``, ``shape``, ``type``)."""

    name: str
    shape: tuple[str | int | None, ...]
    type: str


def _ports(values: Sequence[onnx.ValueInfoProto]) -> tuple[_Port, ...]:
    def dim(d: onnx.TensorShapeProto.Dimension) -> str | int | None:
        return d.dim_param or (d.dim_value if d.HasField("dim_value") else None)

    kinds = {onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.FLOAT: "float", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.DOUBLE: "double"}
    return tuple(
        _Port(
            name=v.name,
            shape=tuple(dim(d) for d in v.type.tensor_type.shape.dim),
            type=f"tensor({kinds.get(v.type.tensor_type.elem_type, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower())})",
        )
        for v in values
    )


@attrs.frozen(kw_only=True, eq=False)
class ReferenceSession:
    """onnx's reference evaluator behind onnxruntime's ``run(names, feed)`` interface.

    Feeds are cast to the dtype each graph input declares (a bf16 input arrives as the float32
    numpy copy of a bf16 tensor, so the cast is exact) and bf16 outputs come back as float32
    (exact too): the arithmetic in between is the graph's own, in bf16.
    """

    evaluator: Any
    input_types: Mapping[str, np.dtype]
    inputs: tuple[_Port, ...]
    outputs: tuple[_Port, ...]

    def get_inputs(self) -> tuple[_Port, ...]:
        return self.inputs

    def get_outputs(self) -> tuple[_Port, ...]:
        return self.outputs

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        cast = {n: np.asarray(a).astype(self.input_types[n], copy=False) if n in self.input_types else a for n, a in feed.items()}
        got = self.evaluator.run(None if names is None else list(names), cast)
        return [_widened(np.asarray(a)) for a in got]


def _widened(array: np.ndarray) -> np.ndarray:
    """bf16 (``ml_dtypes.bfloat16``) as float32, exactly; other arrays unchanged."""
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def reference_session(path: str) -> ReferenceSession:
    """A :class:`ReferenceSession` running the ONNX file at ``path`` with ``onnx.reference``."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(path, load_external_data=True)
    types = {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in model.graph.input}
    return ReferenceSession(
        evaluator=ReferenceEvaluator(model), input_types=types, inputs=_ports(model.graph.input), outputs=_ports(model.graph.output)
    )


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def check_graph(model: onnx.ModelProto, spec: GraphSpec, dtypes: DTypes) -> list[str]:
    """Every way the graph's interface departs from the spec (an empty list when none)."""
    problems: list[str] = []
    for where, graph_values, specs in (
        ("input", list(model.graph.input), spec.inputs),
        ("output", list(model.graph.output), spec.outputs),
    ):
        got = [v.name for v in graph_values]
        want = list(names(specs))
        if got != want:
            missing = [n for n in want if n not in got]
            extra = [n for n in got if n not in want]
            problems.append(
                f"graph {where}s differ from the spec: expected {want}, got {got}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
            continue
        for value, t in zip(graph_values, specs):
            expected = _ONNX_DTYPE[torch_dtype(t.kind, dtypes)]
            elem = value.type.tensor_type.elem_type
            if elem != expected:
                problems.append(
                    f"{where} {t.name!r} has dtype {onnx.TensorProto.DataType.Name(elem)}, the spec says "
                    f"{onnx.TensorProto.DataType.Name(expected)}"
                )
            dims = _dims(value)
            if t.rank is not None and dims and len(dims) != t.rank:
                problems.append(f"{where} {t.name!r} has rank {len(dims)}, the spec says {t.rank}")
            for index, symbol in t.axes:
                if index >= len(dims):
                    if dims:
                        problems.append(f"{where} {t.name!r}: dynamic axis {index} ({symbol!r}) is beyond the graph's rank {len(dims)}")
                    continue
                if dims[index].HasField("dim_value"):
                    problems.append(
                        f"{where} {t.name!r}: axis {index} is declared dynamic ({symbol!r}) but the graph froze it "
                        f"to {dims[index].dim_value}; trace with sizes that differ per axis, or declare the axis static"
                    )
    return problems


def stamp(model: onnx.ModelProto, spec: GraphSpec, dtypes: DTypes, extra_metadata: Mapping[str, str] | None = None) -> None:
    """Rename the graph interface's symbolic dims to the spec's symbols and embed the I/O
    contract in the model's metadata. Changes ``model`` in place (it may hold gigabytes)."""
    metadata = {"onnxspec.contract": contract_json(spec, dtypes), **(extra_metadata or {})}
    stamp_interface(model, Interface(inputs=spec.inputs, outputs=spec.outputs), metadata)


def mask_for(output: TensorSpec, array: np.ndarray, feed: Mapping[str, np.ndarray], spec: GraphSpec) -> np.ndarray | None:
    """Which elements of ``output`` to compare: positions the attention mask keeps.

    Applies to outputs whose axis 1 (or, for cache tensors, axis 2) runs over the tokens the
    graph's ``attention_mask`` covers; the mask's last columns are the current tokens.
    """
    mask = feed.get("attention_mask")
    if mask is None or mask.ndim != 2 or array.ndim < 2 or array.shape[0] != mask.shape[0]:
        return None
    axis = 2 if is_cache_output(output.name) else 1
    symbol = output.dynamic_axes.get(axis, "")
    if "sequence_length" not in symbol or "encoder" in symbol or "decoder" in symbol:
        return None
    length = array.shape[axis]
    if length > mask.shape[1]:
        return None
    keep = mask[:, mask.shape[1] - length :].astype(bool)
    shape = [1] * array.ndim
    shape[0], shape[axis] = keep.shape
    return np.broadcast_to(keep.reshape(shape), array.shape)


def compare(
    graph: str,
    output: TensorSpec,
    shape_set: str,
    expected: np.ndarray,
    got: np.ndarray,
    keep: np.ndarray | None,
    criterion: Criterion,
    reference: np.ndarray | Residual | None = None,
    *,
    no_reference: str = "",
    calibration: Calibration | None = None,
) -> OutputCheck:
    """One output at one shape set: same shape, finite, and within ``criterion``
    (:func:`onnxspec.pieces.criteria.judge`) where ``keep`` marks the compared elements;
    ``calibration``: the noise measured at another set, used where ``reference`` is ``None``.
    The arrays are read a slice at a time (:func:`judge_in_chunks`): no full-size copy is made."""
    base = dict(graph=graph, output=output.name, shape_set=shape_set, torch_shape=tuple(expected.shape), onnx_shape=tuple(got.shape))
    fixed = criterion if isinstance(criterion, Tolerance) else criterion.fallback
    nan = float("nan")
    if expected.shape != got.shape:
        return OutputCheck(**base, max_abs=nan, max_rel=nan, atol=fixed.atol, rtol=fixed.rtol, compared=0, passed=False,
                           problem=f"shape {tuple(got.shape)} differs from PyTorch's {tuple(expected.shape)}")
    if reference is not None and reference.shape != expected.shape:
        reference, no_reference = None, f"the float64 run gave shape {tuple(reference.shape)}"
    scan = _scan(expected, got, reference, keep, criterion, CHUNK)
    if scan.non_finite:
        return OutputCheck(**base, max_abs=nan, max_rel=nan, atol=fixed.atol, rtol=fixed.rtol, compared=scan.compared,
                           passed=False, problem=f"{scan.non_finite} produced non-finite values")
    if reference is not None and not scan.reference_finite:
        reference, no_reference = None, "the float64 run produced non-finite values"
    v = _judge_picked(expected, got, criterion, reference, scan, no_reference=no_reference, calibration=calibration)
    return OutputCheck(
        **base, max_abs=v.max_abs, max_rel=v.max_rel, atol=fixed.atol, rtol=fixed.rtol, compared=scan.compared,
        passed=v.passed, criterion=v.criterion, reference=v.reference, error=v.error, bound=v.bound, noise=v.noise,
        note=v.note, scale=v.scale,
    )


CHUNK = 1 << 20
"""Elements judged at once: a larger output (a 262k-word vocabulary's logits) is read in slices
of this many, so the float64 temporaries stay a few MiB each (8 MiB an array) and no copy of the
whole output is made (gemma-3-270m's logits at the large set: 72 MiB in float32, 144 MiB its
float64 reference)."""


def _worst(expected: np.ndarray, got: np.ndarray, criterion: Criterion, reference: np.ndarray | None) -> np.ndarray:
    """The flat indices, within one slice, of the element each statistic :func:`judge` takes the
    maximum of: the absolute and relative differences, the tolerance's error/bound ratio, and
    against ``reference`` PyTorch's own error, the graph's error and the reference's size."""
    if expected.size == 0:
        return np.zeros(0, dtype=np.int64)
    exp, act = expected.astype(np.float64), got.astype(np.float64)
    work = np.empty_like(exp)  # each statistic computed as judge computes it, into one buffer
    picks = []
    if reference is not None:
        ref = reference.astype(np.float64, copy=False)
        picks += [np.argmax(np.abs(np.subtract(exp, ref, out=work), out=work)),
                  np.argmax(np.abs(np.subtract(act, ref, out=work), out=work)), np.argmax(np.abs(ref, out=work))]
    diff = np.abs(np.subtract(act, exp, out=act), out=act)
    size = np.abs(exp, out=exp)
    picks += [np.argmax(diff), np.argmax(size), np.argmax(np.divide(diff, np.maximum(size, 1e-12, out=work), out=work))]
    fixed = criterion if isinstance(criterion, Tolerance) else criterion.fallback
    allowed = np.add(fixed.atol, np.multiply(fixed.rtol, size, out=work), out=work)
    picks.append(np.argmax(np.divide(diff, allowed, out=allowed)))
    return np.asarray(picks, dtype=np.int64)


@attrs.frozen(kw_only=True, eq=False)
class Residual:
    """A float64 output held as its difference from PyTorch's output at the export dtype
    (``base``), rounded to float32 (``delta``): half the bytes of the float64 array. The value
    it gives back, ``base + delta`` summed in float64, differs from the float64 output by at most
    2**-24 of ``|float64 - base|``, PyTorch's own error there, which the noise bound allows 16 to
    64 times over: a change of about 1e-9 of the bound (gemma-3-270m's logits at the large set:
    72 MiB held instead of 144)."""

    base: np.ndarray
    delta: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape)


def residual(base: np.ndarray, reference: np.ndarray) -> np.ndarray | Residual:
    """``reference`` (a float64 output) as a :class:`Residual` from ``base``; as it is where
    ``base`` is not a floating array of its shape. The difference is computed in float64 and
    rounded into the float32 array as numpy's ufunc loop goes (no float64 copy of the output)."""
    if (reference.dtype != np.float64 or not np.issubdtype(base.dtype, np.floating) or base.dtype == np.float64
            or base.shape != reference.shape):
        return reference
    return Residual(base=base, delta=np.subtract(reference, base, out=np.empty(base.shape, np.float32)))


def _reference_part(reference: np.ndarray | Residual, where: slice | np.ndarray) -> np.ndarray:
    """Elements ``where`` (a slice or flat indices) of a float64 output, as float64."""
    if isinstance(reference, Residual):
        return _part(reference.base, where).astype(np.float64) + _part(reference.delta, where)
    return _part(reference, where)


@attrs.frozen(kw_only=True)
class _Scan:
    """One pass over an output's compared elements, a slice at a time: how many there are, which
    side produced a non-finite value (``"onnxruntime"``, ``"PyTorch"`` or ``""``), whether the
    float64 reference is finite there, and the flat indices of the elements :func:`_worst`
    picks in each slice (sorted), among which every maximum :func:`judge` takes is found."""

    compared: int
    non_finite: str
    reference_finite: bool
    picked: np.ndarray


def _part(array: np.ndarray, where: slice | np.ndarray) -> np.ndarray:
    """Elements ``where`` (a slice or flat indices) of ``array`` in C order: for a slice of a
    contiguous array a view, else a copy of those only."""
    return array.reshape(-1)[where] if array.flags.c_contiguous else array.flat[where]


def _scan(expected: np.ndarray, got: np.ndarray, reference: np.ndarray | Residual | None, keep: np.ndarray | None,
          criterion: Criterion, chunk: int) -> _Scan:
    """:class:`_Scan` of the elements ``keep`` marks (all where ``None``), ``chunk`` at a time."""
    if keep is not None:
        keep = np.broadcast_to(keep, expected.shape)
    compared, got_finite, expected_finite, reference_finite = 0, True, True, True
    picked: list[np.ndarray] = []
    for start in range(0, expected.size, chunk):
        where = slice(start, min(start + chunk, expected.size))
        exp, act = _part(expected, where), _part(got, where)
        ref = None if reference is None else _reference_part(reference, where)
        kept = None
        if keep is not None:
            kept = _part(keep, where)
            exp, act = exp[kept], act[kept]
            ref = None if ref is None else ref[kept]
        compared += exp.size
        got_finite = got_finite and bool(np.isfinite(act).all())
        expected_finite = expected_finite and bool(np.isfinite(exp).all())
        reference_finite = reference_finite and (ref is None or bool(np.isfinite(ref).all()))
        worst = _worst(exp, act, criterion, ref)
        picked.append(start + (worst if kept is None else np.flatnonzero(kept)[worst]))
    non_finite = "" if got_finite and expected_finite else "onnxruntime" if not got_finite else "PyTorch"
    every = np.unique(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)  # sorted: the first of equal maxima stays first
    return _Scan(compared=compared, non_finite=non_finite, reference_finite=reference_finite, picked=every)


def _judge_picked(expected: np.ndarray, got: np.ndarray, criterion: Criterion, reference: np.ndarray | Residual | None, scan: _Scan, *,
                  no_reference: str, calibration: Calibration | None) -> Verdict:
    """:func:`judge` of the elements ``scan`` picked, which gives the verdict of judging every compared element."""

    return judge(_part(expected, scan.picked), _part(got, scan.picked), criterion,
                 None if reference is None else _reference_part(reference, scan.picked), no_reference=no_reference,
                 calibration=calibration)


def judge_in_chunks(
    expected: np.ndarray, got: np.ndarray, criterion: Criterion, reference: np.ndarray | Residual | None = None, *,
    no_reference: str = "", chunk: int = CHUNK, calibration: Calibration | None = None, keep: np.ndarray | None = None,
) -> Verdict:
    """:func:`~onnxspec.pieces.criteria.judge` of the elements ``keep`` marks (all where
    ``None``), the same verdict, in bounded memory; the arrays must be finite there.

    Every figure ``judge`` reports is a maximum over the elements (or, for a tolerance, the
    element of largest error/bound ratio, the first such), so judging only the elements where
    some slice of ``chunk`` elements reaches one of those maxima (in their order) gives the
    verdict of judging all of them. No slice is copied whole: each is read, masked and widened
    on its own.
    """
    scan = _scan(expected, got, reference, keep, criterion, chunk)
    return _judge_picked(expected, got, criterion, reference, scan, no_reference=no_reference, calibration=calibration)


def _same_shapes(feed: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]) -> bool:
    """Whether two feeds give the same inputs the same shapes."""
    return list(feed) == list(other) and all(feed[n].shape == other[n].shape for n in feed)


def _frozen_outputs(spec: GraphSpec, runs: Sequence[tuple[Shapes, Mapping[str, np.ndarray]]]) -> list[str]:
    """Outputs whose declared dynamic axis kept one size while its symbol's size changed."""
    problems = []
    for t in spec.outputs:
        for axis, symbol in t.axes:
            try:
                wanted = {symbol_size(symbol, size_table(shapes)) for shapes, _ in runs}
            except SpecError:  # a size the model derives (feature frames, queries): no expectation to hold it to
                continue
            seen = {arrays[t.name].shape[axis] for _, arrays in runs if axis < arrays[t.name].ndim}
            if len(wanted) > 1 and len(seen) == 1:
                problems.append(
                    f"output {t.name!r}: axis {axis} is declared dynamic ({symbol!r}) but stayed {seen.pop()} "
                    f"while {symbol} took sizes {sorted(wanted)}; declare the axis static or fix the spec"
                )
    return problems


def _references(
    module: torch.nn.Module, feeds: Sequence[Mapping[str, torch.Tensor]], wanted: bool, dtype: torch.dtype
) -> tuple[list[list[np.ndarray]] | None, str, str]:
    """PyTorch's outputs in float64 at every feed, with ``dtype``'s limits for the constants the
    model takes from ``torch.finfo``; or ``None`` and the reason there are none; and how they
    were made: ``"streamed"`` (one module in float64 at a time, :func:`streamed_float64`), or
    ``"whole model: <why not streamed>"`` (:func:`in_float64`, the float64 copy of every weight
    at once), where streaming cannot apply or failed."""
    if not wanted:
        return None, "", ""

    def run() -> list[list[np.ndarray]]:
        with patched([finfo_of(dtype)]), torch.no_grad():
            return [[t.detach().numpy() for t in module(*to_float64(tuple(d.values())))] for d in feeds]

    why_whole = float64_plan(module) or float64_room(module, streamed=True)
    if not why_whole:
        try:
            with streamed_float64(module):
                return run(), "", "streamed"
        except Exception as e:  # a use of the weights the streaming does not follow: the whole model may still run
            why_whole = f"streamed, the model failed ({type(e).__name__}: {str(e)[:200]})"
    room = float64_room(module)
    if room:
        return None, f"no float64 reference: {room}", ""
    try:
        with in_float64(module):
            return run(), "", f"whole model: {why_whole}"
    except Exception as e:  # a model that cannot run in float64 (a hard-coded float32 tensor...)
        return None, f"no float64 reference: the model failed in float64 ({type(e).__name__}: {str(e)[:200]})", ""


@attrs.frozen(kw_only=True, eq=False)
class References:
    """PyTorch's side of one graph's validation, kept so a merged decoder's branch fed the very
    same inputs need not run the module again: the inputs fed at each shape set, PyTorch's
    outputs at the export dtype, and its float64 outputs at the set :func:`calibrating_set`
    picks (``None`` at the others; or ``None`` and the reason there are none; each held as a
    :class:`Residual` from the export dtype's output where it is one), with what made the inputs
    (seed, shape sets, dtypes, the spec's input names)."""

    seed: int
    sets: tuple[Shapes, ...]
    dtypes: DTypes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    feeds: tuple[Mapping[str, torch.Tensor], ...]
    expected: tuple[tuple[np.ndarray, ...], ...]
    float64: tuple[tuple[np.ndarray | Residual, ...] | None, ...] | None
    why_not: str = ""
    float64_how: str = ""
    """How the float64 outputs were made: ``"streamed"``, or ``"whole model: <why>"`` (see
    :func:`_references`); empty without them."""
    reused: bool = False
    """True when these references were taken from an earlier validation, not computed."""

    def fits(self, seed: int, sets: Sequence[Shapes], dtypes: DTypes, spec: GraphSpec,
             feeds: Sequence[Mapping[str, torch.Tensor]], wanted: bool) -> bool:
        """Whether these are PyTorch's runs at exactly ``feeds`` (same seed, shape sets, dtypes,
        inputs and outputs, every tensor equal), with float64 outputs if ``wanted``."""
        if (self.seed != seed or self.sets != tuple(sets) or self.dtypes != dtypes or self.inputs != tuple(names(spec.inputs))
                or self.outputs != tuple(names(spec.outputs)) or len(self.feeds) != len(feeds)):
            return False
        if wanted and self.float64 is None and not self.why_not:
            return False
        for kept, fed in zip(self.feeds, feeds):
            if list(kept) != list(fed):
                return False
            for name, tensor in fed.items():
                other = kept[name]
                if other.dtype != tensor.dtype or other.shape != tensor.shape or not torch.equal(other, tensor):
                    return False
        return True


def calibrating_set(feeds: Sequence[Mapping[str, torch.Tensor]]) -> int:
    """The index of the shape set the float64 reference runs at: the one whose inputs other than
    the cache hold the most elements (the first of equals). With the default sets that is
    ``large``, a prompt of several padded rows longer than the trace: the most positions, so its
    maximum of PyTorch's error is the best measured, and the set where positions beyond the
    trace are read."""
    sizes = [sum(t.numel() for name, t in feed.items() if not is_cache_input(name)) for feed in feeds]
    return sizes.index(max(sizes)) if sizes else 0


def _pytorch_runs(
    module: torch.nn.Module, spec: GraphSpec, sets: Sequence[Shapes], dtypes: DTypes, seed: int, wanted: bool,
    feeds: Sequence[Mapping[str, torch.Tensor]],
) -> References:
    """PyTorch's outputs at ``feeds`` at the export dtype, and in float64 at :func:`calibrating_set` if ``wanted``."""
    expected: list[tuple[np.ndarray, ...]] = []
    at = calibrating_set(feeds)
    references, why_not, how = None, "", ""
    for k, dummies in enumerate(feeds):
        with torch.no_grad():
            expected.append(tuple(_to_numpy(t) for t in module(*dummies.values())))
        if k == at:  # right after the float32 run at the same inputs: a module keeping state from its
            # longest call so far (dynamic NTK rotary) is in the same state for both, not in the next set's
            references, why_not, how = _references(module, [dummies], wanted, torch_dtype(Kind.FLOAT, dtypes))
            if references is not None:  # held as residuals before the next set runs (half the bytes)
                references = [[residual(e, r) for e, r in zip(expected[at], references[0])]]
    return References(
        seed=seed, sets=tuple(sets), dtypes=dtypes, inputs=tuple(names(spec.inputs)), outputs=tuple(names(spec.outputs)),
        feeds=tuple(feeds), expected=tuple(expected),
        float64=None if references is None else tuple(tuple(references[0]) if k == at else None for k in range(len(feeds))),
        why_not=why_not, float64_how=how,
    )


def validate(
    session: object,
    module: torch.nn.Module,
    spec: GraphSpec,
    traced: Shapes,
    dtypes: DTypes,
    seed: int,
    graph: str,
    shape_sets: Sequence[Shapes] | Mapping[str, Shapes] | None = None,
) -> tuple[tuple[OutputCheck, ...], tuple[str, ...], float]:
    """Run ``session`` (onnxruntime) and ``module`` (PyTorch) at each shape set and compare.

    PyTorch runs first, at the export dtype and, where an output is judged by a
    :class:`~onnxspec.pieces.criteria.NoiseBound`, again in float64 at one set
    (:func:`calibrating_set`, :mod:`onnxspec.judge.reference`); only then is onnxruntime run. At
    that set each output's noise is measured; at the others the noise measured there stands for
    it (:class:`~onnxspec.pieces.criteria.Calibration`), against PyTorch at the export dtype. ``session`` may be a callable returning the session, so it opens
    after the references are made. Returns the per-output checks, problems found across runs
    (a frozen dynamic axis), and the seconds spent (:func:`validate_with_references` also
    returns PyTorch's runs).
    """
    checks, problems, seconds, _ = validate_with_references(session, module, spec, traced, dtypes, seed, graph, shape_sets)
    return checks, problems, seconds


def validate_with_references(
    session: object,
    module: torch.nn.Module,
    spec: GraphSpec,
    traced: Shapes,
    dtypes: DTypes,
    seed: int,
    graph: str,
    shape_sets: Sequence[Shapes] | Mapping[str, Shapes] | None = None,
    *,
    reuse: References | None = None,
) -> tuple[tuple[OutputCheck, ...], tuple[str, ...], float, References]:
    """:func:`validate`, also returning PyTorch's runs (:class:`References`).

    At the default sets (``shape_sets`` ``None``), a graph whose inputs vary with the batch only
    (an encoder of fixed frames, a vision model of a fixed image size), which ``decode`` would
    feed ``large``'s shapes again, is fed ``small``'s shapes there, with values of its own.

    ``reuse``: PyTorch's runs from an earlier validation; used (and the module not run) only if
    they were made at exactly the inputs this validation feeds (:meth:`References.fits`), else
    the module runs as usual.
    """
    start = time.perf_counter()
    if isinstance(shape_sets, Mapping):  # sets named by the caller
        labels, sets = list(shape_sets), tuple(shape_sets.values())
    else:
        sets = tuple(shape_sets) if shape_sets is not None else validation_shapes(traced)
        labels = [SHAPE_SET_NAMES[k] if k < len(SHAPE_SET_NAMES) and shape_sets is None else f"set{k}" for k in range(len(sets))]
    out_names = list(names(spec.outputs))
    criteria = [tolerance_for(spec, t.name, dtypes) for t in spec.outputs]
    wanted = any(isinstance(c, NoiseBound) for c in criteria)
    feeds: list[dict[str, torch.Tensor]] = []
    for k, shapes in enumerate(sets):
        ctx = context(shapes, dtypes, spec.dims, past=spec.past, padding_side=spec.padding_side)
        feeds.append(make_dummies(spec.inputs, spec.generators, ctx, seed + 1 + k))
    if shape_sets is None and len(sets) == 3 and _same_shapes(feeds[2], feeds[1]):
        # only the batch is dynamic (an encoder of fixed frames, a vision model of a fixed image
        # size), so decode would feed large's shapes again: it repeats small's instead, the
        # cheapest, with its own values (the tiny Whisper's encoder: 3000 frames a row)
        sets = (sets[0], sets[1], sets[0])
        ctx = context(sets[2], dtypes, spec.dims, past=spec.past, padding_side=spec.padding_side)
        feeds[2] = make_dummies(spec.inputs, spec.generators, ctx, seed + 3)
    if reuse is not None and reuse.fits(seed, sets, dtypes, spec, feeds, wanted):
        runs_of_torch = attrs.evolve(reuse, reused=True)
    else:
        runs_of_torch = _pytorch_runs(module, spec, sets, dtypes, seed, wanted, feeds)
    expected, references, why_not = runs_of_torch.expected, runs_of_torch.float64 if wanted else None, runs_of_torch.why_not
    if callable(session) and not hasattr(session, "run"):
        session = session()
    at = calibrating_set(feeds)
    calibrations: dict[int, Calibration] = {}  # output index -> PyTorch's noise measured at set ``at``

    def judged(k: int, feed: Mapping[str, np.ndarray], got: Sequence[Any]) -> list[OutputCheck]:
        found = []
        for i, (t, exp, act) in enumerate(zip(spec.outputs, expected[k], got)):
            keep = mask_for(t, exp, feed, spec)
            ref = references[k][i] if references is not None and references[k] is not None else None
            calibration = calibrations.get(i) if references is not None and ref is None else None
            missing = why_not or f"no float64 noise measured on this output at {labels[at]}"
            check = compare(graph, t, labels[k], exp, np.asarray(act), keep, criteria[i], ref, no_reference=missing,
                            calibration=calibration)
            if k == at and check.reference == "float64" and np.isfinite(check.noise):
                calibrations[i] = Calibration(noise=check.noise, shape_set=labels[at])
            found.append(check)
        return found

    by_set: dict[int, list[OutputCheck]] = {}
    waiting: list[tuple[int, dict[str, np.ndarray], Sequence[Any]]] = []  # sets run before the float64 one: judged after it
    runs: list[tuple[Shapes, dict[str, np.ndarray]]] = []
    for k, shapes in enumerate(sets):
        feed = {n: _to_numpy(t) for n, t in feeds[k].items()}
        got = session.run(out_names, feed)  # type: ignore[attr-defined]
        # what the frozen-axis check reads is the shapes: keep those (views of no memory), not the outputs
        runs.append((shapes, {n: np.broadcast_to(np.empty((), np.asarray(a).dtype), np.shape(a)) for n, a in zip(out_names, got)}))
        if k < at:
            waiting.append((k, feed, got))
            continue
        by_set[k] = judged(k, feed, got)
        if k == at:
            for earlier, earlier_feed, earlier_got in waiting:
                by_set[earlier] = judged(earlier, earlier_feed, earlier_got)
            waiting.clear()
        del got
    checks = [c for k in range(len(sets)) for c in by_set[k]]
    problems = tuple(_frozen_outputs(spec, runs))
    return tuple(checks), problems, time.perf_counter() - start, runs_of_torch


_NUMPY_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(bfloat16)": np.float32}  # bf16 stand-ins are zeros, cast exactly by the reference session
_PASSED_THROUGH = Tolerance(atol=1e-30)
"""Outputs the cache branch passes through unchanged are compared exactly (the atol only
keeps the bound positive)."""


def branch_feed(declared: Mapping[str, tuple[list[Any], str]], feed: Mapping[str, np.ndarray], branch: bool,
                 branch_input: str) -> dict[str, np.ndarray]:
    """The inputs of a merged decoder that one branch's spec does not feed.

    The first step (``branch`` false) gets cache inputs of past length 0; later steps get an
    ``encoder_hidden_states`` of zeros (the cross-attention cache stands in for it), as long
    as the fed cross cache. Sizes the graph fixed are read from its declared shapes.
    """
    batch = next(iter(feed.values())).shape[0]
    cross = feed.get(cache_name(0, Which.KEY, part=Part.CROSS))
    extra: dict[str, np.ndarray] = {branch_input: np.array([branch])}
    for name, (shape, kind) in declared.items():
        if name in feed or name == branch_input:
            continue
        if kind not in _NUMPY_FLOAT:
            raise SpecError(f"merged decoder input {name!r} ({kind}) has no stand-in in the {'cache' if branch else 'no-cache'} branch")
        if is_cache_input(name):
            dynamic = {0: batch, 2: 0}
        else:
            dynamic = {0: batch, 1: cross.shape[2] if cross is not None else 1}
        dims = [dynamic.get(k, d) for k, d in enumerate(shape)]
        if not all(isinstance(d, int) for d in dims):
            raise SpecError(f"merged decoder input {name!r}: cannot size a stand-in for its shape {shape}")
        extra[name] = np.zeros(dims, _NUMPY_FLOAT[kind])
    return extra


def validate_merged(
    session: object,
    branches: Sequence[tuple[bool, str, torch.nn.Module, GraphSpec]],
    traced: Shapes,
    dtypes: DTypes,
    seed: int,
    graph: str,
    branch_input: str = "use_cache_branch",
    shape_sets: Sequence[Shapes] | Mapping[str, Shapes] | None = None,
    *,
    reuse: Sequence[References | None] = (),
) -> tuple[tuple[OutputCheck, ...], tuple[str, ...], float]:
    """:func:`validate` a merged decoder once per branch, against that branch's own graph.

    ``branches``: ``(branch value, tag, module, spec)`` per branch, e.g.
    ``(False, "no-cache", first_step_module, decoder_spec)``. Each run feeds the spec's inputs,
    the branch flag, and stand-ins for the other branch's inputs (an empty past, or zero
    encoder states); checks are labelled ``<shape set>/<tag>``. Outputs the spec lacks (the
    cross-attention cache of the cache branch) must equal the matching cache inputs exactly.
    ``reuse``: per branch, PyTorch's runs from that branch's own graph's validation
    (:func:`validate_with_references`), used where they were made at the same inputs.
    """
    start = time.perf_counter()
    kept = list(reuse) + [None] * (len(branches) - len(reuse))
    if callable(session) and not hasattr(session, "run"):
        session = session()
    declared = {i.name: (list(i.shape), i.type) for i in session.get_inputs()}  # type: ignore[attr-defined]
    every_output = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
    checks: list[OutputCheck] = []
    problems: list[str] = []
    for (branch, tag, module, spec), earlier in zip(branches, kept):
        runs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []

        def run(out_names: list[str], feed: Mapping[str, np.ndarray], branch: bool = branch,
                runs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = runs) -> list[np.ndarray]:
            full = {**feed, **branch_feed(declared, feed, branch, branch_input)}
            others = [n for n in every_output if n not in out_names]
            got = session.run([*out_names, *others], full)  # type: ignore[attr-defined]
            runs.append((full, dict(zip(others, got[len(out_names):]))))
            return got[: len(out_names)]

        found, trouble, _, _ = validate_with_references(
            SimpleNamespace(run=run), module, spec, traced, dtypes, seed, graph, shape_sets, reuse=earlier
        )
        labels = list(dict.fromkeys(c.shape_set for c in found))
        checks += [attrs.evolve(c, shape_set=f"{c.shape_set}/{tag}") for c in found]
        problems += [f"{tag} branch: {p}" for p in trouble]
        for label, (full, others) in zip(labels, runs):
            for name, got in others.items():
                source = to_past(name) if is_cache_output(name) else None
                if source is None or source not in full:
                    problems.append(f"{tag} branch: output {name!r} is neither checked against PyTorch nor a cache input passed through")
                    continue
                checks.append(compare(graph, tensor_spec(name, {}), f"{label}/{tag}", full[source], np.asarray(got), None, _PASSED_THROUGH))
    return tuple(checks), tuple(problems), time.perf_counter() - start


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return tensor.float().numpy() if tensor.dtype is torch.bfloat16 else tensor.numpy()
