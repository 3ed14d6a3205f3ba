"""A Longformer graph traced at one length agrees with PyTorch at every other length and global mask.

The tiny Longformer (:data:`tests.tiny.CONFIGS`) has a window of 4 tokens. Its graph is traced at
16 tokens (a multiple of the window, so a trace of transformers' code would never pad) and
validated at 1 to 13 tokens: below, at and above multiples of the window, with batches of 1 to 3
and a global attention mask that marks a different number of tokens in each row. onnxruntime then
runs the graph with no global token at all and with every token global, and must give PyTorch's
hidden states.

Proof that the check can fail: the same graph traced without the Longformer patches fails at the
lengths that are not the traced one (onnxruntime cannot run it at 1 token, nor at 8).
"""

from __future__ import annotations

import attrs
import numpy as np
import onnxruntime
import pytest
import torch
import transformers

from onnxspec.catalog.longformer import PATCHES
from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.errors import ExportError
from onnxspec.pieces.shapes import Shapes
from onnxspec.pipeline.core import export
from tests.tiny import tiny_folder

pytestmark = pytest.mark.integration

TASK = "feature-extraction"
LENGTHS = (1, 3, 4, 5, 8, 9, 12, 13)
SETS = tuple(Shapes(batch_size=1 + i % 3, sequence_length=n) for i, n in enumerate(LENGTHS))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_folder("longformer", TASK, tmp_path_factory.mktemp("longformer") / "model")


def _hidden(report) -> dict[str, tuple[tuple[int, ...], bool]]:  # type: ignore[no-untyped-def]
    [graph] = report.graphs
    return {c.shape_set: (c.torch_shape, c.passed) for c in graph.checks if c.output == "last_hidden_state"}


def test_graph_traced_at_16_tokens_agrees_below_at_and_above_window_multiples(folder: str, tmp_path) -> None:
    assert transformers.AutoConfig.from_pretrained(folder).attention_window == [4, 4]
    report = export(folder, tmp_path / "out", task=TASK, backend="torchscript", validation_shapes=SETS)
    assert report.passed and report.backend == "torchscript"
    [graph] = report.graphs
    assert all(c.compared > 0 for c in graph.checks)
    assert _hidden(report) == {f"set{i}": ((s.batch_size, s.sequence_length, 32), True) for i, s in enumerate(SETS)}

    # any number of global tokens, none included: onnxruntime against PyTorch
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    model = transformers.AutoModel.from_pretrained(folder).eval()
    rng = np.random.default_rng(0)
    for length in (1, 6, 11):
        ids = rng.integers(3, 100, size=(2, length), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[1, (length + 1) // 2:] = 0
        for marked in (np.zeros_like(ids), mask.copy()):  # no global token; every kept token global
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), "global_attention_mask": marked}
            [got] = session.run(["last_hidden_state"], feed)
            with torch.no_grad():
                want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
            kept = mask.astype(bool)
            np.testing.assert_allclose(got[kept], want[kept], atol=1e-5, rtol=1e-4, err_msg=f"{length} tokens, {int(marked.sum())} global")


def test_graph_traced_without_the_patches_fails_at_other_lengths(folder: str, tmp_path) -> None:
    spec = spec_for(REGISTRY, "longformer", TASK)
    assert set(PATCHES) <= set(spec.patches)
    unpatched = attrs.evolve(spec, patches=tuple(p for p in spec.patches if p not in PATCHES))
    for shapes in (SETS[0], SETS[4]):  # 1 token (pads to 4), 8 tokens (a multiple: no padding)
        # the trace kept transformers' chunk sizes of 16 tokens: onnxruntime cannot even run the graph
        with pytest.raises(ExportError, match=r"stage 'validate \(model.onnx\)' failed.*ONNXRuntimeError"):
            export(folder, tmp_path / "out", spec=unpatched, backend="torchscript", validation_shapes=(shapes,))
        assert not (tmp_path / "out" / "model.onnx").exists()
