"""Walking an ONNX graph with the graphs nested in its nodes: an ``If``'s branches (a merged
decoder's two decoders), a ``Loop``'s or ``Scan``'s body. Only onnx is imported, so the command
line's inspection can use it without loading torch."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

__all__ = ["all_nodes", "all_tensors", "external_data_files", "nested_graphs", "subgraphs"]


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by ``node``'s attributes, in attribute order (none for most nodes)."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def nested_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph``, then every graph nested in its nodes at any depth (depth first)."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from nested_graphs(sub)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the graphs nested in it (:func:`nested_graphs`)."""
    for inner in nested_graphs(graph):
        yield from inner.node


def all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph`` and the graphs nested in it: initializers, and the values
    of nodes' tensor attributes (a ``Constant``'s)."""
    for inner in nested_graphs(graph):
        yield from inner.initializer
        for node in inner.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t
                yield from a.tensors


def external_data_files(model: onnx.ModelProto) -> tuple[str, ...]:
    """The external data files ``model``'s tensors name (:func:`all_tensors`), as written in the
    graph (relative to its folder), in the order first named."""
    return tuple(dict.fromkeys(
        entry.value
        for tensor in all_tensors(model.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    ))
