"""A tiny random llama written as a GGUF file, the way llama.cpp's converter writes one.

Weights are stored as F32, so the model transformers rebuilds from the file must equal the
source model exactly (``quantized=True`` stores most of them as Q8_0 and the embedding as F16, for
the dequantizing paths; ``extra_metadata=True`` adds a key of every GGUF value type). The file carries a byte-level BPE tokenizer (256 byte tokens, two merges,
two control tokens), so ``AutoTokenizer.from_pretrained(folder, gguf_file=...)`` works on it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import transformers as T

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 32, 2, 4, 2, 16, 37
_SPECIAL = ("<|endoftext|>", "<|im_start|>")
_MERGES = ("Ġ t", "h e")


def tiny_tokens() -> list[str]:
    """The vocabulary: control tokens, the 256 byte-level symbols, then the merged tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [*_SPECIAL, *bytes_to_unicode().values(), *(m.replace(" ", "") for m in _MERGES)]


def tiny_llama(seed: int = 0) -> T.LlamaForCausalLM:
    """A random 2-layer llama (grouped-query attention, head dim != hidden / heads), eval mode."""
    torch.manual_seed(seed)
    config = T.LlamaConfig(
        vocab_size=len(tiny_tokens()),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        intermediate_size=FFN,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = T.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: make them random too, so a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (interleaved rotary halves); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


EXTRA_METADATA = {
    "tiny.u8": (7, "UINT8"), "tiny.i8": (-7, "INT8"), "tiny.u16": (700, "UINT16"), "tiny.i16": (-700, "INT16"),
    "tiny.u32": (70000, "UINT32"), "tiny.i32": (-70000, "INT32"), "tiny.f32": (0.1, "FLOAT32"), "tiny.bool": (True, "BOOL"),
    "tiny.u64": (2**40, "UINT64"), "tiny.i64": (-(2**40), "INT64"), "tiny.f64": (0.1, "FLOAT64"),
    "tiny.text": ("grüße \u2581 😀", "STRING"), "tiny.floats": ([0.5, -1.25, 3.0], "ARRAY"),
    "tiny.words": (["a", "", "ü", "😀"], "ARRAY"),
}
"""Metadata of every GGUF value type (and an empty array), written by ``write_gguf(extra_metadata=True)``."""


def write_gguf(model: T.LlamaForCausalLM, path: str | os.PathLike[str], *, tokenizer: bool = True,
               quantized: bool = False, extra_metadata: bool = False) -> str:
    """Write ``model`` (a llama) to ``path`` as a GGUF file with F32 tensors (``quantized``: the
    2-D ones whose rows fill Q8_0 blocks as Q8_0, the embedding as F16); return the path."""
    import gguf

    path = os.fspath(path)
    c = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]) if getattr(c, "rope_parameters", None) else 10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.ALL_F32)
    if extra_metadata:
        for key, (value, kind) in EXTRA_METADATA.items():
            sub = gguf.GGUFValueType.FLOAT32 if key == "tiny.floats" else None
            w.add_key_value(key, value, gguf.GGUFValueType[kind], sub_type=sub)
    if tokenizer:
        tokens = tiny_tokens()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([3 if t in _SPECIAL else 1 for t in tokens])
        w.add_token_merges(list(_MERGES))
        w.add_bos_token_id(c.bos_token_id)
        w.add_eos_token_id(c.eos_token_id)
        w.add_pad_token_id(c.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        data = tensor.detach().to(torch.float32).numpy().copy()
        if base.endswith("self_attn.q_proj"):
            data = _permute(data, c.num_attention_heads)
        elif base.endswith("self_attn.k_proj"):
            data = _permute(data, c.num_key_value_heads)
        name = f"{names.get_name(base)}.{suffix}"
        if quantized and base.endswith("embed_tokens"):
            w.add_tensor(name, data.astype(np.float16))
        elif quantized and data.ndim == 2 and data.shape[1] % 32 == 0:
            w.add_tensor(name, gguf.quantize(data, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
