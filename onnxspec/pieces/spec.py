"""Model specs, graph specs and the plan between them.

A :class:`ModelSpec` says what a model is, for one task: its graphs by role (each a
:class:`GraphIO`: base inputs and outputs, and how it calls the PyTorch module), the files a
plain export writes (:class:`~onnxspec.pieces.kinds.GraphKind` values), the cache layout, the
dummy-input generators, tolerances, patches and versions. It carries no cursor: which graph,
with or without the cache, is a property of a file, not of the model.

:func:`plan` turns a model spec and the export options (with or without cache, merged
decoders, one graph) into :class:`GraphSpec` records, one per file, each self-contained: its
file name, kind, inputs and outputs (the cache tensors added or dropped as its kind says), the
call, the criteria of its outputs, and, for a merged file, the specs of its two branches.
:func:`graph_spec` builds one of them for any kind; :func:`with_behavior` is its short form.

Every change goes through a function returning a new record (``with_past``, ``with_opset``,
``with_tolerance``, ``bind``...), built on ``attrs.evolve`` so validators run again; given a
graph spec, they change its model spec and derive the graph again.
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

from onnxspec.errors import SpecError
from onnxspec.pieces import kinds as K
from onnxspec.pieces.axes import TensorSpec, axes_view, names, symbol_terms
from onnxspec.pieces.cache_names import OUTPUT_PATTERN, is_cache_output
from onnxspec.pieces.criteria import DEFAULT_CRITERIA, Criterion, NoiseBound, Tolerance
from onnxspec.pieces.kinds import GraphKind, merged_interface
from onnxspec.pieces.normalize import Dims, Normalizer, normalize
from onnxspec.pieces.past import Direction, PastKind, PastLayout, add_past_key_values
from onnxspec.pieces.patches import Patch
from onnxspec.pieces.shapes import DTypes, torch_dtype

__all__ = [
    "Behavior",
    "Call",
    "Criterion",
    "ExportSpec",
    "GraphIO",
    "GraphKind",
    "GraphSpec",
    "ModelSpec",
    "NoiseBound",
    "Tolerance",
    "bind",
    "check_versions",
    "contract",
    "contract_json",
    "describe",
    "graph_spec",
    "past_layout",
    "plan",
    "tolerance_for",
    "with_behavior",
    "with_criterion",
    "with_graph",
    "with_opset",
    "with_past",
    "with_tolerance",
]


def _ro(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


class Behavior(enum.Enum):
    """The roles of the common graphs, by name. A role is any string (a graph table's key);
    these members are spellings of the usual ones, accepted wherever a role is."""

    MONOLITH = "monolith"
    ENCODER = "encoder"
    DECODER = "decoder"


def _role(value: Behavior | str) -> str:
    return value.value if isinstance(value, Behavior) else value


@attrs.frozen(kw_only=True)
class Call:
    """How a graph calls the PyTorch model.

    ``module``: which module the graph calls, as a path from the model: ``""`` for the model
    itself, dotted attribute names (``"model.decoder"``), and a part ending in ``()`` calls
    that method (``"get_encoder()"``). ``arguments``: graph input name -> forward keyword
    (``encoder_hidden_states`` -> ``encoder_outputs`` is wrapped in a model output).
    ``results``: graph output name -> attribute of the model's output (dotted, with ``[i]``
    allowed); ``present.*`` outputs come from the returned cache. ``fixed``: constant
    keywords (``return_dict``, ``use_cache`` ...).

    ``function``: what the graph computes when it is not one module's ``forward``: a plain
    function ``(module, **keywords) -> output`` (a mapping or a model output, read by
    ``results``) composing the module's parts, e.g. an image encoder returning the embeddings
    and the positional table a prompt decoder takes. The same function is traced and run by
    PyTorch for validation, so it must compute exactly what the model computes.
    """

    module: str = ""
    arguments: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)
    results: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)
    fixed: Mapping[str, Any] = attrs.field(factory=dict, converter=_ro, hash=False)
    function: Callable[..., Any] | None = attrs.field(default=None, eq=attrs.cmp_using(eq=lambda a, b: a is b), hash=False)

    def argument(self, graph_name: str) -> str:
        return self.arguments.get(graph_name, graph_name)

    def result(self, graph_name: str) -> str:
        return self.results.get(graph_name, graph_name)


@attrs.frozen(kw_only=True)
class GraphIO:
    """A graph's base inputs and outputs (before any cache) and how it calls the model.

    ``past``: whether this graph may carry a cache (its tensors are added by the plan).
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


def _graph_table(value: Mapping[Behavior | str, GraphIO]) -> Mapping[str, GraphIO]:
    return _ro({_role(k): v for k, v in value.items()})


def _check_graphs(inst: ModelSpec, attribute: attrs.Attribute, value: Mapping[str, GraphIO]) -> None:
    if not value:
        raise SpecError(f"{_who(inst)}: graphs is empty; a spec needs at least one graph")
    for key, graph in value.items():
        if not isinstance(key, str) or not key or not isinstance(graph, GraphIO):
            raise SpecError(f"{_who(inst)}: graphs must map a role (a string) -> GraphIO, got {key!r} -> {type(graph).__name__}")


def _who(spec: Any) -> str:
    model = getattr(spec, "model", spec)
    mt = getattr(model, "model_type", "?")
    task = getattr(model, "task", "?")
    kind = getattr(spec, "kind", None)
    return f"spec {mt}/{task}" + (f" ({kind.filename})" if isinstance(kind, GraphKind) else "")


BACKENDS = ("torchscript", "dynamo")
"""The values of ``ModelSpec.backend`` (the names of :class:`onnxspec.build.exporters.Backend`)."""


def _check_backend(spec: Any, value: object) -> None:
    if value is not None and value not in BACKENDS:
        raise SpecError(f"{_who(spec)}: backend must be one of {list(BACKENDS)} or None (the default), got {value!r}")


@attrs.frozen(kw_only=True)
class ModelSpec:
    """What a model is, for one task: its graphs by role, the files a plain export writes, and
    everything needed to build dummies, trace, and judge them.

    ``files``: the kinds of the files an export without cache writes; with ``use_past`` (a
    ``-with-past`` task) each kind gives way to its ``cache_variants``. ``task`` is the task's
    name without the ``-with-past`` suffix.
    """

    model_type: str
    task: str
    family: str
    graphs: Mapping[str, GraphIO] = attrs.field(converter=_graph_table, validator=_check_graphs, hash=False)
    files: tuple[GraphKind, ...] = attrs.field(default=(K.SINGLE,), converter=tuple)
    use_past: bool = False
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
        if not self.files:
            raise SpecError(f"{who}: files is empty; a spec writes at least one file")
        for kind in self.files:
            if not isinstance(kind, GraphKind):
                raise SpecError(f"{who}: files must be GraphKind values, got {kind!r}")
            for k in (kind, *kind.cache_variants):
                if k.role not in self.graphs:
                    raise SpecError(
                        f"{who}: file {k.filename!r} is traced from the {k.role!r} graph, which this spec does not define; "
                        f"it defines {sorted(self.graphs)}"
                    )
        if self.use_past and self.past_kind is None:
            raise SpecError(
                f"{who}: use_past=True but family {self.family!r} has no cache (past_kind is None); "
                "export without the cache (drop '-with-past' / use_past)"
            )
        for variant in (v for k in self.files for v in k.cache_variants) if self.use_past else ():
            if variant.cache_out and not self.graphs[variant.role].past:
                raise SpecError(
                    f"{who}: use_past=True but the {variant.role} graph carries no cache (its GraphIO has past=False); "
                    f"graphs with a cache: {sorted(r for r, g in self.graphs.items() if g.past)}"
                )
        if self.use_past and not any(k.cache_variants for k in self.files):
            raise SpecError(
                f"{who}: use_past=True but none of its files has a form with cache "
                f"({[k.filename for k in self.files]}); graphs with a cache: {sorted(r for r, g in self.graphs.items() if g.past)}"
            )
        if "decoder" in self.graphs and self.past_kind is PastKind.SEQ2SEQ:
            # The first decoder step reads the encoder output; later steps may read the
            # cross-attention cache instead (``replaced_by_cache``), which a SEQ2SEQ layout has.
            if "encoder_hidden_states" not in names(self.graphs["decoder"].inputs):
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
    def full_task(self) -> str:
        """The task as the user names it: ``-with-past`` when the export carries a cache."""
        return self.task + ("-with-past" if self.use_past else "")

    def __repr__(self) -> str:
        files = ", ".join(k.filename for k in plan_kinds(self))
        return f"ModelSpec({self.model_type}/{self.full_task}, {self.family}, files: {files}, opset={self.opset})"


ExportSpec = ModelSpec
"""The name a model spec had before graph specs were records of their own."""


@attrs.frozen(kw_only=True)
class GraphSpec:
    """One file of an export, self-contained: its kind and file name, its inputs and outputs,
    how it calls the model, the criteria its outputs are judged by, and the model spec it
    comes from (dims, cache layout, generators, patches, opset...; read through it by name).
    A merged file also holds the specs of its two ``branches``. Built by :func:`graph_spec`."""

    model: ModelSpec
    kind: GraphKind
    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    call: Call
    tolerances: Mapping[str, Criterion] = attrs.field(factory=dict, converter=_ro, hash=False)
    branches: tuple[GraphSpec, ...] = attrs.field(default=(), converter=tuple)

    @property
    def filename(self) -> str:
        return self.kind.filename

    @property
    def role(self) -> str:
        """The model's graph this file is traced from."""
        return self.kind.role

    @property
    def graph(self) -> GraphIO:
        """The model's table entry of this file's role."""
        return self.model.graphs[self.kind.role]

    @property
    def use_past(self) -> bool:
        """Whether the graph returns the cache (``present.*``)."""
        return self.kind.cache_out

    @property
    def use_past_in_inputs(self) -> bool:
        """Whether the graph reads the cache (``past_key_values.*``)."""
        return self.kind.cache_in

    def __repr__(self) -> str:
        m = self.model
        return f"GraphSpec({m.model_type}/{m.full_task}: {self.kind!r}, opset={m.opset})"


_FROM_MODEL = (
    "model_type", "task", "family", "graphs", "generators", "normalizer", "past_kind", "dims", "past", "padding_side",
    "opset", "patches", "attn_implementation", "backend", "min_torch", "min_transformers", "variants", "variant",
)
for _name in _FROM_MODEL:  # a graph spec reads its model's fields by the same names
    setattr(GraphSpec, _name, property(lambda self, _n=_name: getattr(self.model, _n), doc=f"The model spec's ``{_name}``."))


def _without_past_terms(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Specs of a graph without cache inputs: past lengths are 0, so ``past_* + x`` is ``x``."""

    def simplify(symbol: str) -> str:
        kept = [t for t in symbol_terms(symbol) if not t.startswith("past_")]
        return " + ".join(kept) if kept else symbol

    return tuple(attrs.evolve(t, axes={i: simplify(s) for i, s in t.axes}) for t in specs)


def _require_past(spec: ModelSpec, kind: GraphKind) -> PastLayout:
    if spec.past is None:
        raise SpecError(
            f"spec {spec.model_type}/{spec.task} ({kind.filename}): the cache layout is unknown until the spec is bound "
            "to a model config; call bind(spec, config) or with_past(spec, layout)"
        )
    return spec.past


def _model(spec: ModelSpec | GraphSpec) -> ModelSpec:
    return spec.model if isinstance(spec, GraphSpec) else spec


def _io(spec: ModelSpec, kind: GraphKind) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of a traced file of ``kind``: the role's base tensors, the cache
    added (``present.*`` out; ``past_key_values.*`` in, and the inputs it replaces dropped)."""
    graph = spec.graphs[kind.role]
    if kind.cache_in:
        kept = tuple(t for t in graph.inputs if t.name not in graph.replaced_by_cache)
        inputs = add_past_key_values(kept, _require_past(spec, kind), Direction.INPUTS)
        base = graph.outputs
    else:
        inputs, base = _without_past_terms(graph.inputs), _without_past_terms(graph.outputs)
    if kind.cache_out:
        return inputs, add_past_key_values(base, _require_past(spec, kind), Direction.OUTPUTS, past_in_inputs=kind.cache_in)
    return inputs, base


def _explicit_criterion(spec: ModelSpec, output: str) -> Criterion | None:
    if output in spec.tolerances:
        return spec.tolerances[output]
    if is_cache_output(output) and OUTPUT_PATTERN in spec.tolerances:
        return spec.tolerances[OUTPUT_PATTERN]
    return spec.tolerances.get("*")


def graph_spec(spec: ModelSpec | GraphSpec, kind: GraphKind) -> GraphSpec:
    """The self-contained spec of one file of ``kind`` (a merged kind: both branches too)."""
    model = _model(spec)
    who = f"spec {model.model_type}/{model.task} ({kind.filename})"
    graph = model.graphs.get(kind.role)
    if graph is None:
        raise SpecError(f"{who}: the {kind.role!r} graph is not defined; this spec defines {sorted(model.graphs)}")
    if kind.cache_out and model.past_kind is None:
        raise SpecError(
            f"{who}: the file carries a cache but family {model.family!r} has none (past_kind is None); "
            "export without the cache (drop '-with-past' / use_past)"
        )
    if kind.cache_out and not graph.past:
        raise SpecError(
            f"{who}: the file carries a cache but the {kind.role} graph has none; "
            f"graphs with a cache: {sorted(r for r, g in model.graphs.items() if g.past)}"
        )
    if kind.is_merged:
        first, later = (graph_spec(model, k) for k in kind.joins)
        interface = merged_interface(first.inputs, first.outputs, later.inputs, later.outputs)
        inputs, outputs, branches = interface.inputs, interface.outputs, (first, later)
    else:
        (inputs, outputs), branches = _io(model, kind), ()
    criteria = {t.name: c for t in outputs if (c := _explicit_criterion(model, t.name)) is not None}
    return GraphSpec(
        model=model, kind=kind, inputs=inputs, outputs=outputs, call=graph.call, tolerances=criteria, branches=branches
    )


def plan_kinds(spec: ModelSpec, *, use_past: bool | None = None, merged: bool | None = None, monolith: bool = False) -> tuple[GraphKind, ...]:
    """The kinds of the files an export writes (see :func:`plan`), without deriving their specs."""
    use_past = spec.use_past if use_past is None else use_past
    who = f"spec {spec.model_type}/{spec.task}"
    files = spec.files
    if monolith and len(files) > 1:
        if "monolith" not in spec.graphs:
            raise SpecError(f"{who} has no single-graph form; export it split")
        if use_past:
            raise SpecError(
                f"{who}: the single graph of the monolith option takes no KV cache, but a "
                "cache was asked for; drop '-with-past' to export one graph, or drop the monolith option to get "
                "encoder / decoder / decoder-with-past graphs"
            )
        files = (K.SINGLE,)
    if merged and monolith:
        raise SpecError(
            f"{who}: a merged decoder (merged=True, decoder_model_merged.onnx) joins the decoders with and without cache, "
            "but monolith=True exports one graph without cache; drop one of the two options"
        )
    traced = tuple(v for k in files for v in ((k.cache_variants or (k,)) if use_past else (k,)))
    joined = tuple(k.merged for k in files if use_past and k.merged is not None) if merged is not False else ()
    if merged and not joined:
        decoder_only = any(k.cache_in for k in traced)
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
    return (*traced, *joined)


def plan(spec: ModelSpec, *, use_past: bool | None = None, merged: bool | None = None, monolith: bool = False) -> tuple[GraphSpec, ...]:
    """The files an export of ``spec`` writes, one self-contained :class:`GraphSpec` each.

    ``use_past`` (default: the spec's, from its task): each file kind gives way to its cache
    variants (a decoder-only model's one graph with cache in and out; a seq2seq decoder's first
    step and later steps). ``merged`` (default ``None``: wherever the plan has a pair to join):
    add the merged file of each kind that has one (``decoder_model_merged.onnx``); ``False``:
    none; ``True``: the same, but a plan without one is an error. ``monolith``: one graph
    without cache. Traced files come first, merged ones after the files they join.
    """
    return tuple(graph_spec(spec, k) for k in plan_kinds(spec, use_past=use_past, merged=merged, monolith=monolith))


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


def _rederive(spec: ModelSpec | GraphSpec, model: ModelSpec) -> Any:
    """``model`` if ``spec`` was a model spec; else the same file's spec derived from ``model``."""
    return graph_spec(model, spec.kind) if isinstance(spec, GraphSpec) else model


def bind(spec: ModelSpec | GraphSpec, config: Any) -> Any:
    """The spec with its normalizer resolved against ``config`` and its cache layout derived."""
    model = _model(spec)
    dims = normalize(model.normalizer, config)
    layout = past_layout(model.past_kind, dims) if model.past_kind is not None else None
    return _rederive(spec, attrs.evolve(model, dims=dims, past=layout))


def check_versions(spec: ModelSpec | GraphSpec, installed: Mapping[str, str]) -> None:
    """Raise when the installed torch or transformers is older than the spec needs."""
    model = _model(spec)
    for package, needed in (("torch", model.min_torch), ("transformers", model.min_transformers)):
        have = installed.get(package)
        if have is not None and Version(have.split("+")[0]) < Version(needed):
            raise SpecError(
                f"{_who(model)} needs {package}>={needed}, but {package} {have} is installed; "
                f"upgrade it (pip install '{package}>={needed}')"
            )


def _kind_for(model: ModelSpec, role: str, cache_out: bool, cache_in: bool) -> GraphKind:
    """The planned kind of ``role`` with these cache flags, or a new one named after them."""
    for k in plan_kinds(model, use_past=True, merged=False) + plan_kinds(model, use_past=False, merged=False):
        if k.role == role and (k.cache_out, k.cache_in) == (cache_out, cache_in):
            return k
    stem = "model" if role == "monolith" else f"{role}_model"
    suffix = "_with_past" if cache_in else ""
    name = f"{role}{'-with-past' if cache_in else '-cache-out' if cache_out else ''}"
    return GraphKind(name=name, role=role, filename=f"{stem}{suffix}.onnx", cache_out=cache_out, cache_in=cache_in)


def with_behavior(
    spec: ModelSpec | GraphSpec,
    behavior: Behavior | str,
    *,
    use_past: bool | None = None,
    use_past_in_inputs: bool | None = None,
) -> GraphSpec:
    """The spec of one graph: the ``behavior`` role (``"encoder"``, ``Behavior.DECODER``...),
    returning the cache (``use_past``) and reading it (``use_past_in_inputs``). Flags left
    ``None`` follow the export: the role's first planned file.

    >>> # with_behavior(t5_spec, Behavior.DECODER, use_past=True, use_past_in_inputs=True)
    """
    model, role = _model(spec), _role(behavior)
    if role not in model.graphs:
        raise SpecError(f"spec {model.model_type}/{model.task}: no {role!r} graph; this spec defines {sorted(model.graphs)}")
    planned = [k for k in plan_kinds(model, merged=False) if k.role == role]
    default = planned[0] if planned else None
    up = (default.cache_out if default else False) if use_past is None else use_past
    upi = ((default.cache_in if default else False) and up) if use_past_in_inputs is None else use_past_in_inputs
    if upi and not up:
        raise SpecError(f"spec {model.model_type}/{model.task}: use_past_in_inputs=True needs use_past=True")
    return graph_spec(model, _kind_for(model, role, up, upi))


def with_past(
    spec: ModelSpec | GraphSpec, layout: PastLayout | None = None, *, use_past: bool = True, use_past_in_inputs: bool | None = None
) -> Any:
    """The spec with a cache (``layout`` given or the bound one) switched on or off.

    A model spec: its export carries the cache (``use_past``). A graph spec: the same role's
    graph returning the cache, and reading it unless ``use_past_in_inputs=False``.
    """
    model = _model(spec)
    model = attrs.evolve(model, past=layout if layout is not None else model.past)
    if isinstance(spec, GraphSpec):
        upi = use_past if use_past_in_inputs is None else use_past_in_inputs
        if upi and not use_past:
            raise SpecError(f"spec {model.model_type}/{model.task}: use_past_in_inputs=True needs use_past=True")
        return graph_spec(model, _kind_for(model, spec.role, use_past, upi))
    return attrs.evolve(model, use_past=use_past)


def with_opset(spec: ModelSpec | GraphSpec, opset: int) -> Any:
    """The spec exporting at ``opset``."""
    return _rederive(spec, attrs.evolve(_model(spec), opset=opset))


def with_criterion(spec: ModelSpec | GraphSpec, criterion: Criterion, *, outputs: Iterable[str] | None = None) -> Any:
    """The spec judging ``outputs`` by ``criterion`` (a :class:`Tolerance` or a :class:`NoiseBound`).

    By default every output of every graph gets it, cache outputs (``present.*``) included,
    so it holds for every file the plan derives. Names may be exact, the pattern
    ``present.*`` or ``*`` (every output without a criterion of its own).
    """
    model = _model(spec)
    if outputs is not None:
        chosen = tuple(outputs)
    else:
        every = (n for graph in model.graphs.values() for n in names(graph.outputs))
        chosen = tuple(dict.fromkeys([*every, *([OUTPUT_PATTERN] if model.past_kind is not None else [])]))
    return _rederive(spec, attrs.evolve(model, tolerances=toolz.merge(model.tolerances, dict.fromkeys(chosen, criterion))))


def with_tolerance(
    spec: ModelSpec | GraphSpec, atol: float, rtol: float | None = None, *, outputs: Iterable[str] | None = None
) -> Any:
    """The spec judging ``outputs`` by the fixed bound ``|onnx - torch| <= atol + rtol * |torch|``
    instead of the default noise-calibrated one (see :mod:`onnxspec.pieces.criteria`)."""
    return with_criterion(spec, Tolerance(atol=atol, rtol=0.0 if rtol is None else rtol), outputs=outputs)


def with_graph(spec: ModelSpec | GraphSpec, role: Behavior | str, graph: GraphIO) -> Any:
    """The spec with the table entry of ``role`` replaced (or added) by ``graph``."""
    model = _model(spec)
    return _rederive(spec, attrs.evolve(model, graphs=toolz.assoc(dict(model.graphs), _role(role), graph)))


def tolerance_for(spec: ModelSpec | GraphSpec, output: str, dtypes: DTypes) -> Criterion:
    """The criterion an output is judged by: its own, a ``present.*`` pattern, ``*``, or the
    dtype's default :class:`NoiseBound` (:data:`onnxspec.pieces.criteria.DEFAULT_CRITERIA`)."""
    if isinstance(spec, GraphSpec) and output in spec.tolerances:
        return spec.tolerances[output]
    found = _explicit_criterion(_model(spec), output)
    return found if found is not None else DEFAULT_CRITERIA[dtypes.float_dtype.value]


def _tensor_contract(t: TensorSpec, dtypes: DTypes) -> dict[str, Any]:
    dtype = str(torch_dtype(t.kind, dtypes)).removeprefix("torch.")
    entry: dict[str, Any] = {"name": t.name, "dtype": dtype, "dynamic_axes": {str(k): v for k, v in t.axes}}
    if t.rank is not None:
        entry["rank"] = t.rank
    return entry


def contract(spec: GraphSpec, dtypes: DTypes = DTypes()) -> dict[str, Any]:
    """The I/O contract of one file: names, dtypes and dynamic axes, as plain data. A merged
    file's says which input picks the branch and what each branch is for."""
    model = spec.model
    out: dict[str, Any] = {
        "model_type": model.model_type,
        "task": model.task,
        "kind": spec.kind.name,
        "behavior": spec.role,
        "use_past": spec.use_past,
        "use_past_in_inputs": spec.use_past_in_inputs,
        "opset": model.opset,
        "inputs": [_tensor_contract(t, dtypes) for t in spec.inputs],
        "outputs": [_tensor_contract(t, dtypes) for t in spec.outputs],
    }
    if spec.kind.is_merged:
        out["merged"] = {"branch_input": K.BRANCH_INPUT, "false": "first step (empty past)", "true": "later steps (the cache)"}
    return out


def contract_json(spec: GraphSpec, dtypes: DTypes = DTypes()) -> str:
    """:func:`contract` as JSON text (sorted keys, stable across runs)."""
    return json.dumps(contract(spec, dtypes), indent=2, sort_keys=True)


def _describe_graph(spec: GraphSpec, indent: str = "") -> list[str]:
    lines = [f"{indent}{spec!r}"]
    try:
        ins, outs = axes_view(spec.inputs), axes_view(spec.outputs)
    except SpecError as e:
        return [*lines, f"{indent}  (I/O not listed: {e})"]
    lines.append(f"{indent}  inputs:")
    lines += [f"{indent}    {n}: {a}" for n, a in ins.items()]
    lines.append(f"{indent}  outputs:")
    lines += [f"{indent}    {n}: {a}" for n, a in outs.items()]
    if spec.kind.is_merged:
        lines.append(f"{indent}  branches: {', '.join(b.filename for b in spec.branches)} (on {K.BRANCH_INPUT})")
    return lines


def describe(spec: ModelSpec | GraphSpec) -> str:
    """A readable multi-line account: a graph spec's inputs and outputs with their axes; a
    model spec's planned files, each so (or why they cannot be listed before binding)."""
    if isinstance(spec, GraphSpec):
        lines = _describe_graph(spec)
    else:
        lines = [repr(spec)]
        try:
            planned = plan(spec)
        except SpecError as e:
            planned, lines = (), [*lines, f"  (files not listed: {e})"]
        for g in planned:
            lines += _describe_graph(g, "  ")
    if spec.patches:
        lines.append(f"  patches: {list(spec.patches)}")
    return "\n".join(lines)
