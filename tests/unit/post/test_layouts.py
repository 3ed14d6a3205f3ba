"""Layouts on small hand-built graphs (no model, no export): the transformers.js folder (file
names per dtype, the graphs it loads, external data named as it reads it, side files at the
top) and genai_config.json (names, dimensions and token ids read from the graph and the
configs), and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxspec.errors import ConfigError, UnknownNameError, UnsupportedTaskError
from onnxspec.post.layouts import (
    DTYPE_SUFFIX,
    LAYOUTS,
    check_fits,
    genai_config,
    get_layout,
    transformers_js_graphs,
    write_layout,
)

RNG = np.random.default_rng(0)


def _matmul_graph(path: Path, dtype: type = np.float32, external: bool = False, seed: int = 0) -> np.ndarray:
    """A graph ``y = x @ W`` (W 64 x 64, random) saved at ``path``; returns W."""
    weight = np.random.default_rng(seed).standard_normal((64, 64)).astype(dtype)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", elem, ["batch", 64])],
        [helper.make_tensor_value_info("y", elem, ["batch", 64])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return weight


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _flat(folder: Path, graphs: tuple[str, ...] = ("model",), dtype: type = np.float32, external: bool = False) -> Path:
    folder.mkdir(parents=True)
    for k, g in enumerate(graphs):
        _matmul_graph(folder / f"{g}.onnx", dtype, external, seed=k)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "onnxspec_report.json").write_text("{}")
    return folder


def test_transformers_js_folder(tmp_path: Path) -> None:
    flat, fp16 = _flat(tmp_path / "flat"), _flat(tmp_path / "fp16", dtype=np.float16)
    record = write_layout(flat, tmp_path / "out", "transformers.js", fp16=fp16)
    out = tmp_path / "out"
    # the names transformers.js builds: onnx/<session file><DEFAULT_DTYPE_SUFFIX_MAPPING[dtype]>.onnx
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["model.onnx", "model_fp16.onnx", "model_quantized.onnx"]
    assert {"config.json", "tokenizer.json", "onnxspec_report.json", "onnxspec_report_fp16.json", "onnxspec_layout.json"} <= {
        p.name for p in out.iterdir()}
    assert not list(out.glob("*.onnx"))
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    exact = _run(flat / "model.onnx", x)
    np.testing.assert_array_equal(_run(out / "onnx" / "model.onnx", x), exact)
    assert _run(out / "onnx" / "model_fp16.onnx", x.astype(np.float16)).dtype == np.float16
    quantized = _run(out / "onnx" / "model_quantized.onnx", x)
    ops = {n.op_type for n in onnx.load(str(out / "onnx" / "model_quantized.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops  # really int8, not a copy
    assert np.abs(quantized - exact).max() < 0.05 * np.abs(exact).max()
    assert "not validated" in record["onnx/model_quantized.onnx"] and "validated against PyTorch" in record["onnx/model.onnx"]
    assert json.loads((out / "onnxspec_layout.json").read_text())["graphs"] == record
    assert (flat / "model.onnx").exists()  # copied, not moved


def test_transformers_js_encoder_decoder_loads_the_merged_decoder_only(tmp_path: Path) -> None:
    graphs = ("encoder_model", "decoder_model", "decoder_with_past_model", "decoder_model_merged")
    flat = _flat(tmp_path / "flat", graphs)
    assert transformers_js_graphs(flat) == ("encoder_model", "decoder_model_merged")
    write_layout(flat, tmp_path / "out", "transformers.js", variants=("q8", "q4"), move=True)
    assert sorted(p.name for p in (tmp_path / "out" / "onnx").iterdir()) == [
        "decoder_model_merged.onnx", "decoder_model_merged_q4.onnx", "decoder_model_merged_quantized.onnx",
        "encoder_model.onnx", "encoder_model_q4.onnx", "encoder_model_quantized.onnx",
    ]
    assert not (flat / "encoder_model.onnx").exists()  # moved


def test_transformers_js_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    flat = _flat(tmp_path / "flat", ("encoder_model", "decoder_model", "decoder_with_past_model"))
    with pytest.raises(UnsupportedTaskError, match="decoder_model_merged.onnx"):
        write_layout(flat, tmp_path / "out", "transformers.js", variants=())
    with pytest.raises(ConfigError, match="fp16 export"):
        write_layout(_flat(tmp_path / "one"), tmp_path / "out2", "transformers.js")
    with pytest.raises(UnknownNameError, match="variant 'q3'"):
        write_layout(tmp_path / "one", tmp_path / "out3", "transformers.js", variants=("q3",))


def test_transformers_js_external_data(tmp_path: Path) -> None:
    """Weights in an external file end up in ``onnx/<file>_data``, the graph points there and
    config.json says so (transformers.js fetches the data file only when told)."""
    flat = _flat(tmp_path / "flat", external=True)
    assert (flat / "model.onnx.data").exists()
    fp16 = _flat(tmp_path / "fp16", dtype=np.float16, external=True)
    write_layout(flat, tmp_path / "out", "transformers.js", fp16=fp16, variants=("fp16",))
    onnx_dir = tmp_path / "out" / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.onnx", "model.onnx_data", "model_fp16.onnx", "model_fp16.onnx_data"]
    assert not (tmp_path / "out" / "model.onnx.data").exists()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["transformers.js_config"]["use_external_data_format"] == {"model.onnx": 1, "model_fp16.onnx": 1}
    x = RNG.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_array_equal(_run(onnx_dir / "model.onnx", x), _run(flat / "model.onnx", x))


# --------------------------------------------------------------------------------------------
# genai


def _decoder(folder: Path, *, layers: int = 3, kv_heads: int = 2, head: int = 16, vocab: int = 100,
             position_ids: bool = True, cache: bool = True) -> Path:
    """An I/O-only stand-in for a decoder-only export (Identity and Constant nodes)."""
    folder.mkdir(parents=True)
    past = ["batch", kv_heads, "past_sequence_length", head]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence_length"])]
    if position_ids:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence_length"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence_length", vocab])]
    nodes = [helper.make_node("Constant", [], ["logits"], value=numpy_helper.from_array(np.zeros((1, 1, vocab), np.float32)))]
    for i in range(layers if cache else 0):
        for which in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{which}", TensorProto.FLOAT, past))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{which}", TensorProto.FLOAT, past))
            nodes.append(helper.make_node("Identity", [f"past_key_values.{i}.{which}"], [f"present.{i}.{which}"]))
    model = helper.make_model(helper.make_graph(nodes, "d", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(folder / "model.onnx"))
    config = dict(model_type="llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=head,
                  vocab_size=vocab, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_genai_config_reads_the_graph_and_the_configs(tmp_path: Path) -> None:
    flat = _decoder(tmp_path / "flat", layers=3, kv_heads=2, head=24)
    (flat / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7], "do_sample": True, "top_k": 20}))
    write_layout(flat, tmp_path / "out", "genai")
    config = json.loads((tmp_path / "out" / "genai_config.json").read_text())
    model, decoder = config["model"], config["model"]["decoder"]
    # the keys and values onnxruntime-genai's config reader and model builder use
    assert model["type"] == "llama" and model["vocab_size"] == 100 and model["context_length"] == 128
    assert (model["bos_token_id"], model["eos_token_id"], model["pad_token_id"]) == (1, [2, 7], 2)  # no pad: the first eos
    assert (decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]) == (3, 2, 24)  # from the graph
    assert (decoder["num_attention_heads"], decoder["hidden_size"], decoder["filename"]) == (4, 64, "model.onnx")
    assert decoder["inputs"] == {
        "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
        "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value",
    }
    assert decoder["outputs"] == {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    names = {v.name for v in (*graph.input, *graph.output)}
    for i in range(decoder["num_hidden_layers"]):  # every name the patterns make is in the graph
        for pattern in (*list(decoder["inputs"].values())[3:], *list(decoder["outputs"].values())[1:]):
            assert pattern % i in names
    search = config["search"]
    assert search["do_sample"] is True and search["top_k"] == 20 and search["max_length"] == 128
    assert search["past_present_share_buffer"] is False
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"model.onnx", "config.json", "generation_config.json",
                                                             "genai_config.json", "onnxspec_layout.json"}


def test_genai_without_position_ids(tmp_path: Path) -> None:
    config = genai_config(_decoder(tmp_path / "flat", position_ids=False))
    assert "position_ids" not in config["model"]["decoder"]["inputs"]


def test_genai_refusals(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTaskError, match="text-generation-with-past"):
        genai_config(_decoder(tmp_path / "nocache", cache=False))
    flat = _decoder(tmp_path / "bert")
    (flat / "config.json").write_text(json.dumps({**json.loads((flat / "config.json").read_text()), "model_type": "bert"}))
    with pytest.raises(UnsupportedTaskError, match="no decoder type for 'bert'"):
        write_layout(flat, tmp_path / "out", "genai")
    assert not (tmp_path / "out" / "genai_config.json").exists()
    with pytest.raises(UnsupportedTaskError, match="--task text-generation-with-past"):
        check_fits(LAYOUTS["genai"], model_type="llama", task="text-generation")
    with pytest.raises(UnsupportedTaskError, match="no decoder type for 't5'"):
        check_fits(LAYOUTS["genai"], model_type="t5", task="text2text-generation-with-past")
    check_fits(LAYOUTS["genai"], model_type="qwen2", task="causal-lm-with-past")  # a synonym of the task


def test_transformers_js_fits() -> None:
    tjs = LAYOUTS["transformers.js"]
    with pytest.raises(UnsupportedTaskError, match="drop --dtype fp16"):
        check_fits(tjs, model_type="bert", task=None, float_dtype="fp16")
    with pytest.raises(UnsupportedTaskError, match="--no-merged"):
        check_fits(tjs, model_type="t5", task="text2text-generation-with-past", merged=False)
    check_fits(tjs, model_type="bert", task=None)
    with pytest.raises(UnsupportedTaskError, match="pass --task text2text-generation-with-past"):
        check_fits(tjs, model_type="t5", task="text2text-generation", config={"model_type": "t5", "is_encoder_decoder": True})
    # transformers.js feeds a GPT-2 decoder of a vision-encoder-decoder a decoder-only cache
    vit_gpt2 = {"model_type": "vision-encoder-decoder", "decoder": {"model_type": "gpt2"}}
    with pytest.raises(UnsupportedTaskError, match="'gpt2' decoder transformers.js feeds a decoder-only cache"):
        check_fits(tjs, model_type="vision-encoder-decoder", task="image-to-text-with-past", config=vit_gpt2)
    check_fits(tjs, model_type="vision-encoder-decoder", task="image-to-text-with-past",
               config={"model_type": "vision-encoder-decoder", "decoder": {"model_type": "trocr"}})


def test_layouts_as_data() -> None:
    assert (LAYOUTS["transformers.js"].graph_dir, LAYOUTS["transformers.js"].variants) == ("onnx", ("fp16", "q8"))
    assert LAYOUTS["genai"].config_file == "genai_config.json" and LAYOUTS["flat"].graph_dir == ""
    assert (DTYPE_SUFFIX["fp32"], DTYPE_SUFFIX["fp16"], DTYPE_SUFFIX["q8"], DTYPE_SUFFIX["q4"]) == ("", "_fp16", "_quantized", "_q4")
    with pytest.raises(UnknownNameError, match="Did you mean 'transformers.js'"):
        get_layout("transformersjs")


def test_quantization_reads_only_the_graphs_transformers_js_loads(tmp_path: Path) -> None:
    """The folder handed to onnxspec.post.quantize for a seq2seq layout: the loaded graphs, their
    data and the side files, and a report listing only those graphs."""
    from onnxspec.post.layouts import _loaded_only

    graphs = ("encoder_model", "decoder_model", "decoder_with_past_model", "decoder_model_merged")
    flat = _flat(tmp_path / "flat", graphs)
    (flat / "decoder_model.onnx.data").write_bytes(b"0")
    (flat / "onnxspec_report.json").write_text(json.dumps({"passed": True, "graphs": [{"filename": f"{g}.onnx"} for g in graphs]}))
    loaded = [f"{g}.onnx" for g in transformers_js_graphs(flat)]
    _loaded_only(flat, tmp_path / "loaded", loaded)
    assert sorted(p.name for p in (tmp_path / "loaded").iterdir()) == [
        "config.json", "decoder_model_merged.onnx", "encoder_model.onnx", "onnxspec_report.json", "tokenizer.json"]
    report = json.loads((tmp_path / "loaded" / "onnxspec_report.json").read_text())
    assert [g["filename"] for g in report["graphs"]] == ["encoder_model.onnx", "decoder_model_merged.onnx"] and report["passed"]
    assert len(json.loads((flat / "onnxspec_report.json").read_text())["graphs"]) == 4  # the export's own report is untouched
