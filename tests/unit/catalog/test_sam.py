"""SAM: its split into a vision encoder and a prompt encoder + mask decoder is two graph kinds in
a family, planned with Optimum's file names, I/O names and axes (SamOnnxConfig, variant "split";
transformers.js loads the same two files); "monolith" is one model.onnx. Specs and dummy inputs
only; exports are in tests/integration/test_sam.py."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from onnxspec.catalog.families import PROMPT_ENCODER_MASK_DECODER, segment_anything
from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces import kinds
from onnxspec.pieces.axes import Kind
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import GraphSpec, bind, plan
from tests.tiny import CONFIGS

B = "batch_size"
POINTS = {0: B, 1: "point_batch_size", 2: "nb_points_per_image"}
MASKS = {0: B, 1: "point_batch_size"}


def _io(specs) -> dict[str, dict[int, str]]:
    return {t.name: t.dynamic_axes for t in specs}


def _split() -> tuple[GraphSpec, ...]:
    return plan(bind(segment_anything("sam", "feature-extraction"), CONFIGS["sam"]()))


def test_split_plans_optimums_two_files_with_their_io() -> None:
    vision, decoder = _split()
    assert (vision.filename, decoder.filename) == ("vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx")
    assert vision.kind is kinds.VISION_ENCODER and decoder.kind is PROMPT_ENCODER_MASK_DECODER
    assert _io(vision.inputs) == {"pixel_values": {0: B}}
    assert list(_io(vision.outputs).items()) == [("image_embeddings", {0: B}), ("image_positional_embeddings", {0: B})]
    assert list(_io(decoder.inputs).items()) == [
        ("image_positional_embeddings", {0: B}),
        ("image_embeddings", {0: B}),
        ("input_points", POINTS),
        ("input_labels", POINTS),
    ]
    assert list(_io(decoder.outputs).items()) == [("iou_scores", MASKS), ("pred_masks", MASKS)]
    kind = {t.name: t.kind for t in decoder.inputs}
    assert kind["input_points"] is Kind.FLOAT and kind["input_labels"] is Kind.INT
    assert not any(g.use_past or g.use_past_in_inputs for g in (vision, decoder))


def test_the_monolith_option_plans_model_onnx() -> None:
    (single,) = plan(segment_anything("sam", "feature-extraction"), monolith=True)
    assert single.filename == "model.onnx" and single.role == "monolith"
    assert list(_io(single.inputs).items()) == [("pixel_values", {0: B}), ("input_points", POINTS), ("input_labels", POINTS)]
    assert list(_io(single.outputs).items()) == [("iou_scores", MASKS), ("pred_masks", MASKS)]


def test_the_registered_spec_is_split_as_optimums_default_and_sam_is_not_refused() -> None:
    spec = spec_for(REGISTRY, "sam", "feature-extraction")
    assert [g.filename for g in plan(spec)] == ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"]
    assert [g.filename for g in plan(spec, monolith=True)] == ["model.onnx"]
    assert not any(mt == "sam" for mt, _ in UNSUPPORTED)


def test_the_normalizer_reads_samconfigs_sub_configs() -> None:
    config = CONFIGS["sam"]()
    dims = bind(segment_anything("sam", "feature-extraction"), config).dims
    assert dims["image_size"] == config.vision_config.image_size
    assert dims["num_channels"] == config.vision_config.num_channels
    assert dims["output_channels"] == config.vision_config.output_channels
    assert dims["image_embedding_size"] == config.prompt_encoder_config.image_embedding_size
    assert dims["prompt_image_size"] == config.prompt_encoder_config.image_size


@pytest.mark.parametrize("shapes", [Shapes(), Shapes(batch_size=1, point_batch_size=4, nb_points_per_image=5)], ids=["default", "other"])
def test_dummies_have_the_shapes_the_model_reads_and_makes(shapes: Shapes) -> None:
    """Points lie in the image, labels are 0 or 1, and the decoder's embeddings are shaped like
    what the tiny model's vision encoder returns (computed here, not written down)."""
    config = CONFIGS["sam"]()
    torch.manual_seed(0)
    model = T.SamModel(config).eval()
    vision, decoder = _split()
    ctx = context(shapes, DTypes(), decoder.dims)
    fed = make_dummies(decoder.inputs, decoder.generators, ctx, seed=0)
    pixels = make_dummies(vision.inputs, vision.generators, ctx, seed=0)["pixel_values"]
    b, pb, n = shapes.batch_size, shapes.point_batch_size, shapes.nb_points_per_image
    side = config.prompt_encoder_config.image_size
    assert fed["input_points"].shape == (b, pb, n, 2) and fed["input_points"].dtype == torch.float32
    assert 0 <= fed["input_points"].min() and fed["input_points"].max() < side
    assert fed["input_labels"].shape == (b, pb, n) and set(fed["input_labels"].unique().tolist()) <= {0, 1}
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels)
        positions = model.get_image_wide_positional_embeddings().repeat(b, 1, 1, 1)
        assert fed["image_embeddings"].shape == embeddings.shape
        assert fed["image_positional_embeddings"].shape == positions.shape
        out = model(image_embeddings=fed["image_embeddings"], input_points=fed["input_points"], input_labels=fed["input_labels"])
    assert out.iou_scores.shape[:2] == out.pred_masks.shape[:2] == (b, pb)
