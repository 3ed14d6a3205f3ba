"""The bad-input catalogue of issue 4: one test per case.

Each test asserts the error type and that the message names the problem and the fix, through
the Python API (``onnxspec.pipeline.core.export`` or the record constructors the API builds on);
a representative subset also runs the command line (exit code 2, ``error: ...`` on stderr, no
traceback). Every refused export must leave no output folder and no temporary folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from onnxspec.pieces.axes import Kind, TensorSpec
from onnxspec.errors import (
    ExportError,
    ModelLoadError,
    OnnxSpecError,
    OutputDirError,
    SpecError,
    UnknownNameError,
    UnsupportedTaskError,
    ValidationError,
)
from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import MIN_OPSET, export, max_opset
from onnxspec.build.exporters import Backend
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import Behavior, ExportSpec, GraphIO, Tolerance, with_behavior, with_graph
from tests.reliability.conftest import TASK, leftovers, snapshot
from tests.tiny import tiny_model

REPO = Path(__file__).resolve().parents[2]


def refused(exc_type: type[BaseException], *args: object, **kwargs: object) -> OnnxSpecError:
    """Run ``export(*args, **kwargs)``, assert it raises ``exc_type``, that nothing is left at
    the destination nor beside it, and return the error."""
    out = Path(os.fspath(args[1]))
    existed = out.exists()
    before = snapshot(out) if out.is_dir() else None
    with pytest.raises(exc_type) as info:
        export(*args, **kwargs)  # type: ignore[arg-type]
    if existed:
        assert (snapshot(out) if out.is_dir() else None) == before
    else:
        assert not out.exists()
    if out.parent.is_dir():
        assert leftovers(out.parent) == []
    assert isinstance(info.value, OnnxSpecError)
    return info.value


def says(error: BaseException, *parts: str) -> str:
    """Assert the message of ``error`` holds every one of ``parts`` (case-insensitive)."""
    text = str(error)
    for part in parts:
        assert part.lower() in text.lower(), f"{part!r} not in message: {text}"
    return text


# --------------------------------------------------------------------------------------------
# the model folder


def test_folder_does_not_exist(tmp_path: Path) -> None:
    e = refused(ModelLoadError, tmp_path / "no-such-model", tmp_path / "out", task=TASK)
    says(e, "no-such-model", "does not exist", "pass a local folder holding config.json")


def test_folder_without_config_json(copy_folder, tmp_path: Path) -> None:
    folder = copy_folder()
    (folder / "config.json").unlink()
    e = refused(ModelLoadError, folder, tmp_path / "out", task=TASK)
    says(e, "no config.json", "save_pretrained")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_config_json(copy_folder, tmp_path: Path, damage: str) -> None:
    folder = copy_folder()
    path = folder / "config.json"
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2] if damage == "truncated" else b"\x00\xff not json")
    e = refused(ModelLoadError, folder, tmp_path / "out", task=TASK)
    says(e, "config.json", "corrupt or truncated", "save the config again")


def test_weights_missing(copy_folder, tmp_path: Path) -> None:
    folder = copy_folder()
    (folder / "model.safetensors").unlink()
    e = refused(ModelLoadError, folder, tmp_path / "out", task=TASK)
    says(e, "cannot load the weights", "weights file is present and complete", "save_pretrained")
    assert isinstance(e.__cause__, Exception)


def test_weights_truncated(copy_folder, tmp_path: Path) -> None:
    folder = copy_folder()
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    e = refused(ModelLoadError, folder, tmp_path / "out", task=TASK)
    says(e, "cannot load the weights", "complete")
    assert e.__cause__ is not None


def test_unknown_model_type(copy_folder, tmp_path: Path) -> None:
    folder = copy_folder()
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "nosuchmodel"
    (folder / "config.json").write_text(json.dumps(config))
    e = refused(UnknownNameError, folder, tmp_path / "out", task=TASK)
    says(e, "unknown model type 'nosuchmodel'", "onnxspec models")


def test_misspelled_model_type_suggests(copy_folder, tmp_path: Path) -> None:
    folder = copy_folder()
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "berta"
    (folder / "config.json").write_text(json.dumps(config))
    e = refused(UnknownNameError, folder, tmp_path / "out", task=TASK)
    assert "bert" in e.suggestions
    says(e, "did you mean 'bert'")


# --------------------------------------------------------------------------------------------
# the task


def test_misspelled_task_suggests_close_matches(bert_folder: str, tmp_path: Path) -> None:
    e = refused(UnknownNameError, bert_folder, tmp_path / "out", task="text-clasification")
    assert e.suggestions[0] == "text-classification"
    says(e, "unknown task 'text-clasification'", "did you mean 'text-classification'", "onnxspec tasks")


def test_task_the_model_type_does_not_support(bert_folder: str, tmp_path: Path) -> None:
    e = refused(UnsupportedTaskError, bert_folder, tmp_path / "out", task="text-generation")
    text = says(e, "'bert' does not support task 'text-generation'", "it supports")
    for task in REGISTRY["bert"].tasks:
        assert task in text


def test_head_does_not_match_the_task(bert_folder: str, tmp_path: Path) -> None:
    e = refused(UnsupportedTaskError, bert_folder, tmp_path / "out", task="fill-mask")
    says(e, "BertForSequenceClassification", "'fill-mask'", "randomly initialised", "--task text-classification")


# --------------------------------------------------------------------------------------------
# specs that contradict themselves


def test_duplicate_input_names() -> None:
    x = TensorSpec(name="input_ids", axes={0: "batch_size"}, kind=Kind.INT)
    with pytest.raises(SpecError) as info:
        GraphIO(inputs=(x, x), outputs=())
    says(info.value, "GraphIO.inputs", "duplicate names ['input_ids']", "must appear once")


def test_duplicate_output_names() -> None:
    y = TensorSpec(name="logits", axes={0: "batch_size"})
    with pytest.raises(SpecError) as info:
        GraphIO(inputs=(), outputs=(y, TensorSpec(name="logits", axes={})))
    says(info.value, "GraphIO.outputs", "duplicate names ['logits']", "must appear once")


def test_axis_index_beyond_rank() -> None:
    with pytest.raises(SpecError) as info:
        TensorSpec(name="attention_mask", rank=2, axes={0: "batch_size", 2: "sequence_length"}, kind=Kind.INT)
    says(info.value, "'attention_mask'", "axis index 2 is beyond its rank 2", "valid indices are 0..1")


def test_past_on_a_family_without_cache(bert_folder: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTaskError) as info:
        spec_for(REGISTRY, "bert", "text-classification", use_past=True)
    says(info.value, "has no cache", "drop '-with-past'")
    e = refused(UnsupportedTaskError, bert_folder, tmp_path / "out", task="text-classification-with-past")
    says(e, "'bert' has no cache", "drop '-with-past'")
    spec = spec_for(REGISTRY, "bert", "text-classification")
    with pytest.raises(SpecError) as info2:
        ExportSpec(**{**{a: getattr(spec, a) for a in ("model_type", "task", "family", "graphs")}, "use_past": True})
    says(info2.value, "use_past=True", "has no cache", "export without the cache")


def test_decoder_without_the_encoder_output_it_needs() -> None:
    spec = spec_for(REGISTRY, "t5", "text2text-generation")
    decoder = spec.graphs["decoder"]
    stripped = GraphIO(
        inputs=tuple(t for t in decoder.inputs if t.name != "encoder_hidden_states"),
        outputs=decoder.outputs,
        call=decoder.call,
        past=decoder.past,
    )
    with pytest.raises(SpecError) as info:
        with_graph(spec, Behavior.DECODER, stripped)
    says(info.value, "t5", "decoder", "needs the input 'encoder_hidden_states'")


@pytest.mark.parametrize("atol", [0, -1e-4, float("nan")])
def test_tolerance_not_positive(atol: float, bert_folder: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        Tolerance(atol=atol)
    says(info.value, "Tolerance.atol", "must be a positive number")
    e = refused(SpecError, bert_folder, tmp_path / "out", task=TASK, atol=atol)
    says(e, "atol", "positive")


# --------------------------------------------------------------------------------------------
# option values out of range


@pytest.mark.parametrize("model_type, task", [("bert", "text-classification"), ("llama", "text-generation")])
def test_opset_below_what_attention_needs(model_type: str, task: str, tmp_path: Path) -> None:
    model = tiny_model(model_type, task)
    e = refused(SpecError, model, tmp_path / "out", task=task, opset=9)
    says(e, f"{model_type}/", "opset 9 is too low", "scaled_dot_product_attention", f"opset between {MIN_OPSET} and")


def test_opset_above_what_onnx_supports(bert_folder: str, tmp_path: Path) -> None:
    too_high = onnx.defs.onnx_opset_version() + 1
    e = refused(SpecError, bert_folder, tmp_path / "out", task=TASK, opset=too_high)
    says(e, f"opset {too_high} is higher than this installation supports", f"goes up to {onnx.defs.onnx_opset_version()}",
         f"opset between {MIN_OPSET} and {max_opset(Backend.TORCHSCRIPT)}")


def test_opset_above_what_the_exporter_supports(bert_folder: str, tmp_path: Path) -> None:
    top = max_opset(Backend.TORCHSCRIPT)
    if top >= onnx.defs.onnx_opset_version():
        pytest.skip("the torchscript exporter supports every opset the installed onnx knows")
    e = refused(SpecError, bert_folder, tmp_path / "out", task=TASK, opset=top + 1, backend="torchscript")
    says(e, "torch torchscript exporter up to", f"and {top}")


def test_bf16_with_torchscript_is_refused(bert_folder: str, tmp_path: Path) -> None:
    # bf16 exports (dynamo, validated by onnx.reference) are tested in tests/integration/test_bf16.py
    e = refused(SpecError, bert_folder, tmp_path / "out", task=TASK, dtypes=DTypes(float_dtype="bf16"), backend="torchscript")
    says(e, "bf16 is exported with the dynamo backend only", "you asked for 'torchscript'", "leave the backend out")


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("sequence_length", -3), ("width", 0), ("past_sequence_length", -1)])
def test_shapes_of_zero_or_negative_size(field: str, value: int) -> None:
    with pytest.raises(SpecError) as info:
        Shapes(**{field: value})
    says(info.value, f"shape {field}", "integer", repr(value))


# --------------------------------------------------------------------------------------------
# the output folder


def test_output_dir_exists_and_is_not_empty(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    e = refused(OutputDirError, bert_folder, out, task=TASK)
    says(e, "exists and is not empty", "overwrite=True (--overwrite)")
    assert (out / "keep.txt").read_text() == "mine"


def test_output_path_is_a_file(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    out.write_text("not a folder")
    e = refused(OutputDirError, bert_folder, out, task=TASK)
    says(e, "is a file", "give a folder path")
    assert out.read_text() == "not a folder"


def test_output_under_a_file(bert_folder: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    e = refused(OutputDirError, bert_folder, tmp_path / "file" / "sub" / "out", task=TASK)
    says(e, "is a file, not a folder", "choose another output folder")


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[None]:
    """Mount ``path`` read-only over itself (root only): writes fail with EROFS even for root."""
    done = _run("mount", "--bind", "-o", "ro", str(path), str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("umount", str(path))


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i`` a folder: nothing can be created in it, not even by root (whose permission
    bits are ignored, so a mode-0555 folder would not do)."""
    done = _run("chattr", "+i", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("chattr", "-i", str(path))


def test_folder_not_writable_read_only_mount(bert_folder: str, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    with read_only_bind(parent):
        with pytest.raises(OSError):  # the test is only meaningful if writing really fails
            (parent / "probe").mkdir()
        e = refused(OutputDirError, bert_folder, parent / "out", task=TASK)
    says(e, "cannot write the output folder", "read-only file system", "choose another output folder")
    assert isinstance(e.__cause__, OSError)


def test_folder_not_writable_immutable(bert_folder: str, tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    with immutable(parent):
        with pytest.raises(OSError):
            (parent / "probe").mkdir()
        e = refused(OutputDirError, bert_folder, parent / "sub" / "out", task=TASK)
    says(e, "cannot write the output folder", "not writable", "fix its permissions")
    assert not (parent / "sub").exists()


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[None]:
    """Mount a tmpfs of ``size`` at ``path`` (root only): a real disk that fills up."""
    path.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("umount", str(path))


def test_disk_full_during_write(bert_folder: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with tiny_disk(disk, "48k"):
        e = refused(ExportError, bert_folder, disk / "out", task=TASK)
        assert os.listdir(disk) == []
    says(e, "no space left on the device", "free some space", "another disk")
    assert isinstance(e.__cause__, OSError) and e.__cause__.errno == 28
    assert e.stage.split()[0] in ("trace", "check", "write")


def test_disk_full_injected_at_save(bert_folder: str, tmp_path: Path) -> None:
    """The same error when ENOSPC is injected at the save step (for machines without mount)."""

    def full(stage: str, detail: str) -> None:
        if stage == "check":
            raise OSError(28, "No space left on device")

    e = refused(ExportError, bert_folder, tmp_path / "out", task=TASK, _fault=full)
    says(e, "stage 'check (model.onnx)'", "no space left on the device", "free some space")


# --------------------------------------------------------------------------------------------
# remote code


def _remote_code_folder(root: Path, marker: Path, model_type: str) -> Path:
    folder = root / "remote"
    folder.mkdir()
    for module in ("configuration_custom", "modeling_custom"):
        (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('executed {module}')\n")
    config = {
        "model_type": model_type,
        "architectures": ["CustomForSequenceClassification"],
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForSequenceClassification": "modeling_custom.CustomForSequenceClassification",
        },
        "hidden_size": 32,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("model_type", ["custom-thing", "bert"])
def test_remote_code_refused_and_not_executed(tmp_path: Path, model_type: str) -> None:
    marker = tmp_path / "marker"
    folder = _remote_code_folder(tmp_path, marker, model_type)
    e = refused(ModelLoadError, folder, tmp_path / "out", task=TASK)
    says(e, "needs custom code", "auto_map", "trust_remote_code=True (--trust-remote-code)")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# the command line: exit code 2, "error: <message>" on stderr, no traceback


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "onnxspec", "export", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


def assert_user_error(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: " in done.stderr
    for part in parts:
        assert part in done.stderr, f"{part!r} not in {done.stderr}"


def test_cli_folder_does_not_exist(tmp_path: Path) -> None:
    done = cli("--model", str(tmp_path / "nope"), "--task", TASK, str(tmp_path / "out"))
    assert_user_error(done, "does not exist", "pass a local folder")
    assert not (tmp_path / "out").exists()


def test_cli_misspelled_task(bert_folder: str, tmp_path: Path) -> None:
    done = cli("--model", bert_folder, "--task", "text-clasification", str(tmp_path / "out"))
    assert_user_error(done, "unknown task 'text-clasification'", "Did you mean 'text-classification'")


def test_cli_unsupported_task(bert_folder: str, tmp_path: Path) -> None:
    done = cli("--model", bert_folder, "--task", "text-generation", str(tmp_path / "out"))
    assert_user_error(done, "does not support task 'text-generation'", "it supports: feature-extraction")


def test_cli_existing_output_dir(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = cli("--model", bert_folder, "--task", TASK, str(out))
    assert_user_error(done, "exists and is not empty", "--overwrite")
    assert snapshot(out) == {"keep.txt": b"mine"}


def test_cli_remote_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = _remote_code_folder(tmp_path, marker, "custom-thing")
    done = cli("--model", str(folder), "--task", TASK, str(tmp_path / "out"))
    assert_user_error(done, "needs custom code", "--trust-remote-code")
    assert not marker.exists()


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = cli("--model", str(tmp_path / "nope"), "--task", TASK, "--debug", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "Traceback" in done.stderr


@pytest.mark.parametrize(
    ("model_type", "task", "refused_pair"),
    [
        ("retired_type", "feature-extraction", ("retired_type", "*")),  # a type refused for every task
        ("retired_type", None, ("retired_type", "feature-extraction")),  # its task inferred
        ("bert", "fill-mask", ("bert", "fill-mask")),  # one task of a registered type
    ],
)
def test_a_pair_known_to_be_unexportable_is_refused_with_its_reason(
    model_type: str, task: str | None, refused_pair: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair in models.UNSUPPORTED (empty today: every pair Optimum registers is exported) is refused with its
    reason instead of 'unknown model type' or a wrong export; the table is injected so the refusal stays proven."""
    import onnxspec.pipeline.core as core

    why = "its graph depends on a random draw the exporter cannot see"
    monkeypatch.setattr(core, "UNSUPPORTED", {refused_pair: why})
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    e = refused(UnsupportedTaskError, folder, tmp_path / "out", task=task)
    says(e, model_type, "cannot be exported correctly", why)
