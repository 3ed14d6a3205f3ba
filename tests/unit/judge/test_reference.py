"""Float64 references alone: in-place and streamed conversion, exact restore, memory estimate."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

from onnxspec.judge.reference import float64_bytes, float64_plan, float64_room, in_float64, streamed_float64, to_float64


def _tied() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    m[1].weight = m[0].weight  # tied, as an lm_head and its embeddings
    m.register_buffer("scale", torch.tensor([0.5], dtype=torch.float16))
    m.register_buffer("ids", torch.arange(3))
    return m


def test_in_float64_converts_every_floating_tensor_and_restores_them_bit_for_bit() -> None:
    m = _tied()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    weight = m[0].weight
    with in_float64(m):
        assert m[0].weight.dtype is torch.float64 and m[1].weight is m[0].weight  # still tied
        assert m.scale.dtype is torch.float64 and m.ids.dtype is torch.int64
        out = m[1](m[0](torch.tensor([1, 2])))
        assert out.dtype is torch.float64
    assert m[0].weight is weight  # the same Parameter object, as the caller holds it
    for k, v in m.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


def test_in_float64_restores_on_error() -> None:
    m = _tied()
    with pytest.raises(RuntimeError, match="boom"):
        with in_float64(m):
            raise RuntimeError("boom")
    assert m[0].weight.dtype is torch.float32 and m.scale.dtype is torch.float16


def test_float64_bytes_counts_tied_weights_once() -> None:
    m = _tied()
    assert float64_bytes(m) == (10 * 4 + 10 + 1) * 8  # embedding (shared), bias, scale


def test_float64_room_refuses_what_does_not_fit(monkeypatch) -> None:
    m = _tied()
    monkeypatch.setattr("onnxspec.judge.reference.available_memory", lambda: 10)
    assert "GiB is available" in float64_room(m)
    monkeypatch.setattr("onnxspec.judge.reference.available_memory", lambda: 10**12)
    assert float64_room(m) == ""


def test_to_float64_leaves_integers() -> None:
    a, b = to_float64((torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=torch.int64)))
    assert a.dtype is torch.float64 and b.dtype is torch.int64


def test_finfo_of_gives_the_export_dtype_limits_to_float64_only() -> None:
    from onnxspec.pieces.patches import patched
    from onnxspec.judge.reference import finfo_of

    real_min = torch.finfo(torch.float64).min
    with patched([finfo_of(torch.float32)]):
        assert torch.finfo(torch.float64).min == torch.finfo(torch.float32).min
        assert torch.finfo(torch.float16).max == 65504.0  # other dtypes answer for themselves
    assert torch.finfo(torch.float64).min == real_min  # restored


def test_a_float64_mask_cast_to_float32_would_be_minus_infinity() -> None:
    """Why finfo_of exists: a model running softmax in float32 over a float64 mask sees -inf,
    and a fully masked row becomes NaN; with the export dtype's fill value it stays finite."""
    from onnxspec.pieces.patches import patched
    from onnxspec.judge.reference import finfo_of

    scores = torch.zeros(1, 3, dtype=torch.float64)
    fill = torch.finfo(torch.float64).min
    assert torch.isnan(torch.softmax((scores + fill).float(), -1)).all()
    with patched([finfo_of(torch.float32)]):
        fill = torch.finfo(torch.float64).min
    assert torch.isfinite(torch.softmax((scores + fill).float(), -1)).all()


# ---------------------------------------------------------------- streamed float64


def _flat(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return []


def _tiny_inputs(model_type: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[0, :3] = 0  # left padding: the mask's fill value matters
    if model_type == "vit":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)}
    if model_type == "t5":
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": ids[:, :4]}
    return {"input_ids": ids, "attention_mask": mask}


def _run(model: torch.nn.Module, inputs: dict[str, torch.Tensor], how) -> list[torch.Tensor]:
    from onnxspec.pieces.patches import patched
    from onnxspec.judge.reference import finfo_of

    with how(model), patched([finfo_of(torch.float32)]), torch.no_grad():
        return _flat(model(**inputs))


@pytest.mark.parametrize(
    ("model_type", "task"),
    [("llama", "text-generation"), ("gemma3_text", "text-generation"), ("gpt2", "text-generation"), ("bert", "fill-mask"),
     ("t5", "text2text-generation"), ("vit", "image-classification")],
)
def test_streamed_float64_is_bit_identical_to_the_whole_model_in_float64(model_type: str, task: str) -> None:
    from tests.tiny import tiny_model

    model = tiny_model(model_type, task).eval()
    before = {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict().items()}
    inputs = _tiny_inputs(model_type)
    streamed = _run(model, inputs, streamed_float64)
    for k, v in model.state_dict().items():  # the very same storage again, bit for bit
        assert v.dtype == before[k][0].dtype and torch.equal(v, before[k][0]) and v.data_ptr() == before[k][1], k
    whole = _run(model, inputs, in_float64)
    assert whole and len(streamed) == len(whole)
    for a, b in zip(whole, streamed):
        assert a.dtype is torch.float64 and b.dtype is torch.float64 and torch.equal(a, b)


def _parent_uses_children_weights() -> torch.nn.Module:
    """An lm_head as F.linear on the tied embedding's weight, a norm's weight read by the parent,
    a buffer read by the parent, and ``dtype`` read from the first parameter: each outside the
    forward of the module that owns it."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(10, 4)
    model.norm = torch.nn.LayerNorm(4)
    model.proj = torch.nn.Linear(4, 4)
    model.norm.register_buffer("scale", torch.tensor([0.3]))

    def forward(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = model.embed(ids).to(next(model.parameters()).dtype)  # what a model's ``self.dtype`` does
        h = model.proj(h) * (1 + model.norm.weight) * model.norm.scale
        logits = torch.nn.functional.linear(h, model.embed.weight)
        return logits, torch.zeros(2, dtype=model.proj.weight.dtype)

    model.forward = forward
    return model


def test_streamed_float64_follows_weights_used_outside_their_module() -> None:
    model = _parent_uses_children_weights()
    ids = torch.tensor([[1, 2, 3]])
    with in_float64(model), torch.no_grad():
        whole = model(ids)
    with streamed_float64(model) as seen, torch.no_grad():
        streamed = model(ids)
    assert seen.outside == {"embed.weight", "norm.weight", "norm.scale", "proj.weight"}
    for a, b in zip(whole, streamed):
        assert a.dtype is torch.float64 and torch.equal(a, b)
    assert all(t.dtype is torch.float32 for t in (*model.parameters(), *model.buffers()))


def test_streamed_float64_holds_only_the_running_modules_in_float64() -> None:
    from tests.tiny import tiny_model

    model = tiny_model("llama", "text-generation").eval()
    owner = {id(t): m for m in model.modules() for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))}
    running: list[torch.nn.Module] = []
    worst = [0]

    def enter(module: torch.nn.Module, *_: object) -> None:
        running.append(module)
        # ``.data``: the storage as it is (the streaming makes ``dtype`` itself read float64 everywhere)
        wide = [t for t in (*model.parameters(), *model.buffers()) if t.data.dtype is torch.float64]
        assert all(owner[id(t)] in running for t in wide), "a module not running holds float64 weights"
        worst[0] = max(worst[0], sum(t.numel() for t in wide))

    def leave(module: torch.nn.Module, *_: object) -> None:
        running.remove(module)

    with streamed_float64(model), torch.no_grad():  # registered after the streaming hooks: they run after them
        handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
        try:
            model(**_tiny_inputs("llama"))
        finally:
            for h in handles:
                h.remove()
    total = sum(t.numel() for t in model.parameters())
    assert 0 < worst[0] < total / 5


def test_streamed_float64_restores_every_tensor_on_error() -> None:
    model = _tied()
    model[1].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    storage = model[0].weight.data_ptr()
    with pytest.raises(RuntimeError, match="boom"):
        with streamed_float64(model), torch.no_grad():
            model(torch.tensor([1, 2]))
    assert model[0].weight.dtype is torch.float32 and model[0].weight.data_ptr() == storage and model.scale.dtype is torch.float16


def test_what_cannot_stream_falls_back_to_the_whole_model_and_says_so() -> None:
    from onnxspec.judge.validate import _references

    scripted = torch.nn.Sequential(torch.jit.script(torch.nn.Linear(3, 2)))
    assert "TorchScript" in float64_plan(scripted)
    feeds = [{"x": torch.ones(1, 3)}]
    runs, why_not, how = _references(scripted, feeds, True, torch.float32)
    assert why_not == "" and how.startswith("whole model: TorchScript") and runs[0][0].dtype == np.float64
    plain = torch.nn.Sequential(torch.nn.Linear(3, 2))
    plain[0].weight.data.copy_(scripted[0].weight.data)
    plain[0].bias.data.copy_(scripted[0].bias.data)
    runs_streamed, _, how = _references(plain, feeds, True, torch.float32)
    assert how == "streamed" and np.array_equal(runs_streamed[0][0], runs[0][0])


def test_streaming_needs_far_less_room_than_the_whole_model() -> None:
    from tests.tiny import tiny_model

    model = tiny_model("llama", "text-generation")
    whole = float64_bytes(model) - sum(t.numel() * t.element_size() for t in model.parameters())
    from onnxspec.judge.reference import _streamed_need

    assert _streamed_need(model) < whole


# ---------------------------------------------------------------- judging large outputs in slices


def _same(a: object, b: object) -> bool:
    """Every field equal, NaN equal to NaN (no reference: no noise)."""
    pairs = zip(attrs.astuple(a), attrs.astuple(b))
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y) for x, y in pairs)


@pytest.mark.parametrize("with_reference", [True, False])
@pytest.mark.parametrize("kind", ["noise", "tolerance"])
def test_judging_in_slices_gives_the_verdict_of_judging_everything(kind: str, with_reference: bool) -> None:
    from onnxspec.judge.validate import judge_in_chunks
    from onnxspec.pieces.criteria import NoiseBound, Tolerance, judge

    rng = np.random.default_rng(0)
    expected = rng.standard_normal((3, 5, 1001)).astype(np.float32)
    expected[0, 0, 7] = 1e-9  # a relative difference blown up by a tiny value, in the first slice
    reference = expected.astype(np.float64) + rng.standard_normal(expected.shape) * 1e-7
    reference[1, 2, 300] += 5e-5  # PyTorch's own error is largest here, and nowhere else stands out
    got = (expected + rng.standard_normal(expected.shape).astype(np.float32) * 1e-6).astype(np.float32)
    got[2, 4, 1000] += 3e-4  # the worst element sits in the last slice
    criterion = NoiseBound(factor=64, floor=0, fallback=Tolerance(atol=1e-4)) if kind == "noise" else Tolerance(atol=1e-5, rtol=1e-3)
    ref = reference if with_reference else None
    whole = judge(expected, got, criterion, ref, no_reference="none")
    for chunk in (1000, 4096, 7, expected.size):
        sliced = judge_in_chunks(expected, got, criterion, ref, no_reference="none", chunk=chunk)
        assert attrs.asdict(sliced) == attrs.asdict(whole) or _same(sliced, whole), chunk
    assert whole.max_abs > 2.9e-4 and whole.max_rel > 1e2
