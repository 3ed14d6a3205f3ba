"""Ready-made normalizers: where the usual config families keep each canonical dimension."""

from __future__ import annotations

from onnxspec.errors import ConfigError
from onnxspec.pieces.normalize import Normalizer, derive, normalizer

__all__ = [
    "AST", "AUDIO", "CLIP", "COLPALI", "DECISION_TRANSFORMER", "ENCODER_DECODER", "IMAGE_TEXT_TO_TEXT", "LATENT_ATTENTION", "LAYOUT", "LAYOUT_IMAGE", "MARKUP", "MOONSHINE", "MULTI_QUERY", "NYSTROM", "OWL_VIT", "PERCEIVER", "PIX2STRUCT", "MUSICGEN", "SAM", "SEQ2SEQ",
    "SEQ2SEQ_DECODER", "SPEECH_TO_TEXT", "T5", "TIME_SERIES", "TROCR", "TEXT", "VISION", "VISION_BACKBONE", "VISION_ENCODER_DECODER", "VISUAL_BERT", "VITPOSE", "VITS", "WHISPER", "within",
]

_OPTIONAL_TEXT = {"num_key_value_heads", "head_dim", "type_vocab_size", "max_position_embeddings"}

TEXT: Normalizer = normalizer(
    hidden_size=("hidden_size", "n_embd", "d_model", "dim"),
    num_layers=("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    num_attention_heads=("num_attention_heads", "n_head", "num_heads", "n_heads"),
    num_key_value_heads=("num_key_value_heads",),
    head_dim=("head_dim",),
    vocab_size=("vocab_size",),
    type_vocab_size=("type_vocab_size",),
    max_position_embeddings=("max_position_embeddings", "n_positions"),
    optional=_OPTIONAL_TEXT,
)
"""Text encoders and decoder-only models (BERT, GPT-2, Llama with grouped-query attention)."""

@derive("num_kv_heads with the new decoder architecture, else 1 for multi-query attention, else num_attention_heads")
def _multi_query_kv_heads(found):  # type: ignore[no-untyped-def]
    if found.get("new_decoder_architecture"):
        return found["num_kv_heads"]
    return 1 if found.get("multi_query") else found["num_attention_heads"]


MULTI_QUERY: Normalizer = normalizer(
    TEXT,
    num_key_value_heads=_multi_query_kv_heads,
    num_kv_heads=("num_kv_heads",),
    new_decoder_architecture=("new_decoder_architecture",),
    multi_query=("multi_query",),
    optional={"num_kv_heads", "new_decoder_architecture", "multi_query"},
)
"""Falcon, GPTBigCode: how many key/value heads the cache has depends on architecture flags
(``multi_query``: one shared head; Falcon's ``new_decoder_architecture``: ``num_kv_heads``)."""


@derive("1: every head reads the one compressed latent")
def _one_latent_head(found):  # type: ignore[no-untyped-def]
    return 1


LATENT_ATTENTION: Normalizer = normalizer(
    TEXT,
    num_key_value_heads=_one_latent_head,
    head_dim=("kv_lora_rank",),
    value_head_dim=("qk_rope_head_dim",),
)
"""Multi-head latent attention (DeepSeek V3): the cache keeps the compressed latent, one head for all: its "key" is
the ``kv_lora_rank``-wide content latent, its "value" the ``qk_rope_head_dim``-wide rotary key (both heads are
expanded from them inside the graph), so key and value widths differ."""


LAYOUT: Normalizer = normalizer(TEXT, max_2d_position_embeddings=("max_2d_position_embeddings",), optional={"max_2d_position_embeddings"})
"""Document layout encoders (LayoutLM, LiLT): text dims plus the size of the box-coordinate grid."""

LAYOUT_IMAGE: Normalizer = normalizer(LAYOUT, image_size=("input_size",), num_channels=("num_channels",))
"""Layout encoders that also read the page image (LayoutLMv3): of ``input_size`` pixels a side."""

VISUAL_BERT: Normalizer = normalizer(TEXT, visual_embedding_dim=("visual_embedding_dim",))
"""Text encoders fed region features of a detector beside the tokens (VisualBERT): ``visual_embedding_dim`` wide."""

def within(prefix: str, base: Normalizer) -> dict[str, tuple[str, ...]]:
    """``base``'s attribute paths read under ``prefix`` (a sub-config such as ``text_config`` or
    ``decoder``), as fields for :func:`normalizer`; derived fields are left out."""
    return {
        name: tuple(f"{prefix}.{p}" for p in ((paths,) if isinstance(paths, str) else paths))
        for name, paths in base.fields.items()
        if isinstance(paths, (str, tuple))
    }


IMAGE_TEXT_TO_TEXT: Normalizer = normalizer(TEXT, **within("text_config", TEXT))
"""Vision-language decoders (Gemma 3) used on text alone: the language model's dims live in ``text_config``."""

MARKUP: Normalizer = normalizer(
    TEXT,
    max_depth=("max_depth",),
    max_xpath_tag_unit_embeddings=("max_xpath_tag_unit_embeddings",),
    max_xpath_subs_unit_embeddings=("max_xpath_subs_unit_embeddings",),
)
"""Markup encoders (MarkupLM): text dims plus the XPath depth and its tag / subscript vocabularies."""

SEQ2SEQ: Normalizer = normalizer(
    TEXT,
    hidden_size=("d_model", "hidden_size"),
    num_layers=("encoder_layers", "num_layers", "num_hidden_layers"),
    decoder_num_layers=("decoder_layers", "num_decoder_layers", "num_layers"),
    num_attention_heads=("encoder_attention_heads", "num_heads", "num_attention_heads"),
    decoder_num_attention_heads=("decoder_attention_heads", "num_heads", "num_attention_heads"),
)
"""Encoder-decoder text models (BART and its relatives)."""

SEQ2SEQ_DECODER: Normalizer = normalizer(
    SEQ2SEQ,
    num_layers=("decoder_layers", "num_decoder_layers", "num_layers"),
    num_attention_heads=("decoder_attention_heads", "num_heads", "num_attention_heads"),
)
"""The decoder of an encoder-decoder model used alone as a causal LM (BART's ``ForCausalLM``)."""

T5: Normalizer = normalizer(SEQ2SEQ, head_dim=("d_kv",))
"""T5: the per-head dim is ``d_kv``, not ``d_model / num_heads``."""


_ANY_DECODER = normalizer(
    TEXT,
    hidden_size=("hidden_size", "d_model", "n_embd"),
    num_layers=("decoder_layers", "num_decoder_layers", "n_layer", "num_hidden_layers", "num_layers"),
    num_attention_heads=("decoder_attention_heads", "n_head", "num_attention_heads", "num_heads"),
)
"""A decoder's own config, whatever family it comes from (GPT-2, TrOCR, BART, mBART, BERT)."""

ENCODER_DECODER: Normalizer = normalizer(TEXT, **within("decoder", _ANY_DECODER), encoder_hidden_size=("encoder.hidden_size",))
"""Pairs of two configs (``EncoderDecoderModel``): the cache and ids follow the decoder's config;
the decoder is fed the encoder's output, of the encoder's width (``encoder_hidden_size``)."""

VISION_ENCODER_DECODER: Normalizer = normalizer(
    ENCODER_DECODER, image_size=("encoder.image_size",), num_channels=("encoder.num_channels",)
)
"""Image encoder + text decoder pairs (TrOCR, Donut): images of the encoder's size."""

PIX2STRUCT: Normalizer = normalizer(
    TEXT,
    **within("text_config", normalizer(TEXT, hidden_size=("hidden_size",), num_layers=("num_layers",), num_attention_heads=("num_heads",), head_dim=("d_kv",))),
    encoder_hidden_size=("vision_config.hidden_size",),
    patch_embed_hidden_size=("vision_config.patch_embed_hidden_size",),
    seq_len=("vision_config.seq_len",),
)
"""Pix2Struct: a T5-like text decoder (``text_config``) fed by a patch encoder (``vision_config``)."""

TROCR: Normalizer = normalizer(
    TEXT,
    hidden_size=("d_model",),
    num_layers=("decoder_layers",),
    num_attention_heads=("decoder_attention_heads",),
    encoder_hidden_size=("cross_attention_hidden_size", "d_model"),
)
"""TrOCR's decoder alone: its cross attention reads encoder outputs of ``cross_attention_hidden_size``
(when set; else its own width)."""

MOONSHINE: Normalizer = normalizer(
    TEXT,
    num_layers=("decoder_num_hidden_layers",),
    num_attention_heads=("decoder_num_attention_heads",),
    num_key_value_heads=("decoder_num_key_value_heads",),
)
"""Moonshine: one width, the decoder's layers and (grouped-query) heads named apart."""


@derive("input_feat_per_channel * input_channels")
def _filterbank_size(found):  # type: ignore[no-untyped-def]
    return found["input_feat_per_channel"] * found["input_channels"]


SPEECH_TO_TEXT: Normalizer = normalizer(
    SEQ2SEQ,
    input_feat_per_channel=("input_feat_per_channel",),
    input_channels=("input_channels",),
    feature_size=_filterbank_size,
    num_conv_layers=("num_conv_layers",),
)
"""Speech2Text: filterbank frames of ``input_feat_per_channel * input_channels`` features,
subsampled by ``num_conv_layers`` stride-2 convolutions."""


@derive("2 * max_source_positions (the encoder's conv stride is 2)")
def _whisper_frames(found):  # type: ignore[no-untyped-def]
    return 2 * found["max_source_positions"]


WHISPER: Normalizer = normalizer(
    SEQ2SEQ,
    feature_size=("num_mel_bins",),
    max_source_positions=("max_source_positions",),
    nb_max_frames=_whisper_frames,
)
"""Speech-to-text models fed log-mel features of a fixed length."""

VISION: Normalizer = normalizer(
    hidden_size=("hidden_size",),
    image_size=("image_size",),
    num_channels=("num_channels",),
)
"""Vision encoders (ViT and relatives)."""

VISION_BACKBONE: Normalizer = normalizer(
    VISION,
    num_channels=("num_channels", "backbone_config.num_channels"),
    optional={"hidden_size", "image_size", "num_channels"},
)
"""Image models whose config may lack a single ``hidden_size`` (per-stage ``hidden_sizes``), an
``image_size`` (convolutional backbones; images then use the default height and width) or keep
``num_channels`` in a ``backbone_config`` (detection models; 3 channels when absent)."""

VITPOSE: Normalizer = normalizer(VISION_BACKBONE, image_size=("backbone_config.image_size",))
"""Keypoint heads over a backbone: image size and channels live in ``backbone_config``."""

AUDIO: Normalizer = normalizer(
    hidden_size=("hidden_size",),
    vocab_size=("vocab_size",),
    optional={"vocab_size"},
)
"""Raw-waveform audio encoders (wav2vec2 and relatives)."""

AST: Normalizer = normalizer(
    hidden_size=("hidden_size",),
    max_length=("max_length",),
    num_mel_bins=("num_mel_bins",),
)
"""Spectrogram transformers (AST): a fixed number of frames by mel bins."""

CLIP: Normalizer = normalizer(
    hidden_size=("text_config.hidden_size",),
    vocab_size=("text_config.vocab_size",),
    image_size=("vision_config.image_size",),
    num_channels=("vision_config.num_channels",),
)
"""Dual text + vision encoders."""

DECISION_TRANSFORMER: Normalizer = normalizer(
    hidden_size=("hidden_size",),
    state_dim=("state_dim",),
    act_dim=("act_dim",),
    max_ep_len=("max_ep_len",),
)
"""Trajectory models (Decision Transformer): states and actions of ``state_dim`` / ``act_dim``,
timesteps below ``max_ep_len``."""

TIME_SERIES: Normalizer = normalizer(
    context_length=("context_length",),
    num_input_channels=("num_input_channels",),
    hidden_size=("d_model",),
)
"""Patch time-series models (PatchTST, PatchTSMixer): a window of ``context_length`` steps of
``num_input_channels`` series."""

PERCEIVER: Normalizer = normalizer(
    hidden_size=("d_model",),
    vocab_size=("vocab_size",),
    image_size=("image_size",),
)
"""Perceiver: inputs of ``d_model`` (text: ids below ``vocab_size``; images: ``image_size`` a side)
cross-attended by a fixed set of latents."""


@derive("num_landmarks, refused unless it equals segment_means_seq_len")
def _exact_landmarks(found):  # type: ignore[no-untyped-def]
    landmarks, length = found["landmarks"], found["segment_means_seq_len"]
    if landmarks != length:
        raise ConfigError(
            f"nystromformer: num_landmarks ({landmarks}) differs from segment_means_seq_len ({length}); such a model averages its "
            f"landmarks over a reshape by the config's length, so it is only defined for inputs of exactly {length} tokens (PyTorch "
            "mixes batch rows at other lengths) and no graph with a dynamic sequence can be right. Released checkpoints set both equal "
            "(exact attention at any length); export such a config"
        )
    return landmarks


NYSTROM: Normalizer = normalizer(
    TEXT,
    num_landmarks=_exact_landmarks,
    landmarks=("num_landmarks",),
    segment_means_seq_len=("segment_means_seq_len",),
)
"""Nystromformer: text dims; a config whose landmarks are fewer than ``segment_means_seq_len`` is refused."""


@derive("0, refused otherwise: noise_scale and noise_scale_duration must be 0")
def _no_sampled_noise(found):  # type: ignore[no-untyped-def]
    noise = {k: found[k] for k in ("noise_scale", "noise_scale_duration") if found[k]}
    if noise:
        settings = ", ".join(f"{k}={v}" for k, v in noise.items())
        raise ConfigError(
            f"vits: {settings}: this model draws fresh random noise on every call (its durations and its latents are "
            "sampled), so no graph can agree with PyTorch and the export cannot be validated (the waveform's very length "
            "is random). Set noise_scale and noise_scale_duration to 0 in config.json to export the deterministic model "
            "(durations and latents at zero noise: the same voice, without the random variation between calls)"
        )
    return 0


VITS: Normalizer = normalizer(
    TEXT,
    noise=_no_sampled_noise,
    noise_scale=("noise_scale",),
    noise_scale_duration=("noise_scale_duration",),
)
"""VITS: text dims; a config that samples noise (``noise_scale`` or ``noise_scale_duration`` not 0) is refused."""

COLPALI: Normalizer = normalizer(
    hidden_size=("vlm_config.text_config.hidden_size",),
    vocab_size=("vlm_config.text_config.vocab_size",),
    image_size=("vlm_config.vision_config.image_size",),
    num_channels=("vlm_config.vision_config.num_channels",),
    num_image_tokens=("vlm_config.text_config.num_image_tokens",),
    image_token_id=("vlm_config.image_token_id", "vlm_config.image_token_index"),  # config.json keeps the older name
)
"""ColPali: a PaliGemma (``vlm_config``) whose prompts start with ``num_image_tokens`` placeholders
(``image_token_id``), one per patch of an image of ``image_size``."""

OWL_VIT: Normalizer = normalizer(CLIP, max_position_embeddings=("text_config.max_position_embeddings",))
"""OWL-ViT / OWLv2: dual encoders whose text tower has a short position table (16 in the released checkpoints)."""

SAM: Normalizer = normalizer(
    hidden_size=("vision_config.hidden_size",),
    image_size=("vision_config.image_size",),
    num_channels=("vision_config.num_channels",),
    output_channels=("vision_config.output_channels",),
    image_embedding_size=("prompt_encoder_config.image_embedding_size",),
    prompt_image_size=("prompt_encoder_config.image_size",),
)
"""SAM: images of ``image_size`` a side (``vision_config``) embedded as ``output_channels`` maps of
``image_embedding_size`` a side (the prompt encoder's grid); prompt points are pixel coordinates
in an image of ``prompt_image_size`` (the prompt encoder's, normally the vision encoder's)."""

MUSICGEN: Normalizer = normalizer(
    hidden_size=("decoder.hidden_size",),
    num_layers=("decoder.num_hidden_layers",),
    num_attention_heads=("decoder.num_attention_heads",),
    vocab_size=("text_encoder.vocab_size",),
    encoder_hidden_size=("text_encoder.d_model", "text_encoder.hidden_size"),
    num_codebooks=("decoder.num_codebooks",),
    codebook_vocab_size=("decoder.vocab_size",),
    codebook_size=("audio_encoder.codebook_size",),
    pad_token_id=("decoder.pad_token_id",),
)
"""MusicGen: a text encoder (``text_encoder``, its ``vocab_size`` for the prompt's ids and its width for the decoder's
``encoder_hidden_states``), a decoder over ``num_codebooks`` parallel streams of audio codes below its ``vocab_size``
(``codebook_vocab_size``; the cache is the decoder's; ``pad_token_id`` fills its delay pattern), and an EnCodec model (``audio_encoder``) decoding codes below
its ``codebook_size`` into a waveform."""
