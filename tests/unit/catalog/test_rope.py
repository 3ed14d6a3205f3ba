"""The dynamic NTK rope patch (onnxspec.catalog.rope): which classes it covers, that the registry
attaches it, that a rotary embedding traced short with it is right long (and wrong without it),
the lengths to validate past, and the validation sets that cross them."""

from __future__ import annotations

import pathlib
import re

import attrs
import pytest
import torch
import transformers as T
from hypothesis import given
from hypothesis import strategies as st
from transformers.models.auto.configuration_auto import model_type_to_module_name
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.catalog.rope import DYNAMIC_ROPE, ROTARY_CLASSES, boundary, with_dynamic_rope
from onnxspec.errors import SpecError
from onnxspec.pieces.patches import patched
from onnxspec.pieces.shapes import Shapes, validation_shapes
from tests.tiny import ROPE_CONFIGS

_CLASS = re.compile(r"class (\w+RotaryEmbedding)\(nn\.Module\):(.*?)(?=\nclass |\Z)", re.S)


def _dynamically_updated() -> dict[str, str]:
    """Registered model type -> rotary class whose forward transformers' dynamic_rope_update decorates (from the source)."""
    root = pathlib.Path(T.__file__).parent / "models"
    found = {}
    for model_type in REGISTRY:
        module = model_type_to_module_name(model_type)
        path = root / module / f"modeling_{module}.py"
        if path.exists():
            for name, body in _CLASS.findall(path.read_text()):
                if re.search(r"@dynamic_rope_update[^\n]*\n\s*def forward\(", body):
                    found[model_type] = f"transformers.models.{module}.modeling_{module}:{name}"
    return found


def test_the_table_names_every_registered_rotary_class_updated_dynamically() -> None:
    found = _dynamically_updated()
    assert "llama" in found and "qwen2" in found
    # phimoe: PhimoeConfig accepts LongRoPE parameters only, and models.py's LongRoPE patch replaces its rotary forward
    assert {k: v for k, v in found.items() if k != "phimoe"} == dict(ROTARY_CLASSES)


def test_every_task_of_those_model_types_carries_the_patch() -> None:
    for model_type, patch in DYNAMIC_ROPE.items():
        for task in REGISTRY[model_type].tasks:
            assert spec_for(REGISTRY, model_type, task).patches.count(patch) == 1, (model_type, task)
    assert all(p not in spec_for(REGISTRY, "bert", "feature-extraction").patches for p in DYNAMIC_ROPE.values())
    entries = with_dynamic_rope(REGISTRY.values())  # already patched: not added twice
    assert [e.options.get("patches") for e in entries] == [e.options.get("patches") for e in REGISTRY.values()]


def _cos_sin(rotary: torch.nn.Module, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, length, 4)
    return rotary(x, torch.arange(length)[None])


@pytest.mark.parametrize("patches", [(DYNAMIC_ROPE["llama"],), ()], ids=["patched", "unpatched"])
def test_a_rotary_embedding_traced_short_is_right_long_only_with_the_patch(patches: tuple) -> None:
    config = ROPE_CONFIGS["dynamic"]()  # rescales beyond 32 positions
    rotary = LlamaRotaryEmbedding(config)
    before = rotary.inv_freq.clone()
    with patched(patches), torch.no_grad():
        traced = torch.jit.trace(rotary, (torch.zeros(1, 16, 4), torch.arange(16)[None]), check_trace=False)
    assert torch.equal(rotary.inv_freq, before) and rotary.max_seq_len_cached == 32
    right = {}
    for length in (4, 32, 33, 48, 100):
        fresh = LlamaRotaryEmbedding(config)  # a fresh module per call: the graph's contract
        with torch.no_grad():
            want, got = _cos_sin(fresh, length), _cos_sin(traced, length)
        right[length] = all(torch.allclose(g, w, atol=1e-6, rtol=0) for g, w in zip(got, want))
    below = {4: True, 32: True}
    assert right == ({**below, 33: True, 48: True, 100: True} if patches else {**below, 33: False, 48: False, 100: False})


def test_the_patch_computes_what_a_fresh_module_computes_whatever_the_module_saw() -> None:
    config = ROPE_CONFIGS["dynamic"]()
    rotary = LlamaRotaryEmbedding(config)
    with torch.no_grad():
        _cos_sin(rotary, 100)  # PyTorch keeps the frequencies of 100 positions for shorter calls past 32
        stale = _cos_sin(rotary, 48)
        want = _cos_sin(LlamaRotaryEmbedding(config), 48)
        with patched([DYNAMIC_ROPE["llama"]]):
            got = _cos_sin(rotary, 48)
    assert not torch.allclose(stale[0], want[0], atol=1e-6)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("kind", ["yarn", "llama3"])
def test_other_rope_types_run_the_original_forward(kind: str) -> None:
    rotary = LlamaRotaryEmbedding(ROPE_CONFIGS[kind]())
    with torch.no_grad():
        want = _cos_sin(rotary, 48)
        with patched([DYNAMIC_ROPE["llama"]]):
            got = _cos_sin(rotary, 48)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_length_to_validate_past() -> None:
    assert {k: boundary(make()) for k, make in ROPE_CONFIGS.items()} == {"dynamic": 32, "yarn": 32, "llama3": 32}
    assert boundary(T.LlamaConfig()) is None
    linear = T.LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    assert boundary(linear) is None
    half = 4
    phi3 = T.Phi3Config(hidden_size=32, num_attention_heads=4, max_position_embeddings=64, original_max_position_embeddings=8,
                        rope_scaling={"type": "longrope", "short_factor": [1.0] * half, "long_factor": [2.0] * half})
    assert boundary(phi3) == 8


VARIED = ("batch_size", "sequence_length", "past_sequence_length", "decoder_sequence_length", "audio_sequence_length",
          "num_choices", "image_batch_size")


@given(
    traced=st.builds(Shapes, batch_size=st.integers(1, 8), sequence_length=st.integers(1, 200), past_sequence_length=st.integers(0, 200)),
    edge=st.integers(7, 4096),
)
def test_validation_sets_cross_the_boundary_with_growing_lengths(traced: Shapes, edge: int) -> None:
    small, large, decode = sets = validation_shapes(traced, boundary=edge)
    totals = [s.sequence_length + s.past_sequence_length for s in sets]
    assert totals[0] < edge < totals[1] < totals[2]
    for shapes in sets:
        assert all(getattr(shapes, f) != getattr(traced, f) for f in VARIED), (traced, shapes)
    assert validation_shapes(traced, boundary=None) == validation_shapes(traced)
    plain = validation_shapes(traced)
    assert small == plain[0] and attrs.evolve(large, sequence_length=plain[1].sequence_length) == plain[1]


def test_dynamic_ntk_is_refused_where_the_forward_is_not_transformers_wrapper() -> None:
    class Rotary:  # a rotary class whose forward dynamic_rope_update does not wrap
        def __init__(self, rope_type: str) -> None:
            self.rope_type = rope_type

        def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
            return position_ids + 1

    patch = attrs.evolve(DYNAMIC_ROPE["llama"], target=Rotary)
    positions = torch.arange(3)[None]
    with patched([patch]):
        assert torch.equal(Rotary("default").forward(torch.zeros(1), positions), positions + 1)
        with pytest.raises(SpecError, match="dynamic NTK rope: .*Rotary.forward is not wrapped by transformers' dynamic_rope_update"):
            Rotary("dynamic").forward(torch.zeros(1), positions)


def test_a_composite_config_naming_a_text_encoder_and_a_decoder_reads_the_decoders_rope() -> None:
    """MusicGen's config has text_encoder and decoder: asking for "the" text config raises; the
    rotary embedding counts the decoder's positions, so that side is read."""
    import transformers

    from onnxspec.catalog.rope import boundary

    decoder = transformers.MusicgenDecoderConfig(max_position_embeddings=32)
    config = transformers.MusicgenConfig(
        text_encoder=transformers.T5Config().to_dict(), audio_encoder=transformers.EncodecConfig().to_dict(), decoder=decoder.to_dict()
    )
    with pytest.raises(ValueError):
        config.get_text_config()
    assert boundary(config) is None and boundary(config, switching_only=True) is None
