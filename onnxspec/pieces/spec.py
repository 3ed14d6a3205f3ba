"""The export spec: one frozen record describing an ONNX export, and pure functions over it.

An :class:`ExportSpec` holds, for every sub-graph a model can be split into (its
:class:`Behavior`), the graph's base inputs and outputs and how to call the PyTorch module
(:class:`GraphIO`). The current graph's ``inputs`` / ``outputs`` are derived from that table,
the behavior flags and the cache layout, so they can never disagree with them. Every change
goes through a function returning a new spec (``with_behavior``, ``with_past``, ``with_opset``,
``bind``...), built on ``attrs.evolve`` so validators run again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import toolz
from packaging.version import InvalidVersion, Version

from onnxspec.pieces.axes import TensorSpec, axes_view, names, symbol_terms
from onnxspec.pieces.cache_names import OUTPUT_PATTERN, is_cache_output
from onnxspec.pieces.criteria import DEFAULT_CRITERIA, Criterion, NoiseBound, Tolerance
from onnxspec.errors import SpecError
from onnxspec.pieces.normalize import Dims, Normalizer, normalize
from onnxspec.pieces.past import Direction, PastKind, PastLayout, add_past_key_values
from onnxspec.pieces.patches import Patch
from onnxspec.pieces.shapes import DTypes, torch_dtype

__all__ = [
    "Behavior",
    "Call",
    "ExportSpec",
    "GraphIO",
    "Split",
    "Tolerance",
    "bind",
    "check_versions",
    "Criterion",
    "NoiseBound",
    "contract",
    "contract_json",
    "describe",
    "past_layout",
    "tolerance_for",
    "with_behavior",
    "with_graph",
    "with_opset",
    "with_past",
    "with_criterion",
    "with_tolerance",
]


def _ro(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


class Behavior(enum.Enum):
    """Which sub-graph of a model a spec describes."""

    MONOLITH = "monolith"
    ENCODER = "encoder"
    DECODER = "decoder"


@attrs.frozen(kw_only=True)
class Call:
    """How a graph calls the PyTorch model.

    ``module``: ``""`` for the model itself, ``"encoder"`` for ``model.get_encoder()``.
    ``arguments``: graph input name -> forward keyword (``encoder_hidden_states`` ->
    ``encoder_outputs`` is wrapped in a model output). ``results``: graph output name ->
    attribute of the model's output (dotted, with ``[i]`` allowed); ``present.*`` outputs come
    from the returned cache. ``fixed``: constant keywords (``return_dict``, ``use_cache`` ...).
    """

    module: str = ""
    arguments: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)
    results: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)
    fixed: Mapping[str, Any] = attrs.field(factory=dict, converter=_ro, hash=False)

    def argument(self, graph_name: str) -> str:
        return self.arguments.get(graph_name, graph_name)

    def result(self, graph_name: str) -> str:
        return self.results.get(graph_name, graph_name)


@attrs.frozen(kw_only=True)
class GraphIO:
    """A sub-graph's base inputs and outputs (before any cache) and how it calls the model.

    ``past``: whether this sub-graph may carry a cache (its tensors are added by the spec).
    ``replaced_by_cache``: base inputs the graph no longer takes once the cache is an input
    (a seq2seq decoder's ``encoder_hidden_states``: the cross-attention cache holds them).
    """

    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    call: Call = attrs.field(factory=Call)
    past: bool = False
    replaced_by_cache: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)

    @replaced_by_cache.validator
    def _replaced(self, attribute: attrs.Attribute, value: frozenset[str]) -> None:
        unknown = sorted(value - set(names(self.inputs)))
        if unknown:
            raise SpecError(f"GraphIO.replaced_by_cache names {unknown}, which are not inputs {list(names(self.inputs))}")
        if value and not self.past:
            raise SpecError(f"GraphIO.replaced_by_cache is {sorted(value)} but the graph carries no cache (past=False)")

    @inputs.validator
    @outputs.validator
    def _unique(self, attribute: attrs.Attribute, value: tuple[TensorSpec, ...]) -> None:
        seen = [n for n in names(value)]
        dupes = sorted({n for n in seen if seen.count(n) > 1})
        if dupes:
            raise SpecError(f"GraphIO.{attribute.name}: duplicate names {dupes}; each tensor name must appear once")


@attrs.frozen(kw_only=True)
class Split:
    """One file of an export: its name and the sub-graph it holds."""

    filename: str
    behavior: Behavior
    use_past: bool = False
    use_past_in_inputs: bool = False


def _check_graphs(inst: ExportSpec, attribute: attrs.Attribute, value: Mapping[Behavior, GraphIO]) -> None:
    if not value:
        raise SpecError(f"{_who(inst)}: graphs is empty; a spec needs at least one sub-graph")
    for key, graph in value.items():
        if not isinstance(key, Behavior) or not isinstance(graph, GraphIO):
            raise SpecError(f"{_who(inst)}: graphs must map Behavior -> GraphIO, got {key!r} -> {type(graph).__name__}")


def _who(spec: Any) -> str:
    mt = getattr(spec, "model_type", "?")
    task = getattr(spec, "task", "?")
    beh = getattr(spec, "behavior", None)
    return f"spec {mt}/{task}" + (f" ({beh.value})" if isinstance(beh, Behavior) else "")


BACKENDS = ("torchscript", "dynamo")
"""The values of ``ExportSpec.backend`` (the names of :class:`onnxspec.build.exporters.Backend`)."""


def _check_backend(spec: Any, value: object) -> None:
    if value is not None and value not in BACKENDS:
        raise SpecError(f"{_who(spec)}: backend must be one of {list(BACKENDS)} or None (the default), got {value!r}")


@attrs.frozen(kw_only=True)
class ExportSpec:
    """Everything needed to export and validate one sub-graph of one model for one task."""

    model_type: str
    task: str
    family: str
    graphs: Mapping[Behavior, GraphIO] = attrs.field(converter=_ro, validator=_check_graphs, hash=False)
    behavior: Behavior = Behavior.MONOLITH
    use_past: bool = False
    use_past_in_inputs: bool = False
    splits: tuple[Split, ...] = attrs.field(default=(), converter=tuple)
    generators: Mapping[str, Callable[..., Any]] = attrs.field(factory=dict, converter=_ro, hash=False)
    normalizer: Normalizer = attrs.field(factory=lambda: Normalizer(fields={}))
    past_kind: PastKind | None = None
    dims: Dims | None = None
    past: PastLayout | None = None
    padding_side: str = attrs.field(default="right")
    opset: int = 18
    tolerances: Mapping[str, Criterion] = attrs.field(factory=dict, converter=_ro, hash=False)
    patches: tuple[Patch, ...] = attrs.field(default=(), converter=tuple)
    attn_implementation: str | None = None
    backend: str | None = attrs.field(default=None, validator=lambda inst, a, v: _check_backend(inst, v))
    """The torch exporter this spec prefers (``"torchscript"`` or ``"dynamo"``), e.g. dynamo for a
    model whose routing TorchScript cannot trace; ``None``: the default. A backend the caller
    passes to ``export`` wins over it; a spec's backend is never swapped for a fallback."""
    min_torch: str = "2.5"
    min_transformers: str = "5.0"
    variants: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)
    variant: str = ""

    def __attrs_post_init__(self) -> None:
        who = _who(self)
        if self.padding_side not in ("left", "right"):
            raise SpecError(f"{who}: padding_side must be 'left' or 'right', got {self.padding_side!r}")
        for field in ("min_torch", "min_transformers"):
            try:
                Version(getattr(self, field))
            except InvalidVersion as e:
                raise SpecError(f"{who}: {field} must be a version like '2.5', got {getattr(self, field)!r}") from e
        if self.behavior not in self.graphs:
            raise SpecError(
                f"{who}: behavior {self.behavior.value!r} has no graph; this spec defines "
                f"{sorted(b.value for b in self.graphs)}"
            )
        if self.use_past_in_inputs and not self.use_past:
            raise SpecError(f"{who}: use_past_in_inputs=True needs use_past=True")
        if self.use_past and self.past_kind is None:
            raise SpecError(
                f"{who}: use_past=True but family {self.family!r} has no cache (past_kind is None); "
                "export without the cache (drop '-with-past' / use_past)"
            )
        if self.use_past and not self.graphs[self.behavior].past:
            raise SpecError(
                f"{who}: use_past=True but the {self.behavior.value} graph carries no cache; "
                f"graphs with a cache: {sorted(b.value for b, g in self.graphs.items() if g.past)}"
            )
        if self.behavior is Behavior.DECODER and self.past_kind is PastKind.SEQ2SEQ:
            # The first decoder step reads the encoder output; later steps may read the
            # cross-attention cache instead (``replaced_by_cache``), which a SEQ2SEQ layout has.
            if "encoder_hidden_states" not in names(self.graphs[Behavior.DECODER].inputs):
                raise SpecError(
                    f"{who}: a seq2seq decoder graph needs the input 'encoder_hidden_states' (a graph with cache "
                    "inputs may drop it via GraphIO.replaced_by_cache, the cross-attention cache standing in for it)"
                )
        if any("encoder_hidden_states" in g.replaced_by_cache for g in self.graphs.values()) and self.past_kind is not PastKind.SEQ2SEQ:
            kind = self.past_kind.value if self.past_kind is not None else None
            raise SpecError(
                f"{who}: a graph's 'encoder_hidden_states' is replaced_by_cache, but only a seq2seq cache holds the "
                f"cross-attention keys and values that replace it; past_kind is {kind!r}"
            )
        if self.past is not None and self.past_kind is not None and self.past.kind is not self.past_kind:
            raise SpecError(f"{who}: past layout kind {self.past.kind.value!r} contradicts past_kind {self.past_kind.value!r}")
        if not 7 <= self.opset <= 30:
            raise SpecError(f"{who}: opset must be between 7 and 30, got {self.opset}")
        if self.variants and self.variant and self.variant not in self.variants:
            raise SpecError(f"{who}: variant {self.variant!r} is not one of {sorted(self.variants)}")
        for name, tol in self.tolerances.items():
            if not isinstance(tol, (Tolerance, NoiseBound)):
                raise SpecError(f"{who}: tolerance of {name!r} must be a Tolerance or a NoiseBound, got {tol!r}")

    @property
    def graph(self) -> GraphIO:
        """The table entry of the current behavior."""
        return self.graphs[self.behavior]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The current graph's inputs; with ``use_past_in_inputs`` the cache inputs are added and
        the inputs the cache replaces (``GraphIO.replaced_by_cache``) dropped."""
        base = self.graph.inputs
        if self.use_past_in_inputs:
            kept = tuple(t for t in base if t.name not in self.graph.replaced_by_cache)
            return add_past_key_values(kept, _require_past(self), Direction.INPUTS)
        return _without_past_terms(base)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The current graph's outputs, ``present.*`` included when ``use_past``."""
        base = self.graph.outputs if self.use_past_in_inputs else _without_past_terms(self.graph.outputs)
        if self.use_past:
            return add_past_key_values(base, _require_past(self), Direction.OUTPUTS, past_in_inputs=self.use_past_in_inputs)
        return base

    def __repr__(self) -> str:
        flags = f"use_past={self.use_past}, use_past_in_inputs={self.use_past_in_inputs}"
        return f"ExportSpec({self.model_type}/{self.task}, {self.family}, {self.behavior.value}, {flags}, opset={self.opset})"


def _without_past_terms(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Specs of a graph without cache inputs: past lengths are 0, so ``past_* + x`` is ``x``."""

    def simplify(symbol: str) -> str:
        kept = [t for t in symbol_terms(symbol) if not t.startswith("past_")]
        return " + ".join(kept) if kept else symbol

    return tuple(attrs.evolve(t, axes={i: simplify(s) for i, s in t.axes}) for t in specs)


def _require_past(spec: ExportSpec) -> PastLayout:
    if spec.past is None:
        raise SpecError(
            f"{_who(spec)}: the cache layout is unknown until the spec is bound to a model config; "
            "call bind(spec, config) or with_past(spec, layout)"
        )
    return spec.past


def past_layout(kind: PastKind, dims: Dims) -> PastLayout:
    """The cache layout a config's dims imply: GQA heads, explicit ``head_dim`` honoured."""
    layers = dims.get("decoder_num_layers") if kind is PastKind.SEQ2SEQ else None
    layers = layers or dims["num_layers"]
    heads = dims.get("decoder_num_attention_heads") if kind is PastKind.SEQ2SEQ else None
    heads = heads or dims["num_attention_heads"]
    kv_heads = dims.get("num_key_value_heads") or heads
    head_dim = dims.get("head_dim") or dims["hidden_size"] // heads
    return PastLayout(
        kind=kind,
        num_layers=int(layers),
        num_heads=int(kv_heads),
        key_dim=int(head_dim),
        value_dim=int(dims.get("value_head_dim") or head_dim),
    )


def bind(spec: ExportSpec, config: Any) -> ExportSpec:
    """The spec with its normalizer resolved against ``config`` and its cache layout derived."""
    dims = normalize(spec.normalizer, config)
    layout = past_layout(spec.past_kind, dims) if spec.past_kind is not None else None
    return attrs.evolve(spec, dims=dims, past=layout)


def check_versions(spec: ExportSpec, installed: Mapping[str, str]) -> None:
    """Raise when the installed torch or transformers is older than the spec needs."""
    for package, needed in (("torch", spec.min_torch), ("transformers", spec.min_transformers)):
        have = installed.get(package)
        if have is not None and Version(have.split("+")[0]) < Version(needed):
            raise SpecError(
                f"{_who(spec)} needs {package}>={needed}, but {package} {have} is installed; "
                f"upgrade it (pip install '{package}>={needed}')"
            )


def with_behavior(
    spec: ExportSpec,
    behavior: Behavior | str,
    *,
    use_past: bool | None = None,
    use_past_in_inputs: bool | None = None,
) -> ExportSpec:
    """The spec of one sub-graph. Flags left ``None`` keep their value where that is legal.

    >>> # with_behavior(t5_spec, Behavior.DECODER, use_past=True, use_past_in_inputs=True)
    """
    behavior = Behavior(behavior)
    graph = spec.graphs.get(behavior)
    past_ok = graph is not None and graph.past
    up = spec.use_past and past_ok if use_past is None else use_past
    upi = (spec.use_past_in_inputs and up) if use_past_in_inputs is None else use_past_in_inputs
    return attrs.evolve(spec, behavior=behavior, use_past=up, use_past_in_inputs=upi)


def with_past(spec: ExportSpec, layout: PastLayout | None = None, *, use_past: bool = True, use_past_in_inputs: bool | None = None) -> ExportSpec:
    """The spec with a cache (``layout`` given or the bound one) switched on or off."""
    upi = use_past if use_past_in_inputs is None else use_past_in_inputs
    return attrs.evolve(spec, past=layout if layout is not None else spec.past, use_past=use_past, use_past_in_inputs=upi)


def with_opset(spec: ExportSpec, opset: int) -> ExportSpec:
    """The spec exporting at ``opset``."""
    return attrs.evolve(spec, opset=opset)


def with_criterion(spec: ExportSpec, criterion: Criterion, *, outputs: Iterable[str] | None = None) -> ExportSpec:
    """The spec judging ``outputs`` by ``criterion`` (a :class:`Tolerance` or a :class:`NoiseBound`).

    By default every output of every sub-graph gets it, cache outputs (``present.*``) included,
    so it also holds for the graphs ``with_behavior`` derives later. Names may be exact, the
    pattern ``present.*`` or ``*`` (every output without a criterion of its own).
    """
    if outputs is not None:
        chosen = tuple(outputs)
    else:
        every = (n for graph in spec.graphs.values() for n in names(graph.outputs))
        chosen = tuple(dict.fromkeys([*every, *([OUTPUT_PATTERN] if spec.past_kind is not None else [])]))
    return attrs.evolve(spec, tolerances=toolz.merge(spec.tolerances, dict.fromkeys(chosen, criterion)))


def with_tolerance(spec: ExportSpec, atol: float, rtol: float | None = None, *, outputs: Iterable[str] | None = None) -> ExportSpec:
    """The spec judging ``outputs`` by the fixed bound ``|onnx - torch| <= atol + rtol * |torch|``
    instead of the default noise-calibrated one (see :mod:`onnxspec.pieces.criteria`)."""
    return with_criterion(spec, Tolerance(atol=atol, rtol=0.0 if rtol is None else rtol), outputs=outputs)


def with_graph(spec: ExportSpec, behavior: Behavior, graph: GraphIO) -> ExportSpec:
    """The spec with the table entry of ``behavior`` replaced by ``graph``."""
    return attrs.evolve(spec, graphs=toolz.assoc(spec.graphs, behavior, graph))


def tolerance_for(spec: ExportSpec, output: str, dtypes: DTypes) -> Criterion:
    """The criterion an output is judged by: its own, a ``present.*`` pattern, ``*``, or the
    dtype's default :class:`NoiseBound` (:data:`onnxspec.pieces.criteria.DEFAULT_CRITERIA`)."""
    if output in spec.tolerances:
        return spec.tolerances[output]
    if is_cache_output(output) and OUTPUT_PATTERN in spec.tolerances:
        return spec.tolerances[OUTPUT_PATTERN]
    if "*" in spec.tolerances:
        return spec.tolerances["*"]
    return DEFAULT_CRITERIA[dtypes.float_dtype.value]


def _tensor_contract(t: TensorSpec, dtypes: DTypes) -> dict[str, Any]:
    dtype = str(torch_dtype(t.kind, dtypes)).removeprefix("torch.")
    entry: dict[str, Any] = {"name": t.name, "dtype": dtype, "dynamic_axes": {str(k): v for k, v in t.axes}}
    if t.rank is not None:
        entry["rank"] = t.rank
    return entry


def contract(spec: ExportSpec, dtypes: DTypes = DTypes()) -> dict[str, Any]:
    """The I/O contract of the current graph: names, dtypes and dynamic axes, as plain data."""
    return {
        "model_type": spec.model_type,
        "task": spec.task,
        "behavior": spec.behavior.value,
        "use_past": spec.use_past,
        "use_past_in_inputs": spec.use_past_in_inputs,
        "opset": spec.opset,
        "inputs": [_tensor_contract(t, dtypes) for t in spec.inputs],
        "outputs": [_tensor_contract(t, dtypes) for t in spec.outputs],
    }


def contract_json(spec: ExportSpec, dtypes: DTypes = DTypes()) -> str:
    """:func:`contract` as JSON text (sorted keys, stable across runs)."""
    return json.dumps(contract(spec, dtypes), indent=2, sort_keys=True)


def describe(spec: ExportSpec) -> str:
    """A readable multi-line account of the spec: graph, inputs and outputs with their axes."""
    lines = [repr(spec)]
    try:
        ins, outs = axes_view(spec.inputs), axes_view(spec.outputs)
    except SpecError as e:
        return "\n".join([*lines, f"  (I/O not listed: {e})"])
    lines.append("  inputs:")
    lines += [f"    {n}: {a}" for n, a in ins.items()]
    lines.append("  outputs:")
    lines += [f"    {n}: {a}" for n, a in outs.items()]
    if spec.patches:
        lines.append(f"  patches: {list(spec.patches)}")
    return "\n".join(lines)
