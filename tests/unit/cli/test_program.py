"""The ``onnxspec`` program (:func:`onnxspec.cli.run`): the console script and ``python -m onnxspec``
run it, it returns :func:`main`'s exit code, and it sets Python's cyclic garbage collector for a
process that ends when the command does (young generation scanned every 10,000 objects, the
survivors frozen), and skips the interpreter's teardown once the exit handlers have run, with
everything printed flushed and main's exit code."""

from __future__ import annotations

import atexit
import gc
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from onnxspec.cli import commands

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def restored_gc():
    """run() is meant to own its process: give this test process its collector and its own exit back afterwards."""
    threshold = gc.get_threshold()
    yield
    atexit.unregister(commands._leave)
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_console_script_and_module_run_the_program() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["onnxspec"] == "onnxspec.cli:run"
    main_module = (REPO / "onnxspec" / "__main__.py").read_text()
    assert "sys.exit(run())" in main_module


@pytest.mark.parametrize(("argv", "code"), [(["tasks"], commands.EXIT_OK), (["no-such-command"], commands.EXIT_USAGE)])
def test_run_returns_mains_code_with_the_collector_set(monkeypatch, restored_gc, argv, code) -> None:
    monkeypatch.setattr(sys, "argv", ["onnxspec", *argv])
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    assert commands.run() == code
    assert gc.get_threshold() == (commands.YOUNG_OBJECTS_PER_COLLECTION, 10, 10)
    assert gc.get_freeze_count() > frozen


@pytest.mark.parametrize(("before", "registered"), [(0, True), (1, False)])
def test_teardown_is_skipped_only_when_no_exit_handler_came_before(monkeypatch, restored_gc, before, registered) -> None:
    """A handler registered before run() (a coverage tool's) would run after _leave: it must not be skipped."""
    handlers: list[object] = []
    monkeypatch.setattr(sys, "argv", ["onnxspec", "tasks"])
    monkeypatch.setattr(atexit, "_ncallbacks", lambda: before)
    monkeypatch.setattr(atexit, "register", lambda handler, *args: handlers.append((handler, args)))
    assert commands.run() == commands.EXIT_OK
    assert handlers == ([(commands._leave, ([commands.EXIT_OK],))] if registered else [])


def test_leave_ends_with_mains_code_only_after_main_returned(monkeypatch) -> None:
    ended: list[int] = []
    monkeypatch.setattr(commands.os, "_exit", ended.append)
    commands._leave([])  # main raised: Python's own shutdown and traceback
    assert ended == []
    commands._leave([3])
    assert ended == [3]


def test_python_dash_m_exits_with_the_code() -> None:
    done = subprocess.run([sys.executable, "-m", "onnxspec", "tasks"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "text-classification" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "onnxspec", "tsks"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == commands.EXIT_USAGE
    assert "did you mean 'tasks'" in bad.stderr


def test_everything_printed_reaches_a_pipe_before_the_process_ends(tmp_path) -> None:
    """stdout to a file (a block-buffered stream) and stderr: the program's whole output arrives,
    as main() prints it in process."""
    code = "import sys; from onnxspec.cli import main; sys.exit(main(['models']))"
    env = {**os.environ, "COLUMNS": "120"}
    expected = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert expected.returncode == 0 and len(expected.stdout) > 10_000, expected.stderr
    with open(tmp_path / "out.txt", "w") as out:
        done = subprocess.run([sys.executable, "-m", "onnxspec", "models"], stdout=out, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.txt").read_text() == expected.stdout
