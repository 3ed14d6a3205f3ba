"""Families: every registered (model type, task) of tests/tiny.py yields the graph files, input and
output names and axes that consumers of Optimum-exported models read
(/work/shared/reference/README.md). Configs only; nothing is exported here.

The expectations below are written from Optimum's documented contract, independently of the
family code: graph file names, ``past_key_values.{i}.key`` / ``present.{i}.key`` (decoder-only),
``.decoder`` / ``.encoder`` parts (seq2seq), the seq2seq decoder's renamed inputs, and each
task's common outputs.
"""

from __future__ import annotations

import functools

import pytest

from onnxspec.pieces.axes import TensorSpec
from onnxspec.catalog.models import REGISTRY
from onnxspec.pieces.past import PastKind
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.spec import GraphSpec, bind, plan
from tests.tiny import CONFIGS

B, S = "batch_size", "sequence_length"
OPTIMUM_OUTPUTS = {
    "feature-extraction": {"last_hidden_state": {0: B, 1: S}},
    "fill-mask": {"logits": {0: B, 1: S}},
    "token-classification": {"logits": {0: B, 1: S}},
    "text-generation": {"logits": {0: B, 1: S}},
    "automatic-speech-recognition": {"logits": {0: B, 1: S}},
    "audio-frame-classification": {"logits": {0: B, 1: S}},
    "text-classification": {"logits": {0: B}},
    "image-classification": {"logits": {0: B}},
    "audio-classification": {"logits": {0: B}},
    "multiple-choice": {"logits": {0: B, 1: "num_choices"}},
    "question-answering": {"start_logits": {0: B, 1: S}, "end_logits": {0: B, 1: S}},
    "text2text-generation": {"logits": {0: B, 1: "decoder_sequence_length"}},
    "masked-im": {"reconstruction": {0: B}},
    "audio-xvector": {"logits": {0: B}, "embeddings": {0: B}},
    "image-segmentation": {"logits": {0: B, 2: "height", 3: "width"}},
    "semantic-segmentation": {"logits": {0: B, 1: "num_labels", 2: "height", 3: "width"}},
    "object-detection": {"logits": {0: B, 1: "num_queries"}, "pred_boxes": {0: B, 1: "num_queries"}},
    "depth-estimation": {"predicted_depth": {0: B, 1: "height", 2: "width"}},
    "image-to-image": {"reconstruction": {0: B, 1: "num_channels", 2: "height", 3: "width"}},
    "keypoint-detection": {"heatmaps": {0: B, 1: "num_keypoints", 2: "height", 3: "width"}},
    "zero-shot-image-classification": {
        "logits_per_image": {0: "image_batch_size", 1: "text_batch_size"},
        "logits_per_text": {0: "text_batch_size", 1: "image_batch_size"},
        "text_embeds": {0: "text_batch_size"},
        "image_embeds": {0: "image_batch_size"},
    },
    # OWL-ViT / OWLv2 (OwlViTOnnxConfig's names). Two axes differ from its labels: pred_boxes has one box per patch of an
    # image of the config's size (static), and text_embeds is (images, queries), so its axis 0 is the image batch.
    "zero-shot-object-detection": {
        "logits": {0: "image_batch_size", 2: "num_queries"},
        "pred_boxes": {0: "image_batch_size"},
        "text_embeds": {0: "image_batch_size", 1: "num_queries"},
        "image_embeds": {0: "image_batch_size"},
    },
}
# Which inputs each model type's graphs take, from the base of its Optimum config
# (/work/shared/reference/optimum_registry.tsv): TextDecoderWithPositionIds / Llama / GPT2 / Phi
# bases take position_ids, TextDecoder / Gemma bases do not; Bert bases take token_type_ids,
# DistilBert bases (and DeBERTa, whose configs have no segment vocabulary) do not.
BART_LIKE = {"bart", "mbart", "marian", "pegasus", "blenderbot", "blenderbot-small", "bigbird_pegasus"}
SEQ2SEQ = {"t5", "whisper", "m2m_100", "mt5", "longt5", "encoder-decoder", "vision-encoder-decoder", "moonshine", "speech_to_text", "pix2struct"} | BART_LIKE
# What each seq2seq encoder graph takes (text ids and mask unless listed), and which decoders read
# no encoder_attention_mask (Optimum's AudioToText base for Whisper and Moonshine; an image has no mask).
SEQ2SEQ_ENCODER_INPUTS = {
    "whisper": {"input_features"},
    "moonshine": {"input_values"},
    "speech_to_text": {"input_features", "attention_mask"},
    "pix2struct": {"flattened_patches", "attention_mask"},
    "vision-encoder-decoder": {"pixel_values"},
}
UNMASKED_DECODERS = {"whisper", "moonshine", "vision-encoder-decoder", "trocr"}
DECODERS_ALONE = {"trocr"}  # Optimum registers TrOCR as the decoder of vision-encoder-decoder models: no encoder graph
DECODER_ONLY = {
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "phi3", "phi", "gpt_neox", "gpt_neo", "gptj", "codegen", "opt", "falcon",
    "olmo", "olmo2", "granite", "stablelm", "arcee", "smollm3", "gpt_bigcode", "cohere", "glm", "helium",
    "qwen3_moe", "mixtral", "qwen2_moe", "olmoe", "granitemoe", "phimoe", "deepseek_v3",
}
DECODER_ONLY_NO_POSITIONS = {"gemma", "gemma2", "gemma3_text", "gemma3", "nemotron", "bloom", "mpt", "gpt_oss"}
LATENT_CACHE = {"deepseek_v3"}  # the cache holds the compressed latent: 1 head, keys kv_lora_rank wide, values qk_rope_head_dim
MULTI_QUERY = {"falcon": 1, "gpt_bigcode": 1}  # tiny configs keep the default multi_query=True: one shared key/value head
TEXT_WITH_SEGMENTS = {
    "bert", "electra", "albert", "roformer", "mobilebert", "xlm", "flaubert", "convbert", "squeezebert", "megatron-bert", "rembert",
    "splinter", "nystromformer",
}
TEXT_WITHOUT_SEGMENTS = {"roberta", "distilbert", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "deberta", "deberta-v2", "big_bird", "ibert", "esm", "modernbert"}
LAYOUT = {
    "layoutlm": {"input_ids", "bbox", "attention_mask", "token_type_ids"},
    "lilt": {"input_ids", "bbox", "attention_mask"},
    "layoutlmv3": {"input_ids", "bbox", "attention_mask", "pixel_values"},  # the page image, at the config's size
}
# Types whose Optimum config declares inputs and outputs of its own (not a base's): inputs, then outputs for every task.
OWN_IO = {
    "visual_bert": (
        {"input_ids": {0: B, 1: S}, "attention_mask": {0: B, 1: S}, "visual_embeds": {0: B, 1: "visual_seq_length"},
         "visual_attention_mask": {0: B, 1: "visual_seq_length"}, "visual_token_type_ids": {0: B, 1: "visual_seq_length"}},
        {"last_hidden_state": {0: B, 1: "sequence_length + visual_seq_length"}},
    ),
    "decision_transformer": (
        {name: {0: B, 1: S} for name in ("states", "actions", "timesteps", "returns_to_go", "attention_mask")},
        {"state_preds": {0: B, 1: S}, "action_preds": {0: B, 1: S}, "return_preds": {0: B, 1: S}, "last_hidden_state": {0: B, 1: "sequence_length + sequence_length + sequence_length"}},
    ),
    **{t: ({"past_values": {0: B}}, {"last_hidden_state": {0: B}}) for t in ("patchtst", "patchtsmixer")},
    # VitMAEOnnxConfig is ViT's (pixel_values -> last_hidden_state), plus the noise its random masking sorts (beyond Optimum)
    "vit_mae": ({"pixel_values": {0: B}, "noise": {0: B}}, {"last_hidden_state": {0: B}}),
    "mgp-str": ({"pixel_values": {0: B}}, {"char_logits": {0: B}, "bpe_logits": {0: B}, "wp_logits": {0: B}}),
    "maskformer": ({"pixel_values": {0: B}}, {"last_hidden_state": {0: B}}),
    "perceiver": ({"input_ids": {0: B, 1: S}, "attention_mask": {0: B, 1: S}}, {"logits": {0: B}}),  # its image classifier takes pixel_values only
    # VitsOnnxConfig; its spectrogram's axis 2 (labelled num_bins there) runs over the predicted frames
    "vits": (
        {"input_ids": {0: "text_batch_size", 1: S}, "attention_mask": {0: "text_batch_size", 1: S}},
        {"waveform": {0: "text_batch_size", 1: "n_samples"}, "spectrogram": {0: "text_batch_size", 2: "n_frames"}},
    ),
    # ColPaliOnnxConfig's image variant, plus the prompt's token_type_ids (PaliGemma's prompt attends both ways with them)
    "colpali": (
        {"input_ids": {0: B, 1: S}, "attention_mask": {0: B, 1: S}, "token_type_ids": {0: B, 1: S}, "pixel_values": {0: B}},
        {"embeddings": {0: B, 1: S}},
    ),
    # SamOnnxConfig's "monolith" variant, --monolith (its default split files are checked in tests/unit/catalog/test_sam.py)
    "sam": (
        {"pixel_values": {0: B}, "input_points": {0: B, 1: "point_batch_size", 2: "nb_points_per_image"},
         "input_labels": {0: B, 1: "point_batch_size", 2: "nb_points_per_image"}},
        {"iou_scores": {0: B, 1: "point_batch_size"}, "pred_masks": {0: B, 1: "point_batch_size"}},
    ),
}
# Tasks whose outputs in those configs are not the feature-extraction ones OWN_IO holds.
OWN_TASK_OUTPUTS = {
    **{(t, "time-series-forecasting"): {"prediction_outputs": {0: B}} for t in ("patchtst", "patchtsmixer")},
    # MaskFormerOnnxConfig's segmentation outputs (its num_queries, height and width are static here: images of the config's size)
    ("maskformer", "image-segmentation"): {"class_queries_logits": {0: B}, "masks_queries_logits": {0: B}},
}
IMAGES = {
    "vit", "deit", "swin", "swinv2", "beit", "data2vec-vision", "dinov2", "vit_msn", "levit", "yolos", "convnext", "convnextv2", "resnet",
    "regnet", "efficientnet", "poolformer", "cvt", "mobilenet_v1", "mobilenet_v2", "mobilevit", "segformer", "pvt", "hiera",
    "clip_vision_model", "siglip_vision_model", "donut-swin", "dpt", "glpn", "swin2sr", "detr", "table-transformer", "vitpose", "rt_detr", "rt_detr_v2", "d_fine",
}
WAVEFORMS = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "sew-d", "unispeech", "unispeech-sat", "wav2vec2-conformer"}
DUAL_ENCODERS = {"clip": True, "metaclip_2": True, "chinese_clip": True, "groupvit": True, "siglip": False, "owlvit": True, "owlv2": True}  # -> takes an attention_mask

CASES = sorted((mt, task) for mt in CONFIGS for task in REGISTRY[mt].tasks)


@functools.lru_cache(maxsize=None)
def graphs(model_type: str, task: str) -> dict[str, GraphSpec]:
    """The bound sub-graph spec of each file the export writes."""
    s = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
    # SAM: its one-graph form is what OWN_IO holds; its split files are checked in test_sam.py
    return {g.filename: g for g in plan(s, merged=False, monolith=model_type == "sam")}


def _io(t: tuple[TensorSpec, ...]) -> dict[str, dict[int, str]]:
    return {x.name: x.dynamic_axes for x in t}


def _cache(prefix: str, layers: int, parts: tuple[str, ...]) -> set[str]:
    return {f"{prefix}.{i}.{p}{w}" for i in range(layers) for p in parts for w in ("key", "value")}


def _is_seq2seq_generation(model_type: str, task: str) -> bool:
    base = task.removesuffix("-with-past")
    return model_type in SEQ2SEQ | DECODERS_ALONE and base in ("feature-extraction", "text2text-generation", "automatic-speech-recognition", "image-to-text")


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_graph_files_match_optimums_layout(model_type: str, task: str) -> None:
    files = list(graphs(model_type, task))
    if model_type == "musicgen":  # MusicgenOnnxConfig's files; their I/O is checked in tests/unit/catalog/test_musicgen.py
        decoders = ["decoder_model.onnx", "decoder_with_past_model.onnx"] if task.endswith("-with-past") else ["decoder_model.onnx"]
        assert files == ["text_encoder.onnx", "encodec_decode.onnx", "build_delay_pattern_mask.onnx", *decoders]
    elif model_type == "speecht5":  # SpeechT5OnnxConfig's files; their I/O is checked in tests/unit/catalog/test_speecht5.py
        decoders = ["decoder_model.onnx", "decoder_with_past_model.onnx"] if task.endswith("-with-past") else ["decoder_model.onnx"]
        assert files == ["encoder_model.onnx", *decoders, "decoder_postnet_and_vocoder.onnx"]
    elif _is_seq2seq_generation(model_type, task):
        expected = ["decoder_model.onnx"] if model_type in DECODERS_ALONE else ["encoder_model.onnx", "decoder_model.onnx"]
        if task.endswith("-with-past"):
            expected.append("decoder_with_past_model.onnx")
        assert files == expected
    else:
        assert files == ["model.onnx"]


_TEXT, _ROWS = {0: B, 1: "encoder_sequence_length"}, "total_batch_size_x_num_codebooks"
_CODES = {0: _ROWS, 1: "decoder_sequence_length"}
MUSICGEN_IO = {  # MusicgenOnnxConfig; the decoder's inputs renamed as Optimum's seq2seq decoders rename them
    "text_encoder.onnx": ({"input_ids": _TEXT, "attention_mask": _TEXT}, {"last_hidden_state": _TEXT}),
    "encodec_decode.onnx": ({"audio_codes": {1: B, 3: "chunk_length"}}, {"audio_values": {0: B, 2: "audio_length"}}),
    "build_delay_pattern_mask.onnx": (
        {"input_ids": _CODES, "pad_token_id": {}, "max_length": {}}, {"input_ids_edited": _CODES, "delay_pattern_mask": {0: _ROWS, 1: "max_length"}},
    ),
    "decoder_model.onnx": ({"input_ids": _CODES, "encoder_attention_mask": _TEXT, "encoder_hidden_states": _TEXT}, {"logits": _CODES}),
    "decoder_with_past_model.onnx": ({"input_ids": _CODES, "encoder_attention_mask": _TEXT}, {"logits": _CODES}),
}


def _check_musicgen_io(files: dict[str, GraphSpec], with_past: bool) -> None:
    """Each MusicGen file's own names and axes; the decoder's cache as any seq2seq decoder's."""
    for filename, sub in files.items():
        ins, outs = _io(sub.inputs), _io(sub.outputs)
        expected_in, expected_out = MUSICGEN_IO[filename]
        assert {n: a for n, a in ins.items() if not n.startswith("past_key_values.")} == expected_in, filename
        assert {n: a for n, a in outs.items() if not n.startswith("present.")} == expected_out, filename
        past_in = filename == "decoder_with_past_model.onnx"
        assert {n for n in ins if n.startswith("past_key_values.")} == (_cache("past_key_values", 2, ("decoder.", "encoder.")) if past_in else set())
        if filename == "decoder_model.onnx" and with_past or past_in:
            present = _cache("present", 2, ("decoder.",) if past_in else ("decoder.", "encoder."))
        else:
            present = set()
        assert {n for n in outs if n.startswith("present.")} == present, filename
        assert all(outs[n][0] == B for n in present)


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_io_names_and_axes_match_optimums_contract(model_type: str, task: str) -> None:
    if model_type == "musicgen":
        _check_musicgen_io(graphs(model_type, task), task.endswith("-with-past"))
        return
    if model_type == "speecht5":  # its own names and axes: tests/unit/catalog/test_speecht5.py
        return
    base = task.removesuffix("-with-past")
    with_past = task.endswith("-with-past")
    layers = CONFIGS[model_type]().to_dict().get("decoder_layers") or 2  # every tiny config has two (decoder) layers
    for filename, sub in graphs(model_type, task).items():
        ins, outs = _io(sub.inputs), _io(sub.outputs)
        assert len(ins) == len(sub.inputs) and len(outs) == len(sub.outputs), "duplicate names"
        if filename == "encoder_model.onnx":
            expected_in = SEQ2SEQ_ENCODER_INPUTS.get(model_type, {"input_ids", "attention_mask"})
            assert set(ins) == expected_in
            assert list(outs) == ["last_hidden_state"]
            assert outs["last_hidden_state"][0] == B
            continue
        if filename.startswith("decoder"):
            # Optimum maps decoder_input_ids -> input_ids, encoder_outputs -> encoder_hidden_states,
            # the encoder's attention_mask -> encoder_attention_mask.
            past_in = filename == "decoder_with_past_model.onnx"
            expected_in = {"input_ids"}
            if model_type not in UNMASKED_DECODERS:
                expected_in.add("encoder_attention_mask")
            if past_in:
                expected_in |= _cache("past_key_values", layers, ("decoder.", "encoder."))
            else:
                expected_in.add("encoder_hidden_states")
            assert set(ins) == expected_in
            head = "last_hidden_state" if base == "feature-extraction" else "logits"
            assert outs[head] == {0: B, 1: "decoder_sequence_length"}
            if past_in:
                present = _cache("present", layers, ("decoder.",))
            elif with_past:
                present = _cache("present", layers, ("decoder.", "encoder."))
            else:
                present = set()
            assert set(outs) == {head} | present
            for name in present:
                assert outs[name][0] == B
            for name in (n for n in ins if n.startswith("past_key_values.")):
                assert ins[name][0] == B and 2 in ins[name]
            continue
        # single-graph exports
        expected_out = OPTIMUM_OUTPUTS.get(base, {})
        common = {n: a for n, a in outs.items() if not n.startswith("present.")}
        if model_type in DUAL_ENCODERS and base == "feature-extraction":
            expected_out = OPTIMUM_OUTPUTS["zero-shot-image-classification"]
        if model_type in OWN_IO:
            expected_out = OWN_TASK_OUTPUTS.get((model_type, base), OWN_IO[model_type][1])
        if model_type == "layoutlmv3" and base in ("feature-extraction", "question-answering"):
            # Optimum names this axis sequence_length, but it runs over the tokens and then the image's patches
            expected_out = {n: {0: B, 1: "sequence_length + image_sequence_length"} for n in expected_out}
        static_input = model_type in IMAGES or model_type == "audio-spectrogram-transformer" or (model_type in DUAL_ENCODERS and base == "image-classification")
        if static_input:
            expected_out = {name: {0: B} for name in expected_out}  # static image / spectrogram size: only the batch is dynamic
        if model_type in WAVEFORMS and base in ("feature-extraction", "automatic-speech-recognition", "audio-frame-classification"):
            # the frame axis is the conv feature extractor's output, not the input length
            assert set(common) == set(expected_out)
            assert all(a[0] == B and 1 in a for a in common.values())
        else:
            assert common == expected_out
        decoder_only = model_type in DECODER_ONLY | DECODER_ONLY_NO_POSITIONS | {"imagegpt"}
        if decoder_only or (model_type in BART_LIKE and base == "text-generation"):
            positions = (model_type in DECODER_ONLY | {"imagegpt"}) and not (model_type == "falcon" and base in ("question-answering", "token-classification"))
            expected_in = {"input_ids", "attention_mask"} | ({"position_ids"} if positions else set())
            if with_past:
                expected_in |= _cache("past_key_values", layers, ("",))
                assert set(outs) - set(common) == _cache("present", layers, ("",))
                for i in range(layers):
                    assert ins[f"past_key_values.{i}.key"] == {0: B, 2: "past_sequence_length"}
                    assert outs[f"present.{i}.value"] == {0: B, 2: "past_sequence_length + sequence_length"}
                assert ins["attention_mask"] == {0: B, 1: "past_sequence_length + sequence_length"}
            else:
                assert ins["attention_mask"] == {0: B, 1: S}
                assert set(outs) == set(common)
            assert set(ins) == expected_in
        elif model_type in TEXT_WITH_SEGMENTS:
            assert set(ins) == {"input_ids", "attention_mask", "token_type_ids"}
        elif model_type in TEXT_WITHOUT_SEGMENTS | BART_LIKE:
            assert set(ins) == {"input_ids", "attention_mask"}
        elif model_type == "markuplm":
            assert set(ins) == {"input_ids", "attention_mask", "token_type_ids", "xpath_tags_seq", "xpath_subs_seq"}
            assert ins["xpath_tags_seq"] == ins["xpath_subs_seq"] == {0: B, 1: S}
        elif model_type in LAYOUT:
            assert set(ins) == LAYOUT[model_type]
            assert ins["bbox"] == {0: B, 1: S} and sub.inputs[[t.name for t in sub.inputs].index("bbox")].rank == 3
        elif model_type in IMAGES or (model_type in DUAL_ENCODERS and base == "image-classification"):
            assert set(ins) == {"pixel_values"}
        elif model_type in DUAL_ENCODERS:
            assert set(ins) == {"input_ids", "pixel_values"} | ({"attention_mask"} if DUAL_ENCODERS[model_type] else set())
            assert ins["input_ids"] == {0: "text_batch_size", 1: S} and ins["pixel_values"] == {0: "image_batch_size"}
        elif model_type in WAVEFORMS:
            assert set(ins) == {"input_values"}
        elif model_type == "audio-spectrogram-transformer":
            assert ins == {"input_values": {0: B}}
        elif model_type == "whisper":
            assert set(ins) == {"input_features"}
        elif model_type == "perceiver" and base == "image-classification":
            assert ins == {"pixel_values": {0: B}}
        elif model_type == "longformer":  # LongformerOnnxConfig: BERT's inputs and a global attention mask, all on the same axes
            assert list(ins) == ["input_ids", "attention_mask", "token_type_ids", "global_attention_mask"]
            assert all(a == ins["input_ids"] for a in ins.values())
        elif model_type in OWN_IO:
            assert ins == OWN_IO[model_type][0]
        else:  # pragma: no cover - a new tiny model type needs its expectation here
            pytest.fail(f"no expectation written for {model_type}")
        if base == "multiple-choice":
            assert all(a == {0: B, 1: "num_choices", 2: S} for a in ins.values())
        elif model_type in TEXT_WITH_SEGMENTS | TEXT_WITHOUT_SEGMENTS:
            assert all(a == {0: B, 1: S} for a in ins.values())


@pytest.mark.parametrize("model_type", sorted(SEQ2SEQ | DECODER_ONLY | DECODER_ONLY_NO_POSITIONS))
def test_cache_layout_comes_from_the_config(model_type: str) -> None:
    task = next(t for t in REGISTRY[model_type].tasks if t.endswith("-with-past"))
    s = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
    assert s.past is not None and s.past.num_layers == 2
    assert s.past.kind is (PastKind.SEQ2SEQ if model_type in SEQ2SEQ else PastKind.DECODER_ONLY)
    config = CONFIGS[model_type]().get_text_config()  # a vision-language config keeps its decoder's dims in text_config
    if model_type in LATENT_CACHE:
        assert (s.past.num_heads, s.past.key_dim, s.past.value_dim) == (1, config.kv_lora_rank, config.qk_rope_head_dim)
        return
    heads = MULTI_QUERY.get(model_type) or getattr(config, "num_key_value_heads", None) or getattr(config, "decoder_attention_heads", None) or getattr(config, "num_heads", None) or getattr(config, "num_attention_heads", None) or config.n_head
    assert s.past.num_heads == heads
    explicit = getattr(config, "head_dim", None) or getattr(config, "d_kv", None)
    hidden = getattr(config, "d_model", None) or getattr(config, "hidden_size", None) or config.n_embd
    assert s.past.key_dim == (explicit or hidden // (getattr(config, "decoder_attention_heads", None) or config.num_attention_heads))


@pytest.mark.parametrize(("model_type", "task"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_every_input_has_a_generator(model_type: str, task: str) -> None:
    for filename, sub in graphs(model_type, task).items():
        missing = [t.name for t in sub.inputs if t.name not in sub.generators and not t.name.startswith("past_key_values.")]
        assert not missing, (filename, missing)


def test_decoder_only_families_pad_on_the_left_and_seq2seq_on_the_right() -> None:
    assert graphs("gpt2", "text-generation-with-past")["model.onnx"].padding_side == "left"
    assert graphs("t5", "text2text-generation")["decoder_model.onnx"].padding_side == "right"


@pytest.mark.parametrize(
    ("model_type", "task", "encoder_width"),
    [
        ("vision-encoder-decoder", "image-to-text-with-past", lambda c: c.encoder.hidden_size),
        ("encoder-decoder", "text2text-generation-with-past", lambda c: c.encoder.hidden_size),
        ("pix2struct", "image-to-text-with-past", lambda c: c.vision_config.hidden_size),
        ("t5", "text2text-generation-with-past", lambda c: c.d_model),
        ("trocr", "feature-extraction-with-past", lambda c: c.cross_attention_hidden_size),
    ],
)
def test_the_decoder_is_fed_the_encoders_output_width_and_caches_at_its_own(model_type: str, task: str, encoder_width) -> None:
    """``encoder_hidden_states`` is the encoder's output (its width, e.g. ViT's 32 for a GPT-2 of
    48: the projection runs inside the decoder graph); the cache has the decoder's head dims."""
    from onnxspec.pieces.generators import context, make_dummies
    from onnxspec.pieces.shapes import DTypes, Shapes

    config = CONFIGS[model_type]()
    decoder = graphs(model_type, task)["decoder_model.onnx"]
    made = make_dummies(decoder.inputs, decoder.generators, context(Shapes(), DTypes(), decoder.dims, past=decoder.past), seed=0)
    assert made["encoder_hidden_states"].shape[-1] == encoder_width(config)
    if model_type == "vision-encoder-decoder":
        assert config.encoder.hidden_size != config.decoder.hidden_size  # the tiny pair exercises a projection
        assert decoder.past.key_dim * decoder.past.num_heads == config.decoder.hidden_size


def test_encoder_part_mask_must_be_one_of_its_inputs() -> None:
    from onnxspec.errors import SpecError
    from onnxspec.catalog.families import IMAGE_ENCODER, EncoderPart

    with pytest.raises(SpecError, match="not one of its inputs"):
        EncoderPart(inputs=IMAGE_ENCODER.inputs, hidden_axes=IMAGE_ENCODER.hidden_axes, mask="attention_mask")


def test_nystromformer_with_fewer_landmarks_than_its_segment_length_is_refused() -> None:
    from onnxspec.errors import ConfigError

    config = CONFIGS["nystromformer"]()
    config.num_landmarks = 4  # below segment_means_seq_len (64): defined only for inputs of exactly 64 tokens
    with pytest.raises(ConfigError, match="segment_means_seq_len"):
        bind(spec_for(REGISTRY, "nystromformer", "feature-extraction"), config)


def test_unsupported_pairs_are_not_registered_and_say_why() -> None:
    from onnxspec.catalog.models import UNSUPPORTED

    for (model_type, task), reason in UNSUPPORTED.items():
        registered = REGISTRY[model_type].tasks if model_type in REGISTRY else ()
        assert task not in registered and not (task == "*" and registered), (model_type, task)
        assert len(reason) > 40, (model_type, task)
