"""``onnxspec export --layout`` on a tiny random llama: the folders onnxruntime-genai and
transformers.js load (checked here against their documented contract: file names, I/O names,
config keys; ``test_layout_runtimes.py`` has the runtimes themselves load them, opt-in), the
refusals, and a failed layout step leaving the previous folder as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import onnxspec.post.layouts as layouts
from onnxspec.cli.commands import main
from onnxspec.post.layouts import export_with_layout
from tests.tiny import CONFIGS, tiny_folder

pytestmark = pytest.mark.integration

TASK = "text-generation-with-past"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_folder("llama", "text-generation", tmp_path_factory.mktemp("models") / "llama")


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_genai_layout(llama: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "llama-genai"
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "genai", str(out)]) == 0
    assert "Layout genai" in capsys.readouterr().out
    genai = json.loads((out / "genai_config.json").read_text())
    model, decoder = genai["model"], genai["model"]["decoder"]
    config = CONFIGS["llama"]()
    assert model["type"] == "llama"
    assert (model["vocab_size"], model["context_length"]) == (config.vocab_size, config.max_position_embeddings)
    assert (model["bos_token_id"], model["eos_token_id"], model["pad_token_id"]) == (config.bos_token_id, config.eos_token_id, config.pad_token_id)
    assert (decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]) == (
        config.num_hidden_layers, config.num_key_value_heads, config.head_dim)
    assert (decoder["num_attention_heads"], decoder["hidden_size"]) == (config.num_attention_heads, config.hidden_size)
    # the session's names are exactly what the config names (genai feeds and reads them by these names)
    session = _session(out / decoder["filename"])
    layers = range(decoder["num_hidden_layers"])
    names_in = [decoder["inputs"][k] for k in ("input_ids", "attention_mask", "position_ids")]
    names_in += [decoder["inputs"][k] % i for i in layers for k in ("past_key_names", "past_value_names")]
    names_out = [decoder["outputs"]["logits"]]
    names_out += [decoder["outputs"][k] % i for i in layers for k in ("present_key_names", "present_value_names")]
    assert sorted(i.name for i in session.get_inputs()) == sorted(names_in)
    assert sorted(o.name for o in session.get_outputs()) == sorted(names_out)
    # a first step as genai runs it: an empty cache shaped [batch, key/value heads, 0, head size]
    empty = np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]), np.float32)
    feed = {"input_ids": np.array([[1, 5, 7]]), "attention_mask": np.ones((1, 3), np.int64), "position_ids": np.arange(3)[None]}
    feed |= {n: empty for n in names_in[3:]}
    logits = session.run(["logits"], feed)[0]
    assert logits.shape == (1, 3, model["vocab_size"])
    report = json.loads((out / "onnxspec_report.json").read_text())
    assert report["passed"] and report["output_dir"] == str(out)
    assert not [p for p in tmp_path.iterdir() if "onnxspec-" in p.name]  # no temporary folder left


def test_transformers_js_layout(llama: str, tmp_path: Path) -> None:
    out = tmp_path / "llama-tjs"
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "transformers.js", str(out)]) == 0
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["model.onnx", "model_fp16.onnx", "model_quantized.onnx"]
    assert {"config.json", "generation_config.json", "onnxspec_report.json", "onnxspec_report_fp16.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.onnx"))
    fp32, fp16, q8 = (_session(out / "onnx" / n) for n in ("model.onnx", "model_fp16.onnx", "model_quantized.onnx"))
    # transformers.js feeds the same names to every dtype's graph; the fp16 graph takes and gives float16
    assert [i.name for i in fp32.get_inputs()] == [i.name for i in fp16.get_inputs()] == [i.name for i in q8.get_inputs()]
    assert {i.type for i in fp16.get_inputs() if i.name.startswith("past_key_values.")} == {"tensor(float16)"}
    assert {i.type for i in fp32.get_inputs() if i.name.startswith("past_key_values.")} == {"tensor(float)"}
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in
               __import__("onnx").load(str(out / "onnx" / "model_quantized.onnx")).graph.node)
    assert json.loads((out / "onnxspec_report_fp16.json").read_text())["passed"]
    post = json.loads((out / "onnxspec_post_q8.json").read_text())  # the int8 graph judged against PyTorch by agreement
    assert post["passed"] and post["judged_by"] == "agreement" and post["graphs"][0]["measures"]
    record = json.loads((out / "onnxspec_layout.json").read_text())
    assert record["layout"] == "transformers.js" and set(record["graphs"]) == {f"onnx/{n}" for n in ("model.onnx", "model_fp16.onnx", "model_quantized.onnx")}
    assert "judged against PyTorch by agreement" in record["graphs"]["onnx/model_quantized.onnx"]


def test_layout_refusals(llama: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", "--model", llama, "--task", "text-generation", "--layout", "genai", str(out)]) == 2
    assert "pass --task text-generation-with-past" in capsys.readouterr().err
    bert = tiny_folder("bert", "fill-mask", tmp_path / "bert")
    assert main(["export", "--model", bert, "--task", "fill-mask", "--layout", "genai", str(out)]) == 2
    assert "no decoder type for 'bert'" in capsys.readouterr().err
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "transformers.js", "--dtype", "fp16", str(out)]) == 2
    assert "drop --dtype fp16" in capsys.readouterr().err
    assert not out.exists()


def test_failed_layout_leaves_the_previous_folder(llama: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(layouts, "write_layout", broken)
    with pytest.raises(OSError, match="disk gone"):
        export_with_layout(llama, out, "transformers.js", variants=(), task=TASK, overwrite=True)
    assert os.listdir(out) == ["previous.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_variants(llama: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "genai", "--variants", "fp16", str(out)]) == 2
    assert "--variants is for --layout transformers.js" in capsys.readouterr().err
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "transformers.js", "--variants", "q8,q3", str(out)]) == 2
    assert "unknown variant 'q3'" in capsys.readouterr().err

    import onnxspec.post.quantize as quantize_module
    from onnxspec.errors import ValidationError

    def disagrees(folder: str, output_dir: str, **kwargs: object) -> None:  # a quantized graph below the thresholds
        os.makedirs(output_dir + ".onnxspec-failed")
        raise ValidationError(f"the quantized graphs disagree with PyTorch beyond the thresholds\nNothing was written to {output_dir!r}")

    monkeypatch.setattr(quantize_module, "quantize", disagrees)
    assert main(["export", "--model", llama, "--task", TASK, "--layout", "transformers.js", "--variants", "q8", str(out)]) == 1
    err = capsys.readouterr().err
    assert "variant q8: the quantized graphs disagree" in err and "pass --variants ''" in err and "variants=" not in err
    assert not out.exists() and (tmp_path / "out.onnxspec-failed").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["out.onnxspec-failed"]


def test_failed_validation_is_kept_beside_the_destination(llama: str, tmp_path: Path) -> None:
    from onnxspec.errors import ValidationError

    out = tmp_path / "out"
    with pytest.raises(ValidationError) as caught:  # an impossible tolerance: every output fails
        export_with_layout(llama, out, "transformers.js", variants=(), task=TASK, atol=1e-12)
    kept = f"{out}.onnxspec-failed"
    assert f"Nothing was written to {str(out)!r}; the graphs and the full report are in {kept!r}" in str(caught.value)
    assert caught.value.report is not None and not caught.value.report.passed
    assert sorted(os.listdir(tmp_path)) == ["out.onnxspec-failed"] and (tmp_path / "out.onnxspec-failed" / "model.onnx").is_file()
