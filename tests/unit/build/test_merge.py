"""merge_decoders on small hand-built decoders (no torch): both branches run as the two graphs
did, weights are stored once, the inputs are untouched, mismatches are named."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxspec.errors import SpecError
from onnxspec.build.merge import BRANCH_INPUT, merge_decoders, merged_interface, weight_bytes

H, VOCAB = 4, 10
RNG = np.random.default_rng(0)
EMB = RNG.standard_normal((VOCAB, H)).astype(np.float32)
W_OUT = RNG.standard_normal((H, VOCAB)).astype(np.float32)
W_K = RNG.standard_normal((H, H)).astype(np.float32)
W_V = RNG.standard_normal((H, H)).astype(np.float32)
OPSET = 17


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _float(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(graph: onnx.GraphProto, opset: int = OPSET) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def no_past_decoder(*, names: dict[str, str] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    """First step: ids + encoder states -> logits, the self cache and the cross cache."""
    n = {"emb": "emb", "out": "W_out", "k": "W_k", "v": "W_v", **(names or {})}
    nodes = [
        helper.make_node("Gather", [n["emb"], "input_ids"], ["h"]),
        helper.make_node("MatMul", ["h", n["out"]], ["logits"]),
        helper.make_node("Unsqueeze", ["h", "axis1"], ["present.0.decoder.key"]),
        helper.make_node("Mul", ["h", "two"], ["h2"]),
        helper.make_node("Unsqueeze", ["h2", "axis1"], ["present.0.decoder.value"]),
        helper.make_node("MatMul", ["encoder_hidden_states", n["k"]], ["ek"]),
        helper.make_node("Unsqueeze", ["ek", "axis1"], ["present.0.encoder.key"]),
        helper.make_node("MatMul", ["encoder_hidden_states", n["v"]], ["ev"]),
        helper.make_node("Unsqueeze", ["ev", "axis1"], ["present.0.encoder.value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]), _float("encoder_hidden_states", ["b", "e", H])],
        [
            _float("logits", ["b", "s", VOCAB]),
            _float("present.0.decoder.key", ["b", 1, "s", H]),
            _float("present.0.decoder.value", ["b", 1, "s", H]),
            _float("present.0.encoder.key", ["b", 1, "e", H]),
            _float("present.0.encoder.value", ["b", 1, "e", H]),
        ],
        initializer=[
            _init(n["emb"], EMB), _init(n["out"], W_OUT), _init(n["k"], W_K), _init(n["v"], W_V),
            _init("axis1", np.array([1], np.int64)), _init("two", np.array(2.0, np.float32)),
        ],
    )
    return _model(graph, opset)


def with_past_decoder(*, names: dict[str, str] | None = None, out: np.ndarray = W_OUT, extra: list | None = None,
                      opset: int = OPSET) -> onnx.ModelProto:
    """Later steps: ids + the cache -> logits (reading the cross cache) and the grown self cache."""
    n = {"emb": "onnx::Gather_7", "out": "onnx::MatMul_9", **(names or {})}
    nodes = [
        helper.make_node("Gather", [n["emb"], "input_ids"], ["h"]),
        helper.make_node("MatMul", ["h", n["out"]], ["raw"]),
        helper.make_node("ReduceSum", ["past_key_values.0.encoder.key"], ["cross"], keepdims=0),
        helper.make_node("Add", ["raw", "cross"], ["logits"]),
        helper.make_node("Unsqueeze", ["h", "axis"], ["k_new"]),
        helper.make_node("Concat", ["past_key_values.0.decoder.key", "k_new"], ["present.0.decoder.key"], axis=2),
        helper.make_node("Mul", ["h", "two"], ["h2"]),
        helper.make_node("Unsqueeze", ["h2", "axis"], ["v_new"]),
        helper.make_node("Concat", ["past_key_values.0.decoder.value", "v_new"], ["present.0.decoder.value"], axis=2),
    ]
    inits = [_init(n["emb"], EMB), _init(n["out"], out), _init("axis", np.array([1], np.int64)), _init("two", np.array(2.0, np.float32))]
    graph = helper.make_graph(
        nodes,
        "decoder_with_past",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            _float("past_key_values.0.decoder.key", ["b", 1, "p", H]),
            _float("past_key_values.0.decoder.value", ["b", 1, "p", H]),
            _float("past_key_values.0.encoder.key", ["b", 1, "e", H]),
            _float("past_key_values.0.encoder.value", ["b", 1, "e", H]),
        ],
        [
            _float("logits", ["b", "s", VOCAB]),
            _float("present.0.decoder.key", ["b", 1, "p + s", H]),
            _float("present.0.decoder.value", ["b", 1, "p + s", H]),
            *(extra or []),
        ],
        initializer=inits,
    )
    return _model(graph, opset)


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _feeds(batch: int = 2, length: int = 3, past: int = 5, enc: int = 7) -> tuple[dict, dict]:
    rng = np.random.default_rng(batch * 100 + length)
    ids = rng.integers(0, VOCAB, (batch, length), dtype=np.int64)
    first = {"input_ids": ids, "encoder_hidden_states": rng.standard_normal((batch, enc, H)).astype(np.float32)}
    later = {
        "input_ids": ids,
        **{f"past_key_values.0.decoder.{w}": rng.standard_normal((batch, 1, past, H)).astype(np.float32) for w in ("key", "value")},
        **{f"past_key_values.0.encoder.{w}": rng.standard_normal((batch, 1, enc, H)).astype(np.float32) for w in ("key", "value")},
    }
    return first, later


def _empty_past(batch: int) -> dict[str, np.ndarray]:
    return {f"past_key_values.0.{p}.{w}": np.zeros((batch, 1, 0, H), np.float32) for p in ("decoder", "encoder") for w in ("key", "value")}


@pytest.mark.parametrize(("batch", "length", "past", "enc"), [(1, 1, 1, 1), (2, 3, 5, 7), (3, 4, 0, 2)])
def test_each_branch_computes_what_its_decoder_did(batch: int, length: int, past: int, enc: int) -> None:
    first, later = no_past_decoder(), with_past_decoder()
    merged = merge_decoders(first, later)
    onnx.checker.check_model(merged, full_check=True)
    f, w = _feeds(batch, length, past, enc)

    got = _run(merged, {**f, **_empty_past(batch), BRANCH_INPUT: np.array([False])})
    want = _run(first, f)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    got = _run(merged, {**w, "encoder_hidden_states": np.zeros((batch, enc, H), np.float32), BRANCH_INPUT: np.array([True])})
    want = _run(later, w)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in ("present.0.encoder.key", "present.0.encoder.value"):  # the cross cache, passed through
        np.testing.assert_array_equal(got[name], w[name.replace("present.", "past_key_values.")], err_msg=name)


def test_the_interface_is_optimums() -> None:
    merged = merge_decoders(no_past_decoder(), with_past_decoder())
    inputs = [v.name for v in merged.graph.input]
    assert inputs == [
        "input_ids", "encoder_hidden_states",
        "past_key_values.0.decoder.key", "past_key_values.0.decoder.value",
        "past_key_values.0.encoder.key", "past_key_values.0.encoder.value",
        BRANCH_INPUT,
    ]
    branch = merged.graph.input[-1].type.tensor_type
    assert branch.elem_type == TensorProto.BOOL and [d.dim_value for d in branch.shape.dim] == [1]
    assert [v.name for v in merged.graph.output] == [v.name for v in no_past_decoder().graph.output]
    assert [n.op_type for n in merged.graph.node] == ["If"]


def test_weights_are_stored_once_whatever_their_names() -> None:
    first, later = no_past_decoder(), with_past_decoder()
    merged = merge_decoders(first, later)
    assert weight_bytes(merged) <= weight_bytes(first) + 64  # only the branch-local scalars repeat
    big = [t for t in merged.graph.initializer]
    values = {numpy_helper.to_array(t).tobytes() for t in big}
    assert len(values) == len(big) == 4  # emb, W_out, W_k, W_v


def test_same_name_different_value_is_kept_apart() -> None:
    """The cache graph's 'W_k' is another tensor than the first graph's 'W_k'."""
    other = RNG.standard_normal((H, VOCAB)).astype(np.float32)
    first, later = no_past_decoder(), with_past_decoder(names={"out": "W_k"}, out=other)
    merged = merge_decoders(first, later)
    onnx.checker.check_model(merged, full_check=True)
    f, w = _feeds()
    got = _run(merged, {**w, "encoder_hidden_states": np.zeros((2, 7, H), np.float32), BRANCH_INPUT: np.array([True])})
    np.testing.assert_array_equal(got["logits"], _run(later, w)["logits"])
    got = _run(merged, {**f, **_empty_past(2), BRANCH_INPUT: np.array([False])})
    np.testing.assert_array_equal(got["present.0.encoder.key"], _run(first, f)["present.0.encoder.key"])
    assert len({t.name for t in merged.graph.initializer}) == len(merged.graph.initializer) == 5


def test_the_arguments_are_left_untouched() -> None:
    first, later = no_past_decoder(), with_past_decoder()
    before = (first.SerializeToString(), later.SerializeToString())
    merge_decoders(first, later)
    assert (first.SerializeToString(), later.SerializeToString()) == before


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.sampled_from(["emb", "W_out", "W_k", "W_v", "x", "onnx::MatMul_9", "onnx::Gather_7"]), min_size=2, max_size=2, unique=True))
def test_any_naming_of_the_shared_weights_merges_to_one_copy(names: list[str]) -> None:
    later = with_past_decoder(names={"emb": names[0], "out": names[1]})
    merged = merge_decoders(no_past_decoder(), later)
    onnx.checker.check_model(merged)
    assert len(merged.graph.initializer) == 4
    _, w = _feeds()
    got = _run(merged, {**w, "encoder_hidden_states": np.zeros((2, 7, H), np.float32), BRANCH_INPUT: np.array([True])})
    np.testing.assert_array_equal(got["logits"], _run(later, w)["logits"])


def test_mismatches_are_named() -> None:
    with pytest.raises(SpecError, match="different opsets"):
        merge_decoders(no_past_decoder(), with_past_decoder(opset=18))
    with pytest.raises(SpecError, match="outputs the no-cache graph lacks: \\['h2'\\]"):
        merge_decoders(no_past_decoder(), with_past_decoder(extra=[_float("h2", ["b", "s", H])]))
    later = with_past_decoder()
    logits = later.graph.output[0]
    later.graph.output.remove(logits)
    with pytest.raises(SpecError, match="'logits' of the no-cache graph is missing"):
        merge_decoders(no_past_decoder(), later)
    later = with_past_decoder()
    later.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    with pytest.raises(SpecError, match="input 'input_ids' differs"):
        merge_decoders(no_past_decoder(), later)


def test_merged_interface_adds_the_branch_input() -> None:
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.catalog.registry import spec_for
    from onnxspec.pieces.spec import Behavior, bind, with_behavior
    from tests.tiny import CONFIGS

    spec = bind(spec_for(REGISTRY, "bart", "text2text-generation-with-past"), CONFIGS["bart"]())
    first = with_behavior(spec, Behavior.DECODER, use_past=True, use_past_in_inputs=False)
    later = with_behavior(spec, Behavior.DECODER, use_past=True, use_past_in_inputs=True)
    interface = merged_interface(first.inputs, first.outputs, later.inputs, later.outputs)
    inputs, outputs = interface.inputs, interface.outputs
    assert [t.name for t in inputs] == [*(t.name for t in first.inputs), *(t.name for t in later.inputs[2:]), BRANCH_INPUT]
    assert [t.name for t in outputs] == [t.name for t in first.outputs]
    by_name = {t.name: t for t in outputs}
    assert by_name["present.0.decoder.key"].dynamic_axes[2] == "past_decoder_sequence_length + decoder_sequence_length"
    assert by_name["present.0.encoder.key"].dynamic_axes[2] == "encoder_sequence_length_out"


def test_the_cli_flag_skips_the_merged_decoder() -> None:
    from onnxspec.cli.commands import build_parser

    parser, _ = build_parser(export_shapes=False)
    assert parser.parse_args(["export", "-m", "m", "out"]).merged is None
    assert parser.parse_args(["export", "-m", "m", "out", "--no-merged"]).merged is False


def test_compact_branches_drop_debug_metadata_and_long_names_but_keep_node_names() -> None:
    first = no_past_decoder()
    for node in first.graph.node:
        node.name = f"/model/decoder/{node.op_type}"
        node.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="File model.py, line 1\n" * 50)
    merged = merge_decoders(first, with_past_decoder())
    branch = next(a.g for a in merged.graph.node[0].attribute if a.name == "else_branch")
    assert not any(n.metadata_props for n in branch.node)
    assert [n.name for n in branch.node] == [n.name for n in first.graph.node]
    internal = {o for n in branch.node for o in n.output} - {v.name for v in branch.output}
    assert internal and all(name.startswith("t") and name[1:].isdigit() for name in internal)
    kept = merge_decoders(first, with_past_decoder(), compact=False)
    assert kept.ByteSize() > 2 * merged.ByteSize()
