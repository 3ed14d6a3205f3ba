"""The supported architectures, as data: one entry per model type, and the default registry.

Adding an architecture is usually one ``entry(...)`` line here: the family it belongs to, the
options that set it apart (which normalizer, whether it takes ``token_type_ids`` or
``position_ids`` ...) and its tasks. A model type whose graph needs a new input or a new cache
shape composes a new piece in ``families.py`` / ``generators.py`` rather than subclassing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from onnxspec.catalog import normalizers
from onnxspec.pieces import generators
from onnxspec.pieces.axes import Kind, spec
from onnxspec.catalog.families import (
    FILTERBANK_ENCODER,
    IMAGE_ENCODER,
    INTERLEAVE_BY_STACK,
    PATCH_ENCODER,
    UNFOLD_POSITIVE_DIM,
    WAVEFORM_ENCODER,
    DecoderPart,
    audio,
    decoder_alone,
    encoder_decoder,
    musicgen,
    patch_noise,
    segment_anything,
    speech_to_text,
    tensors,
    text_and_vision,
    text_decoder,
    text_encoder,
    text_seq2seq,
    vision,
)
from onnxspec.catalog.longformer import longformer
from onnxspec.catalog.registry import ModelEntry, Registry, build_registry, entry
from onnxspec.catalog.rope import with_dynamic_rope
from onnxspec.catalog.speecht5 import speecht5
from onnxspec.pieces.normalize import normalizer
from onnxspec.pieces.patches import Patch
from onnxspec.pieces.spec import Call
from onnxspec.pieces.tasks import TASKS

__all__ = ["ENTRIES", "REGISTRY", "UNSUPPORTED"]

_ENCODER_TASKS = (
    "feature-extraction",
    "fill-mask",
    "multiple-choice",
    "question-answering",
    "text-classification",
    "token-classification",
)
_ENCODER_TASKS_NO_CHOICE = tuple(t for t in _ENCODER_TASKS if t != "multiple-choice")
_MASKED_LM_TASKS = ("feature-extraction", "fill-mask", "text-classification", "token-classification")
_CAUSAL_LM_TASKS = (
    "feature-extraction",
    "feature-extraction-with-past",
    "text-generation",
    "text-generation-with-past",
)
_DECODER_TASKS = (*_CAUSAL_LM_TASKS, "text-classification")
_DECODER_TOKEN_TASKS = (*_DECODER_TASKS, "token-classification")
_SEQ2SEQ_TASKS = (
    "feature-extraction",
    "feature-extraction-with-past",
    "text2text-generation",
    "text2text-generation-with-past",
)
_BART_LIKE_TASKS = (*_SEQ2SEQ_TASKS, "text-generation", "text-generation-with-past")
_SPEECH_SEQ2SEQ_TASKS = (
    "feature-extraction",
    "feature-extraction-with-past",
    "automatic-speech-recognition",
    "automatic-speech-recognition-with-past",
)
_IMAGE_TO_TEXT_TASKS = ("image-to-text", "image-to-text-with-past")
_IMAGE_TASKS = ("feature-extraction", "image-classification")
_AUDIO_TASKS = ("feature-extraction", "automatic-speech-recognition", "audio-classification")
_AUDIO_FRAME_TASKS = (*_AUDIO_TASKS, "audio-frame-classification", "audio-xvector")
_DUAL_ENCODER_TASKS = ("feature-extraction", "zero-shot-image-classification")

# Option sets shared by several entries (keyword arguments of ``entry``).
_NO_SEGMENTS = {"token_type_ids": False}
"""Encoders that take no ``token_type_ids`` (RoBERTa-like, and DeBERTa whose configs default to no segment vocabulary)."""
_MASKED_LM_HEAD = {"architecture_tasks": {"WithLMHeadModel": "fill-mask"}}
"""XLM-style checkpoints: a ``WithLMHeadModel`` head predicts masked tokens, not the next one."""
_NO_POSITIONS = {"position_ids": False}
"""Decoders whose graph takes no ``position_ids`` (positions follow the mask inside the model)."""
_CAUSAL_DECODER_HEAD = {
    "task_families": {"text-generation": text_decoder},
    "task_options": {"text-generation": {"position_ids": False, "normalizer": normalizers.SEQ2SEQ_DECODER}},
}
"""Encoder-decoder models whose ``ForCausalLM`` head is their decoder run alone, decoder-only style."""
_SPEECH_HEAD = {"architecture_tasks": {"ForConditionalGeneration": "automatic-speech-recognition"}}
"""Speech models: a ``ForConditionalGeneration`` checkpoint means speech recognition, not text to text."""
_FEATURE_MAP = {"normalizer": normalizers.VISION_BACKBONE, "feature_map": True}
"""Convolutional backbones: no ``hidden_size`` / ``image_size`` needed, ``last_hidden_state`` is ``[b, c, h, w]``."""
_LAYOUT = {"bbox": True, "normalizer": normalizers.LAYOUT}
"""Document layout encoders: every token also has a bounding box on the page."""

def _batched_experts(original):  # type: ignore[no-untyped-def]
    def get_interface(self, experts_implementation, default):  # type: ignore[no-untyped-def]
        return original(self, "batched_mm" if experts_implementation == "grouped_mm" else experts_implementation, default)

    return get_interface


_BATCHED_EXPERTS = Patch(
    target="transformers.integrations.moe:ExpertsInterface",
    attribute="get_interface",
    wrap=_batched_experts,
    reason=(
        "transformers' default grouped_mm experts sort the token-expert pairs and count them with aten::histc, then call "
        "torch._grouped_mm (no ONNX op, and strides the exporter rejects); batched_mm gathers each pair's expert weights "
        "and multiplies them batched: the same sums, static shapes"
    ),
)
_MOE = {"patches": (_BATCHED_EXPERTS,)}


def _phimoe_rope_forward(original):  # type: ignore[no-untyped-def]
    def forward(self, x, position_ids=None):  # type: ignore[no-untyped-def]
        import torch

        rope = self.config.rope_parameters
        if rope["rope_type"] == "default":
            return original(self, x, position_ids)
        seq_len = torch.max(position_ids) + 1
        inv_freq, _ = self.rope_init_fn(self.config)
        mscale = torch.where(seq_len > rope["original_max_position_embeddings"], rope["long_mscale"], rope["short_mscale"])
        freqs = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * mscale).to(x.dtype), (emb.sin() * mscale).to(x.dtype)

    return forward


_PHIMOE_ROPE = Patch(
    target="transformers.models.phimoe.modeling_phimoe:PhimoeRotaryEmbedding",
    attribute="forward",
    wrap=_phimoe_rope_forward,
    reason=(
        "PhimoeRotaryEmbedding picks LongRoPE's short or long mscale by a Python `if` on torch.max(position_ids), "
        "which torch.export cannot guard on and TorchScript freezes at the trace's length; torch.where picks the same scale"
    ),
)
"""Mixture-of-experts decoders: with their experts batched (the patch above) both exporters trace the routing;
TorchScript, the default, exports the tiny models in about 0.5 s where dynamo takes 6-9 s, and all eight
types validate either way (measured: worst error/bound 3.3e-3 with TorchScript, 3.5e-3 with dynamo)."""
_BS = {0: "batch_size", 1: "sequence_length"}
_BV = {0: "batch_size", 1: "visual_seq_length"}
_TRAJECTORY = {
    "inputs": (
        spec("states", _BS, Kind.FLOAT, rank=3),
        spec("actions", _BS, Kind.FLOAT, rank=3),
        spec("timesteps", _BS, Kind.INT),
        spec("returns_to_go", _BS, Kind.FLOAT, rank=3),
        spec("attention_mask", _BS, Kind.INT),
    ),
    # Optimum's contract: every task returns the predictions and the hidden states; the hidden states run
    # over 3 tokens per step (return, state, action), not over the steps Optimum's axis name says (the
    # TorchScript exporter equates axes of one name, and that breaks the graph's reshape back to steps): 3 per step
    "outputs": tuple(
        spec("last_hidden_state", {0: "batch_size", 1: "sequence_length + sequence_length + sequence_length"}) if o.name == "last_hidden_state" else o
        for o in TASKS["reinforcement-learning"].outputs
    ),
    "generators": {
        "states": generators.floats("state_dim"),
        "actions": generators.floats("act_dim"),
        "timesteps": generators.ids_below("max_ep_len"),
        "returns_to_go": generators.floats(1),
    },
    "normalizer": normalizers.DECISION_TRANSFORMER,
}
"""Decision Transformer: a trajectory of states, actions, returns to go and timesteps, with its mask."""
_TIME_SERIES = {
    "inputs": (spec("past_values", {0: "batch_size"}, Kind.FLOAT, rank=3),),
    "static_outputs": True,
    "generators": {"past_values": generators.floats("context_length", "num_input_channels")},
    "normalizer": normalizers.TIME_SERIES,
    "patches": UNFOLD_POSITIVE_DIM,
}
"""Patch time-series models: a window of the config's ``context_length`` steps of every channel."""
_VISUAL_TEXT = {
    "inputs": (
        spec("input_ids", _BS, Kind.INT),
        spec("attention_mask", _BS, Kind.INT),
        spec("visual_embeds", _BV, Kind.FLOAT, rank=3),
        spec("visual_attention_mask", _BV, Kind.INT),
        spec("visual_token_type_ids", _BV, Kind.INT),
    ),
    "outputs": (spec("last_hidden_state", {0: "batch_size", 1: "sequence_length + visual_seq_length"}),),
    "generators": {
        "visual_embeds": generators.floats("visual_embedding_dim"),
        "visual_attention_mask": generators.attention_mask,
        "visual_token_type_ids": generators.token_type_ids,
    },
    "normalizer": normalizers.VISUAL_BERT,
}
"""VisualBERT: tokens, then a detector's region features with their own mask and segment ids."""
_IMAGE = (spec("pixel_values", {0: "batch_size"}, Kind.FLOAT, rank=4),)
"""Images of the config's size: only the batch is dynamic."""
_SCENE_TEXT = {
    "inputs": _IMAGE,
    "outputs": tuple(spec(n, {0: "batch_size"}) for n in ("char_logits", "bpe_logits", "wp_logits")),
    # the model returns its three heads' logits as one tuple
    "call": Call(results={"char_logits": "logits[0]", "bpe_logits": "logits[1]", "wp_logits": "logits[2]"}),
    "normalizer": normalizers.VISION,
}
"""MGP-STR: character, BPE and wordpiece predictions for every text position of the image."""
_MASK_CLASSIFIER = {
    "inputs": _IMAGE,
    "static_outputs": True,
    # Optimum's feature: the transformer decoder's query states
    "call": Call(results={"last_hidden_state": "transformer_decoder_last_hidden_state"}),
    "normalizer": normalizers.VISION_BACKBONE,
}
"""MaskFormer: mask queries decoded over a backbone's feature maps."""
_MASK_SEGMENTER = {
    **_MASK_CLASSIFIER,
    # MaskFormerOnnxConfig's segmentation outputs: each query's class scores and its mask logits (a quarter of the
    # image's size); the image is of the config's size, so only the batch is dynamic
    "outputs": (spec("class_queries_logits", {0: "batch_size"}), spec("masks_queries_logits", {0: "batch_size"})),
    "call": Call(),
}
"""MaskFormer's instance segmentation head: class and mask logits per query (its Hungarian matcher, training only,
is built with the model and needs scipy: ``pip install 'onnxspec[segmentation]'``)."""
_MASKED_AUTOENCODER = {
    # beyond Optimum's pixel_values: the noise ViTMAE's random masking sorts, else fresh torch.rand on every call
    "inputs": (*_IMAGE, spec("noise", {0: "batch_size"}, Kind.FLOAT, rank=2)),
    "static_outputs": True,
    "generators": {"noise": patch_noise},
    "normalizer": normalizer(normalizers.VISION, patch_size=("patch_size",)),
}
"""ViTMAE: the features of the patches its noise keeps (the lowest ``1 - mask_ratio`` of them), and its CLS."""
_LATENT_LOGITS = (spec("logits", {0: "batch_size"}),)
"""Perceiver's logits: its decoder queries are the config's, whatever the input length (static axis 1)."""
_PERCEIVER_TEXT = {"inputs": (spec("input_ids", _BS, Kind.INT), spec("attention_mask", _BS, Kind.INT)), "outputs": _LATENT_LOGITS, "normalizer": normalizers.PERCEIVER}
_PERCEIVER_IMAGE = {"inputs": _IMAGE, "outputs": _LATENT_LOGITS, "normalizer": normalizers.PERCEIVER}
_WAVEFORM_CLASSIFIER = {"architecture_tasks": {"ForSequenceClassification": "audio-classification"}}
"""Raw-audio models: a ``ForSequenceClassification`` checkpoint means audio classification, not text."""

_TEXT_QUERIES = {0: "text_batch_size", 1: "sequence_length"}
_SHORT_TEXT = {
    # a text as long as the position table allows (16 tokens in OWL-ViT's checkpoints)
    "input_ids": generators.up_to_positions(generators.token_ids),
    "attention_mask": generators.up_to_positions(generators.attention_mask),
}
_OPEN_VOCABULARY = {
    "inputs": (
        spec("input_ids", _TEXT_QUERIES, Kind.INT),
        spec("pixel_values", {0: "image_batch_size"}, Kind.FLOAT, rank=4),
        spec("attention_mask", _TEXT_QUERIES, Kind.INT),
    ),
    "outputs": TASKS["zero-shot-image-classification"].outputs,
    "generators": _SHORT_TEXT,
    "normalizer": normalizers.OWL_VIT,
}
"""OWL-ViT / OWLv2 features: texts and images with batches of their own -> CLIP's similarities and embeddings."""
_OPEN_VOCABULARY_DETECTION = {
    **_OPEN_VOCABULARY,
    # text rows are the images' queries, image-major: (images * queries, tokens); one box per image patch (static: images
    # of the config's size), one score per patch and query
    "outputs": (
        spec("logits", {0: "image_batch_size", 2: "num_queries"}),
        spec("pred_boxes", {0: "image_batch_size"}),
        spec("text_embeds", {0: "image_batch_size", 1: "num_queries"}),
        spec("image_embeds", {0: "image_batch_size"}),
    ),
    "generators": {name: generators.queries_per_image(made) for name, made in _SHORT_TEXT.items()},
}
"""OWL-ViT / OWLv2 detection: text queries for each image -> per-patch boxes and per-query scores."""

_SPEECH_SYNTHESIS = {
    "inputs": (spec("input_ids", {0: "text_batch_size", 1: "sequence_length"}, Kind.INT), spec("attention_mask", {0: "text_batch_size", 1: "sequence_length"}, Kind.INT)),
    # as long as the durations the model predicts from the text: sizes no input has
    "outputs": (
        spec("waveform", {0: "text_batch_size", 1: "n_samples"}),
        spec("spectrogram", {0: "text_batch_size", 2: "n_frames"}),
    ),
    "normalizer": normalizers.VITS,
}
"""VITS: text -> the waveform and the spectrogram the vocoder read, of predicted lengths."""

_IMAGE_PROMPT = {
    # Optimum's default (image) variant: a page image and its prompt, which starts with one placeholder per image patch;
    # the sequence counts them
    "inputs": (
        spec("input_ids", _BS, Kind.INT),
        spec("attention_mask", _BS, Kind.INT),
        spec("token_type_ids", _BS, Kind.INT),
        spec("pixel_values", {0: "batch_size"}, Kind.FLOAT, rank=4),
    ),
    "outputs": (spec("embeddings", _BS),),
    "generators": {
        "input_ids": generators.image_token_ids,
        "attention_mask": generators.image_prefix_mask,
        "token_type_ids": generators.image_prefix_token_types,
    },
    "normalizer": normalizers.COLPALI,
}
"""ColPali: one embedding per image patch and prompt token (late-interaction retrieval)."""

ENTRIES: tuple[ModelEntry, ...] = (
    # text encoders
    entry("bert", text_encoder, _ENCODER_TASKS),
    entry("roberta", text_encoder, _ENCODER_TASKS, **_NO_SEGMENTS),
    entry("distilbert", text_encoder, _ENCODER_TASKS, **_NO_SEGMENTS),
    *(
        entry(t, text_encoder, _ENCODER_TASKS, **_NO_SEGMENTS)
        for t in ("xlm-roberta", "camembert", "mpnet", "data2vec-text", "deberta-v2", "big_bird", "ibert")
    ),
    entry("deberta", text_encoder, _ENCODER_TASKS_NO_CHOICE, **_NO_SEGMENTS),
    *(
        entry(t, text_encoder, _ENCODER_TASKS)
        for t in ("electra", "albert", "roformer", "mobilebert", "convbert", "squeezebert", "megatron-bert", "rembert")
    ),
    *(entry(t, text_encoder, _ENCODER_TASKS, **_MASKED_LM_HEAD) for t in ("xlm", "flaubert")),
    *(entry(t, text_encoder, _MASKED_LM_TASKS, **_NO_SEGMENTS) for t in ("esm", "modernbert")),
    entry("nystromformer", text_encoder, _ENCODER_TASKS, normalizer=normalizers.NYSTROM),
    # sliding-window attention with global tokens: patched to be right at every length (catalog/longformer.py)
    entry("longformer", longformer, _ENCODER_TASKS),  # Optimum: BERT's inputs and global_attention_mask
    entry("splinter", text_encoder, ("feature-extraction", "question-answering")),
    entry("layoutlm", text_encoder, _MASKED_LM_TASKS, **_LAYOUT),
    entry("lilt", text_encoder, ("feature-extraction", "question-answering", "text-classification", "token-classification"), **_LAYOUT, **_NO_SEGMENTS),
    # LayoutLMv3's hidden states and answer spans run over the tokens, then the image's patches (and its CLS)
    entry(
        "layoutlmv3", text_encoder, ("feature-extraction", "question-answering", "text-classification", "token-classification"),
        bbox=True, image=True, token_type_ids=False, normalizer=normalizers.LAYOUT_IMAGE,
        task_options={
            t: {"bbox": True, "image": True, "token_type_ids": False, "normalizer": normalizers.LAYOUT_IMAGE, "tokens": "sequence_length + image_sequence_length"}
            for t in ("feature-extraction", "question-answering")
        },
    ),
    entry("visual_bert", tensors, ("feature-extraction",), **_VISUAL_TEXT),
    entry(
        "perceiver", tensors, ("fill-mask", "text-classification", "image-classification"), **_PERCEIVER_TEXT,
        task_options={"image-classification": _PERCEIVER_IMAGE},
    ),
    entry("markuplm", text_encoder, ("feature-extraction", "text-classification", "token-classification", "question-answering"), xpath=True, normalizer=normalizers.MARKUP),
    # decoder-only
    *(entry(t, text_decoder, _DECODER_TOKEN_TASKS) for t in ("gpt2", "qwen2")),
    entry("gpt_bigcode", text_decoder, _DECODER_TOKEN_TASKS, normalizer=normalizers.MULTI_QUERY),
    *(entry(t, text_decoder, _DECODER_TOKEN_TASKS, **_NO_POSITIONS) for t in ("bloom", "mpt")),
    *(entry(t, text_decoder, _DECODER_TASKS) for t in ("llama", "mistral", "qwen3", "phi3", "phi", "gpt_neox", "gpt_neo", "smollm3")),
    *(entry(t, text_decoder, _DECODER_TASKS, **_NO_POSITIONS) for t in ("gemma", "gemma2")),
    # mixture-of-experts decoders (Optimum lists qwen3_moe; the others get llama's decoder tasks)
    entry("qwen3_moe", text_decoder, _DECODER_TOKEN_TASKS, **_MOE),
    *(entry(t, text_decoder, _DECODER_TASKS, **_MOE) for t in ("mixtral", "qwen2_moe")),
    entry("phimoe", text_decoder, _DECODER_TASKS, **{**_MOE, "patches": (_BATCHED_EXPERTS, _PHIMOE_ROPE)}),
    *(entry(t, text_decoder, _CAUSAL_LM_TASKS, **_MOE) for t in ("olmoe", "granitemoe")),  # no classification head
    entry("gpt_oss", text_decoder, _CAUSAL_LM_TASKS, **_MOE, **_NO_POSITIONS),  # Optimum's base: Gemma's
    entry("deepseek_v3", text_decoder, _CAUSAL_LM_TASKS, normalizer=normalizers.LATENT_ATTENTION, **_MOE),
    *(entry(t, text_decoder, (*_DECODER_TASKS, "question-answering")) for t in ("gptj", "opt")),
    *(entry(t, text_decoder, _CAUSAL_LM_TASKS) for t in ("codegen", "olmo", "olmo2", "granite", "stablelm", "arcee")),
    *(entry(t, text_decoder, _CAUSAL_LM_TASKS, **_NO_POSITIONS) for t in ("gemma3_text", "nemotron")),
    # Gemma 3's vision-language model exported on text alone; its generation head is ForConditionalGeneration.
    entry(
        "gemma3",
        text_decoder,
        _DECODER_TASKS,
        normalizer=normalizers.IMAGE_TEXT_TO_TEXT,
        architecture_tasks={"ForConditionalGeneration": "text-generation"},
        **_NO_POSITIONS,
    ),
    *(entry(t, text_decoder, _CAUSAL_LM_TASKS, patches=INTERLEAVE_BY_STACK) for t in ("cohere", "glm", "helium")),
    entry(
        "falcon",
        text_decoder,
        (*_CAUSAL_LM_TASKS, "question-answering", "token-classification"),
        normalizer=normalizers.MULTI_QUERY,
        # these heads' forward takes no position_ids
        task_options={t: {"normalizer": normalizers.MULTI_QUERY, **_NO_POSITIONS} for t in ("question-answering", "token-classification")},
    ),
    # encoder-decoder text
    entry("t5", text_seq2seq, _SEQ2SEQ_TASKS, normalizer=normalizers.T5),
    *(entry(t, text_seq2seq, _SEQ2SEQ_TASKS, normalizer=normalizers.T5) for t in ("mt5", "longt5")),
    entry("m2m_100", text_seq2seq, _SEQ2SEQ_TASKS),
    *(
        entry(t, text_seq2seq, (*_BART_LIKE_TASKS, "text-classification", "question-answering"), **_CAUSAL_DECODER_HEAD)
        for t in ("bart", "mbart", "bigbird_pegasus")
    ),
    *(
        entry(t, text_seq2seq, _BART_LIKE_TASKS, **_CAUSAL_DECODER_HEAD)
        for t in ("marian", "pegasus", "blenderbot", "blenderbot-small")
    ),
    # vision
    *(entry(t, vision, (*_IMAGE_TASKS, "masked-im")) for t in ("vit", "deit", "swin", "swinv2")),
    *(entry(t, vision, _IMAGE_TASKS) for t in ("beit", "data2vec-vision", "dinov2", "vit_msn")),
    entry("vit_mae", tensors, ("feature-extraction",), **_MASKED_AUTOENCODER),
    *(entry(t, vision, ("feature-extraction",)) for t in ("clip_vision_model", "siglip_vision_model", "donut-swin")),
    entry("dpt", vision, ("feature-extraction", "depth-estimation", "image-segmentation", "semantic-segmentation")),
    entry("glpn", vision, ("feature-extraction", "depth-estimation"), **_FEATURE_MAP),
    entry("swin2sr", vision, ("feature-extraction", "image-to-image")),
    entry("detr", vision, ("feature-extraction", "object-detection", "image-segmentation"), normalizer=normalizers.VISION_BACKBONE),
    entry("table-transformer", vision, ("feature-extraction", "object-detection"), normalizer=normalizers.VISION_BACKBONE),
    entry("mgp-str", tensors, ("feature-extraction",), **_SCENE_TEXT),
    entry(
        "maskformer", tensors, ("feature-extraction", "image-segmentation"), **_MASK_CLASSIFIER,
        task_options={"image-segmentation": _MASK_SEGMENTER}, architecture_tasks={"ForInstanceSegmentation": "image-segmentation"},
    ),
    entry("vitpose", vision, ("keypoint-detection",), normalizer=normalizers.VITPOSE),
    # ImageGPT reads images as sequences of color-cluster ids, GPT-2 style.
    entry("imagegpt", text_decoder, ("feature-extraction", "image-classification")),
    *(entry(t, vision, _IMAGE_TASKS, normalizer=normalizers.VISION_BACKBONE) for t in ("pvt", "hiera", "levit")),
    *(entry(t, vision, ("object-detection",), normalizer=normalizers.VISION_BACKBONE) for t in ("rt_detr", "rt_detr_v2", "d_fine")),
    entry("yolos", vision, ("feature-extraction", "object-detection")),
    *(
        entry(t, vision, _IMAGE_TASKS, **_FEATURE_MAP)
        for t in ("convnext", "convnextv2", "resnet", "regnet", "efficientnet", "poolformer", "cvt", "mobilenet_v1", "mobilenet_v2")
    ),
    # MobileViT's segmentation head is a semantic-segmentation class, registered as image segmentation.
    entry(
        "mobilevit",
        vision,
        (*_IMAGE_TASKS, "image-segmentation"),
        architecture_tasks={"ForSemanticSegmentation": "image-segmentation"},
        **_FEATURE_MAP,
    ),
    entry("segformer", vision, (*_IMAGE_TASKS, "image-segmentation", "semantic-segmentation"), **_FEATURE_MAP),
    # time series and trajectories
    # their forecasting heads are in no auto class: loaded by class name (pieces.tasks.NAMED_HEADS)
    *(entry(t, tensors, ("feature-extraction", "time-series-forecasting"), **_TIME_SERIES) for t in ("patchtst", "patchtsmixer")),
    entry("decision_transformer", tensors, ("feature-extraction", "reinforcement-learning"), **_TRAJECTORY),
    # audio
    *(
        entry(t, audio, _AUDIO_FRAME_TASKS, **_WAVEFORM_CLASSIFIER)
        for t in ("wav2vec2", "wavlm", "data2vec-audio", "unispeech-sat", "wav2vec2-conformer")
    ),
    *(entry(t, audio, _AUDIO_TASKS, **_WAVEFORM_CLASSIFIER) for t in ("hubert", "sew", "sew-d", "unispeech")),
    entry(
        "audio-spectrogram-transformer",
        audio,
        ("feature-extraction", "audio-classification"),
        normalizer=normalizers.AST,
        spectrogram=True,
    ),
    # speech to text
    entry(
        "whisper",
        speech_to_text,
        (
            "feature-extraction",
            "feature-extraction-with-past",
            "audio-classification",
            "automatic-speech-recognition",
            "automatic-speech-recognition-with-past",
        ),
        **_SPEECH_HEAD,
    ),
    entry(
        "moonshine", speech_to_text, _SPEECH_SEQ2SEQ_TASKS, encoder=WAVEFORM_ENCODER, normalizer=normalizers.MOONSHINE, patches=INTERLEAVE_BY_STACK,
        **_SPEECH_HEAD,
    ),
    entry(
        "speech_to_text",
        speech_to_text,
        _SPEECH_SEQ2SEQ_TASKS,
        encoder=FILTERBANK_ENCODER,
        # its encoder output is the frames the mask covers, subsampled by the convolutions
        decoder=DecoderPart(
            hidden_axes={0: "batch_size", 1: "encoder_frames"}, generators={"encoder_hidden_states": generators.subsampled_encoder_states}
        ),
        normalizer=normalizers.SPEECH_TO_TEXT,
        **_SPEECH_HEAD,
    ),
    # encoder-decoder pairs: any encoder with any decoder, each of its own config and width
    entry(
        "encoder-decoder",
        encoder_decoder,
        ("text2text-generation", "text2text-generation-with-past"),
        normalizer=normalizers.ENCODER_DECODER,
        architecture_tasks={"EncoderDecoderModel": "text2text-generation"},
    ),
    entry(
        "vision-encoder-decoder",
        encoder_decoder,
        _IMAGE_TO_TEXT_TASKS,
        encoder=IMAGE_ENCODER,
        normalizer=normalizers.VISION_ENCODER_DECODER,
        architecture_tasks={"EncoderDecoderModel": "image-to-text"},
    ),
    # TrOCR has no bare model: its body is read from the causal LM (model.decoder)
    entry("trocr", decoder_alone, ("feature-extraction", "feature-extraction-with-past"), normalizer=normalizers.TROCR),
    entry("pix2struct", encoder_decoder, _IMAGE_TO_TEXT_TASKS, encoder=PATCH_ENCODER, normalizer=normalizers.PIX2STRUCT, architecture_tasks={"ForConditionalGeneration": "image-to-text"}),
    # text + vision
    *(entry(t, text_and_vision, (*_DUAL_ENCODER_TASKS, "image-classification")) for t in ("clip", "metaclip_2")),
    entry("chinese_clip", text_and_vision, _DUAL_ENCODER_TASKS),
    entry("groupvit", text_and_vision, ("feature-extraction",)),
    entry("siglip", text_and_vision, _DUAL_ENCODER_TASKS, attention_mask=False),
    *(
        entry(t, tensors, ("feature-extraction", "zero-shot-object-detection"), **_OPEN_VOCABULARY,
              task_options={"zero-shot-object-detection": _OPEN_VOCABULARY_DETECTION},
              architecture_tasks={"ForObjectDetection": "zero-shot-object-detection"})
        for t in ("owlvit", "owlv2")
    ),
    entry("vits", tensors, ("text-to-audio",), **_SPEECH_SYNTHESIS, architecture_tasks={"VitsModel": "text-to-audio"}),  # its bare model speaks
    entry("colpali", tensors, ("feature-extraction",), **_IMAGE_PROMPT),
    # SAM exports model.onnx (Optimum's "monolith" variant) until a graph can call more than one module: its split
    # files (segment_anything's default) need the positional embeddings computed beside the vision encoder and fed to
    # the prompt encoder + mask decoder, which no single module of SamModel does
    entry("sam", segment_anything, ("feature-extraction",)),
    # MusicgenOnnxConfig's six files with -with-past (its only variant); text-to-audio alone writes the decoder without a cache
    entry("musicgen", musicgen, ("text-to-audio", "text-to-audio-with-past")),
    # SpeechT5OnnxConfig's four files with -with-past (its default variant), text-to-audio alone without the cache; the
    # vocoder is a checkpoint of its own (vocoder=PATH, --vocoder PATH), its decoder's prenet dropout an input (speecht5.py)
    entry("speecht5", speecht5, ("text-to-audio", "text-to-audio-with-past"), architecture_tasks={"ForTextToSpeech": "text-to-audio"}),
)

ENTRIES = with_dynamic_rope(ENTRIES)  # dynamic NTK's frequencies from the length inside the graph (catalog/rope.py)
REGISTRY: Registry = build_registry(ENTRIES)
"""Every supported model type, built once from :data:`ENTRIES`."""

UNSUPPORTED: Mapping[tuple[str, str], str] = MappingProxyType(
    {
    }
)
"""(model type, task) pairs Optimum registers that onnxspec refuses, with the reason (``"*"``: every task)."""
