"""ViTMAE: its random masking's noise is a graph input, so the graph, and PyTorch run at the same
inputs, are deterministic. Specs, dummies and the PyTorch module only; the export is in
tests/integration/test_registry_exports.py."""

from __future__ import annotations

import torch
import transformers as T

from onnxspec.build.wrappers import graph_module
from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import bind, plan
from tests.tiny import CONFIGS


def _graph():
    (graph,) = plan(bind(spec_for(REGISTRY, "vit_mae", "feature-extraction"), CONFIGS["vit_mae"]()))
    return graph


def _dummies(graph, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    return make_dummies(graph.inputs, graph.generators, context(Shapes(batch_size=batch), DTypes(), graph.dims), seed)


def test_vit_mae_is_registered_with_its_noise_as_an_input() -> None:
    assert ("vit_mae", "feature-extraction") not in UNSUPPORTED
    graph = _graph()
    assert [t.name for t in graph.inputs] == ["pixel_values", "noise"]
    assert [t.name for t in graph.outputs] == ["last_hidden_state"]


def test_the_noise_is_uniform_per_patch_for_each_image() -> None:
    graph = _graph()
    config = CONFIGS["vit_mae"]()
    for batch in (1, 3):
        noise = _dummies(graph, batch)["noise"]
        assert noise.shape == (batch, (config.image_size // config.patch_size) ** 2)
        assert noise.dtype == torch.float32 and 0 <= noise.min() and noise.max() < 1
    assert torch.equal(_dummies(graph, 2, seed=1)["noise"], _dummies(graph, 2, seed=1)["noise"])
    assert not torch.equal(_dummies(graph, 2, seed=1)["noise"], _dummies(graph, 2, seed=2)["noise"])


def test_the_model_is_deterministic_given_the_noise_and_keeps_the_patches_it_orders_first() -> None:
    graph = _graph()
    torch.manual_seed(0)
    model = T.ViTMAEModel(CONFIGS["vit_mae"]()).eval()
    module = graph_module(model, graph)
    fed = _dummies(graph, 2)
    with torch.no_grad():
        (first,), (again,) = module(*fed.values()), module(*fed.values())
        kept = 1 + int(fed["noise"].shape[1] * (1 - model.config.mask_ratio))  # the CLS token, then the kept patches
        assert first.shape == (2, kept, model.config.hidden_size)
        assert torch.equal(first, again)
        # other noise keeps other patches: other features (the masking really reads the input)
        (other,) = module(fed["pixel_values"], torch.flip(fed["noise"], dims=[1]))
        assert not torch.allclose(first[:, 1:], other[:, 1:])
        # without the noise the model draws its own: two calls differ (what the input prevents)
        drawn = [model(pixel_values=fed["pixel_values"]).last_hidden_state for _ in range(2)]
        assert not torch.equal(*drawn)
