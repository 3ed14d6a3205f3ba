"""Faults: a failure in any stage (or a killed process) leaves the disk as it was.

Failures are injected through ``export``'s ``_fault`` seam, called at the end of each stage's
work: the error must name the stage, list the stages done, chain the cause, and leave neither
the destination nor a temporary folder behind; an existing destination is unchanged byte for
byte even with ``overwrite=True``. A real export process is killed with SIGKILL mid-export,
and the next export to the same destination cleans up after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from onnxspec.errors import ExportError, ValidationError
from onnxspec.pipeline.core import STAGES, export
from tests.reliability.conftest import TASK, leftovers, snapshot
from tests.tiny import tiny_model

REPO = Path(__file__).resolve().parents[2]


class Injected(RuntimeError):
    """The failure the tests inject."""


def fail_at(stage: str):
    def fault(name: str, detail: str) -> None:
        if name == stage:
            raise Injected(f"injected failure in {name} {detail}".strip())

    return fault


@pytest.mark.parametrize("stage", STAGES)
def test_failure_in_stage_leaves_no_output(stage: str, bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[str] = []
    with pytest.raises(ExportError) as info:
        export(bert_folder, out, task=TASK, _fault=fail_at(stage), progress=lambda s, d: seen.append(s))
    e = info.value
    assert e.stage.split()[0] == stage
    assert isinstance(e.__cause__, Injected)
    assert f"stage {e.stage!r} failed" in str(e) and "Injected: injected failure" in str(e)
    assert [d.split(":")[0] for d in e.done] == [s for s in seen[:-1]]  # every stage before this one, in order
    assert seen[-1] == stage
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temp folder, no failed folder, no parent created


@pytest.mark.parametrize("stage", STAGES)
def test_failure_in_stage_keeps_existing_files_with_overwrite(stage: str, bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"an older export")
    (out / "sub" / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(ExportError) as info:
        export(bert_folder, out, task=TASK, overwrite=True, _fault=fail_at(stage))
    assert info.value.stage.split()[0] == stage
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_failure_creates_no_parent_folders(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ExportError):
        export(bert_folder, out, task=TASK, _fault=fail_at("trace"))
    assert os.listdir(tmp_path) == []


def test_validation_failure_keeps_graphs_and_report_beside(tmp_path: Path) -> None:
    """A graph that disagrees with PyTorch is an error, never a success with a warning.

    The model's weights are changed after the graph was traced (at the end of the check
    stage), so onnxruntime runs the old weights and PyTorch the new ones: a real disagreement.
    """
    model = tiny_model("bert", TASK)

    def drift(stage: str, detail: str) -> None:
        if stage == "check":
            with torch.no_grad():
                model.classifier.bias.add_(1.0)

    out = tmp_path / "out"
    with pytest.raises(ValidationError) as info:
        export(model, out, task=TASK, _fault=drift)
    e = info.value
    failed = tmp_path / "out.onnxspec-failed"
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["out.onnxspec-failed"]
    assert str(failed) in str(e) and "disagree with PyTorch" in str(e) and "'logits'" in str(e)
    assert (failed / "model.onnx").is_file()
    report = json.loads((failed / "onnxspec_report.json").read_text())
    assert report["passed"] is False
    checks = [c for g in report["graphs"] for c in g["checks"]]
    assert checks and not any(c["passed"] for c in checks if c["output"] == "logits")
    assert e.report is not None and not e.report.passed


def test_validation_failure_with_overwrite_keeps_existing(tmp_path: Path) -> None:
    model = tiny_model("bert", TASK)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous good export")

    def drift(stage: str, detail: str) -> None:
        if stage == "check":
            with torch.no_grad():
                model.classifier.bias.add_(1.0)

    with pytest.raises(ValidationError):
        export(model, out, task=TASK, overwrite=True, _fault=drift)
    assert snapshot(out) == {"model.onnx": b"previous good export"}
    assert leftovers(tmp_path) == []


_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from tests import conftest  # offline settings
from onnxspec.pipeline.core import export
export({folder!r}, {out!r}, task={task!r})
print("FINISHED")
"""


def _temp_dirs(parent: Path, name: str) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}.onnxspec-tmp-"))


def test_killed_export_leaves_nothing_and_next_run_cleans_up(bert_folder: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _CHILD.format(repo=str(REPO), folder=bert_folder, out=str(out), task=TASK)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not _temp_dirs(tmp_path, "out"):
            assert child.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline, "the export never created its temporary folder"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    stale = _temp_dirs(tmp_path, "out")
    assert len(stale) == 1 and f"-tmp-{child.pid}-" in stale[0]  # clearly named, with the dead PID

    report = export(bert_folder, out, task=TASK)
    assert report.passed
    assert (out / "model.onnx").is_file()
    assert leftovers(tmp_path) == []  # the dead run's folder is gone


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_killed_between_renames_restores_the_old_folder(bert_folder: str, tmp_path: Path) -> None:
    """A run that died after moving the old folder aside and before moving the new one in:
    the next run puts the user's folder back before looking at it."""
    pid = _dead_pid()
    old = tmp_path / f".out.onnxspec-old-{pid}-0000aaaa"
    old.mkdir()
    (old / "model.onnx").write_bytes(b"the user's previous export")
    new = tmp_path / f".out.onnxspec-tmp-{pid}-0000bbbb"
    new.mkdir()
    (new / "model.onnx").write_bytes(b"half-finished")
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:  # the restored folder is not empty: refused
        export(bert_folder, out, task=TASK)
    assert "exists and is not empty" in str(info.value)
    assert snapshot(out) == {"model.onnx": b"the user's previous export"}
    assert leftovers(tmp_path) == []


def test_live_process_temp_folder_is_left_alone(bert_folder: str, tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        busy = tmp_path / f".out.onnxspec-tmp-{sleeper.pid}-0000cccc"
        busy.mkdir()
        report = export(bert_folder, tmp_path / "out", task=TASK)
        assert report.passed
        assert busy.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
