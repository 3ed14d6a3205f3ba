"""Longformer in one graph for every sequence length and every global attention mask.

transformers' Longformer decides three things in Python from the inputs it is called with, and a
TorchScript trace keeps whatever the traced inputs decided:

- ``LongformerModel._pad_to_window_size`` pads the sequence to a multiple of ``attention_window``
  only ``if padding_len > 0``: a graph traced at a multiple never pads (traced at 16 tokens with a
  window of 4 it fails at 1 token);
- ``LongformerSelfAttention`` cuts the sequence into overlapping chunks with ``as_strided`` over
  strides and sizes computed in Python (``_chunk``, ``_sliding_chunks_matmul_attn_probs_value``);
- global attention runs only ``if is_global_attn`` (``any().item()`` of the mask: a constant in
  the trace), and sizes its tensors by the largest number of global tokens in the batch, read
  through ``len()`` of ``nonzero`` results.

:data:`PATCHES` replaces the first two methods while tracing: the padding amount is always
computed and applied (it may be 0), and the attention is computed with reshapes of blocks of
``w = attention_window // 2`` tokens (each block of queries meets the keys of its own block and
its two neighbours; the band of offsets ``-w .. w`` is cut from those scores by the
pad-and-reshape skew, so no size is computed in Python). Global attention always runs: the
global tokens of each row are gathered into ``G`` slots, ``G`` the largest count in the batch,
computed in the graph (at least 1: an empty, masked slot when no token is global gives the same
result as transformers' local-only branch). The sums are transformers': the same local band, the same global keys in front of it
under one softmax, the same separate projections for the global tokens' own outputs.

The graphs take Optimum's inputs (``input_ids``, ``attention_mask``, ``token_type_ids``,
``global_attention_mask``); unlike Optimum's dummy (all zeros) the mask onnxspec traces and
validates with marks a varying number of global tokens per row, so the global branch is what is
checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from onnxspec.catalog.families import text_encoder
from onnxspec.errors import SpecError
from onnxspec.pieces.axes import Kind, spec
from onnxspec.pieces.generators import DummyContext, dynamic_shape
from onnxspec.pieces.patches import Patch
from onnxspec.pieces.spec import ModelSpec, TensorSpec

__all__ = ["PATCHES", "global_attention_mask", "longformer", "pad_to_window", "sliding_window_attention"]

_MODULE = "transformers.models.longformer.modeling_longformer"


def _window(config: Any) -> int:
    window = config.attention_window
    return window if isinstance(window, int) else max(window)


def pad_to_window(
    self: Any,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    position_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    pad_token_id: int,
) -> tuple[Any, ...]:
    """``LongformerModel._pad_to_window_size`` without its ``if``: the padding amount is computed
    from the traced sequence length (TorchScript records the arithmetic on it, torch.export keeps it
    symbolic) and always applied (a pad of 0 leaves the inputs as they are), so the graph pads every
    length to the next multiple of the largest ``attention_window``."""
    window = _window(self.config)
    length = (input_ids if input_ids is not None else inputs_embeds).shape[1]  # a traced size: a tensor or a SymInt
    padding = (window - length % window) % window
    pad = (0, padding)
    if input_ids is not None:
        input_ids = torch.nn.functional.pad(input_ids, pad, value=pad_token_id)
    if position_ids is not None:
        position_ids = torch.nn.functional.pad(position_ids, pad, value=pad_token_id)
    if inputs_embeds is not None:
        ids = inputs_embeds.new_full((inputs_embeds.shape[0], padding), self.config.pad_token_id, dtype=torch.long)
        inputs_embeds = torch.cat([inputs_embeds, self.embeddings(ids)], dim=-2)
    attention_mask = torch.nn.functional.pad(attention_mask, pad, value=0)
    token_type_ids = torch.nn.functional.pad(token_type_ids, pad, value=0)
    return padding, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds


def _neighbours(blocks: torch.Tensor) -> torch.Tensor:
    """``(b, m, w, ...)`` blocks -> ``(b, m, 3w, ...)``: each block with the one before and after
    it (zeros beyond the ends)."""
    padded = torch.nn.functional.pad(blocks, (0, 0) * (blocks.dim() - 2) + (1, 1))  # one zero block at each end of axis 1
    return torch.cat((padded[:, :-2], padded[:, 1:-1], padded[:, 2:]), dim=2)


def _band(scores: torch.Tensor, w: int) -> torch.Tensor:
    """``(..., w, 3w)`` scores of a block's queries against its neighbourhood -> ``(..., w, 2w + 1)``:
    query ``x`` keeps keys ``x .. x + 2w`` (offsets ``-w .. w``), by padding each row and reading
    the flat buffer with a row length one longer (the skew)."""
    lead = scores.shape[:-2]
    flat = torch.nn.functional.pad(scores.reshape(*lead, -1), (0, w))
    return flat.reshape(*lead, w, 3 * w + 1)[..., : 2 * w + 1]


def _unband(probs: torch.Tensor, w: int) -> torch.Tensor:
    """The inverse of :func:`_band`: ``(..., w, 2w + 1)`` -> ``(..., w, 3w)`` with zeros off the band."""
    lead = probs.shape[:-2]
    flat = torch.nn.functional.pad(probs, (0, w)).reshape(*lead, -1)
    return flat[..., : -w].reshape(*lead, w, 3 * w)


def sliding_window_attention(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    is_index_masked: torch.Tensor | None = None,
    is_index_global_attn: torch.Tensor | None = None,
    is_global_attn: bool | None = None,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, ...]:
    """``LongformerSelfAttention.forward`` with every size taken from the tensors.

    ``hidden_states`` ``(b, n, e)``, ``n`` a multiple of the window; ``attention_mask`` is
    transformers' additive mask (0 local, the dtype's min for padding, its max for global tokens).
    Returns the attention output ``(b, n, e)``; ``is_global_attn`` is ignored (global attention
    always runs, over ``G >= 1`` slots).
    """
    if output_attentions:
        raise SpecError(
            "Longformer's traced attention returns no attention probabilities (output_attentions); "
            "export without them (onnxspec's graphs never ask for them)"
        )
    b, n, e = hidden_states.shape
    h, d, w = self.num_heads, self.head_dim, self.one_sided_attn_window_size
    dtype = hidden_states.dtype
    lowest = torch.finfo(dtype).min
    scale = math.sqrt(d)

    query = (self.query(hidden_states) / scale).reshape(b, -1, w, h, d)  # (b, m, w, h, d), m = n / w blocks
    key = self.key(hidden_states).reshape(b, -1, h, d)
    value = self.value(hidden_states).reshape(b, -1, h, d)

    # local band: scores of every query against keys at offsets -w .. w
    near_keys = _neighbours(key.reshape(b, -1, w, h, d))  # (b, m, 3w, h, d)
    local = _band(torch.einsum("bcxhd,bcyhd->bchxy", query, near_keys), w)  # (b, m, h, w, 2w+1)
    positions = torch.arange(n, device=hidden_states.device)
    offsets = torch.arange(-w, w + 1, device=hidden_states.device)
    key_index = positions[:, None] + offsets[None, :]  # (n, 2w+1)
    outside = (key_index < 0) | (key_index >= n)
    # keys that are padding or global are not part of any local window (global keys come first, below)
    removed = (attention_mask != 0).to(torch.int64)
    removed_near = _neighbours(removed.reshape(b, -1, w, 1)).squeeze(-1)  # (b, m, 3w)
    removed_band = _band(removed_near[:, :, None, :].expand(-1, -1, w, -1), w)  # (b, m, w, 2w+1)
    local = local.permute(0, 1, 3, 2, 4).reshape(b, n, h, 2 * w + 1)
    local = local + torch.where(removed_band.reshape(b, n, 1, 2 * w + 1) != 0, lowest, 0.0).to(dtype)
    local = local.masked_fill(outside[None, :, None, :], -float("inf"))

    # global tokens of each row in slots 0 .. G-1 (in position order); slots past a row's count are empty and
    # masked, as transformers pads rows with fewer global tokens. G is at least 1: with no global token the one
    # empty slot adds exp(min - max) = 0 to every softmax (the local-only result) and no tensor is empty
    # (onnxruntime's kernels are not all safe with zero-sized dimensions)
    is_global = is_index_global_attn
    count = is_global.to(torch.int64).sum(dim=1)
    slots = torch.clamp(count.max(), min=1)
    order = torch.sort(torch.where(is_global, positions, positions + n), dim=1).indices
    chosen = order.narrow(1, 0, slots)  # (b, G)
    filled = torch.arange(slots, device=hidden_states.device)[None, :] < count[:, None]  # (b, G)

    def pick(t: torch.Tensor) -> torch.Tensor:  # (b, n, ...) -> (b, G, ...) at the chosen positions
        index = chosen.reshape(b, -1, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
        return torch.gather(t, 1, index)

    global_keys = pick(key)  # (b, G, h, d)
    to_global = torch.einsum("blhd,bshd->blhs", query.reshape(b, n, h, d), global_keys)  # (b, n, h, G)
    to_global = to_global.masked_fill(~filled[:, None, None, :], lowest)

    scores = torch.cat((to_global, local), dim=-1)
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    probs = probs.masked_fill(is_index_masked[:, :, None, None], 0.0).to(dtype)
    probs = torch.nn.functional.dropout(probs, p=self.dropout, training=self.training)
    from_global, from_band = probs[..., : probs.shape[-1] - (2 * w + 1)], probs[..., -(2 * w + 1):]

    output = torch.einsum("blhs,bshd->blhd", from_global, pick(value))
    band = _unband(from_band.reshape(b, -1, w, h, 2 * w + 1).permute(0, 1, 3, 2, 4), w)  # (b, m, h, w, 3w)
    near_values = _neighbours(value.reshape(b, -1, w, h, d))  # (b, m, 3w, h, d)
    output = output + torch.einsum("bchxy,bcyhd->bcxhd", band, near_values).reshape(b, n, h, d)
    output = output.reshape(b, n, e)

    # global tokens' own outputs: their own projections, attending to every unmasked key
    global_queries = (self.query_global(pick(hidden_states)) / scale).reshape(b, -1, h, d)  # (b, G, h, d)
    every_key = self.key_global(hidden_states).reshape(b, n, h, d)
    every_value = self.value_global(hidden_states).reshape(b, n, h, d)
    global_scores = torch.einsum("bghd,bshd->bhgs", global_queries, every_key)  # (b, h, G, n)
    global_scores = global_scores.masked_fill(~filled[:, None, :, None], lowest)
    global_scores = global_scores.masked_fill(is_index_masked[:, None, None, :], lowest)
    global_probs = torch.nn.functional.softmax(global_scores, dim=-1, dtype=torch.float32).to(dtype)
    global_probs = torch.nn.functional.dropout(global_probs, p=self.dropout, training=self.training)
    global_output = torch.einsum("bhgs,bshd->bghd", global_probs, every_value).reshape(b, -1, e)  # (b, G, e)

    # each global position reads its slot (its rank among the row's global tokens); the others read slot G, a zero row
    rank = torch.cumsum(is_global.to(torch.int64), dim=1) - 1
    rank = torch.where(is_global, rank, slots)
    with_empty = torch.cat((global_output, global_output.new_zeros(b, 1, e)), dim=1)
    spread = torch.gather(with_empty, 1, rank[:, :, None].expand(-1, -1, e))
    return (torch.where(is_global[:, :, None], spread, output),)


PATCHES: tuple[Patch, ...] = (
    Patch(
        target=f"{_MODULE}:LongformerModel",
        attribute="_pad_to_window_size",
        value=pad_to_window,
        reason=(
            "_pad_to_window_size pads to a multiple of attention_window only `if padding_len > 0`, which a trace "
            "freezes; the padding is computed with tensor ops and always applied (0 at a multiple)"
        ),
    ),
    Patch(
        target=f"{_MODULE}:LongformerSelfAttention",
        attribute="forward",
        value=sliding_window_attention,
        reason=(
            "the sliding-window attention chunks by as_strided over sizes computed in Python and runs global "
            "attention only `if is_global_attn` (.item() of the mask), sizing it through len() of nonzero; the same "
            "sums are computed by reshapes of window blocks and gathers into a computed number of global slots"
        ),
    ),
)
"""The patches that make a Longformer graph right at every length and global attention mask."""


def global_attention_mask(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A 0/1 global attention mask over the tokens ``made["attention_mask"]`` keeps.

    Row 0 marks its first token and at most two more; other rows draw 0 to 3 global tokens among
    the ones they keep, so a batch mixes rows with different counts (and rows with none).
    """
    shape = dynamic_shape(tensor, ctx)
    keep = made.get("attention_mask")
    keep = torch.ones(shape, dtype=torch.bool) if keep is None else keep.to(torch.bool)
    rows = keep.reshape(-1, shape[-1])
    out = torch.zeros_like(rows)
    for row in range(rows.shape[0]):
        kept = torch.nonzero(rows[row]).flatten()
        count = int(torch.randint(0, 4, (1,), generator=rng)) if row else 1 + int(torch.randint(0, 3, (1,), generator=rng))
        picked = kept[torch.randperm(len(kept), generator=rng)[: min(count, len(kept))]]
        if row == 0 and len(kept):
            picked = torch.cat((kept[:1], picked))
        out[row, picked] = True
    return out.reshape(shape).to(made["attention_mask"].dtype if "attention_mask" in made else torch.int64)


def longformer(model_type: str, task: str, **options: Any) -> ModelSpec:
    """A Longformer graph: :func:`~onnxspec.catalog.families.text_encoder`'s inputs and
    ``global_attention_mask`` (Optimum's contract), with :data:`PATCHES` while tracing."""
    made = text_encoder(model_type, task, **{**options, "patches": (*options.get("patches", ()), *PATCHES)})
    graphs = {}
    for behavior, graph in made.graphs.items():
        mask = next(t for t in graph.inputs if t.name == "attention_mask")
        graphs[behavior] = attrs.evolve(graph, inputs=(*graph.inputs, spec("global_attention_mask", mask.dynamic_axes, Kind.INT)))
    return attrs.evolve(made, graphs=graphs, generators={**made.generators, "global_attention_mask": global_attention_mask})
