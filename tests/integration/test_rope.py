"""Long-context rope types right at every length, in one graph: dynamic NTK, YaRN, llama3.

Tiny llamas (:data:`tests.tiny.ROPE_CONFIGS`) whose rope parameters make the length 32 matter:
dynamic NTK rescales its frequencies beyond ``max_position_embeddings`` = 32, YaRN and llama3
stretch frequencies trained on ``original_max_position_embeddings`` = 32. Each graph is traced
at 16 tokens after 8 (24 positions, below 32) and validated at 1 token after 3, at a 41-token
prompt and at 1 token after 48 (:func:`onnxspec.pieces.shapes.validation_shapes` with the
boundary of :func:`onnxspec.catalog.rope.boundary`); then onnxruntime decodes greedily from a
20-token prompt to 44 positions, feeding the graph its own cache, and must give the ids and
logits of ``model.generate`` in PyTorch (a fresh model, whose dynamic NTK frequencies grow with
each step as the graph's do).

Proof that the check can fail: the dynamic NTK graph traced without onnxspec's rope patch
(TorchScript freezes the frequencies of the traced length) fails validation past 32.
"""

from __future__ import annotations

import os

import attrs
import numpy as np
import onnxruntime
import pytest
import torch
import transformers
from transformers import GenerationConfig

from onnxspec.build.exporters import Backend, available_backends
from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.catalog.rope import DYNAMIC_ROPE, boundary
from onnxspec.errors import ValidationError
from onnxspec.pieces.cache_names import is_cache_output, to_past
from onnxspec.pieces.shapes import Shapes, validation_shapes
from onnxspec.pipeline.core import export
from tests.tiny import ROPE_CONFIGS

pytestmark = pytest.mark.integration

TASK = "text-generation-with-past"
TRACED = Shapes()  # batch 2, 16 tokens after 8 cached: 24 positions
PROMPT, STEPS = 20, 24  # decoding runs from 20 to 44 positions, past 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for kind, make in ROPE_CONFIGS.items():
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(kind) / "model"
        transformers.AutoModelForCausalLM.from_config(make()).save_pretrained(folder)
        out[kind] = os.fspath(folder)
    return out


def _sets(folder: str) -> tuple[Shapes, ...]:
    edge = boundary(transformers.AutoConfig.from_pretrained(folder))
    assert edge == 32
    return validation_shapes(TRACED, boundary=edge)


def _totals(sets: tuple[Shapes, ...]) -> list[int]:
    return [s.past_sequence_length + s.sequence_length for s in sets]


def _logits(graph) -> dict[str, tuple[tuple[int, ...], bool]]:  # type: ignore[no-untyped-def]
    return {c.shape_set: (c.torch_shape, c.passed) for c in graph.checks if c.output == "logits"}


def _greedy_onnx(path: str, config: transformers.PretrainedConfig, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding with onnxruntime alone: each step feeds the graph its own ``present.*``."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past = {
        f"past_key_values.{i}.{which}": np.zeros((ids.shape[0], config.num_key_value_heads, 0, config.head_dim), np.float32)
        for i in range(config.num_hidden_layers)
        for which in ("key", "value")
    }
    step_ids, tokens, logits = ids, [], []
    for _ in range(STEPS):
        positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)[:, -step_ids.shape[1]:]
        outputs = dict(zip(names, session.run(names, {"input_ids": step_ids, "attention_mask": mask, "position_ids": positions, **past})))
        last = outputs["logits"][:, -1, :]
        logits.append(last)
        tokens.append(last.argmax(-1))
        past = {to_past(k): v for k, v in outputs.items() if is_cache_output(k)}
        step_ids = tokens[-1][:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
    return np.stack(tokens, axis=1), logits


def _greedy_torch(folder: str, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()  # fresh: no rotary state from validation
    config = GenerationConfig(max_new_tokens=STEPS, min_new_tokens=0, do_sample=False, num_beams=1, eos_token_id=None,
                              pad_token_id=model.config.pad_token_id, use_cache=True)
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), generation_config=config,
                             return_dict_in_generate=True, output_logits=True)
    return out.sequences[:, ids.shape[1]:].numpy(), [x.numpy() for x in out.logits]


@pytest.mark.parametrize("kind", ["dynamic", "yarn", "llama3"])
def test_graph_agrees_with_pytorch_across_the_boundary_and_decodes_past_it(kind: str, folders: dict[str, str], tmp_path) -> None:
    folder = folders[kind]
    sets = _sets(folder)
    assert _totals(sets) == [4, 41, 49]  # below 32, then growing past it (dynamic NTK's PyTorch module keeps state)
    report = export(folder, tmp_path / "out", task=TASK, backend="torchscript", validation_shapes=sets)
    [graph] = report.graphs
    assert report.passed and graph.backend == "torchscript"
    assert all(c.compared > 0 for c in graph.checks)
    assert _logits(graph) == {"set0": ((1, 1, 100), True), "set1": ((3, 41, 100), True), "set2": ((3, 1, 100), True)}

    config = transformers.AutoConfig.from_pretrained(folder)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, config.vocab_size, size=(2, PROMPT), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :3], ids[1, :3] = 0, config.pad_token_id  # the second prompt is 3 tokens shorter, padded on the left
    got_ids, got_logits = _greedy_onnx(str(tmp_path / "out" / "model.onnx"), config, ids, mask)
    want_ids, want_logits = _greedy_torch(folder, ids, mask)
    assert PROMPT + STEPS > 32 + 8
    np.testing.assert_array_equal(got_ids, want_ids)
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"step {step} ({PROMPT + step + 1} positions)")


def test_dynamic_ntk_graph_without_the_patch_fails_past_the_boundary(folders: dict[str, str], tmp_path) -> None:
    spec = spec_for(REGISTRY, "llama", TASK)
    assert DYNAMIC_ROPE["llama"] in spec.patches
    with pytest.raises(ValidationError) as info:  # export's default shape sets cross the boundary by themselves
        export(folders["dynamic"], tmp_path / "out", spec=attrs.evolve(spec, patches=()), backend="torchscript")
    [graph] = info.value.report.graphs
    # right below 32 positions, wrong past them: the trace froze the frequencies of 24 positions
    assert {k: ok for k, (_, ok) in _logits(graph).items()} == {"small": True, "large": False, "decode": False}


@pytest.mark.skipif(Backend.DYNAMO not in available_backends(), reason="the dynamo exporter is not installed")
def test_dynamic_ntk_traced_by_dynamo_agrees_across_the_boundary(folders: dict[str, str], tmp_path) -> None:
    # without the patch torch.export refuses: it cannot guard on the length dynamic_rope_update compares
    report = export(folders["dynamic"], tmp_path / "out", task=TASK, backend="dynamo", validation_shapes=_sets(folders["dynamic"]))
    [graph] = report.graphs
    assert report.passed and graph.backend == "dynamo"
    assert _logits(graph) == {"set0": ((1, 1, 100), True), "set1": ((3, 41, 100), True), "set2": ((3, 1, 100), True)}
