"""The command line: exit codes, messages and tables, in-process through ``main(argv)`` and once
as ``python -m onnxspec`` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import onnxspec
import onnxspec.judge.validate
from onnxspec.cli.commands import build_parser, main
from onnxspec.pieces.shapes import Shapes
from tests.tiny import tiny_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_folder("bert", "text-classification", tmp_path_factory.mktemp("cli") / "bert")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "160"}


# --- export ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_export_in_process_prints_table_and_honours_shape_flags(bert_folder: str, tmp_path, capsys) -> None:
    out = tmp_path / "onnx"
    # both spellings of the generated shape flags
    code = main(["export", "--model", bert_folder, "--task", "text-classification", "--batch-size", "3", "--sequence_length", "7", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Validation of bert / text-classification" in captured.out
    for column in ("graph", "output", "set", "shape", "error", "bound", "vs", "result"):
        assert column in captured.out
    assert "PyTorch in float64" in captured.out and "own error" in captured.out  # the legend says what error and bound mean
    rows = re.findall(r"^\s*model\.onnx\s+logits\s+(\w+)\s.*\spass\s*$", captured.out, re.M)
    assert rows == ["small", "large", "decode"]  # one row per validation shape set
    assert "model.onnx" in captured.out and "Files written to" in captured.out
    for stage in ("resolve", "load", "trace", "check", "validate", "write"):
        assert stage in captured.err
    report = json.loads((out / "onnxspec_report.json").read_text())
    assert report["passed"] is True
    assert report["graphs"][0]["trace_shapes"]["batch_size"] == 3
    assert report["graphs"][0]["trace_shapes"]["sequence_length"] == 7
    # the tiny folder has no tokenizer: the report and the output say so
    assert report["notes"] and "no tokenizer and no preprocessor" in report["notes"][0]
    assert "warning:" in captured.out and "no tokenizer" in captured.out


@pytest.mark.integration
def test_export_copies_the_tokenizer_files_marian_needs(tmp_path, capsys) -> None:
    from tests.tiny_tokenizers import marian_tokenizer_files

    folder = tiny_folder("marian", "text2text-generation", tmp_path / "marian")
    expected = marian_tokenizer_files(folder)
    out = tmp_path / "onnx"
    code = main(["export", "--model", folder, "--task", "text2text-generation", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "onnxspec_report.json").read_text())
    for name in expected:  # source.spm, target.spm, vocab.json, tokenizer_config.json, special_tokens_map.json
        assert (out / name).read_bytes() == (tmp_path / "marian" / name).read_bytes(), name
        assert name in report["files"]
    assert report["notes"] == [] and "warning:" not in captured.out


@pytest.mark.integration
def test_python_m_onnxspec_export_subprocess(bert_folder: str, tmp_path) -> None:
    out = tmp_path / "onnx"
    run = subprocess.run(
        [sys.executable, "-m", "onnxspec", "export", "--model", bert_folder, str(out)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "Validation of bert / text-classification" in run.stdout  # task inferred from config.json
    assert "3 checks, all passed" in run.stdout
    assert "Traceback" not in run.stderr
    assert (out / "model.onnx").is_file()


@pytest.mark.integration
def test_validation_failure_exits_1_with_table_and_failures(bert_folder: str, tmp_path, capsys, monkeypatch) -> None:
    real_compare = onnxspec.judge.validate.compare

    def off_by_one(graph, output, shape_set, expected, got, keep, criterion, reference=None, **kw):  # type: ignore[no-untyped-def]
        return real_compare(graph, output, shape_set, expected, got + 1.0, keep, criterion, reference, **kw)

    monkeypatch.setattr(onnxspec.judge.validate, "compare", off_by_one)
    out = tmp_path / "onnx"
    code = main(["export", "--model", bert_folder, str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAIL" in captured.out and "3 of 3 checks FAILED" in captured.out
    assert "disagree with PyTorch" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()  # nothing written where the user asked


def test_misspelled_task_exits_2_with_suggestion(bert_folder: str, tmp_path, capsys) -> None:
    code = main(["export", "--model", bert_folder, "--task", "text-clasification", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: unknown task 'text-clasification'")
    assert "Did you mean 'text-classification'" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "o").exists()


def test_misspelled_task_subprocess_has_no_traceback(bert_folder: str, tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "onnxspec", "export", "--model", bert_folder, "--task", "fill_mask_", str(tmp_path / "o")],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert run.returncode == 2
    assert "fill-mask" in run.stderr and "Traceback" not in run.stderr


def test_existing_output_dir_exits_2_naming_overwrite(bert_folder: str, tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["export", "--model", bert_folder, str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert "error:" in captured.err and "--overwrite" in captured.err
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_errors_name_flags_not_python_arguments(bert_folder: str, tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", "--model", bert_folder, str(out)]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("pass overwrite=True (--overwrite) to replace it", "pass --overwrite to replace it"),
        ("pass gguf_file=NAME (--gguf-file NAME), e.g. --gguf-file a.gguf", "pass --gguf-file NAME, e.g. --gguf-file a.gguf"),
        ("pass trust_remote_code=True (--trust-remote-code) if", "pass --trust-remote-code if"),
        ("export with backend='dynamo' (--backend dynamo), or", "export with --backend dynamo, or"),
        ("but monolith=True exports one graph", "but --monolith exports one graph"),
        ("Pass one of these names as gguf_file (--gguf-file NAME)", "Pass one of these names as --gguf-file NAME"),
        ("ExportSpec(bert/fill-mask, opset=18)", "ExportSpec(bert/fill-mask, opset=18)"),  # not an argument: unchanged
    ],
)
def test_cli_message_maps_arguments_to_flags(message: str, expected: str) -> None:
    from onnxspec.cli.commands import cli_message

    assert cli_message(message) == expected


@pytest.mark.parametrize(
    ("argv", "instead"),
    [
        (["--device", "cuda"], "CPU only"),
        (["--fp16"], "--dtype fp16"),
        (["--optimize", "O2"], "run `onnxspec optimize FOLDER OUT"),
        (["--no-post-process"], "--no-merged"),
        (["--framework", "pt"], "PyTorch models only"),
        (["--library-name", "transformers"], "transformers models"),
        (["--pad_token_id", "0"], "config.json"),
        (["--legacy"], "current layout"),
        (["--no-dynamic-axes"], "dynamic"),
        (["--for-ort"], "ORTModel"),
        (["--variant", "x"], "as they are"),
        (["--model-kwargs", "{}"], "Patch"),
        (["--no-constant-folding"], "validates the graph"),
        (["--slim"], "onnxslim"),
    ],
)
def test_optimum_flags_say_what_onnxspec_does_instead(argv: list[str], instead: str, capsys) -> None:
    assert main(["export", "--model", "m", *argv, "o"]) == 2
    err = capsys.readouterr().err
    assert "optimum-cli option with no onnxspec equivalent" in err and instead in err
    assert "did you mean" not in err and "Traceback" not in err


def test_missing_model_folder_exits_2(tmp_path, capsys) -> None:
    code = main(["export", "--model", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_debug_shows_the_traceback(bert_folder: str, tmp_path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["export", "--debug", "--model", bert_folder, str(out)]) == 2
    assert "Traceback" in capsys.readouterr().err


# --- argument parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["export", "--model", "m", "--batchsize", "3", "o"], "did you mean --batch-size"),
        (["export", "--modle", "m", "o"], "did you mean --model"),
        (["export", "--model", "m", "--overwrit", "o"], "did you mean --overwrite"),
        (["exprot", "--model", "m", "o"], "did you mean 'export'"),
        (["modles"], "did you mean 'models'"),
    ],
)
def test_misspelled_options_and_commands_exit_2_with_hint(argv: list[str], hint: str, capsys) -> None:
    assert main(argv) == 2
    assert hint in capsys.readouterr().err


def test_bad_choice_exits_2(capsys) -> None:
    assert main(["export", "--model", "m", "--dtype", "fp64", "o"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_shapes_field_is_a_flag_in_both_spellings() -> None:
    import attrs

    _, commands = build_parser()
    options = {s for a in commands["export"]._actions for s in a.option_strings}
    for field in attrs.fields(Shapes):
        assert f"--{field.name}" in options
        assert f"--{field.name.replace('_', '-')}" in options
    args = commands["export"].parse_args(["--model", "m", "--nb-max-frames", "10", "--past_sequence_length", "0", "o"])
    assert (args.nb_max_frames, args.past_sequence_length, args.batch_size) == (10, 0, None)


def test_help_and_version_exit_0(capsys) -> None:
    assert main(["--help"]) == 0
    assert "export" in capsys.readouterr().out
    assert main(["export", "--help"]) == 0
    assert "--sequence-length" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert onnxspec.__version__ in capsys.readouterr().out


# --- listings -------------------------------------------------------------------------------


def test_models_lists_model_types_with_tasks(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    from onnxspec.catalog.models import REGISTRY

    for model_type in REGISTRY:
        assert model_type in out
    assert "bert" in out and "whisper" in out
    assert "automatic-speech-recognition +past" in out
    pairs = sum(len(entry.tasks) for entry in REGISTRY.values())
    assert f"Supported model types: {len(REGISTRY)}, with {pairs} (model type, task) pairs" in " ".join(out.split())


def test_tasks_lists_tasks_and_synonyms(capsys) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "text2text-generation" in out and "summarization" in out and "causal-lm" in out


def test_describe_prints_each_graph_of_a_split_export(capsys) -> None:
    assert main(["describe", "t5", "text2text-generation-with-past"]) == 0
    out = capsys.readouterr().out
    assert "encoder_model.onnx" in out and "decoder_with_past_model.onnx" in out


def test_describe_binds_the_cache_to_a_config(bert_folder: str, capsys) -> None:
    import transformers

    layers = transformers.GPT2Config().n_layer
    assert main(["describe", "gpt2", "text-generation-with-past"]) == 0
    out = capsys.readouterr().out
    assert f"past_key_values.{layers - 1}.value" in out and f"past_key_values.{layers}.key" not in out
    assert main(["describe", "t5", "text2text-generation", "--model", bert_folder]) == 2
    assert "holds a 'bert' model, not 't5'" in capsys.readouterr().err


# --- public API -----------------------------------------------------------------------------


def test_public_api_resolves_every_name() -> None:
    for name in onnxspec.__all__:
        assert getattr(onnxspec, name) is not None, name
    assert onnxspec.export is __import__("onnxspec.pipeline.core", fromlist=["export"]).export
    assert "spec_for" in dir(onnxspec)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        onnxspec.nope  # noqa: B018


def test_import_and_tasks_do_not_import_torch() -> None:
    code = (
        "import sys, onnxspec; assert 'torch' not in sys.modules, 'import onnxspec';"
        "from onnxspec.cli.commands import main; assert main(['tasks']) == 0;"
        "assert 'torch' not in sys.modules, 'onnxspec tasks'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert run.returncode == 0, run.stderr
