"""Tiny configs of every registered model type, and helpers that build random-weight models.

No model is ever downloaded: each config is small (hidden size 32, 2 layers) and the weights
are random, seeded. Dimensions are chosen to exercise the specs: grouped-query attention
(llama: 4 heads, 2 key/value heads), a head dim that is not hidden / heads (llama, t5).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import transformers as T

from onnxspec.pieces.tasks import head_classes, parse_task

_TEXT = dict(vocab_size=100, max_position_embeddings=64)
_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **_TEXT)
_DECODER = dict(_ENCODER, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_GQA = dict(_DECODER, num_key_value_heads=2)  # grouped-query attention: 4 query heads share 2 key/value heads
_BART_LIKE = dict(
    d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, max_position_embeddings=64,
    pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
)
_T5_LIKE = dict(d_model=32, d_kv=16, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=100, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
_VIT_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8)
_CNN = dict(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1])
_AUDIO = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=40,
    conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, mask_time_prob=0.0, classifier_proj_size=16,
)
# _DEEP_INIT: deep vision stacks (MobileNet v1/v2, EfficientNet, LeViT, DPT's
# heads, MobileViT) shrink their input by a constant factor per layer at the default initializer
# range 0.02: their outputs came out at 1e-8 (DPT) down to 1e-33 (MobileNet v1), and exactly 0 in
# float32 for MobileViT, where a check proves nothing. Each such config sets the range at which its
# outputs are of order 0.1-10 (measured per head), below where ReLU6 or tanh saturate.
_XVECTOR = dict(tdnn_dim=(32, 32), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=16)
_DETR = dict(
    backbone_config=dict(model_type="resnet", hidden_sizes=[8, 8, 16, 32], depths=[1, 1, 1, 1], embedding_size=8, out_features=["stage1", "stage2", "stage3", "stage4"]),
    d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=37,  # d_model + heads: a multiple of 8 (mask head)
    decoder_ffn_dim=37, num_queries=5, num_labels=3,
)
_RT_DETR = dict(
    backbone_config=dict(model_type="rt_detr_resnet", hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], embedding_size=8, layer_type="basic",
                         out_features=["stage2", "stage3", "stage4"]),
    encoder_hidden_dim=16, encoder_in_channels=[16, 16, 32], feat_strides=[8, 16, 32], encoder_layers=1, encoder_ffn_dim=32, encoder_attention_heads=2,
    d_model=16, num_queries=5, decoder_ffn_dim=32, decoder_attention_heads=2, decoder_n_points=2, decoder_in_channels=[16, 16, 16], num_labels=3,
    num_denoising=0, initializer_range=0.5,
)
_TOWER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def _clip() -> T.PretrainedConfig:
    return T.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=100, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=30, patch_size=10),
        projection_dim=16,
    )


_TOKENS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)


def _pair(kind: type, encoder: T.PretrainedConfig, decoder: T.PretrainedConfig) -> T.PretrainedConfig:
    """An encoder-decoder pair config with the token ids generation needs."""
    config = kind.from_encoder_decoder_configs(encoder, decoder)
    for name, value in _TOKENS.items():
        setattr(config, name, value)
    return config


def _vision_pair(name: str) -> T.PretrainedConfig:
    """A tiny vision-encoder-decoder pair: see :data:`VISION_PAIRS`."""
    return VISION_PAIRS[name]()


VISION_PAIRS: dict[str, Callable[[], T.PretrainedConfig]] = {
    # ViT of width 32 -> GPT-2 of width 48: VisionEncoderDecoderModel projects (enc_to_dec_proj) inside the decoder graph
    "vit-gpt2": lambda: _pair(T.VisionEncoderDecoderConfig, T.ViTConfig(**_VIT_LIKE), T.GPT2Config(n_embd=48, n_layer=2, n_head=4, vocab_size=100, n_positions=64, **_TOKENS)),
    # TrOCR-style: ViT of width 32 -> TrOCR of width 48 whose cross attention reads width 32 (cross_attention_hidden_size: no projection)
    "vit-trocr": lambda: _pair(
        T.VisionEncoderDecoderConfig, T.ViTConfig(**_VIT_LIKE),
        T.TrOCRConfig(d_model=48, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37, vocab_size=100, max_position_embeddings=64,
                      cross_attention_hidden_size=32, **_TOKENS),
    ),
    # Donut-style: Swin (output width 32) -> mBART of width 32
    "swin-mbart": lambda: _pair(
        T.VisionEncoderDecoderConfig, T.DonutSwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4),
        T.MBartConfig(**_BART_LIKE),
    ),
}
"""Vision-encoder-decoder pairs of different encoders, decoders and widths."""


_LLAMA = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=37,
              vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2)
ROPE_CONFIGS: dict[str, Callable[[], T.PretrainedConfig]] = {
    # dynamic NTK rescales its frequencies beyond max_position_embeddings (32)
    "dynamic": lambda: T.LlamaConfig(**_LLAMA, max_position_embeddings=32, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
    # YaRN and llama3 stretch frequencies trained on 32 positions (static: no switch at 32)
    "yarn": lambda: T.LlamaConfig(
        **_LLAMA, max_position_embeddings=64,
        rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0, "original_max_position_embeddings": 32},
    ),
    "llama3": lambda: T.LlamaConfig(
        **_LLAMA, max_position_embeddings=128,
        rope_parameters={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "rope_theta": 10000.0,
                         "original_max_position_embeddings": 32},
    ),
}
"""Tiny llamas of the long-context rope types, all with a length 32 that matters to them."""


CONFIGS: dict[str, Callable[[], T.PretrainedConfig]] = {
    "bert": lambda: T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **_TEXT),
    "roberta": lambda: T.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=100, max_position_embeddings=70, pad_token_id=1),
    "distilbert": lambda: T.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **_TEXT),
    "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0),
    "llama": lambda: T.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=37, pad_token_id=0, bos_token_id=1, eos_token_id=2, **_TEXT),
    "t5": lambda: T.T5Config(**_T5_LIKE),
    "bart": lambda: T.BartConfig(**_BART_LIKE),
    "vit": lambda: T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8, encoder_stride=8),
    "wav2vec2": lambda: T.Wav2Vec2Config(**_AUDIO, **_XVECTOR),
    "whisper": lambda: T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, num_mel_bins=16, max_source_positions=30,
        max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[],
    ),
    "clip": _clip,
    # text encoders
    "xlm-roberta": lambda: T.XLMRobertaConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1),
    "camembert": lambda: T.CamembertConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1),
    "data2vec-text": lambda: T.Data2VecTextConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1),
    "mpnet": lambda: T.MPNetConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1),
    "electra": lambda: T.ElectraConfig(**_ENCODER, embedding_size=16),
    "albert": lambda: T.AlbertConfig(**_ENCODER, embedding_size=16),
    "roformer": lambda: T.RoFormerConfig(**_ENCODER, embedding_size=32),
    "mobilebert": lambda: T.MobileBertConfig(**_ENCODER, embedding_size=16, intra_bottleneck_size=16, num_feedforward_networks=2),
    "convbert": lambda: T.ConvBertConfig(**_ENCODER, embedding_size=32),
    "squeezebert": lambda: T.SqueezeBertConfig(**dict(_ENCODER, intermediate_size=64), embedding_size=32),
    "deberta": lambda: T.DebertaConfig(**_ENCODER, type_vocab_size=0),
    "deberta-v2": lambda: T.DebertaV2Config(**_ENCODER, type_vocab_size=0),
    "xlm": lambda: T.XLMConfig(emb_dim=32, n_layers=2, n_heads=4, vocab_size=100, max_position_embeddings=64, n_langs=2),
    "flaubert": lambda: T.FlaubertConfig(emb_dim=32, n_layers=2, n_heads=4, vocab_size=100, max_position_embeddings=64, n_langs=2),
    # decoder-only
    "mistral": lambda: T.MistralConfig(**_GQA, sliding_window=None),
    "qwen2": lambda: T.Qwen2Config(**_GQA),
    "qwen3": lambda: T.Qwen3Config(**_GQA, head_dim=16),
    # mixture-of-experts decoders: 4 experts, 2 per token; expert widths a multiple of 4 (torch._grouped_mm, PyTorch's
    # reference on CPU, wants 16-byte strides)
    "qwen3_moe": lambda: T.Qwen3MoeConfig(**_GQA, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=20, decoder_sparse_step=1),
    "mixtral": lambda: T.MixtralConfig(**dict(_GQA, intermediate_size=40), num_local_experts=4, num_experts_per_tok=2, sliding_window=None),
    "qwen2_moe": lambda: T.Qwen2MoeConfig(**_GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=20, shared_expert_intermediate_size=24, decoder_sparse_step=1),
    "olmoe": lambda: T.OlmoeConfig(**dict(_GQA, intermediate_size=40), num_experts=4, num_experts_per_tok=2),
    "granitemoe": lambda: T.GraniteMoeConfig(**dict(_GQA, intermediate_size=40), num_local_experts=4, num_experts_per_tok=2),
    # Phi-3.5-MoE's LongRoPE: short factors and mscale up to 16 positions, long beyond (the large shape set crosses it)
    "phimoe": lambda: T.PhimoeConfig(
        **dict(_GQA, intermediate_size=40), num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
        rope_parameters={
            "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.1, 1.2, 1.3], "long_factor": [2.0, 2.5, 3.0, 3.5],
            "original_max_position_embeddings": 16, "short_mscale": 1.1, "long_mscale": 1.2,
        },
    ),
    "gpt_oss": lambda: T.GptOssConfig(
        **dict(_GQA, intermediate_size=40), head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "yarn", "factor": 2.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 32, "rope_theta": 10000.0},
    ),
    "deepseek_v3": lambda: T.DeepseekV3Config(
        **dict(_DECODER, intermediate_size=40), num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=24, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=20,
        first_k_dense_replace=1, n_group=2, topk_group=1,
    ),
    "phi3": lambda: T.Phi3Config(**_GQA),
    "phi": lambda: T.PhiConfig(**_DECODER),
    "gemma": lambda: T.GemmaConfig(**_GQA, head_dim=16),
    "gemma2": lambda: T.Gemma2Config(**_GQA, head_dim=16, sliding_window=8),
    "gpt_neox": lambda: T.GPTNeoXConfig(**_DECODER),
    "gptj": lambda: T.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, vocab_size=100, n_positions=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "codegen": lambda: T.CodeGenConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, vocab_size=100, n_positions=64, n_ctx=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "gpt_neo": lambda: T.GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8, **_TEXT, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "opt": lambda: T.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37, word_embed_proj_dim=32, **_TEXT, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "falcon": lambda: T.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=100, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "olmo": lambda: T.OlmoConfig(**_GQA),
    "granite": lambda: T.GraniteConfig(**_GQA),
    "stablelm": lambda: T.StableLmConfig(**_GQA),
    # encoder-decoder text
    "mbart": lambda: T.MBartConfig(**_BART_LIKE),
    "marian": lambda: T.MarianConfig(**dict(_BART_LIKE, pad_token_id=0, decoder_start_token_id=0)),
    "pegasus": lambda: T.PegasusConfig(**dict(_BART_LIKE, pad_token_id=0, decoder_start_token_id=0)),
    "blenderbot": lambda: T.BlenderbotConfig(**_BART_LIKE),
    "blenderbot-small": lambda: T.BlenderbotSmallConfig(**_BART_LIKE),
    "m2m_100": lambda: T.M2M100Config(**_BART_LIKE),
    "mt5": lambda: T.MT5Config(**_T5_LIKE),
    "longt5": lambda: T.LongT5Config(**_T5_LIKE, local_radius=4, global_block_size=4),
    # vision
    "deit": lambda: T.DeiTConfig(**_VIT_LIKE, encoder_stride=8, architectures=["DeiTForImageClassification"]),  # the auto class picks one of two heads by name
    "beit": lambda: T.BeitConfig(**_VIT_LIKE),
    "data2vec-vision": lambda: T.Data2VecVisionConfig(**_VIT_LIKE),
    "dinov2": lambda: T.Dinov2Config(**_VIT_LIKE),
    "swin": lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, encoder_stride=8),
    "convnext": lambda: T.ConvNextConfig(**_CNN, num_stages=2, image_size=32),
    "convnextv2": lambda: T.ConvNextV2Config(**_CNN, num_stages=2, image_size=32),
    "resnet": lambda: T.ResNetConfig(**_CNN, embedding_size=16),
    "regnet": lambda: T.RegNetConfig(**_CNN, embedding_size=16, groups_width=8),
    "efficientnet": lambda: T.EfficientNetConfig(
        image_size=32, width_coefficient=0.25, depth_coefficient=0.25, kernel_sizes=[3, 3], in_channels=[32, 16], out_channels=[16, 24],
        strides=[1, 2], num_block_repeats=[1, 1], expand_ratios=[1, 6], depthwise_padding=[], hidden_dim=320,  # hidden_dim = round_filters(1280) at width 0.25
        initializer_range=0.6,  # _DEEP_INIT
    ),
    "levit": lambda: T.LevitConfig(
        image_size=64, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8], drop_path_rate=0,
        mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2], architectures=["LevitForImageClassification"], initializer_range=0.2,  # _DEEP_INIT
    ),
    "mobilevit": lambda: T.MobileViTConfig(image_size=32, patch_size=2, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_attention_heads=2, num_labels=3, initializer_range=0.4),  # _DEEP_INIT
    "poolformer": lambda: T.PoolFormerConfig(hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1]),
    "segformer": lambda: T.SegformerConfig(
        hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2, sr_ratios=[2, 1], num_attention_heads=[1, 2], patch_sizes=[7, 3],
        strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=3,
    ),
    "yolos": lambda: T.YolosConfig(**dict(_VIT_LIKE, image_size=[32, 48]), num_detection_tokens=5),
    # audio
    "hubert": lambda: T.HubertConfig(**_AUDIO),
    "sew": lambda: T.SEWConfig(**_AUDIO, squeeze_factor=2),
    "unispeech": lambda: T.UniSpeechConfig(**_AUDIO),
    "wavlm": lambda: T.WavLMConfig(**_AUDIO, **_XVECTOR, num_buckets=16, max_bucket_distance=32),
    "data2vec-audio": lambda: T.Data2VecAudioConfig(**dict(_AUDIO, num_conv_pos_embeddings=2), **_XVECTOR, conv_pos_kernel_size=5),
    "unispeech-sat": lambda: T.UniSpeechSatConfig(**_AUDIO, **_XVECTOR),
    "wav2vec2-conformer": lambda: T.Wav2Vec2ConformerConfig(**_AUDIO, **_XVECTOR, conv_depthwise_kernel_size=3),
    # text + vision
    "siglip": lambda: T.SiglipConfig(text_config=dict(_TOWER, **_TEXT), vision_config=dict(_TOWER, image_size=30, patch_size=10)),
    "chinese_clip": lambda: T.ChineseCLIPConfig(
        text_config=dict(_TOWER, **_TEXT), vision_config=dict(_TOWER, image_size=30, patch_size=10), projection_dim=16
    ),
    # more text encoders
    "big_bird": lambda: T.BigBirdConfig(**_ENCODER, attention_type="original_full"),
    "ibert": lambda: T.IBertConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1),
    # a window of 4 tokens: the traced 16 is a multiple of it, the validated 1 and 23 are not (23 pads to 24: six windows)
    "longformer": lambda: T.LongformerConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1, attention_window=4),
    "megatron-bert": lambda: T.MegatronBertConfig(**_ENCODER),
    "rembert": lambda: T.RemBertConfig(**_ENCODER, input_embedding_size=16, output_embedding_size=16),
    "splinter": lambda: T.SplinterConfig(**_ENCODER, question_token_id=3),
    "esm": lambda: T.EsmConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1, mask_token_id=2),
    "modernbert": lambda: T.ModernBertConfig(**_ENCODER, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=2, local_attention=8),
    # more decoder-only
    "arcee": lambda: T.ArceeConfig(**_GQA),
    "olmo2": lambda: T.Olmo2Config(**_GQA),
    "smollm3": lambda: T.SmolLM3Config(**_GQA),
    "nemotron": lambda: T.NemotronConfig(**_GQA, head_dim=16),
    "gemma3": lambda: T.Gemma3Config(
        text_config=dict(_GQA, head_dim=16, sliding_window=8), vision_config=dict(_TOWER, image_size=28, patch_size=14), mm_tokens_per_image=4,
    ),
    "cohere": lambda: T.CohereConfig(**_GQA),
    "glm": lambda: T.GlmConfig(**_GQA, head_dim=16),
    "helium": lambda: T.HeliumConfig(**_GQA, head_dim=8),  # its output projection assumes heads * head_dim == hidden
    "gemma3_text": lambda: T.Gemma3TextConfig(**_GQA, head_dim=16, sliding_window=8),
    "bloom": lambda: T.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=100, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "mpt": lambda: T.MptConfig(d_model=32, n_layers=2, n_heads=4, expansion_ratio=2, max_seq_len=64, vocab_size=100, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "gpt_bigcode": lambda: T.GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=100, n_positions=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    # more encoder-decoder
    "bigbird_pegasus": lambda: T.BigBirdPegasusConfig(**_BART_LIKE, attention_type="original_full"),
    # more vision
    "vit_msn": lambda: T.ViTMSNConfig(**_VIT_LIKE),
    # 16 patches, the 4 of lowest noise kept (mask_ratio 0.75, as released)
    "vit_mae": lambda: T.ViTMAEConfig(**_VIT_LIKE, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=37),
    "clip_vision_model": lambda: T.CLIPVisionConfig(**_TOWER, image_size=30, patch_size=10),
    "siglip_vision_model": lambda: T.SiglipVisionConfig(**_TOWER, image_size=30, patch_size=10),
    "swinv2": lambda: T.Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, encoder_stride=8),
    "donut-swin": lambda: T.DonutSwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4),
    "cvt": lambda: T.CvtConfig(embed_dim=[16, 32], num_heads=[1, 2], depth=[2, 2],  # depth >= stage + 1: CvtStage indexes its drop-path rates by stage
        patch_sizes=[7, 3], patch_stride=[4, 2], patch_padding=[2, 1],
        mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0], drop_path_rate=[0.0, 0.0], qkv_bias=[True, True],
        cls_token=[False, True], qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3], padding_kv=[1, 1], stride_kv=[2, 2],
        padding_q=[1, 1], stride_q=[1, 1]),
    "pvt": lambda: T.PvtConfig(image_size=32, hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2, sequence_reduction_ratios=[2, 1],
        patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2]),
    "hiera": lambda: T.HieraConfig(image_size=[64, 64], embed_dim=16, depths=[1, 1], num_heads=[1, 2], patch_stride=[4, 4], query_stride=[2, 2],
        masked_unit_size=[8, 8], num_query_pool=1, decoder_hidden_size=16, decoder_depth=1, decoder_num_heads=1),
    "mobilenet_v1": lambda: T.MobileNetV1Config(image_size=32, depth_multiplier=0.25, min_depth=4, initializer_range=0.3),  # _DEEP_INIT
    "mobilenet_v2": lambda: T.MobileNetV2Config(image_size=32, depth_multiplier=0.25, min_depth=4, initializer_range=0.25),  # _DEEP_INIT
    # more audio
    "sew-d": lambda: T.SEWDConfig(**_AUDIO, squeeze_factor=2, max_position_embeddings=64, position_buckets=16),
    "layoutlm": lambda: T.LayoutLMConfig(**_ENCODER, max_2d_position_embeddings=128),
    # LiLT splits hidden / 6 across its box embeddings, so hidden is a multiple of 6
    "lilt": lambda: T.LiltConfig(**dict(_ENCODER, hidden_size=48, max_position_embeddings=70), pad_token_id=1, max_2d_position_embeddings=128, channel_shrink_ratio=4),
    "audio-spectrogram-transformer": lambda: T.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, patch_size=8, frequency_stride=8, time_stride=8,
        max_length=32, num_mel_bins=16,
    ),
    "detr": lambda: T.DetrConfig(**_DETR),
    "table-transformer": lambda: T.TableTransformerConfig(**_DETR),
    "vitpose": lambda: T.VitPoseConfig(
        backbone_config=T.VitPoseBackboneConfig(image_size=[32, 24], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4, out_indices=[2]),
        scale_factor=4,
    ),
    "groupvit": lambda: T.GroupViTConfig(
        text_config=dict(_TOWER, **_TEXT),
        vision_config=dict(_TOWER, depths=[1, 1], num_group_tokens=[4, 0], num_output_groups=[4, 4], image_size=32, patch_size=8),
        projection_dim=16, projection_intermediate_dim=32,
    ),
    "markuplm": lambda: T.MarkupLMConfig(**_ENCODER, max_depth=6, max_xpath_tag_unit_embeddings=20, max_xpath_subs_unit_embeddings=30, xpath_unit_hidden_size=8),
    "imagegpt": lambda: T.ImageGPTConfig(n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=100, n_positions=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    "metaclip_2": lambda: T.MetaClip2Config(
        text_config=dict(_TOWER, **_TEXT), vision_config=dict(_TOWER, image_size=30, patch_size=10), projection_dim=16
    ),
    "dpt": lambda: T.DPTConfig(
        **dict(_VIT_LIKE, num_hidden_layers=4), backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
        num_labels=3, initializer_range=0.12,  # _DEEP_INIT
    ),
    "glpn": lambda: T.GLPNConfig(
        hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16, mlp_ratios=[2, 2, 2, 2]
    ),
    # encoder-decoders of two configs, and speech / image seq2seq models
    "vision-encoder-decoder": lambda: _vision_pair("vit-gpt2"),
    "encoder-decoder": lambda: _pair(
        T.EncoderDecoderConfig, T.BertConfig(**_ENCODER), T.BertConfig(**dict(_ENCODER, hidden_size=48, intermediate_size=37)),
    ),
    "trocr": lambda: T.TrOCRConfig(
        d_model=48, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37, vocab_size=100, max_position_embeddings=64,
        cross_attention_hidden_size=32, **_TOKENS,
    ),
    "moonshine": lambda: T.MoonshineConfig(
        vocab_size=100, hidden_size=32, intermediate_size=37, encoder_num_hidden_layers=2, decoder_num_hidden_layers=2,
        encoder_num_attention_heads=4, decoder_num_attention_heads=4, encoder_num_key_value_heads=4, decoder_num_key_value_heads=4,
        max_position_embeddings=64, **_TOKENS,
    ),
    "speech_to_text": lambda: T.Speech2TextConfig(
        **{k: v for k, v in _BART_LIKE.items() if k != "max_position_embeddings"}, max_source_positions=64, max_target_positions=64,
        num_conv_layers=2, conv_kernel_sizes=[5, 5], conv_channels=16, input_feat_per_channel=12, input_channels=1,
    ),
    "pix2struct": lambda: T.Pix2StructConfig(
        text_config=dict(vocab_size=100, hidden_size=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        vision_config=dict(hidden_size=32, patch_embed_hidden_size=48, d_ff=37, d_kv=8, num_hidden_layers=2, num_attention_heads=4, seq_len=64),
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ),
    "layoutlmv3": lambda: T.LayoutLMv3Config(  # 4 box coordinates and 2 box sizes embedded side by side: 4 * 4 + 2 * 8 = hidden
        **dict(_ENCODER, max_position_embeddings=70), pad_token_id=1, max_2d_position_embeddings=128, coordinate_size=4, shape_size=8,
        input_size=32, patch_size=8, rel_pos_bins=8, max_rel_pos=16, rel_2d_pos_bins=8, max_rel_2d_pos=32,
    ),
    "visual_bert": lambda: T.VisualBertConfig(**_ENCODER, visual_embedding_dim=24),
    "perceiver": lambda: T.PerceiverConfig(  # image classification has 3 heads: the auto class picks one by name
        num_latents=8, d_latents=32, d_model=24, num_blocks=1, num_self_attends_per_block=2, num_self_attention_heads=4, num_cross_attention_heads=4,
        vocab_size=100, max_position_embeddings=64, image_size=16, num_labels=3, architectures=["PerceiverForImageClassificationLearned"],
    ),
    # initializer_range: at the default 0.01 the tiny encoder's features fade to the same vector at every position, so every
    # position gets the same class score and the top-k query selection is a complete tie, which PyTorch and onnxruntime
    # break differently (boxes then differ by whole grid cells); trained weights have no such ties
    "rt_detr": lambda: T.RTDetrConfig(**_RT_DETR, decoder_layers=1),
    "rt_detr_v2": lambda: T.RTDetrV2Config(**_RT_DETR, decoder_layers=2),  # 2 decoder layers: the box heads of layers 1.. are tied to layer 0's
    "d_fine": lambda: T.DFineConfig(
        **{**{k: v for k, v in _RT_DETR.items() if k != "backbone_config"}, "encoder_in_channels": [16, 32, 32], "decoder_n_points": [2, 2, 2]},
        decoder_layers=2, hidden_expansion=0.5, depth_mult=0.34,
        backbone_config=dict(
            model_type="hgnet_v2", stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 16, 32], stage_mid_channels=[8, 8, 16, 16],
            stage_out_channels=[16, 16, 32, 32], stage_num_blocks=[1, 1, 1, 1], stage_downsample=[False, True, True, True],
            stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[2, 2, 2, 2],
            hidden_sizes=[16, 16, 32, 32], out_features=["stage2", "stage3", "stage4"], initializer_range=0.1,
        ),
    ),
    # as in the released checkpoints, as many landmarks as segment_means_seq_len: exact attention at any length
    "nystromformer": lambda: T.NystromformerConfig(**dict(_ENCODER, max_position_embeddings=70), pad_token_id=1, num_landmarks=64, segment_means_seq_len=64),
    "mgp-str": lambda: T.MgpstrConfig(
        image_size=[16, 32], patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2.0, max_token_length=7,
        num_character_labels=10, num_bpe_labels=20, num_wordpiece_labels=30,
    ),
    "maskformer": lambda: T.MaskFormerConfig(  # a Swin backbone of 4 stages (out_features must name them all) and a DETR decoder
        backbone_config=dict(model_type="swin", image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=2,
                             out_features=["stage1", "stage2", "stage3", "stage4"]),
        decoder_config=dict(model_type="detr", d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                            encoder_ffn_dim=37, decoder_ffn_dim=37),
        mask_feature_size=32, fpn_feature_size=32, num_labels=3,
    ),
    "patchtst": lambda: T.PatchTSTConfig(
        num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, prediction_length=6, d_model=16, num_attention_heads=2,
        num_hidden_layers=2, ffn_dim=32,
    ),
    "patchtsmixer": lambda: T.PatchTSMixerConfig(num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, prediction_length=6, d_model=16, num_layers=2),
    "decision_transformer": lambda: T.DecisionTransformerConfig(state_dim=4, act_dim=3, hidden_size=32, n_layer=2, n_head=4, n_inner=37, max_ep_len=100, n_positions=64),
    # OWL-ViT's text tower has 16 positions, as in its checkpoints (the validation's longer queries are cut to them); its
    # detection head compares patch embeddings, projected to the text width, with the query embeddings: projection_dim is the
    # text width
    "owlvit": lambda: T.OwlViTConfig(
        text_config=dict(_TOWER, vocab_size=100, max_position_embeddings=16), vision_config=dict(_TOWER, image_size=32, patch_size=8),
        projection_dim=32,
    ),
    "owlv2": lambda: T.Owlv2Config(
        text_config=dict(_TOWER, vocab_size=100, max_position_embeddings=16), vision_config=dict(_TOWER, image_size=32, patch_size=8),
        projection_dim=32,
    ),
    # no sampled noise (a VITS that samples it cannot be validated: see normalizers.VITS)
    "vits": lambda: T.VitsConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=37, flow_size=16, spectrogram_bins=17,
        upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        duration_predictor_filter_channels=16, duration_predictor_num_flows=2, prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2, noise_scale=0.0, noise_scale_duration=0.0,
    ),
    # a PaliGemma of a Gemma and a SigLIP tower: (16 / 8) ** 2 = 4 image tokens, the image placeholder inside the vocabulary
    "colpali": lambda: T.ColPaliConfig(
        vlm_config=T.PaliGemmaConfig(
            text_config=dict(_GQA, model_type="gemma", head_dim=8, max_position_embeddings=128),
            vision_config=dict(_TOWER, model_type="siglip_vision_model", image_size=16, patch_size=8),
            image_token_id=99, projection_dim=32,
        ),
        embedding_dim=16,
    ),
    "swin2sr": lambda: T.Swin2SRConfig(image_size=16, patch_size=1, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, upscale=2),
    # SAM: a 64-pixel image in 8-pixel patches, windowed attention in layer 0 and global in layer 1, an 8x8 embedding grid.
    # Wide random weights: at the default ranges (the vision encoder's is 1e-10) the masks are ~1e-5 and do not depend
    # on the image at all; at 0.5 they are ~10 and change with the image, the points and the labels.
    "sam": lambda: T.SamConfig(
        vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, mlp_dim=37,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=8, initializer_range=0.5),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=37, iou_head_hidden_dim=16),
        initializer_range=0.5,
    ),
    # MusicGen: a T5 text encoder narrower than the decoder (its output is projected inside the decoder graph), a decoder
    # over 4 codebooks of 64 codes (pad/start id 64, one past the codes, as released), an EnCodec whose bandwidth gives
    # 4 quantizers (10 kbps at 250 frames/s of 6-bit codes) and no chunking (Optimum's contract: one chunk of codes).
    "musicgen": lambda: T.MusicgenConfig(
        text_encoder=dict(model_type="t5", d_model=24, d_kv=8, d_ff=37, num_layers=2, num_heads=3, vocab_size=100, pad_token_id=0, eos_token_id=1),
        audio_encoder=dict(model_type="encodec", hidden_size=16, num_filters=4, upsampling_ratios=[2, 2], codebook_size=64, codebook_dim=16,
                           num_lstm_layers=1, target_bandwidths=[10.0], sampling_rate=1000, audio_channels=1, chunk_length_s=None),
        decoder=dict(model_type="musicgen_decoder", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
                     num_codebooks=4, max_position_embeddings=64, pad_token_id=64, bos_token_id=64, decoder_start_token_id=64),
    ),
    # SpeechT5 text to speech: 2 encoder and 2 decoder layers, 8 mel bins, 2 frames per step, the released prenet dropout
    # (0.5: the decoder takes its draws as prenet_noise); its vocoder is TINY_VOCODER, saved apart (tiny_vocoder_folder).
    # Wide random weights: at the default 0.02 another prenet draw moves the prenet's output by 2e-4 (of 0.2), at 0.2 by 1.6
    # (of 2.2), so the frames fed back and the draws visibly steer each step
    "speecht5": lambda: T.SpeechT5Config(
        vocab_size=40, hidden_size=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37, decoder_layers=2,
        decoder_attention_heads=4, decoder_ffn_dim=37, num_mel_bins=8, speech_decoder_prenet_units=16, speaker_embedding_dim=12,
        speech_decoder_postnet_layers=2, speech_decoder_postnet_units=16, speech_decoder_postnet_kernel=3, reduction_factor=2,
        max_speech_positions=256, max_text_positions=64, encoder_max_relative_position=16, initializer_range=0.2,
    ),
}

TINY_VOCODER = dict(
    model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3],
    resblock_dilation_sizes=[[1, 3]], initializer_range=0.1,
)
"""A HiFi-GAN vocoder for the tiny SpeechT5 (its 8 mel bins), 4 samples per frame; at the default 0.01 weights its
waveform is ~1e-5, at 0.1 it is ~0.03, well inside tanh's range (at 0.3 tanh saturates to +-1)."""


def tiny_vocoder_folder(folder: str | os.PathLike[str], seed: int = 1) -> str:
    """Save a random-weight ``SpeechT5HifiGan`` of :data:`TINY_VOCODER` to ``folder``; return its path."""
    torch.manual_seed(seed)
    T.SpeechT5HifiGan(T.SpeechT5HifiGanConfig(**TINY_VOCODER)).eval().save_pretrained(folder)
    return os.fspath(folder)


def tiny_model(model_type: str, task: str, seed: int = 0) -> torch.nn.Module:
    """A random-weight model of ``model_type`` with the head ``task`` loads (seeded)."""
    config = CONFIGS[model_type]()
    torch.manual_seed(seed)
    name = parse_task(task).name
    errors = []
    for auto_name in head_classes(name, config.model_type):
        auto = getattr(T, auto_name)
        if not hasattr(auto, "_model_mapping"):  # a head no auto class maps (NAMED_HEADS): the model class itself
            return auto(config).eval()
        if type(config) in auto._model_mapping:
            return auto.from_config(config).eval()
        errors.append(auto_name)
    raise LookupError(f"no head among {errors} for {model_type}")


def tiny_folder(model_type: str, task: str, folder: str | os.PathLike[str], seed: int = 0) -> str:
    """Save a tiny random model of ``model_type`` for ``task`` to ``folder``; return its path."""
    model = tiny_model(model_type, task, seed)
    model.save_pretrained(folder)
    return os.fspath(folder)
