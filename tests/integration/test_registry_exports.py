"""One parametrized test over the registry: every (model type, task, with/without cache)
exported from a tiny random model folder and validated against PyTorch."""

from __future__ import annotations

import json
import math
import os

import onnx
import pytest

from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import export
from tests.tiny import CONFIGS, tiny_folder, tiny_vocoder_folder

CASES = [(mt, task) for mt, e in REGISTRY.items() for task in e.tasks]
BOTH_BACKENDS = {("bert", "feature-extraction"), ("gpt2", "text-generation-with-past"), ("vit", "image-classification")}


def test_every_registered_model_type_has_a_tiny_config() -> None:
    assert sorted(REGISTRY) == sorted(CONFIGS)
    assert len(CASES) >= 50


def _params():
    for mt, task in CASES:
        yield pytest.param(mt, task, "torchscript", id=f"{mt}-{task}-torchscript", marks=pytest.mark.integration)
        if (mt, task) in BOTH_BACKENDS:
            yield pytest.param(mt, task, "dynamo", id=f"{mt}-{task}-dynamo", marks=pytest.mark.integration)


@pytest.mark.parametrize(("model_type", "task", "backend"), list(_params()))
def test_export_validates(model_type: str, task: str, backend: str, tmp_path) -> None:
    folder = tiny_folder(model_type, task, tmp_path / "model")
    out = tmp_path / "onnx"
    vocoder = {"vocoder": tiny_vocoder_folder(tmp_path / "vocoder")} if model_type == "speecht5" else {}  # its own checkpoint
    report = export(folder, out, task=task, backend=backend, **vocoder)
    assert report.passed, report.failures
    assert report.backend == backend
    names = [g.filename for g in report.graphs]
    for name in names:
        model = onnx.load(out / name, load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["onnxspec.contract"])["inputs"], name
    checked_sets = {c.shape_set for g in report.graphs for c in g.checks}
    assert {"small", "large", "decode"} <= checked_sets
    if task.endswith("-with-past"):
        assert any(g.use_past_in_inputs for g in report.graphs), names
    if "decoder_with_past_model.onnx" in names and model_type != "speecht5":  # seq2seq with cache: the merged decoder too, weights stored once
        assert "decoder_model_merged.onnx" in names and "decoder_model_merged.onnx" in report.files, names
        merged, first = (os.path.getsize(out / n) for n in ("decoder_model_merged.onnx", "decoder_model.onnx"))
        assert merged <= 1.1 * first, f"decoder_model_merged.onnx is {merged / first:.2f}x decoder_model.onnx"
        sets = {c.shape_set for g in report.graphs if g.filename == "decoder_model_merged.onnx" for c in g.checks}
        assert {"small/no-cache", "large/cache", "decode/cache"} <= sets, sets
    assert os.path.isfile(out / "onnxspec_report.json")
    assert os.path.isfile(out / "config.json")
    # an output whose reference is ~0 at every shape set proves nothing: any graph giving ~0 passes
    scales: dict[tuple[str, str], float] = {}
    for g in report.graphs:
        for c in g.checks:
            if not math.isnan(c.scale):
                scales[g.filename, c.output] = max(scales.get((g.filename, c.output), 0.0), c.scale)
    vanishing = {k: v for k, v in scales.items() if v < 1e-6}
    assert not vanishing, f"outputs too small for their checks to prove anything (raise the tiny config's initializer range: tests/tiny.py, _DEEP_INIT): {vanishing}"
