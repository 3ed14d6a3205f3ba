"""Longformer's tracing patches compute what transformers computes, and its spec is Optimum's contract.

The patches replace transformers' padding and self-attention while tracing; here they run eagerly
on a tiny model (window 4) and must give transformers' hidden states at lengths below, at and
above multiples of the window, with no global token, one, several and different counts per row.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from onnxspec.catalog.longformer import PATCHES, global_attention_mask
from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.axes import Kind, spec
from onnxspec.pieces.generators import context
from onnxspec.pieces.patches import patched
from onnxspec.pieces.shapes import DTypes, Shapes
from tests.tiny import CONFIGS


@pytest.fixture(scope="module", params=[None, [8, 4]], ids=["window-4", "windows-8-4"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    """The tiny model (a window of 4 in both layers), and one whose layers have windows of their own
    (the sequence is padded to a multiple of the largest)."""
    config = CONFIGS["longformer"]()
    assert config.attention_window == 4
    if request.param is not None:
        config.attention_window = request.param
    torch.manual_seed(0)
    return T.LongformerModel(config).eval()


def _masks(batch: int, length: int, globals_per_row: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, max(1, length // 2):] = 0  # the second row is padded on the right
    marked = torch.zeros(batch, length, dtype=torch.long)
    for row, positions in enumerate(globals_per_row):
        marked[row, [p for p in positions if p < length]] = 1
    return mask, marked * mask


@pytest.mark.parametrize("length", [1, 3, 4, 5, 8, 9, 13])
@pytest.mark.parametrize("globals_per_row", [[[], [], []], [[0], [], []], [[0, 2], [1], [4, 5, 6, 7, 8]]], ids=["none", "one", "mixed"])
def test_patched_attention_equals_transformers(model: torch.nn.Module, length: int, globals_per_row: list[list[int]]) -> None:
    config = model.config
    ids = torch.randint(3, config.vocab_size, (3, length), generator=torch.Generator().manual_seed(length))
    mask, marked = _masks(3, length, globals_per_row)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, global_attention_mask=marked).last_hidden_state
        with patched(PATCHES):
            got = model(input_ids=ids, attention_mask=mask, global_attention_mask=marked).last_hidden_state
    assert got.shape == want.shape == (3, length, config.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_patches_are_the_attention_that_runs(model: torch.nn.Module) -> None:
    """A wrong band (keys one position off) changes the hidden states: the comparison above can fail."""
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    mask, marked = _masks(2, 9, [[0], []])
    layer = model.longformer.encoder.layer[0] if hasattr(model, "longformer") else model.encoder.layer[0]
    attention = layer.attention.self
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, global_attention_mask=marked).last_hidden_state
        original = attention.one_sided_attn_window_size
        try:
            with patched(PATCHES):
                attention.one_sided_attn_window_size = original // 2  # a narrower band than the model's
                got = model(input_ids=ids, attention_mask=mask, global_attention_mask=marked).last_hidden_state
        finally:
            attention.one_sided_attn_window_size = original
    assert not torch.allclose(got, want, atol=1e-3)


def test_every_optimum_task_takes_the_global_attention_mask_and_is_patched() -> None:
    assert not any(mt == "longformer" for mt, _ in UNSUPPORTED)
    assert set(REGISTRY["longformer"].tasks) == {
        "feature-extraction", "fill-mask", "multiple-choice", "question-answering", "text-classification", "token-classification",
    }
    for task in REGISTRY["longformer"].tasks:
        made = spec_for(REGISTRY, "longformer", task)
        [graph] = made.graphs.values()
        assert [t.name for t in graph.inputs] == ["input_ids", "attention_mask", "token_type_ids", "global_attention_mask"], task
        axes = {t.name: t.dynamic_axes for t in graph.inputs}
        assert axes["global_attention_mask"] == axes["attention_mask"], task
        assert set(PATCHES) <= set(made.patches), task


def test_global_attention_mask_marks_kept_tokens_with_counts_that_differ_by_row() -> None:
    tensor = spec("global_attention_mask", {0: "batch_size", 1: "sequence_length"}, Kind.INT)
    ctx = context(Shapes(batch_size=8, sequence_length=12), DTypes(), {"vocab_size": 100})
    kept = torch.ones(8, 12, dtype=torch.long)
    kept[1:, 6:] = 0
    made = global_attention_mask(tensor, ctx, torch.Generator().manual_seed(0), {"attention_mask": kept})
    assert made.shape == (8, 12) and made.dtype == kept.dtype
    assert set(made.unique().tolist()) <= {0, 1}
    assert not (made.bool() & ~kept.bool()).any()  # only tokens the mask keeps
    assert made[0, 0] == 1
    counts = made.sum(1).tolist()
    assert len(set(counts)) > 1 and 0 in counts[1:], counts
