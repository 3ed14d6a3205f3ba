"""Wrong specs must fail loudly: a misnamed output, a dynamic axis the graph froze, a tolerance
the graph cannot meet. Each case exports a tiny model folder through ``onnxspec.pipeline.core.export``
with an explicit ``spec=``, and checks the error names what is wrong and nothing is written."""

from __future__ import annotations

import os

import attrs
import pytest

from onnxspec.pieces.axes import spec as tensor
from onnxspec.errors import OnnxSpecError, ValidationError
from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import export
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.spec import Behavior, ModelSpec, bind, with_graph, with_tolerance
from tests.tiny import CONFIGS, tiny_folder

pytestmark = pytest.mark.integration


def _bert(tmp_path) -> tuple[str, ModelSpec]:
    folder = tiny_folder("bert", "feature-extraction", tmp_path / "model")
    return folder, bind(spec_for(REGISTRY, "bert", "feature-extraction"), CONFIGS["bert"]())


def _with_output(s: ModelSpec, name: str, axes: dict[int, str]) -> ModelSpec:
    graph = attrs.evolve(s.graphs["monolith"], outputs=[tensor(name, axes)])
    return with_graph(s, Behavior.MONOLITH, graph)


def _nothing_written(out) -> None:
    assert not os.path.exists(out), f"a failed export wrote {sorted(os.listdir(out))}"
    leftovers = [n for n in os.listdir(os.path.dirname(out)) if ".onnxspec-tmp-" in n]
    assert not leftovers, leftovers


def test_a_wrong_output_name_raises_an_error_naming_it(tmp_path) -> None:
    folder, good = _bert(tmp_path)
    wrong = _with_output(good, "logitz", {0: "batch_size", 1: "sequence_length"})
    out = tmp_path / "onnx"
    with pytest.raises(OnnxSpecError) as info:
        export(folder, out, spec=wrong)
    message = str(info.value)
    assert "'logitz'" in message and "last_hidden_state" in message, message
    _nothing_written(out)


@pytest.mark.parametrize("backend", ["torchscript", "dynamo"])
def test_an_axis_declared_dynamic_that_the_graph_froze_fails_validation(tmp_path, backend: str) -> None:
    folder, good = _bert(tmp_path)
    # axis 2 of last_hidden_state is the hidden size: static in every graph
    wrong = _with_output(good, "last_hidden_state", {0: "batch_size", 1: "sequence_length", 2: "sequence_length"})
    out = tmp_path / "onnx"
    with pytest.raises(ValidationError) as info:
        export(folder, out, spec=wrong, backend=backend)
    message = str(info.value)
    assert "'last_hidden_state'" in message and "axis 2" in message, message
    report = info.value.report
    assert report is not None and not report.passed
    problems = [p for g in report.graphs for p in g.problems]
    assert any("last_hidden_state" in p and "axis 2" in p for p in problems), problems
    if backend == "dynamo":
        # torch.export computes output shapes itself, so the graph check sees the frozen size
        assert any("froze it to 32" in p for p in problems), problems
    _nothing_written(out)


def test_an_unmeetable_tolerance_fails_with_a_report_listing_the_output(tmp_path) -> None:
    folder, good = _bert(tmp_path)
    tight = with_tolerance(good, atol=1e-12, rtol=0)
    out = tmp_path / "onnx"
    with pytest.raises(ValidationError) as info:
        export(folder, out, spec=tight)
    report = info.value.report
    assert report is not None and not report.passed
    failing = {c.output for g in report.graphs for c in g.checks if not c.passed}
    assert failing == {"last_hidden_state"}
    assert all(c.atol == 1e-12 and c.rtol == 0 for g in report.graphs for c in g.checks)
    assert all(c.criterion == "tolerance" for g in report.graphs for c in g.checks)
    assert any("last_hidden_state" in f and "atol" in f for f in report.failures), report.failures
    assert "last_hidden_state" in str(info.value)
    _nothing_written(out)
    # the same spec at its default tolerance exports, so the failure came from the tolerance alone
    assert export(folder, tmp_path / "ok", spec=good).passed


def test_an_unmeetable_cache_tolerance_names_the_present_outputs(tmp_path) -> None:
    folder = tiny_folder("gpt2", "text-generation", tmp_path / "model")
    s = bind(spec_for(REGISTRY, "gpt2", "text-generation-with-past"), CONFIGS["gpt2"]())
    tight = with_tolerance(s, atol=1e-12, rtol=0, outputs=["present.*"])
    out = tmp_path / "onnx"
    with pytest.raises(ValidationError) as info:
        export(folder, out, spec=tight)
    failing = {c.output for g in info.value.report.graphs for c in g.checks if not c.passed}
    assert failing and all(name.startswith("present.") for name in failing), failing
    _nothing_written(out)


def test_an_input_the_model_ignores_is_reported_not_crashed_on(tmp_path) -> None:
    """The exporter drops inputs the model never reads; the check names the missing input and
    validation is not attempted with a feed the graph cannot take."""
    from onnxspec.pieces import generators
    from onnxspec.pieces.axes import Kind

    folder, good = _bert(tmp_path)
    graph = attrs.evolve(good.graphs["monolith"], inputs=(*good.graphs["monolith"].inputs, tensor("unused_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT)))
    wrong = attrs.evolve(with_graph(good, Behavior.MONOLITH, graph), generators={**good.generators, "unused_ids": generators.zeros})
    out = tmp_path / "onnx"
    with pytest.raises(ValidationError) as info:
        export(folder, out, spec=wrong)
    message = str(info.value)
    assert "missing ['unused_ids']" in message and "not run against PyTorch" in message, message
    assert not os.path.exists(out)


def test_an_export_run_without_any_shape_set_is_never_reported_as_passed(tmp_path) -> None:
    """``validation_shapes=()`` (the benchmarks' export-only mode) writes the graph but the report
    says it was not validated, and so not passed."""
    import json

    folder, _ = _bert(tmp_path)
    out = tmp_path / "onnx"
    report = export(folder, out, task="feature-extraction", validation_shapes=())
    assert not report.validated and not report.passed and not report.failures
    assert os.path.isfile(out / "model.onnx")
    written = json.loads((out / "onnxspec_report.json").read_text())
    assert written["validated"] is False and written["passed"] is False
    checked = export(folder, tmp_path / "checked", task="feature-extraction")
    assert checked.validated and checked.passed
