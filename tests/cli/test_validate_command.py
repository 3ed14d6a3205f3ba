"""``onnxspec validate FOLDER --model MODEL`` and the Hub options of ``export`` (--revision,
--cache-dir), on a tiny bert; the Hub is a cache folder built here (no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxspec.cli.commands import build_parser, main
from tests.tiny import tiny_folder
from tests.unit.pipeline.test_hub import COMMIT, write_cache

TASK = "text-classification"
REPO = "tiny-org/tiny-bert"


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bert")
    model = Path(tiny_folder("bert", TASK, root / "model", seed=2))
    assert main(["export", "--model", str(model), "--task", TASK, str(root / "onnx")]) == 0
    return model, root / "onnx"


@pytest.mark.parametrize("spelling", ["--cache-dir", "--cache_dir"])
def test_cache_dir_and_revision_options(spelling: str) -> None:
    for command in (["export", "--model", "org/name", "out"], ["validate", "folder", "--model", "org/name"]):
        args = build_parser()[0].parse_args([*command, spelling, "/tmp/c", "--revision", "v1"])
        assert (args.cache_dir, args.revision) == ("/tmp/c", "v1")


def test_validate_at_chosen_shapes_passes(bert: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, folder = bert
    assert main(["validate", str(folder), "--model", str(model), "--batch-size", "3", "--sequence-length", "7"]) == 0
    out = capsys.readouterr().out
    assert "Validation of bert / text-classification" in out and "(3, 2)" in out
    assert "all passed" in out and "every graph agrees with PyTorch" in out


def test_validate_a_tampered_export_exits_1_naming_the_output(bert: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    model, folder = bert
    copy = Path(shutil.copytree(folder, tmp_path / "tampered"))
    proto = onnx.load(str(copy / "model.onnx"))
    head = next(t for t in proto.graph.initializer if "classifier" in t.name and len(t.dims) == 2)
    head.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(head) + np.float32(0.5), head.name))
    onnx.save(proto, str(copy / "model.onnx"))
    assert main(["validate", str(copy), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "'logits'" in captured.err and "Traceback" not in captured.err


def test_validate_usage_errors_exit_2(bert: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = bert
    assert main(["validate", str(tmp_path / "nope"), "--model", str(model)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["validate", str(tmp_path), "--model", str(model), "--task", "text-clasification"]) == 2
    assert "text-classification" in capsys.readouterr().err


def test_export_and_validate_a_hub_id_from_the_cache(bert: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model, folder = bert
    write_cache(tmp_path / "cache", REPO, model, COMMIT)
    out = tmp_path / "from-hub"
    assert main(["export", "--model", REPO, "--cache-dir", str(tmp_path / "cache"), "--task", TASK, str(out)]) == 0
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    assert main(["validate", str(folder), "--model", REPO, "--cache_dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    assert main(["export", "--model", REPO, "--cache-dir", str(tmp_path / "empty"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert f"'{REPO}' is not a local folder" in err and f"huggingface-cli download {REPO}" in err
