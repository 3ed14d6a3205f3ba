"""Shared fixtures of the reliability tests: one tiny saved model folder, disk snapshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tiny import tiny_folder

TASK = "text-classification"


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BertForSequenceClassification saved with save_pretrained (read-only use)."""
    return tiny_folder("bert", TASK, tmp_path_factory.mktemp("models") / "bert")


@pytest.fixture
def copy_folder(bert_folder: str, tmp_path: Path) -> Callable[[str], Path]:
    """A fresh copy of the tiny model folder, for tests that damage it."""

    def make(name: str = "model") -> Path:
        return Path(shutil.copytree(bert_folder, tmp_path / name))

    return make


def snapshot(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes); ``{}`` when ``root`` does not exist."""
    root = os.fspath(root)
    out: dict[str, bytes] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def leftovers(parent: str | os.PathLike[str]) -> list[str]:
    """onnxspec temporary folders (``.<name>.onnxspec-tmp-*`` / ``-old-*``) under ``parent``."""
    return sorted(n for n in os.listdir(parent) if ".onnxspec-tmp-" in n or ".onnxspec-old-" in n)
