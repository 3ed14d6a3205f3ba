"""Merged decoders: one ONNX graph serving the first decoding step and every later one.

A seq2seq export has a decoder without cache inputs (``decoder_model.onnx``, the first step:
it reads ``encoder_hidden_states`` and returns the whole cache) and one with them
(``decoder_with_past_model.onnx``, later steps). :func:`merge_decoders` joins the two protos
into one graph whose single node is an ``If`` on a boolean input ``use_cache_branch`` of shape
``[1]``, the contract Optimum's ORTModel classes and transformers.js load
(``decoder_model_merged.onnx``):

- inputs: the no-cache graph's, then the cache graph's others, then ``use_cache_branch``;
  the first step sends ``False`` and cache inputs of past length 0, later steps ``True``;
- outputs: the no-cache graph's (logits and every ``present.*``, cross-attention included); in
  the cache branch the cross-attention outputs are the cross-attention inputs passed through,
  since that cache does not change between steps;
- weights are stored once: initializers equal in dtype, dims and bytes are one tensor of the
  outer graph, whatever the two traces named them.

Everything here works on protos alone (no torch): :func:`merge_decoders` is pure, its inputs
are left untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import onnx
from onnx import helper

from onnxspec.pieces.kinds import BRANCH_INPUT, Interface, merged_filename, merged_interface
from onnxspec.pieces.cache_names import is_cache_output, is_cross, to_past
from onnxspec.errors import SpecError

__all__ = [
    "BRANCH_INPUT",  # re-exported: the merged kind's contract lives in onnxspec.pieces.kinds
    "Interface",
    "merge_decoders",
    "merged_filename",
    "merged_interface",
    "stamp_interface",
    "weight_bytes",
]

_LOCAL_INT_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def stamp_interface(model: onnx.ModelProto, interface: Interface, metadata: Mapping[str, str]) -> None:
    """Name the symbolic dims of ``model``'s inputs and outputs after ``interface``'s axes and
    set ``metadata`` entries. Changes ``model`` in place (it may hold gigabytes)."""
    for values, specs in ((model.graph.input, interface.inputs), (model.graph.output, interface.outputs)):
        by_name = {t.name: t for t in specs}
        for value in values:
            t = by_name.get(value.name)
            if t is None:
                continue
            dims = value.type.tensor_type.shape.dim
            for index, symbol in t.axes:
                if index < len(dims) and not dims[index].HasField("dim_value"):
                    dims[index].dim_param = symbol
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers of ``model`` (raw or typed fields), subgraphs included."""
    return sum(_tensor_nbytes(t) for g in _graphs(model.graph) for t in g.initializer)


def _tensor_nbytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        return len(t.raw_data)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        length = {e.key: e.value for e in t.external_data}.get("length")
        return int(length) if length else 0
    return len(onnx.numpy_helper.to_array(t).tobytes())


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every value name ``graph`` (and its subgraphs) mentions."""
    out: set[str] = set()
    for g in _graphs(graph):
        out.update(v.name for v in (*g.input, *g.output, *g.value_info))
        out.update(t.name for t in g.initializer)
        for node in g.node:
            out.update(node.input)
            out.update(node.output)
    out.discard("")
    return out


def _produced(graph: onnx.GraphProto) -> set[str]:
    """Names the nodes of ``graph`` (and its subgraphs) produce."""
    return {o for g in _graphs(graph) for node in g.node for o in node.output if o}


def _local(t: onnx.TensorProto) -> bool:
    """Scalars and 1-D int tensors (shapes, axes) stay inside their branch, as in Optimum's
    merged files (onnxruntime's optimizers fold them there); the rest is shared."""
    return len(t.dims) == 0 or (len(t.dims) == 1 and t.data_type in _LOCAL_INT_TYPES)


def _digest(t: onnx.TensorProto, which: str) -> tuple[int, tuple[int, ...], str]:
    if t.data_location == onnx.TensorProto.EXTERNAL and not t.HasField("raw_data"):
        raise SpecError(
            f"initializer {t.name!r} of the {which} graph is stored as external data that was not loaded; "
            "load the model with onnx.load(path) (load_external_data=True) before merging"
        )
    data = t.raw_data if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).tobytes()
    return t.data_type, tuple(t.dims), hashlib.sha256(data).hexdigest()


def _rename_inputs(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Rename node inputs (subgraphs included) of ``graph``, a copy this module owns."""
    if not mapping:
        return
    for g in _graphs(graph):
        for node in g.node:
            for k, name in enumerate(node.input):
                if name in mapping:
                    node.input[k] = mapping[name]


def _branch(graph: onnx.GraphProto) -> onnx.GraphProto:
    """A copy of ``graph`` to become a branch: its nodes, outputs and shapes, only the local
    initializers (the shared weights move to the outer graph, uncopied here), no inputs (a
    branch reads the outer graph's)."""
    branch = onnx.GraphProto(name=graph.name, doc_string=graph.doc_string)
    branch.node.extend(graph.node)
    branch.output.extend(graph.output)
    branch.value_info.extend(graph.value_info)
    branch.sparse_initializer.extend(graph.sparse_initializer)
    branch.initializer.extend(t for t in graph.initializer if _local(t))
    return branch


def _compact(graph: onnx.GraphProto, reserved: set[str]) -> None:
    """Rename the values internal to ``graph`` (a copy this module owns) ``t0, t1, ...`` and
    drop its nodes' debug metadata (``metadata_props``, ``doc_string``).

    Internal: produced by its nodes or held as its initializers, and not among its outputs.
    Names in ``reserved`` (the outer graph's) and outputs are never given out.
    """
    keep = {v.name for v in graph.output}
    internal = [t.name for t in graph.initializer]
    internal += [o for g in _graphs(graph) for node in g.node for o in node.output if o]
    avoid = reserved | keep | _names(graph)
    mapping: dict[str, str] = {}
    counter = 0
    for name in internal:
        if name in keep or name in mapping:
            continue
        while f"t{counter}" in avoid:
            counter += 1
        mapping[name] = f"t{counter}"
        counter += 1
    for g in _graphs(graph):
        for node in g.node:
            del node.metadata_props[:]
            node.ClearField("doc_string")
            for k, name in enumerate(node.input):
                if name in mapping:
                    node.input[k] = mapping[name]
            for k, name in enumerate(node.output):
                if name in mapping:
                    node.output[k] = mapping[name]
        for t in g.initializer:
            t.name = mapping.get(t.name, t.name)
        for v in g.value_info:
            v.name = mapping.get(v.name, v.name)
        if g is not graph:  # a nested subgraph's outputs may be values renamed above
            for v in g.output:
                v.name = mapping.get(v.name, v.name)


def _elem(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


def _rank(value: onnx.ValueInfoProto) -> int | None:
    t = value.type.tensor_type
    return len(t.shape.dim) if t.HasField("shape") else None


def _check_interfaces(no_past: onnx.ModelProto, with_past: onnx.ModelProto) -> None:
    """Raise when the two graphs cannot be branches of one ``If`` with the merged contract."""
    versions = {}
    for which, model in (("no-cache", no_past), ("cache", with_past)):
        versions[which] = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    a, b = versions["no-cache"].get("ai.onnx"), versions["cache"].get("ai.onnx")
    if a != b:
        raise SpecError(f"the decoders have different opsets (no-cache graph {a}, cache graph {b}); export both at the same opset")
    inputs = {v.name: v for v in no_past.graph.input}
    for v in with_past.graph.input:
        prior = inputs.get(v.name)
        if prior is not None and (_elem(prior) != _elem(v) or _rank(prior) != _rank(v)):
            raise SpecError(
                f"input {v.name!r} differs between the decoders: no-cache graph {onnx.helper.printable_type(prior.type)}, "
                f"cache graph {onnx.helper.printable_type(v.type)}; the merged graph feeds both branches from one input"
            )
    if BRANCH_INPUT in inputs or any(v.name == BRANCH_INPUT for v in with_past.graph.input):
        raise SpecError(f"a decoder already has an input named {BRANCH_INPUT!r}; it cannot be merged again")
    first = {v.name: v for v in no_past.graph.output}
    later = {v.name: v for v in with_past.graph.output}
    extra = sorted(set(later) - set(first))
    if extra:
        raise SpecError(f"the cache graph has outputs the no-cache graph lacks: {extra}; the merged graph has the no-cache graph's outputs")
    past_inputs = {v.name for v in with_past.graph.input}
    for name, value in first.items():
        if name in later:
            if _elem(later[name]) != _elem(value):
                raise SpecError(f"output {name!r} has different dtypes in the two decoders")
            continue
        if not (is_cache_output(name) and is_cross(name) and to_past(name) in past_inputs):
            raise SpecError(
                f"output {name!r} of the no-cache graph is missing from the cache graph, and it is not a cross-attention cache "
                "output whose input the cache graph takes (only those are passed through in the cache branch)"
            )


def merge_decoders(
    no_past: onnx.ModelProto,
    with_past: onnx.ModelProto,
    *,
    graph_name: str = "merged_decoder",
    producer: str = "onnxspec",
    compact: bool = True,
) -> onnx.ModelProto:
    """One model running ``with_past`` when ``use_cache_branch`` is true, else ``no_past``.

    ``no_past`` is the first-step decoder (no cache inputs, every ``present.*`` output);
    ``with_past`` takes the cache. Initializers equal by value are stored once in the outer
    graph (scalars and 1-D int tensors stay in their branch); cross-attention outputs missing
    from ``with_past`` are its matching inputs passed through. Raises :class:`SpecError` naming
    the mismatch when the two graphs cannot be merged. The arguments are not modified.

    Each branch holds a full copy of its graph's structure, whose value names (module paths
    like ``/model/decoder/block.0/layer.0/SelfAttention/Reshape_1_output_0``) and per-node
    debug metadata (the dynamo exporter's stack traces) outweigh the weights of a small model;
    ``compact`` renames the values internal to a branch ``t0, t1, ...`` and drops the nodes'
    ``metadata_props`` and doc strings (node names, which carry the module paths, are kept;
    the two source files keep everything), so the merged file stays within 10% of the
    no-cache graph's size.
    """
    _check_interfaces(no_past, with_past)
    sources = {"no-cache": no_past.graph, "cache": with_past.graph}
    branches = {which: _branch(graph) for which, graph in sources.items()}

    outer_inputs: list[onnx.ValueInfoProto] = []
    seen: set[str] = set()
    for value in (*no_past.graph.input, *with_past.graph.input):
        if value.name not in seen:
            seen.add(value.name)
            outer_inputs.append(value)
    outer_inputs.append(helper.make_tensor_value_info(BRANCH_INPUT, onnx.TensorProto.BOOL, [1]))

    # Shared weights: one outer initializer per distinct value, named so that it clashes with
    # no other name of either graph (two traces reuse names like onnx::MatMul_123 for
    # different tensors): a name is free when, in each graph, it is unused or names a tensor
    # of this very value.
    inits = {which: {t.name for t in graph.initializer} for which, graph in sources.items()}
    others = {which: _names(graph) - inits[which] for which, graph in sources.items()}
    groups: dict[tuple[int, tuple[int, ...], str], list[tuple[str, onnx.TensorProto]]] = {}
    for which, graph in sources.items():
        for t in graph.initializer:
            if not _local(t):
                groups.setdefault(_digest(t, which), []).append((which, t))
    shared: list[onnx.TensorProto] = []
    renames: dict[str, dict[str, str]] = {"no-cache": {}, "cache": {}}
    used: set[str] = set()
    for members in groups.values():
        mine = {(which, t.name) for which, t in members}

        def free(name: str) -> bool:
            return name not in used and all(
                name not in others[w] and (name not in inits[w] or (w, name) in mine) for w in branches
            )

        base = members[0][1].name
        name, k = base, 0
        while not free(name):
            k += 1
            name = f"{base}__merged{k}"
        used.add(name)
        tensor = onnx.TensorProto()
        tensor.CopyFrom(members[0][1])
        tensor.name = name
        shared.append(tensor)
        for which, t in members:
            if t.name != name:
                renames[which][t.name] = name

    outer_names = {v.name for v in outer_inputs} | used
    for which, graph in branches.items():
        clash = sorted((_produced(graph) | {t.name for t in graph.initializer if _local(t)}) & outer_names)
        if clash:
            raise SpecError(f"the {which} decoder produces values named like the merged graph's inputs or weights: {clash[:5]}")
        _rename_inputs(graph, renames[which])

    if compact:
        for graph in branches.values():
            _compact(graph, outer_names)

    # Outputs: the no-cache graph's order in both branches; cross-attention outputs the cache
    # branch lacks are its inputs passed through.
    first_outputs = list(no_past.graph.output)
    later_outputs = {v.name: v for v in with_past.graph.output}
    cache_branch = branches["cache"]
    del cache_branch.output[:]
    for value in first_outputs:
        if value.name in later_outputs:
            cache_branch.output.append(later_outputs[value.name])
            continue
        source = to_past(value.name)
        cache_branch.node.append(helper.make_node("Identity", [source], [value.name], name=f"pass_through/{value.name}"))
        passed = onnx.ValueInfoProto()
        passed.CopyFrom(next(v for v in with_past.graph.input if v.name == source))
        passed.name = value.name
        cache_branch.output.append(passed)
    branches["no-cache"].name = "no_cache_branch"
    cache_branch.name = "cache_branch"

    merged_outputs = []
    for value in first_outputs:
        merged = onnx.ValueInfoProto()
        merged.CopyFrom(later_outputs.get(value.name, value))
        merged_outputs.append(merged)
    if_node = helper.make_node(
        "If",
        [BRANCH_INPUT],
        [v.name for v in first_outputs],
        name="use_cache_branch/If",
        then_branch=cache_branch,
        else_branch=branches["no-cache"],
    )
    graph = helper.make_graph([if_node], graph_name, outer_inputs, merged_outputs, initializer=shared)
    opsets: dict[str, onnx.OperatorSetIdProto] = {}
    for model in (no_past, with_past):
        for o in model.opset_import:
            if o.domain not in opsets or o.version > opsets[o.domain].version:
                opsets[o.domain] = o
    functions: dict[tuple[str, str, str], onnx.FunctionProto] = {}
    for model in (no_past, with_past):
        for f in model.functions:
            key = (f.domain, f.name, getattr(f, "overload", ""))
            if key in functions and functions[key].SerializeToString() != f.SerializeToString():
                raise SpecError(f"the decoders define the local function {f.domain}::{f.name} differently; it cannot be shared")
            functions.setdefault(key, f)
    model = helper.make_model(
        graph,
        opset_imports=list(opsets.values()),
        producer_name=producer,
        ir_version=max(no_past.ir_version, with_past.ir_version),
        functions=list(functions.values()),
    )
    return model
