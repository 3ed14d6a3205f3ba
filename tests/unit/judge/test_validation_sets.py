"""Validation's shape sets: PyTorch's float64 run is made at one set (``large``), and the bounds
at the others come from the noise measured there (a tiny llama with past, a stand-in session)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np
import pytest
import torch

import onnxspec.judge.validate as validate_module
from onnxspec.build.wrappers import graph_module
from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.judge.validate import calibrating_set, validate_with_references
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import bind, plan


@attrs.frozen(kw_only=True, eq=False)
class _TorchSession:
    """onnxruntime's place taken by the module itself in float32, with ``wrong`` added to
    ``output`` at calls whose ``input_ids`` have ``length`` tokens (a graph wrong there only)."""

    module: torch.nn.Module
    outputs: tuple[str, ...]
    wrong: float = 0.0
    output: str = "logits"
    length: int = -1

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            got = [t.numpy().copy() for t in self.module(*(torch.from_numpy(a) for a in feed.values()))]
        if feed["input_ids"].shape[1] == self.length:
            got[self.outputs.index(self.output)] += self.wrong
        return [got[self.outputs.index(n)] for n in names]


@pytest.fixture(scope="module")
def llama() -> tuple[torch.nn.Module, object]:
    from tests.tiny import tiny_model

    model = tiny_model("llama", "text-generation").eval()
    spec = bind(spec_for(REGISTRY, "llama", "text-generation-with-past"), model.config)
    graph = plan(spec)[0]
    return graph_module(model, graph), graph


def _validate(llama, monkeypatch, **wrong):  # type: ignore[no-untyped-def]
    module, graph = llama
    made = []
    real = validate_module._references

    def counted(module, feeds, wanted, dtype):  # type: ignore[no-untyped-def]
        made.append([tuple(f["input_ids"].shape) for f in feeds])
        return real(module, feeds, wanted, dtype)

    monkeypatch.setattr(validate_module, "_references", counted)
    session = _TorchSession(module=module, outputs=tuple(t.name for t in graph.outputs), **wrong)
    checks, problems, _, ran = validate_with_references(session, module, graph, Shapes(), DTypes(), 0, "model.onnx")
    return checks, problems, ran, made


def test_float64_runs_at_the_large_set_only_and_calibrates_the_others(llama, monkeypatch) -> None:
    checks, problems, ran, made = _validate(llama, monkeypatch)
    assert made == [[(3, 23)]]  # one float64 forward: the prompt of 3 rows of 23 tokens
    assert [f is None for f in ran.float64] == [True, False, True]
    assert not problems and all(c.passed for c in checks)
    assert [c.shape_set for c in checks[:: len(checks) // 3]] == ["small", "large", "decode"]  # reported in set order
    for c in checks:
        assert c.criterion == "noise" and c.noise > 0
        if c.shape_set == "large":
            assert c.reference == "float64" and not c.note
        else:  # against PyTorch's float32, the noise measured at large
            assert c.reference == "torch" and "float64 at large" in c.note
            assert c.error == c.max_abs and c.error < c.bound


@pytest.mark.parametrize("length", [1, 23])
def test_a_graph_wrong_at_one_set_fails_there(llama, monkeypatch, length: int) -> None:
    """1e-4 added to every logit (their size is ~0.4): caught at the set it happens at, with or
    without the float64 run there; the small set (batch 1) and the decode set (batch 3) both
    have one token, so both are wrong when ``length`` is 1."""
    checks, _, _, _ = _validate(llama, monkeypatch, wrong=1e-4, length=length)
    failed = {c.shape_set for c in checks if not c.passed}
    assert failed == ({"large"} if length == 23 else {"small", "decode"})
    assert all(c.output == "logits" for c in checks if not c.passed)


def test_the_calibrating_set_is_the_one_with_the_most_positions_not_the_largest_cache() -> None:
    prompt = {"input_ids": torch.zeros(3, 23), "past_key_values.0.key": torch.zeros(3, 2, 0, 16)}
    decode = {"input_ids": torch.zeros(3, 1), "past_key_values.0.key": torch.zeros(3, 2, 13, 16)}
    assert calibrating_set([decode, prompt, decode]) == 1
    assert calibrating_set([{"pixel_values": torch.zeros(1, 3, 8, 8)}]) == 0


def test_the_float64_run_follows_the_float32_run_at_the_same_set(llama, monkeypatch) -> None:
    """A module keeping state from its longest call so far (dynamic NTK rotary) must be in the
    same state for both runs at the float64 set: the next set's float32 run comes after them."""
    module, _ = llama
    calls = []
    handle = module.register_forward_pre_hook(lambda m, args: calls.append((tuple(args[0].shape), args[3].dtype)))
    try:
        _validate(llama, monkeypatch)
    finally:
        handle.remove()
    prompt = (3, 23)  # then the stand-in session runs the module at each set, in float32
    assert calls[:4] == [((1, 1), torch.float32), (prompt, torch.float32), (prompt, torch.float64), ((3, 1), torch.float32)]


@attrs.frozen(kw_only=True, eq=False)
class _Recording:
    """onnxruntime's place taken by the module itself, keeping each feed it was given."""

    module: torch.nn.Module
    outputs: tuple[str, ...]
    fed: list = attrs.field(factory=list)

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.fed.append({n: a.copy() for n, a in feed.items()})
        with torch.no_grad():
            got = [t.numpy().copy() for t in self.module(*(torch.from_numpy(a) for a in feed.values()))]
        return [got[self.outputs.index(n)] for n in names]


def test_a_graph_varying_with_the_batch_only_is_fed_small_shapes_at_decode_with_other_values() -> None:
    """A ViT of a fixed image size: decode (large's batch, one token, a longer past) would feed it
    large's shapes again; it is fed small's, at values of its own, and every set is judged."""
    from tests.tiny import tiny_model

    model = tiny_model("vit", "image-classification").eval()
    graph = plan(bind(spec_for(REGISTRY, "vit", "image-classification"), model.config))[0]
    module = graph_module(model, graph)
    session = _Recording(module=module, outputs=tuple(t.name for t in graph.outputs))
    checks, problems, _, _ = validate_with_references(session, module, graph, Shapes(), DTypes(), 0, "model.onnx")
    small, large, decode = (f["pixel_values"] for f in session.fed)
    assert small.shape[0] == decode.shape[0] == 1 and large.shape[0] == 3
    assert not np.array_equal(small, decode)
    assert {c.shape_set for c in checks} == {"small", "large", "decode"}
    assert not problems and all(c.passed for c in checks)


def test_a_graph_with_a_past_still_decodes_at_large_batch(llama) -> None:
    """decode differs from large by its past: it keeps large's batch, padded rows after a past."""
    module, graph = llama
    session = _Recording(module=module, outputs=tuple(t.name for t in graph.outputs))
    checks, problems, _, _ = validate_with_references(session, module, graph, Shapes(), DTypes(), 0, "model.onnx")
    assert [f["input_ids"].shape for f in session.fed] == [(1, 1), (3, 23), (3, 1)]
    assert [c.shape_set for c in checks[:: len(checks) // 3]] == ["small", "large", "decode"]  # reported in set order
    assert not problems and all(c.passed for c in checks)
