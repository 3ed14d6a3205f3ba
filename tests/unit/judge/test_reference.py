"""Float64 references alone: in-place conversion and exact restore, memory estimate."""

from __future__ import annotations

import pytest
import torch

from onnxspec.judge.reference import float64_bytes, float64_room, in_float64, to_float64


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
