"""`onnxspec tasks` lists, besides each task's auto classes, the heads model types load by class name."""

from __future__ import annotations

from rich.console import Console

from onnxspec.cli.commands import tasks_table
from onnxspec.pieces.tasks import NAMED_HEADS, TASKS


def _rows() -> dict[str, str]:
    """Task -> its "model heads" cell, from the table rendered wide enough for one line a row."""
    console = Console(width=1000, record=True)
    table = tasks_table()
    console.print(table)
    lines = console.export_text().splitlines()
    return {line.split()[0]: line for line in lines if line.split() and line.split()[0] in TASKS}


def test_each_named_head_is_listed_with_its_model_type_in_its_task_row() -> None:
    rows = _rows()
    assert NAMED_HEADS
    for (model_type, task), head in NAMED_HEADS.items():
        assert f"{head} ({model_type})" in rows[task], task
        others = [t for t in rows if t != task]
        assert not any(head in rows[t] for t in others), head


def test_the_auto_classes_are_still_listed() -> None:
    rows = _rows()
    for name, info in TASKS.items():
        assert all(auto in rows[name] for auto in info.auto_classes), name
