"""Quantize and optimize exported folders, and judge the results against PyTorch again.

A tiny BERT classifier and a tiny Llama with a cache are exported once each, then quantized
(int8) and optimized (graph level, fp16); every report must carry the figures it was judged by
and pass. The Llama has tied embeddings: a random Llama's logits are near ties (its top-1 flips
under any rounding), while with the input embedding as output head each position's own token
wins by a margin, as in a trained model, so top-1 and greedy agreement measure the
transformation and not the noise of a random model. A graph tampered with after the export
(its largest weight rolled by one row) must fail both judgements, with nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers as T
from onnx import numpy_helper

from onnxspec import export
from onnxspec.cli import main
from onnxspec.errors import ModelLoadError, OutputDirError, ValidationError
from onnxspec.post.agreement import Thresholds
from onnxspec.post.optimize import optimize
from onnxspec.post.quantize import quantize
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration


def _decisive_llama(folder: Path) -> str:
    config = T.LlamaConfig(
        vocab_size=100, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=37, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    T.LlamaForCausalLM(config).eval().save_pretrained(folder)
    return os.fspath(folder)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("post")
    bert = tiny_folder("bert", "text-classification", root / "bert")
    llama = _decisive_llama(root / "llama")
    export(bert, root / "bert-onnx", task="text-classification")
    export(llama, root / "llama-onnx", task="text-generation-with-past")
    return {"root": root, "bert": root / "bert-onnx", "llama": root / "llama-onnx", "llama-model": Path(llama)}


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}


def test_int8_quantization_of_a_classifier_agrees_and_is_written_with_its_figures(exports: dict[str, Path]) -> None:
    out = exports["root"] / "bert-int8"
    report = quantize(exports["bert"], out, method="int8")
    assert report.passed and report.judged_by == "agreement"
    (graph,) = report.graphs
    assert {(m.metric, m.output) for m in graph.measures} == {("cosine", "logits"), ("top1", "logits")}
    assert all(m.value >= m.threshold for m in graph.measures)
    assert "MatMulNBits" in _ops(out / "model.onnx")  # 8-bit weights, int8 activations
    assert {"config.json", "onnxspec_contract.json", "onnxspec_post.json", "model.onnx"} <= set(os.listdir(out))
    assert "onnxspec_report.json" not in os.listdir(out)  # it judged the graph before quantization
    written = json.loads((out / "onnxspec_post.json").read_text())
    assert written["passed"] and written["transformation"]["method"] == "int8"
    assert written["export"]["model_type"] == "bert"
    # the written folder can be transformed again: its onnxspec_post.json says what it came from,
    # and its graphs being int8 already, a lossless step is judged by int8's agreement
    again = optimize(out, exports["root"] / "bert-int8-basic", level="basic")
    assert again.passed and again.judged_by == "agreement" and again.thresholds == report.thresholds
    assert [e["method"] for e in again.export["earlier"]] == ["int8"]


def test_int8_quantization_of_a_decoder_checks_greedy_tokens(exports: dict[str, Path]) -> None:
    report = quantize(exports["llama"], exports["root"] / "llama-int8", method="int8")
    measures = report.graphs[0].measures
    greedy = [m for m in measures if m.metric == "greedy"]
    assert len(greedy) == 1 and greedy[0].compared == 4 * 8 and greedy[0].passed
    assert {m.output for m in measures if m.metric == "cosine"} >= {"logits", "present.0.key", "present.1.value"}
    assert report.passed


def test_int8_keeps_a_decoder_whose_mlp_makes_an_outlier_channel_in_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trained decoder's MLP makes a few activations far larger than the rest (SmolLM2-135M's do):
    the tiny Llama's second MLP is given one such channel (about 1e4 where the others are near 1),
    read by down_proj with a small weight. int8 computes its layers with int8 activations, one
    scale per block of 32, which would leave that block's other channels at zero: it keeps
    down_proj in float32 and agrees; the same quantization with down_proj at int8 activations
    falls far below int8's cosine."""
    from onnxspec.post import quantize as quantize_module

    config = T.LlamaConfig(
        vocab_size=100, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=37, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(config).eval()
    mlp = model.model.layers[1].mlp
    with torch.no_grad():  # intermediate channel 0 = silu(300 x0) * 300 x0: about 1e4 where x0 > 0
        for layer in (mlp.gate_proj, mlp.up_proj):
            layer.weight[0] = 0.0
            layer.weight[0, 0] = 300.0
        mlp.down_proj.weight[:, 0] *= 0.01
    model.save_pretrained(tmp_path / "llama")
    export(tmp_path / "llama", tmp_path / "onnx", task="text-generation-with-past")
    report = quantize(tmp_path / "onnx", tmp_path / "int8", method="int8")
    assert report.passed
    assert min(m.value for m in report.graphs[0].measures if m.output == "logits" and m.metric == "cosine") > 0.999
    monkeypatch.setattr(quantize_module, "FLOAT_LAYERS", ())
    with pytest.raises(ValidationError, match="cosine"):
        quantize(tmp_path / "onnx", tmp_path / "int8-all")


def test_graph_level_optimization_is_validated_like_an_export(exports: dict[str, Path]) -> None:
    report = optimize(exports["llama"], exports["root"] / "llama-extended", level="extended")
    (graph,) = report.graphs
    assert report.passed and graph.checks and not graph.measures
    assert {c.shape_set for c in graph.checks} == {"small", "large", "decode"}
    assert all(c.criterion == "noise" and c.error <= c.bound for c in graph.checks)


def test_fp16_is_judged_by_agreement_and_keeps_float32_io(exports: dict[str, Path]) -> None:
    out = exports["root"] / "bert-fp16"
    report = optimize(exports["bert"], out, fp16=True)
    assert report.passed and report.judged_by == "agreement"
    model = onnx.load(out / "model.onnx")
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _tampered(source: Path, target: Path) -> Path:
    """A copy of the export whose largest weight is rolled by one row: a wrong graph its report calls good."""
    shutil.copytree(source, target)
    model = onnx.load(target / "model.onnx")
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    largest.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(largest), 1, axis=0), largest.name))
    onnx.save(model, target / "model.onnx")
    return target


def test_a_tampered_graph_fails_both_judgements_and_writes_nothing(exports: dict[str, Path]) -> None:
    root = exports["root"]
    broken = _tampered(exports["llama"], root / "llama-tampered")
    with pytest.raises(ValidationError, match="below the threshold") as caught:
        quantize(broken, root / "tampered-int8", method="int8")
    assert not caught.value.report.passed
    assert not (root / "tampered-int8").exists() and (root / "tampered-int8.onnxspec-failed" / "onnxspec_post.json").exists()
    with pytest.raises(ValidationError, match="disagree with PyTorch"):
        optimize(broken, root / "tampered-basic", level="basic")
    assert not (root / "tampered-basic").exists()


def test_an_impossible_threshold_fails(exports: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="cosine"):
        quantize(exports["bert"], exports["root"] / "bert-int4-strict", method="int4", thresholds=Thresholds(cosine=1.0))


def test_refusals(exports: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(OutputDirError, match="overwrite"):
        quantize(exports["bert"], tmp_path / "taken")
    with pytest.raises(ModelLoadError, match="--model"):
        quantize(exports["bert"], tmp_path / "q", model=tmp_path / "gone")
    with pytest.raises(ModelLoadError, match="onnxspec export"):
        quantize(tmp_path / "taken", tmp_path / "q")


def test_cli_exit_codes(exports: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = exports["root"]
    good = ["quantize", os.fspath(exports["llama"]), os.fspath(root / "cli-int8"), "--method", "int8",
            "--model", os.fspath(exports["llama-model"])]
    assert main(good) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "top1" in out and "Sizes" in out
    assert main(good) == 2  # the output folder exists now
    assert "--overwrite" in capsys.readouterr().err
    broken = _tampered(exports["bert"], root / "bert-tampered-cli")
    assert main(["quantize", os.fspath(broken), os.fspath(root / "cli-bad")]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_seq2seq_folders_are_decoded_greedily_and_their_merged_decoder_is_rebuilt(tmp_path: Path) -> None:
    bart = tiny_folder("bart", "text2text-generation-with-past", tmp_path / "bart")
    export(bart, tmp_path / "bart-onnx", task="text2text-generation-with-past")
    report = quantize(tmp_path / "bart-onnx", tmp_path / "bart-int8", method="int8")
    graphs = {g.filename: g for g in report.graphs}
    assert report.passed and set(graphs) == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
                                             "decoder_model_merged.onnx"}
    (greedy,) = [m for m in graphs["decoder_with_past_model.onnx"].measures if m.metric == "greedy"]
    assert greedy.passed and greedy.compared == 4 * 8
    assert {m.shape_set.split("/")[1] for m in graphs["decoder_model_merged.onnx"].measures} == {"cache", "no-cache"}
    merged = onnx.load(tmp_path / "bart-int8" / "decoder_model_merged.onnx")
    inside = {n.op_type for node in merged.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node}
    assert "MatMulNBits" in inside  # the merged decoder is quantized too, not left in float32
    assert optimize(tmp_path / "bart-onnx", tmp_path / "bart-fp16", fp16=True).passed  # the fp16 merged decoder loads
