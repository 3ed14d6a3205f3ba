"""A GGUF file's weights dequantized one tensor at a time into a scratch safetensors checkpoint,
then loaded from it memory-mapped.

transformers' own GGUF loading dequantizes every tensor into one state dict, copies each array
once more, then copies the dict into the model: for gemma-3-270m (1.00 GiB of float32 weights)
the load peaked at 2.5 GiB, and the weights stay in anonymous memory. Here each tensor is
dequantized with the ``gguf`` package, given transformers' per-tensor fix-up (its
``TensorProcessor`` for the architecture: llama's query/key row order, gemma's norm offset),
renamed with transformers' own GGUF -> model name map, and written to a safetensors shard of at
most :data:`SHARD_BYTES` (with ``safetensors``' writer); the model then loads the folder like any
checkpoint, its weights memory-mapped from the shards (file-backed pages, which the kernel can
drop and read again). The folder is removed once loaded: the mappings keep the files' data until
the weights are freed.

Architectures whose transformers processor needs more than the tensor at hand (merged experts,
fused query/key/value with biases: :data:`_PER_TENSOR` lists the ones that do not) keep
transformers' loading: :func:`load_streamed` returns ``None`` for them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import torch

from onnxspec.build.pages import release_heap

__all__ = ["SHARD_BYTES", "load_streamed"]

SHARD_BYTES = 1 << 28
"""A scratch shard is written once its tensors reach this many bytes (256 MiB); a larger tensor is a shard of its own."""

_PER_TENSOR = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor", "NemotronTensorProcessor")
"""transformers' GGUF tensor processors that transform each tensor on its own (no state kept across tensors)."""


def _architecture(reader: Any) -> str:
    from transformers.modeling_gguf_pytorch_utils import read_field

    return str(read_field(reader, "general.architecture")[0])


def _processor_class(architecture: str) -> type:
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(architecture, TensorProcessor)


DEQUANTIZE_ROWS_BYTES = 1 << 26
"""A tensor is dequantized this many float32 bytes of rows at a time (64 MiB): ``gguf``'s
dequantizers make float32 temporaries several times their output (gemma-3-270m's 262k x 640
embedding, dequantized at once, took 2.2 GiB more than its 0.63 GiB)."""


def _dequantized(tensor: Any, dequantize: Any) -> Any:
    """``tensor`` (a ``gguf`` reader's) as float32 numpy, its rows dequantized a block at a time."""
    import numpy as np

    data = tensor.data
    if data.ndim < 2 or data.nbytes <= DEQUANTIZE_ROWS_BYTES // 8:
        return dequantize(data, tensor.tensor_type)
    first = dequantize(data[:1], tensor.tensor_type)
    rows = max(1, DEQUANTIZE_ROWS_BYTES // max(1, first.nbytes))
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=np.float32)
    for start in range(0, data.shape[0], rows):
        out[start : start + rows] = dequantize(data[start : start + rows], tensor.tensor_type)
    return out


def _save_shard(tensors: dict[str, Any], path: str) -> None:
    """Write ``tensors`` (contiguous float32 numpy arrays) as a safetensors file, each from its own memory.

    ``safetensors.torch.save_file`` first copies every tensor into a bytes object (measured: a
    0.63 GiB embedding took 1.25 GiB to write); the format is a little-endian u64 header length,
    the JSON header (names, dtypes, shapes, byte ranges), then the tensors' bytes in order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for tensor in tensors.values():
            f.write(memoryview(tensor).cast("B"))


def _write_shards(tensors: list[Any], processor: Any, skeleton: torch.nn.Module, folder: str) -> None:
    """Dequantize, fix up (``processor``), rename and write each of a ``gguf`` reader's
    ``tensors`` into safetensors shards in ``folder``, with the index transformers reads; at most
    one shard's tensors in memory."""
    import numpy as np
    from gguf import dequantize
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    names = get_gguf_hf_weights_map(skeleton, processor)
    weight_map: dict[str, str] = {}
    shard: dict[str, Any] = {}  # name -> float32 numpy array
    total = [0, 0]  # bytes written, bytes in the shard being filled

    def flush() -> None:
        if shard:
            filename = f"model-{len(set(weight_map.values())):05d}.safetensors"
            _save_shard(shard, os.path.join(folder, filename))
            weight_map.update(dict.fromkeys(shard, filename))
            shard.clear()
            total[1] = 0

    for tensor in tensors:
        result = processor.process(weights=_dequantized(tensor, dequantize), name=tensor.name,
                                   tensor_key_mapping=names, parsed_parameters={})
        if result.name not in names:
            continue
        weights = np.ascontiguousarray(result.weights, dtype=np.float32)
        if total[1] and total[1] + weights.nbytes > SHARD_BYTES:
            flush()
        shard[names[result.name]] = weights
        total[0] += weights.nbytes
        total[1] += weights.nbytes
        del result, weights
    flush()
    release_heap()  # the dequantizers' temporaries
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total[0]}, "weight_map": weight_map}, f)


def load_streamed(auto: Any, path: str, config: Any, *, scratch_dir: str | None = None) -> torch.nn.Module | None:
    """The model of the transformers auto class ``auto`` for ``config``, its weights read from
    the GGUF file at ``path`` a tensor at a time through a scratch safetensors folder (in
    ``scratch_dir``, default the system's temporary folder; it needs the float32 weights' bytes
    on disk while the model loads), memory-mapped, in float32, in eval mode; ``None`` when the
    file's architecture needs transformers' own loading (see the module's docstring)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    kind = _processor_class(_architecture(reader))
    if kind.__name__ not in _PER_TENSOR:
        return None
    tensors = list(reader.tensors)
    # the metadata (a tokenizer's vocabulary in it: ~0.7 GiB of small objects for 262k tokens) is
    # dropped before anything that lives on is made: objects made while it lives sit among the
    # holes it leaves, and the heap cannot give those back (gemma-3-270m, the skeleton built
    # before it is dropped: 0.16 GiB more anonymous memory for the rest of the export)
    reader.fields.clear()
    del reader
    release_heap()
    with torch.device("meta"):
        skeleton = auto.from_config(config)
    folder = tempfile.mkdtemp(prefix="onnxspec-gguf-", dir=scratch_dir)
    try:
        _write_shards(tensors, kind(config=config.to_dict()), skeleton, folder)
        del tensors, skeleton
        config.save_pretrained(folder)
        model = auto.from_pretrained(folder, config=config, dtype=torch.float32, local_files_only=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return model.eval()
