"""After ``onnxspec export --layout transformers.js`` the written and printed reports name each
graph's file where it is (``onnx/model.onnx``; the fp16 export's report: ``onnx/model_fp16.onnx``),
list the laid-out folder's files, and the folder still re-validates and inspects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from onnxspec.cli.commands import main
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration


def test_the_laid_out_report_names_the_laid_out_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert = tiny_folder("bert", "text-classification", tmp_path / "bert")
    out = tmp_path / "bert-tjs"
    assert main(["export", "--model", bert, "--task", "text-classification", "--layout", "transformers.js",
                 "--variants", "fp16", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "onnxspec_report.json").read_text())
    fp16 = json.loads((out / "onnxspec_report_fp16.json").read_text())
    assert [(g["filename"], g["path"]) for g in report["graphs"]] == [("model.onnx", "onnx/model.onnx")]
    assert [(g["filename"], g["path"]) for g in fp16["graphs"]] == [("model.onnx", "onnx/model_fp16.onnx")]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert report["files"] == fp16["files"] == on_disk
    assert all((out / g["path"]).is_file() for g in (*report["graphs"], *fp16["graphs"]))
    assert report["total_bytes"] == sum((out / f).stat().st_size for f in on_disk)
    assert "onnx/model.onnx" in printed and "onnx/model_fp16.onnx" in printed
    files = printed.split("Files written to")[1].split("Took")[0]
    assert "onnx/model.onnx" in files and " ? " not in files  # every listed file is there, with its size

    assert main(["inspect", str(out)]) == 0
    inspected = capsys.readouterr().out
    assert re.search(r"onnx/model\.onnx +3 pass", inspected)  # its validation read from the report by its laid-out path
    assert main(["validate", str(out), "--model", bert]) == 0
