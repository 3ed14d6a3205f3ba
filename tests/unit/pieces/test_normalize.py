"""Normalizers: paths tried in order, derivations, every missing field reported at once."""

from __future__ import annotations

import types

import pytest
import transformers as T
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.catalog import normalizers
from onnxspec.errors import ConfigError, SpecError
from onnxspec.pieces.normalize import Derive, Dims, Normalizer, derive, normalize, normalizer, read_path
from tests.tiny import CONFIGS


def test_paths_are_tried_in_order_and_none_counts_as_absent() -> None:
    norm = normalizer(hidden_size=("hidden_size", "n_embd", "d_model"))
    assert normalize(norm, {"n_embd": 8, "d_model": 9})["hidden_size"] == 8
    assert normalize(norm, {"hidden_size": None, "d_model": 9})["hidden_size"] == 9


def test_dotted_paths_read_objects_and_dicts() -> None:
    config = types.SimpleNamespace(text_config={"hidden_size": 12}, vision_config=types.SimpleNamespace(image_size=30))
    assert read_path(config, "text_config.hidden_size") == 12
    assert read_path(config, "vision_config.image_size") == 30
    dims = normalize(normalizers.CLIP, {"text_config": {"hidden_size": 4, "vocab_size": 5}, "vision_config": {"image_size": 6, "num_channels": 3}})
    assert dims.require("hidden_size", "vocab_size", "image_size", "num_channels") == (4, 5, 6, 3)


def test_every_missing_field_is_reported_at_once_with_where_it_was_looked_for() -> None:
    norm = normalizer(hidden_size=("hidden_size", "d_model"), num_layers="num_hidden_layers", vocab_size="vocab_size")
    with pytest.raises(ConfigError) as info:
        normalize(norm, {"model_type": "mystery", "vocab_size": 3})
    message = str(info.value)
    assert "'mystery'" in message and "2 field(s)" in message
    assert "hidden_size (looked for hidden_size, d_model)" in message
    assert "num_layers (looked for num_hidden_layers)" in message
    assert "vocab_size" not in message


def test_optional_fields_resolve_to_none_and_require_names_them() -> None:
    dims = normalize(normalizers.TEXT, {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 5, "model_type": "m"})
    assert dims.get("num_key_value_heads") is None and dims.get("head_dim", 4) == 4
    with pytest.raises(ConfigError, match=r"'m' has no value for \['head_dim', 'num_key_value_heads'\]"):
        dims.require("hidden_size", "head_dim", "num_key_value_heads")
    with pytest.raises(ConfigError, match="head_dim"):
        dims["head_dim"]


def test_derivations_see_resolved_fields_and_failures_count_as_missing() -> None:
    @derive("twice the layers")
    def twice(found):  # type: ignore[no-untyped-def]
        return 2 * found["num_layers"]

    norm = normalizer(num_layers="n", doubled=twice)
    assert normalize(norm, {"n": 3})["doubled"] == 6
    with pytest.raises(ConfigError, match=r"doubled \(derived: Derive\(twice the layers\)\)"):
        normalize(normalizer(num_layers="n", doubled=twice, optional={"num_layers"}), {})
    assert isinstance(twice, Derive)


def test_optional_must_name_fields() -> None:
    with pytest.raises(SpecError, match=r"\['nope'\]"):
        Normalizer(fields={"a": "a"}, optional={"nope"})


def test_normalizer_extends_a_base_without_changing_it() -> None:
    before = dict(normalizers.TEXT.fields)
    t5 = normalizer(normalizers.TEXT, head_dim=("d_kv",))
    assert t5.fields["head_dim"] == ("d_kv",) and "head_dim" in t5.optional
    assert dict(normalizers.TEXT.fields) == before
    with pytest.raises(TypeError):
        t5.fields["x"] = "y"  # type: ignore[index]


def test_normalize_leaves_the_config_untouched() -> None:
    config = CONFIGS["gpt2"]()
    before = config.to_dict()
    normalize(normalizers.TEXT, config)
    assert config.to_dict() == before


@given(values=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 100)))
def test_dims_are_read_only_and_hashable(values: dict[str, int]) -> None:
    dims = Dims(values, "m")
    assert hash(dims) == hash(Dims(dict(values), "m"))
    with pytest.raises(TypeError):
        dims.values["a"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("model_type", "norm", "expected"),
    [
        ("bert", normalizers.TEXT, dict(hidden_size=32, num_layers=2, num_attention_heads=4, vocab_size=100)),
        ("gpt2", normalizers.TEXT, dict(hidden_size=32, num_layers=2, num_attention_heads=4, vocab_size=100)),
        ("distilbert", normalizers.TEXT, dict(hidden_size=32, num_layers=2, num_attention_heads=4)),
        ("llama", normalizers.TEXT, dict(num_key_value_heads=2, head_dim=16)),
        ("t5", normalizers.T5, dict(hidden_size=32, head_dim=16, num_layers=2, decoder_num_layers=2, num_attention_heads=4)),
        ("bart", normalizers.SEQ2SEQ, dict(hidden_size=32, num_layers=2, decoder_num_layers=2, decoder_num_attention_heads=4)),
        ("whisper", normalizers.WHISPER, dict(feature_size=16, max_source_positions=30, nb_max_frames=60)),
        ("vit", normalizers.VISION, dict(hidden_size=32, image_size=32, num_channels=3)),
        ("wav2vec2", normalizers.AUDIO, dict(hidden_size=32, vocab_size=40)),
        ("clip", normalizers.CLIP, dict(hidden_size=32, vocab_size=100, image_size=30, num_channels=3)),
    ],
)
def test_ready_made_normalizers_read_real_configs(model_type: str, norm: Normalizer, expected: dict[str, int]) -> None:
    dims = normalize(norm, CONFIGS[model_type]())
    assert {k: dims[k] for k in expected} == expected
    assert dims.model_type == model_type


def test_whisper_normalizer_reports_both_missing_audio_fields() -> None:
    config = T.BartConfig(d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=10)
    with pytest.raises(ConfigError) as info:
        normalize(normalizers.WHISPER, config)
    assert "feature_size" in str(info.value) and "max_source_positions" in str(info.value)


def test_normalizer_refuses_optional_names_that_are_no_field() -> None:
    with pytest.raises(SpecError, match=r"\['hidden_sise'\]"):
        normalizer(normalizers.TEXT, optional={"hidden_sise"})
    assert "vocab_size" in normalizer(normalizers.TEXT, optional={"vocab_size"}).optional


def test_dims_holding_list_values_are_hashable() -> None:
    dims = normalize(normalizers.VISION, {"hidden_size": 8, "image_size": [30, 40], "num_channels": 3})
    assert dims["image_size"] == [30, 40]
    assert hash(dims) == hash(Dims({"hidden_size": 8, "image_size": [30, 40], "num_channels": 3}, ""))
