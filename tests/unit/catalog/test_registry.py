"""The registry: built once from entries, refuses duplicates, looks up with close matches."""

from __future__ import annotations

import pytest

from onnxspec.errors import SpecError, UnknownNameError, UnsupportedTaskError
from onnxspec.catalog.families import text_decoder, text_encoder
from onnxspec.catalog.models import ENTRIES, REGISTRY
from onnxspec.catalog.registry import build_registry, entry, lookup, spec_for, supported_tasks


def test_the_default_registry_is_read_only_and_holds_every_entry_once() -> None:
    assert list(REGISTRY) == [e.model_type for e in ENTRIES]
    assert len(set(REGISTRY)) == len(ENTRIES)
    with pytest.raises(TypeError):
        REGISTRY["new"] = ENTRIES[0]  # type: ignore[index]


def test_build_registry_refuses_duplicates() -> None:
    first = entry("toy", text_encoder, ["feature-extraction"])
    second = entry("toy", text_decoder, ["text-generation"])
    with pytest.raises(SpecError, match="'toy' is registered twice"):
        build_registry([first, second])
    with pytest.raises(SpecError, match="'bert' is registered twice"):
        build_registry([*ENTRIES, ENTRIES[0]])


def test_entries_need_tasks_written_canonically() -> None:
    with pytest.raises(SpecError, match="lists no task"):
        entry("toy", text_encoder, [])
    with pytest.raises(SpecError, match="'causal-lm' is not canonical; write 'text-generation'"):
        entry("toy", text_decoder, ["causal-lm"])
    with pytest.raises(UnknownNameError):
        entry("toy", text_decoder, ["no-such-task"])


def test_spec_for_an_unsupported_task_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedTaskError) as info:
        spec_for(REGISTRY, "vit", "text-generation")
    message = str(info.value)
    assert "'vit'" in message and "'text-generation'" in message
    for task in REGISTRY["vit"].tasks:
        assert task in message


def test_spec_for_with_past_where_no_cache_is_registered_says_how_to_fix() -> None:
    with pytest.raises(UnsupportedTaskError, match="drop '-with-past'"):
        spec_for(REGISTRY, "bert", "feature-extraction-with-past")
    with pytest.raises(UnsupportedTaskError, match="'text-classification-with-past' is not among"):
        spec_for(REGISTRY, "gpt2", "text-classification", use_past=True)


def test_unknown_model_type_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError) as info:
        spec_for(REGISTRY, "berts", "feature-extraction")
    assert "bert" in info.value.suggestions and "Did you mean 'bert'" in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        lookup(REGISTRY, "wav2vec")
    assert info.value.suggestions[0] == "wav2vec2"
    assert "onnxspec models" in str(info.value)


def test_lookup_tolerates_dashes_for_underscores() -> None:
    registry = build_registry([entry("big_bird", text_encoder, ["feature-extraction"])])
    assert lookup(registry, "big-bird").model_type == "big_bird"
    assert supported_tasks(REGISTRY, "bert") == REGISTRY["bert"].tasks


def test_spec_for_accepts_synonyms_and_the_use_past_override() -> None:
    a = spec_for(REGISTRY, "gpt2", "causal-lm-with-past")
    assert (a.task, a.use_past, a.full_task) == ("text-generation", True, "text-generation-with-past")
    b = spec_for(REGISTRY, "gpt2", "text-generation-with-past", use_past=False)
    assert not b.use_past
    assert spec_for(REGISTRY, "t5", "summarization").task == "text2text-generation"


def test_task_families_and_options_apply_to_their_task_only() -> None:
    causal = spec_for(REGISTRY, "bart", "text-generation")
    seq2seq = spec_for(REGISTRY, "bart", "text2text-generation")
    assert causal.family == "text-decoder" and seq2seq.family == "text-seq2seq"
    assert "position_ids" not in [t.name for t in causal.graphs["monolith"].inputs]


def test_every_registered_task_builds_a_spec() -> None:
    for model_type, e in REGISTRY.items():
        for task in e.tasks:
            s = spec_for(REGISTRY, model_type, task)
            assert s.model_type == model_type and s.task == task.removesuffix("-with-past")
            assert s.use_past == task.endswith("-with-past") == s.full_task.endswith("-with-past")


def test_build_registry_refuses_names_lookup_cannot_tell_apart() -> None:
    with pytest.raises(SpecError, match="'big_bird' and 'big-bird' differ only in '-' versus '_'"):
        build_registry([entry("big_bird", text_encoder, ["feature-extraction"]), entry("big-bird", text_encoder, ["feature-extraction"])])


def _one_graph(model_type: str, task: str):  # type: ignore[no-untyped-def]
    (graph,) = spec_for(REGISTRY, model_type, task).graphs.values()
    return graph


def test_open_vocabulary_detection_speech_synthesis_and_retrieval_keep_optimums_names() -> None:
    for model_type in ("owlvit", "owlv2"):
        g = _one_graph(model_type, "zero-shot-object-detection")
        assert [t.name for t in g.inputs] == ["input_ids", "pixel_values", "attention_mask"]
        assert [t.name for t in g.outputs] == ["logits", "pred_boxes", "text_embeds", "image_embeds"]
        assert g.inputs[0].dynamic_axes == {0: "text_batch_size", 1: "sequence_length"}  # images * queries rows
    assert [t.name for t in _one_graph("vits", "text-to-audio").outputs] == ["waveform", "spectrogram"]
    # ColPali: Optimum's image variant, plus the segment ids PaliGemma's processor gives (its prompt attends both ways)
    colpali = _one_graph("colpali", "feature-extraction")
    assert [t.name for t in colpali.inputs] == ["input_ids", "attention_mask", "token_type_ids", "pixel_values"]
    assert [t.name for t in colpali.outputs] == ["embeddings"]


def test_saved_heads_of_detection_and_speech_imply_their_tasks() -> None:
    from onnxspec.pieces.tasks import infer_task

    for model_type, arch, task in (
        ("owlvit", "OwlViTForObjectDetection", "zero-shot-object-detection"),
        ("owlv2", "Owlv2ForObjectDetection", "zero-shot-object-detection"),
        ("owlvit", "OwlViTModel", "feature-extraction"),
        ("vits", "VitsModel", "text-to-audio"),
    ):
        assert infer_task({"architectures": [arch]}, REGISTRY[model_type].architecture_tasks) == task


def test_vits_that_samples_noise_is_refused_with_the_fix() -> None:
    import transformers

    from onnxspec.errors import ConfigError
    from onnxspec.pieces.spec import bind

    vits = spec_for(REGISTRY, "vits", "text-to-audio")
    quiet = transformers.VitsConfig(noise_scale=0.0, noise_scale_duration=0.0)
    assert bind(vits, quiet).dims["noise"] == 0
    for noisy in ({"noise_scale": 0.667}, {"noise_scale_duration": 0.8}):
        with pytest.raises(ConfigError, match="Set noise_scale and noise_scale_duration to 0 in config.json"):
            bind(vits, transformers.VitsConfig(**{**quiet.to_dict(), **noisy}))


def test_colpali_dims_are_found_in_the_config_object_and_in_its_saved_json() -> None:
    import json

    from onnxspec.pieces.spec import bind
    from tests.tiny import CONFIGS

    config = CONFIGS["colpali"]()
    colpali = spec_for(REGISTRY, "colpali", "feature-extraction")
    for source in (config, json.loads(config.to_json_string())):  # config.json names the placeholder image_token_index
        dims = bind(colpali, source).dims
        assert (dims["image_token_id"], dims["num_image_tokens"]) == (99, 4)
