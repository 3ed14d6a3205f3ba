"""Walking a graph with its nested subgraphs (onnxspec.build.graphs)."""

from __future__ import annotations

from onnx import TensorProto, helper

from onnxspec.build.graphs import all_nodes, all_tensors, external_data_files, nested_graphs, subgraphs


def _branch(name: str, op: str) -> object:
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1])
    return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_out"], name=f"{name}_node")], name, [], [out])


def test_every_node_of_an_if_and_its_nested_branches_is_walked() -> None:
    inner = helper.make_node("If", ["c"], ["y_inner"], name="inner_if",
                             then_branch=_branch("deep_then", "Relu"), else_branch=_branch("deep_else", "Neg"))
    then = helper.make_graph([inner], "then", [], [helper.make_tensor_value_info("y_inner", TensorProto.FLOAT, [1])])
    outer = helper.make_node("If", ["c"], ["y"], name="outer_if", then_branch=then, else_branch=_branch("else", "Abs"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["x2"], name="first"), outer], "main", [], [])

    assert [g.name for g in subgraphs(outer)] == ["else", "then"]  # attribute order (onnx sorts them by name)
    assert subgraphs(graph.node[0]) == []
    assert [g.name for g in nested_graphs(graph)] == ["main", "else", "then", "deep_else", "deep_then"]
    assert sorted(n.name for n in all_nodes(graph)) == sorted(
        ["first", "outer_if", "inner_if", "deep_then_node", "deep_else_node", "else_node"])


def _external(name: str, location: str) -> TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def test_external_data_files_of_initializers_branches_and_constants_in_first_named_order() -> None:
    branch = helper.make_graph([helper.make_node("Constant", [], ["k"], value=_external("k", "c.data"))], "then", [],
                               [helper.make_tensor_value_info("k", TensorProto.FLOAT, [1])], [_external("w2", "b.data")])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [_external("w0", "a.data"), helper.make_tensor("inline", TensorProto.FLOAT, [1], [1.0]), _external("w1", "a.data")],
    )
    assert external_data_files(helper.make_model(graph)) == ("a.data", "b.data", "c.data")
    assert len(list(all_tensors(graph))) == 7  # 3 initializers, and each branch's initializer and Constant value
