"""The printout after ``onnxspec export``: tables that fit 80 columns without cutting a number or
a graph name (narrower, rows fold), the folder's size, the wall time, and how to run the folder,
with the printed snippets executed for real (Optimum's in its own venv, opt-in)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path

import attrs
import numpy as np
import pytest
from rich.console import Console

from onnxspec.cli.commands import main, print_report
from onnxspec.judge.report import ExportReport, GraphReport, OutputCheck
from onnxspec.judge.runtimes import runtimes_for
from tests.tiny import tiny_folder

REPO = Path(__file__).resolve().parents[2]
OPTIMUM_PYTHON = REPO / "benchmarks" / ".work" / "optimum-venv" / "bin" / "python"
GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx")


def _check(graph: str, output: str, shape_set: str, error: float, bound: float, reference: str = "float64") -> OutputCheck:
    return OutputCheck(graph=graph, output=output, shape_set=shape_set, torch_shape=(3, 12, 23, 64), onnx_shape=(3, 12, 23, 64),
                       max_abs=error, max_rel=0.046, atol=1e-4, rtol=1e-3, compared=100, passed=error <= bound,
                       criterion="noise" if reference == "float64" else "tolerance", reference=reference,
                       error=error, bound=bound, noise=bound / 64)


def _seq2seq_report(folder: str) -> ExportReport:
    """A seq2seq report with long graph names, 4 cache outputs per shape set, a failing check and
    numbers of every magnitude."""
    graphs = []
    for k, name in enumerate(GRAPHS):
        checks = []
        for s, shape_set in enumerate(("small", "large", "decode/no-cache" if "merged" in name else "decode")):
            checks.append(_check(name, "last_hidden_state" if k == 0 else "logits", shape_set, 1.79e-7 * (s + 1), 6.48e-6))
            if k:
                checks += [_check(name, f"present.{layer}.decoder.{kv}", shape_set, 9.47e-8, 5.47e-6)
                           for layer in (0, 1) for kv in ("key", "value")]
        if k == 2:
            checks.append(_check(name, "present.1.decoder.value", "large", 3.21e-3, 1.64e-7))  # a failing cache output
            checks.append(_check(name, "logits", "small", 4.2e-5, 1.1e-4, reference="torch"))
        graphs.append(GraphReport(filename=name, behavior="decoder", use_past=k > 0, use_past_in_inputs=k == 2,
                                  backend="torchscript", trace_shapes={}, export_seconds=1.0, validate_seconds=1.0,
                                  inputs=("input_ids", "attention_mask"), outputs=("logits",), checks=tuple(checks)))
    return ExportReport(model_type="t5", task="text2text-generation-with-past", backend="torchscript", output_dir=folder,
                        graphs=tuple(graphs), versions={}, seed=0, seconds=14.7, files=(*GRAPHS, "onnxspec_report.json"),
                        total_bytes=1_048_576, process_seconds=19.1,
                        runtimes=runtimes_for("text2text-generation-with-past", folder, GRAPHS, ("input_ids",)))


def _render(report: ExportReport, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), highlight=False, color_system=None)
    print_report(console, report)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _numbers(report: ExportReport) -> set[str]:
    return {f"{v:.2e}" for g in report.graphs for c in g.checks for v in (c.error, c.bound)}


@pytest.fixture
def seq2seq(tmp_path) -> ExportReport:
    for name in GRAPHS:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / "onnxspec_report.json").write_text("{}")
    return _seq2seq_report(str(tmp_path))


def test_80_columns_cut_nothing(seq2seq: ExportReport) -> None:
    out = _render(seq2seq, 80)
    lines = out.splitlines()
    code = "\n".join(r.snippet for r in seq2seq.runtimes)
    table_lines = [line for line in lines if line not in code]  # a snippet's long path is printed whole
    assert max(len(line) for line in table_lines) <= 80, max(table_lines, key=len)
    assert "…" not in out
    for name in GRAPHS:  # each graph name whole, on one line
        assert re.search(rf"^\s*{re.escape(name)}\s*$", out, re.M), name
    missing = [n for n in _numbers(seq2seq) if n not in out]
    assert not missing  # every error and bound printed whole
    assert re.search(r"^\s*present\.\* \(4\)\s+small\s.*\s0\.017\s+f64\s+pass\s*$", out, re.M)  # cache folded, ratio shown
    assert re.search(r"^\s*present\.1\.decoder\.value\s+large\s.*\s2e\+04\s+f64\s+FAIL\s*$", out, re.M)
    assert "ratio = error / bound" in out
    assert re.search(r"^\s*total \(5 files\)\s+1\.0 MB\s*$", out, re.M)
    assert "Took 14.7s to export, 19.1s since the process started" in out
    assert "ORTModelForSeq2SeqLM" in out and "pipeline('text2text-generation')" in out
    assert 'ORTModelForSeq2SeqLM.from_pretrained("' in out  # the first runtime that loads the folder as written


@pytest.mark.parametrize("width", [64, 56])
def test_narrower_rows_fold_and_numbers_stay_whole(seq2seq: ExportReport, width: int) -> None:
    out = _render(seq2seq, width)
    assert "…" not in out
    assert not [n for n in _numbers(seq2seq) if n not in out]
    assert all(re.search(rf"^\s*{re.escape(name)}\s*$", out, re.M) for name in GRAPHS)


def test_one_table_when_the_graph_column_fits(seq2seq: ExportReport) -> None:
    out = _render(seq2seq, 160)
    assert re.search(r"^\s*decoder_with_past_model\.onnx\s+present\.\* \(4\)\s+small\s", out, re.M)


def _bert_logits(folder: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    root = tmp_path_factory.mktemp("printout")
    folder = tiny_folder("bert", "text-classification", root / "bert")
    out = root / "bert-onnx"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("COLUMNS", "80")
    try:
        import contextlib

        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["export", "--model", folder, "--task", "text-classification", str(out)]) == 0
    finally:
        monkeypatch.undo()
    return folder, os.fspath(out), stdout.getvalue()


INPUTS = {"input_ids": np.array([[5, 17, 42, 9], [7, 3, 0, 0]], dtype=np.int64),
          "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.int64),
          "token_type_ids": np.zeros((2, 4), dtype=np.int64)}


@pytest.mark.integration
def test_export_printout_and_the_onnxruntime_snippet(bert_export: tuple[str, str, str]) -> None:
    folder, out, printed = bert_export
    assert "…" not in printed and max(len(line) for line in printed.splitlines() if "from_pretrained" not in line) <= 80
    report = json.loads(Path(out, "onnxspec_report.json").read_text())
    on_disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    assert report["total_bytes"] == on_disk
    assert report["process_seconds"] > report["seconds"] > 0
    assert re.search(rf"^\s*total \({len(report['files'])} files\)\s+{on_disk / 1024:.1f} KB\s*$", printed, re.M)
    assert f"{report['process_seconds']:.1f}s since the process started" in printed
    session = next(r for r in report["runtimes"] if r["name"] == "onnxruntime")
    namespace: dict[str, object] = {"inputs": INPUTS}
    exec(compile(session["snippet"], "onnxruntime snippet", "exec"), namespace)
    np.testing.assert_allclose(namespace["outputs"][0], _bert_logits(folder, INPUTS), atol=1e-5)  # type: ignore[index]


@pytest.mark.integration
@pytest.mark.skipif(os.environ.get("ONNXSPEC_OPTIMUM") != "1", reason="Optimum runtime test: set ONNXSPEC_OPTIMUM=1 to run it")
@pytest.mark.skipif(not OPTIMUM_PYTHON.exists(), reason=f"no Optimum venv at {OPTIMUM_PYTHON}: create it with `.venv/bin/python benchmarks/peer.py`")
def test_optimum_snippet_runs_in_optimums_venv(bert_export: tuple[str, str, str]) -> None:
    folder, out, printed = bert_export
    report = json.loads(Path(out, "onnxspec_report.json").read_text())
    optimum = report["runtimes"][0]
    assert optimum["name"] == "optimum" and optimum["snippet"] in printed  # the snippet the printout shows
    script = "\n".join([
        "import json, torch",
        f"inputs = {{k: torch.tensor(v) for k, v in {json.dumps({k: v.tolist() for k, v in INPUTS.items()})}.items()}}",
        optimum["snippet"],
        "print(json.dumps({'class': type(model).__name__, 'logits': outputs.logits.tolist()}))",
    ])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([str(OPTIMUM_PYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["class"] == optimum["loader"] == "ORTModelForSequenceClassification"
    np.testing.assert_allclose(np.array(result["logits"]), _bert_logits(folder, INPUTS), atol=1e-5)


@pytest.mark.integration
def test_inspect_shows_the_ratio_and_the_recorded_runtimes(bert_export: tuple[str, str, str], capsys, monkeypatch) -> None:
    _, out, _ = bert_export
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["inspect", out]) == 0
    printed = capsys.readouterr().out
    assert "…" not in printed and max(len(line) for line in printed.splitlines()) <= 80
    report = json.loads(Path(out, "onnxspec_report.json").read_text())
    worst = max((c for g in report["graphs"] for c in g["checks"]), key=lambda c: c["error_over_bound"])
    assert re.search(rf"^\s*model\.onnx\s+3 pass\s+{worst['error']:.2e}\s+{worst['bound']:.2e}\s+{worst['error_over_bound']:.2g}\s+",
                     printed, re.M)
    assert "loaded by: optimum ORTModelForSequenceClassification;" in " ".join(printed.split())


def test_the_title_names_the_backends_the_graphs_were_traced_with(seq2seq: ExportReport) -> None:
    """A graph TorchScript could not trace fell back to dynamo: the title says both, not only the one asked for."""
    assert "against PyTorch (torchscript)" in _render(seq2seq, 160)
    fell_back = attrs.evolve(seq2seq, graphs=(attrs.evolve(seq2seq.graphs[0], backend="dynamo", fallback="torchscript: aten::copy"),
                                              *seq2seq.graphs[1:]))
    assert "against PyTorch (dynamo, torchscript)" in _render(fell_back, 160)
