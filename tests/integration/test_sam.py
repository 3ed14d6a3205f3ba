"""SAM exported from a tiny random model: model.onnx validated at prompt shapes unlike the traced
ones, and the split files (Optimum's default: vision_encoder.onnx, then
prompt_encoder_mask_decoder.onnx, each a function of the model's parts) validated and, run one
after the other, giving what model.onnx gives."""

from __future__ import annotations

import attrs
import pytest
import torch

from onnxspec.catalog.families import segment_anything
from onnxspec.pieces.shapes import Shapes, validation_shapes
from onnxspec.pipeline.core import export
from tests.tiny import tiny_model

pytestmark = pytest.mark.integration


def test_model_onnx_validates_where_batch_and_both_prompt_axes_differ_from_the_trace(tmp_path) -> None:
    traced = Shapes()
    sets = tuple(
        attrs.evolve(s, point_batch_size=pb, nb_points_per_image=n)
        for s, pb, n in zip(validation_shapes(traced), (1, 4, 2), (1, 3, 5))
    )
    assert all((s.batch_size, s.point_batch_size, s.nb_points_per_image) != (traced.batch_size, traced.point_batch_size, traced.nb_points_per_image) for s in sets)
    model = tiny_model("sam", "feature-extraction")
    rng = torch.Generator().manual_seed(3)
    with torch.no_grad():  # transformers starts these at zero: random, so the relative-position path counts
        filled = [p.copy_(torch.randn(p.shape, generator=rng) * 0.5) for n, p in model.named_parameters() if "rel_pos" in n or n.endswith("pos_embed")]
    assert len(filled) == 5  # the absolute table and each layer's two relative tables
    report = export(model, tmp_path / "onnx", task="feature-extraction", shapes=traced, validation_shapes=sets, monolith=True)
    assert report.passed, report.failures
    assert [g.filename for g in report.graphs] == ["model.onnx"]
    checks = report.graphs[0].checks
    assert len(checks) == 2 * len(sets) and all(c.passed for c in checks)
    masks = [c.onnx_shape for c in checks if c.output == "pred_masks"]
    assert [m[:3] for m in masks] == [(s.batch_size, s.point_batch_size, 3) for s in sets]


def test_the_split_files_validate_and_chain_to_what_model_onnx_computes(tmp_path) -> None:
    import numpy as np
    import onnxruntime

    model = tiny_model("sam", "feature-extraction")
    split = export(model, tmp_path / "split", task="feature-extraction")
    assert split.passed, split.failures
    assert [g.filename for g in split.graphs] == ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"]
    decoder = split.graphs[1]
    sizes = {c.shape_set: c.onnx_shape for c in decoder.checks if c.output == "pred_masks"}
    assert len({s[:3] for s in sizes.values()}) == 3  # batch and point batch differ between the sets
    single = export(model, tmp_path / "single", task="feature-extraction", monolith=True)
    assert single.passed, single.failures

    def session(path):  # type: ignore[no-untyped-def]
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    size = model.config.vision_config.image_size
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    points = rng.uniform(0, size, (2, 3, 4, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 3, 4)).astype(np.int64)
    embeddings, positions = session(tmp_path / "split" / "vision_encoder.onnx").run(None, {"pixel_values": pixels})
    chained = session(tmp_path / "split" / "prompt_encoder_mask_decoder.onnx").run(None, {
        "image_positional_embeddings": positions, "image_embeddings": embeddings, "input_points": points, "input_labels": labels,
    })
    whole = session(tmp_path / "single" / "model.onnx").run(None, {"pixel_values": pixels, "input_points": points, "input_labels": labels})
    for got, want in zip(chained, whole):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_the_tiny_models_masks_depend_on_the_image_the_points_and_the_labels() -> None:
    """Else validating the exports would compare constants (at transformers' default weight ranges
    the masks do not change with the image)."""
    model = tiny_model("sam", "feature-extraction")
    rng = torch.Generator().manual_seed(0)
    pixels, points = torch.rand((2, 3, 64, 64), generator=rng), torch.rand((2, 3, 2, 2), generator=rng) * 64
    labels = torch.randint(0, 2, (2, 3, 2), generator=rng)
    with torch.no_grad():
        base = model(pixel_values=pixels, input_points=points, input_labels=labels)
        for changed in ({"pixel_values": torch.rand((2, 3, 64, 64), generator=rng)}, {"input_points": points.flip(-1)}, {"input_labels": 1 - labels}):
            out = model(**{"pixel_values": pixels, "input_points": points, "input_labels": labels, **changed})
            assert (out.pred_masks - base.pred_masks).abs().max() > 1e-2 * base.pred_masks.abs().max(), sorted(changed)
            assert (out.iou_scores - base.iou_scores).abs().max() > 1e-3 * base.iou_scores.abs().max(), sorted(changed)
