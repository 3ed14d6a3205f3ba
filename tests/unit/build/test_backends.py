"""Choosing a backend (the caller's, the spec's, the dtype's default), when TorchScript falls back
to dynamo, and how a backend failure is told: pure pieces, no export."""

from __future__ import annotations

import attrs
import pytest

from onnxspec.errors import BackendError, ExportError, SpecError, TraceError
from onnxspec.build.exporters import Backend, available_backends, backends_to_try, one_line
from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import _choose_backend
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes
from onnxspec.pipeline.stages import Stage, run_stages

SPEC = spec_for(REGISTRY, "bert", "feature-extraction")
HAS_DYNAMO = Backend.DYNAMO in available_backends()
needs_dynamo = pytest.mark.skipif(not HAS_DYNAMO, reason="the dynamo exporter (onnxscript, onnx-ir) is not installed")


def test_a_spec_backend_must_be_a_backend() -> None:
    assert SPEC.backend is None
    assert attrs.evolve(SPEC, backend="dynamo").backend == "dynamo"
    with pytest.raises(SpecError, match=r"bert/feature-extraction.*backend must be one of \['torchscript', 'dynamo'\].*'tensorrt'"):
        attrs.evolve(SPEC, backend="tensorrt")


@needs_dynamo
@pytest.mark.parametrize(
    ("requested", "preferred", "dtype", "chosen", "named"),
    [
        (None, None, "fp32", Backend.TORCHSCRIPT, False),  # the default
        (None, "dynamo", "fp32", Backend.DYNAMO, True),  # the spec's choice
        ("torchscript", "dynamo", "fp32", Backend.TORCHSCRIPT, True),  # the caller wins over the spec
        (Backend.DYNAMO, "torchscript", "fp32", Backend.DYNAMO, True),
        (None, None, "fp16", Backend.DYNAMO, False),  # fp16's default
        (None, "torchscript", "fp16", Backend.TORCHSCRIPT, True),  # a named backend is not second-guessed
        (None, None, "bf16", Backend.DYNAMO, False),
        (None, "dynamo", "bf16", Backend.DYNAMO, True),
    ],
)
def test_the_backend_is_the_callers_then_the_specs_then_the_default(
    requested: str | None, preferred: str | None, dtype: str, chosen: Backend, named: bool
) -> None:
    spec = attrs.evolve(SPEC, backend=preferred)
    assert _choose_backend(requested, spec, DTypes(float_dtype=dtype)) == (chosen, named)


@pytest.mark.parametrize(("requested", "preferred", "who"), [("torchscript", None, "you asked for"), (None, "torchscript", "spec bert/feature-extraction asks for")])
def test_bf16_refuses_torchscript_saying_who_asked(requested: str | None, preferred: str | None, who: str) -> None:
    spec = attrs.evolve(SPEC, backend=preferred)
    with pytest.raises(SpecError, match=rf"bf16 is exported with the dynamo backend only, but {who} 'torchscript'"):
        _choose_backend(requested, spec, DTypes(float_dtype="bf16"))


@needs_dynamo
def test_only_a_default_torchscript_falls_back_to_dynamo() -> None:
    assert backends_to_try(Backend.TORCHSCRIPT, named=False) == (Backend.TORCHSCRIPT, Backend.DYNAMO)
    assert backends_to_try(Backend.TORCHSCRIPT, named=True) == (Backend.TORCHSCRIPT,)
    assert backends_to_try(Backend.DYNAMO, named=False) == (Backend.DYNAMO,)
    assert backends_to_try(Backend.DYNAMO, named=True) == (Backend.DYNAMO,)


def test_one_line_is_the_innermost_cause_first_line() -> None:
    try:
        try:
            raise KeyError("aten::copy\n" + "graph(%x : Float) ...\n" * 1000)
        except KeyError as inner:
            raise RuntimeError("Failed to export the model with torch.export. This is step 1/3") from inner
    except RuntimeError as e:
        assert one_line(e) == "KeyError: aten::copy"
    assert one_line(ValueError("x" * 1000), limit=40) == "ValueError: " + "x" * 25 + "..."
    assert one_line(ValueError()) == "ValueError: (no message)"


def _failure(backend: str, reason: str) -> BackendError:
    return BackendError(backend, reason, details=f"{backend} IR dump\n" * 500)


def test_a_trace_error_is_one_line_naming_graph_backend_reason_and_fix() -> None:
    e = TraceError("phi3/text-generation", "model.onnx", (_failure("torchscript", "UnsupportedOperatorError: aten::copy"),),
                   "pass --backend dynamo")
    assert str(e) == ("phi3/text-generation: the torchscript exporter cannot trace model.onnx: "
                      "UnsupportedOperatorError: aten::copy; pass --backend dynamo")
    placed = e.located("trace (model.onnx)", ("resolve", "load:m"))
    assert isinstance(placed, ExportError) and placed.stage == "trace (model.onnx)"
    assert "\n" not in str(placed) and str(placed).startswith("stage 'trace (model.onnx)' failed (stages done: resolve, load:m): phi3/")
    assert "IR dump" not in str(placed) and placed.details.count("torchscript IR dump") == 500


def test_two_failures_are_one_line_each() -> None:
    e = TraceError("m/t", "model.onnx", (_failure("torchscript", "A: one"), _failure("dynamo", "B: two")), "give it a Patch")
    assert str(e).splitlines() == ["m/t: no exporter can trace model.onnx:", "  - torchscript: A: one",
                                   "  - dynamo (tried next): B: two", "give it a Patch"]
    assert "--- the torchscript exporter on model.onnx ---" in e.details and "--- the dynamo exporter on model.onnx ---" in e.details


def test_the_runner_places_a_trace_error_in_its_stage() -> None:
    cause = _failure("torchscript", "A: one")

    def trace(state: tuple[int, ...]) -> tuple[int, ...]:
        raise TraceError("m/t", "model.onnx", (cause,), "fix it") from cause

    with pytest.raises(TraceError) as info:
        run_stages((Stage(name="resolve", run=lambda s: s), Stage(name="trace", detail="model.onnx", run=trace)), ())
    assert info.value.stage == "trace (model.onnx)" and info.value.done == ("resolve",)
    assert info.value.__cause__ is cause
    assert str(info.value) == "stage 'trace (model.onnx)' failed (stages done: resolve): m/t: the torchscript exporter cannot trace model.onnx: A: one; fix it"
