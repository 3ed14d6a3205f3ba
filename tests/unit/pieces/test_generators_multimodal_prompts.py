"""Generators of multimodal prompts: text queries per image (OWL-ViT) and prompts that start with
image placeholders (ColPali / PaliGemma)."""

from __future__ import annotations

from types import MappingProxyType

import torch

from onnxspec.pieces import generators as g
from onnxspec.pieces.axes import Kind, spec
from onnxspec.pieces.normalize import Dims
from onnxspec.pieces.shapes import DTypes, Shapes

TEXT = {0: "text_batch_size", 1: "sequence_length"}
BS = {0: "batch_size", 1: "sequence_length"}
DIMS = Dims({"vocab_size": 10, "num_image_tokens": 4, "image_token_id": 9}, "test")


def _ctx(**shapes: int) -> g.DummyContext:
    return g.context(Shapes(**shapes), DTypes(), DIMS)


def test_queries_per_image_gives_each_image_batch_size_queries() -> None:
    ctx = _ctx(batch_size=2, image_batch_size=3, sequence_length=5)
    ids = g.queries_per_image(g.token_ids)(spec("input_ids", TEXT, Kind.INT), ctx, torch.Generator().manual_seed(0), MappingProxyType({}))
    mask = g.queries_per_image(g.attention_mask)(spec("attention_mask", TEXT, Kind.INT), ctx, torch.Generator().manual_seed(0), MappingProxyType({}))
    assert ids.shape == mask.shape == (6, 5)  # 3 images x 2 queries, image-major
    assert bool((mask.sum(dim=1) >= 1).all())
    # the plain generators, with the same context, give the text batch the size table names
    assert g.token_ids(spec("input_ids", TEXT, Kind.INT), ctx, torch.Generator().manual_seed(0), MappingProxyType({})).shape == (2, 5)


def test_an_image_prompt_starts_with_one_placeholder_per_patch_all_kept_and_all_prefix() -> None:
    ctx = _ctx(batch_size=3, sequence_length=6)
    rng = torch.Generator().manual_seed(1)
    made: dict[str, torch.Tensor] = {}
    made["input_ids"] = g.image_token_ids(spec("input_ids", BS, Kind.INT), ctx, rng, MappingProxyType(made))
    made["attention_mask"] = g.image_prefix_mask(spec("attention_mask", BS, Kind.INT), ctx, rng, MappingProxyType(made))
    types = g.image_prefix_token_types(spec("token_type_ids", BS, Kind.INT), ctx, rng, MappingProxyType(made))
    ids, mask = made["input_ids"], made["attention_mask"]
    assert ids.shape == mask.shape == types.shape == (3, 4 + 6)
    assert bool((ids[:, :4] == 9).all()) and not bool((ids[:, 4:] == 9).any())  # exactly as many placeholders as patches
    assert bool((ids >= 0).all()) and bool((ids < 10).all())
    assert bool((mask[:, :4] == 1).all()) and mask[0].sum() == 10 and bool((mask.sum(dim=1) >= 5).all())
    assert not bool(types.any())


def test_text_is_cut_to_the_position_table_only_when_longer() -> None:
    ids = spec("input_ids", BS, Kind.INT)
    short = g.context(Shapes(batch_size=2, sequence_length=23), DTypes(), Dims({"vocab_size": 10, "max_position_embeddings": 16}, "test"))
    roomy = g.context(Shapes(batch_size=2, sequence_length=23), DTypes(), Dims({"vocab_size": 10, "max_position_embeddings": 64}, "test"))
    assert g.up_to_positions(g.token_ids)(ids, short, torch.Generator().manual_seed(0), MappingProxyType({})).shape == (2, 16)
    assert g.up_to_positions(g.token_ids)(ids, roomy, torch.Generator().manual_seed(0), MappingProxyType({})).shape == (2, 23)
