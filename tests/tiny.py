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

from onnxspec.tasks import TASKS, parse_task

_TEXT = dict(vocab_size=100, max_position_embeddings=64)


def _clip() -> T.PretrainedConfig:
    return T.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=100, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=30, patch_size=10),
        projection_dim=16,
    )


CONFIGS: dict[str, Callable[[], T.PretrainedConfig]] = {
    "bert": lambda: T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **_TEXT),
    "roberta": lambda: T.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=100, max_position_embeddings=70, pad_token_id=1),
    "distilbert": lambda: T.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **_TEXT),
    "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0),
    "llama": lambda: T.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=37, pad_token_id=0, bos_token_id=1, eos_token_id=2, **_TEXT),
    "t5": lambda: T.T5Config(d_model=32, d_kv=16, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=100, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1),
    "bart": lambda: T.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
    "vit": lambda: T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32, patch_size=8, encoder_stride=8),
    "wav2vec2": lambda: T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=40,
        conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, tdnn_dim=(32, 32), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=16,
        mask_time_prob=0.0, classifier_proj_size=16,
    ),
    "whisper": lambda: T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=100, num_mel_bins=16, max_source_positions=30,
        max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[],
    ),
    "clip": _clip,
}


def tiny_model(model_type: str, task: str, seed: int = 0) -> torch.nn.Module:
    """A random-weight model of ``model_type`` with the head ``task`` loads (seeded)."""
    config = CONFIGS[model_type]()
    torch.manual_seed(seed)
    name = parse_task(task).name
    errors = []
    for auto_name in TASKS[name].auto_classes:
        auto = getattr(T, auto_name)
        if type(config) in auto._model_mapping:
            return auto.from_config(config).eval()
        errors.append(auto_name)
    raise LookupError(f"no head among {errors} for {model_type}")


def tiny_folder(model_type: str, task: str, folder: str | os.PathLike[str], seed: int = 0) -> str:
    """Save a tiny random model of ``model_type`` for ``task`` to ``folder``; return its path."""
    model = tiny_model(model_type, task, seed)
    model.save_pretrained(folder)
    return os.fspath(folder)
