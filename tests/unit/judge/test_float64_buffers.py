"""The streamed float64 reference converts into reused buffers, and never into one still read."""

from __future__ import annotations

import pytest
import torch

from onnxspec.judge.reference import in_float64, streamed_float64


class _Seen(torch.nn.Module):
    """A linear layer that records where its weight's float64 storage lives when it runs."""

    def __init__(self, log: list[int], give_view: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 4))
        self.log, self.give_view = log, give_view

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.log.append(self.weight.data_ptr())
        return x @ self.weight, (self.weight[:2] if self.give_view else None)


def _chain(give_view: bool) -> tuple[torch.nn.Module, list[int]]:
    torch.manual_seed(0)
    log: list[int] = []
    blocks = torch.nn.ModuleList([_Seen(log, give_view=give_view and k == 0) for k in range(3)])

    model = torch.nn.Module()
    model.blocks = blocks

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        escaped = None
        for block in blocks:
            x, view = block(x)
            escaped = view if view is not None else escaped
        return x, escaped

    model.forward = forward
    return model, log


def _counting_new_copies(monkeypatch: pytest.MonkeyPatch) -> list[torch.Size]:
    """The shapes of the float64 copies made with fresh memory (``Tensor.to``) from now on."""
    made: list[torch.Size] = []
    real = torch.Tensor.to
    inside: list[bool] = []

    def to(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        # a torch function mode hands the call back to this wrapper once more: count it once
        if not inside and (torch.float64 in args or kwargs.get("dtype") is torch.float64):
            made.append(self.shape)
        inside.append(True)
        try:
            return real(self, *args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(torch.Tensor, "to", to)
    return made


def test_blocks_of_one_shape_convert_into_one_buffer_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    model, log = _chain(give_view=False)
    x = torch.randn(2, 4, dtype=torch.float64)
    made = _counting_new_copies(monkeypatch)
    with torch.no_grad(), streamed_float64(model):
        first, _ = model(x)
        second, _ = model(x)
    assert made == [torch.Size([4, 4])], "six block calls, one fresh float64 buffer: the others reuse it"
    assert len(set(log)) == 1
    monkeypatch.undo()
    with torch.no_grad(), in_float64(model):
        whole, _ = model(x)
    assert first.dtype is torch.float64 and torch.equal(first, whole) and torch.equal(second, whole)
    assert all(b.weight.dtype is torch.float32 for b in model.blocks)


def test_a_buffer_a_view_escaped_with_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    model, log = _chain(give_view=True)
    made = _counting_new_copies(monkeypatch)
    with torch.no_grad(), streamed_float64(model):
        _, escaped = model(torch.randn(2, 4, dtype=torch.float64))
    monkeypatch.undo()
    assert len(made) == 2, "the first block's buffer is still read through the view it returned: the second needs its own"
    assert log[1] != log[0] and log[2] == log[1]
    assert escaped.dtype is torch.float64 and torch.equal(escaped, model.blocks[0].weight[:2].double())


def test_an_embedding_lookup_widens_only_its_rows() -> None:
    torch.manual_seed(0)
    embed = torch.nn.Embedding(50, 8)
    seen: list[torch.dtype] = []
    embed.register_forward_pre_hook(lambda m, _: seen.append(m.weight.data.dtype))
    ids = torch.tensor([[3, 7, 49]])
    with torch.no_grad(), streamed_float64(embed):
        rows = embed(ids)
    assert seen == [torch.float32], "the lookup table itself stays in float32"
    assert rows.dtype is torch.float64 and torch.equal(rows, embed.weight[ids].double())
