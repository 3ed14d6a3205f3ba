"""The small pieces some model entries compose: box and spectrogram generators, the multi-query
and vision-language normalizers, the repeat_interleave patch, and family options (bbox,
feature_map, spectrogram, a dual encoder without attention mask)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest
import torch
import transformers as T
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces import generators as g
from onnxspec.pieces.spec import GraphSpec, ModelSpec, plan
from onnxspec.catalog import normalizers
from onnxspec.pieces.axes import Kind, spec
from onnxspec.catalog.families import INTERLEAVE_BY_STACK, audio, text_and_vision, text_encoder, vision
from onnxspec.pieces.normalize import Dims, normalize
from onnxspec.pieces.patches import patched
from onnxspec.pieces.shapes import DTypes, Shapes

NO_MADE: Mapping[str, torch.Tensor] = MappingProxyType({})


def _ctx(dims: Mapping[str, object], **shape_fields: int) -> g.DummyContext:
    return g.context(Shapes(**shape_fields), DTypes(), Dims(dict(dims), "test"))


@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4), length=st.integers(1, 20), top=st.integers(1, 1024))
def test_bounding_boxes_are_ordered_and_inside_the_grid(seed: int, batch: int, length: int, top: int) -> None:
    box = spec("bbox", {0: "batch_size", 1: "sequence_length"}, Kind.INT, rank=3)
    ctx = _ctx({"max_2d_position_embeddings": top}, batch_size=batch, sequence_length=length)
    boxes = g.bounding_boxes(box, ctx, torch.Generator().manual_seed(seed), NO_MADE)
    assert boxes.shape == (batch, length, 4) and boxes.dtype == torch.int64
    x0, y0, x1, y1 = boxes.unbind(-1)
    assert bool((x0 <= x1).all() and (y0 <= y1).all())
    assert int(boxes.min()) >= 0 and int(boxes.max()) < top


@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), length=st.integers(1, 12))
def test_ids_per_token_stay_below_their_vocabulary(seed: int, batch: int, length: int) -> None:
    tags = spec("xpath_tags_seq", {0: "batch_size", 1: "sequence_length"}, Kind.INT, rank=3)
    ctx = _ctx({"max_depth": 5, "max_xpath_tag_unit_embeddings": 7}, batch_size=batch, sequence_length=length)
    ids = g.ids_per_token("max_depth", "max_xpath_tag_unit_embeddings")(tags, ctx, torch.Generator().manual_seed(seed), NO_MADE)
    assert ids.shape == (batch, length, 5) and int(ids.min()) >= 0 and int(ids.max()) < 7


def test_spectrogram_takes_the_configs_frames_and_bins() -> None:
    values = spec("input_values", {0: "batch_size"}, Kind.FLOAT, rank=3)
    out = g.spectrogram(values, _ctx({"max_length": 24, "num_mel_bins": 7}, batch_size=3), torch.Generator().manual_seed(0), NO_MADE)
    assert out.shape == (3, 24, 7) and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"multi_query": True, "new_decoder_architecture": False, "num_kv_heads": 4}, 1),
        ({"multi_query": False, "new_decoder_architecture": False, "num_kv_heads": 4}, 8),
        ({"multi_query": True, "new_decoder_architecture": True, "num_kv_heads": 2}, 2),
    ],
)
def test_multi_query_normalizer_follows_falcons_flags(flags: dict[str, object], expected: int) -> None:
    config = T.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, vocab_size=100, **flags)
    assert normalize(normalizers.MULTI_QUERY, config)["num_key_value_heads"] == expected


def test_multi_query_normalizer_without_falcons_flag() -> None:
    config = T.GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=100, multi_query=True)
    assert normalize(normalizers.MULTI_QUERY, config)["num_key_value_heads"] == 1
    config = T.GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=100, multi_query=False)
    assert normalize(normalizers.MULTI_QUERY, config)["num_key_value_heads"] == 4


def test_image_text_to_text_normalizer_reads_the_language_models_dims() -> None:
    text = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=99)
    dims = normalize(normalizers.IMAGE_TEXT_TO_TEXT, T.Gemma3Config(text_config=text))
    assert (dims["num_layers"], dims["num_key_value_heads"], dims["head_dim"], dims["vocab_size"]) == (3, 2, 16, 99)


@pytest.mark.parametrize("dim", [-1, 0, 1, 2])
@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_interleave_patch_gives_the_same_tensor(dim: int, repeats: int) -> None:
    x = torch.arange(24.0).reshape(2, 3, 4)
    expected_method, expected_function = x.repeat_interleave(repeats, dim=dim), torch.repeat_interleave(x, repeats, dim=dim)
    originals = (torch.repeat_interleave, torch.Tensor.repeat_interleave)
    with patched(INTERLEAVE_BY_STACK):
        assert torch.equal(x.repeat_interleave(repeats, dim=dim), expected_method)
        assert torch.equal(torch.repeat_interleave(x, repeats, dim=dim), expected_function)
        # tensor repeats or a flat result keep the original behaviour
        assert torch.equal(x.repeat_interleave(torch.tensor([1, 2, 1]), dim=1), x.repeat_interleave(torch.tensor([1, 2, 1]), dim=1))
        assert x.repeat_interleave(2).shape == (48,)
        assert (torch.repeat_interleave, torch.Tensor.repeat_interleave) != originals
    assert (torch.repeat_interleave, torch.Tensor.repeat_interleave) == originals


def _one(s: ModelSpec) -> GraphSpec:
    """The one file a single-graph spec plans."""
    (graph,) = plan(s)
    return graph


def test_text_encoder_bbox_option_adds_a_box_per_token() -> None:
    s = text_encoder("layoutlm", "token-classification", bbox=True, normalizer=normalizers.LAYOUT)
    names = [t.name for t in _one(s).inputs]
    assert names == ["input_ids", "bbox", "attention_mask", "token_type_ids"]
    box = _one(s).inputs[1]
    assert box.rank == 3 and box.dynamic_axes == {0: "batch_size", 1: "sequence_length"} and s.generators["bbox"] is g.bounding_boxes


def test_vision_feature_map_and_static_outputs() -> None:
    s = vision("resnet", "feature-extraction", feature_map=True)
    (out,) = _one(s).outputs
    assert out.name == "last_hidden_state" and out.rank == 4 and out.dynamic_axes == {0: "batch_size"}
    seg = vision("segformer", "semantic-segmentation")
    assert [o.dynamic_axes for o in _one(seg).outputs] == [{0: "batch_size"}]
    dynamic = vision("vit", "semantic-segmentation", dynamic_image_size=True)
    assert _one(dynamic).outputs[0].dynamic_axes == {0: "batch_size", 1: "num_labels", 2: "height", 3: "width"}


def test_audio_spectrogram_option_is_static_but_for_the_batch() -> None:
    s = audio("audio-spectrogram-transformer", "audio-classification", spectrogram=True, normalizer=normalizers.AST)
    (values,) = _one(s).inputs
    assert values.rank == 3 and values.dynamic_axes == {0: "batch_size"} and s.generators["input_values"] is g.spectrogram
    assert all(o.dynamic_axes == {0: "batch_size"} for o in _one(s).outputs)


def test_dual_encoder_without_attention_mask() -> None:
    assert [t.name for t in _one(text_and_vision("siglip", "zero-shot-image-classification", attention_mask=False)).inputs] == [
        "input_ids",
        "pixel_values",
    ]
    assert "attention_mask" in [t.name for t in _one(text_and_vision("clip", "zero-shot-image-classification")).inputs]
