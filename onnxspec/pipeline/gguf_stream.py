"""A GGUF file's weights dequantized one tensor at a time, a block of rows at a time, straight into
a scratch safetensors checkpoint, then loaded from it memory-mapped.

transformers' own GGUF loading dequantizes every tensor into one state dict, copies each array
once more, then copies the dict into the model: for gemma-3-270m (1.00 GiB of float32 weights)
the load peaked at 2.5 GiB, and the weights stay in anonymous memory. Here the file is read with
:func:`onnxspec.pipeline.gguf_read.read_gguf` (its tensors are views over one read-only map),
each tensor is renamed with transformers' own GGUF -> model name map, and the scratch shards'
layout (at most :data:`SHARD_BYTES` each) is known before any weight is read: each shard's
safetensors header is written first, then each tensor is dequantized with the ``gguf`` package
:data:`DEQUANTIZE_ROWS_BYTES` of float32 rows at a time and written to its place in the file (no
tensor sits whole in anonymous memory; the quantized pages read are given back after each block).
transformers' per-tensor fix-up (its ``TensorProcessor`` for the architecture: llama's
query/key row order, gemma's norm offset) then runs on the tensor mapped from the shard, and what
it returns in place of the tensor is written back. The model loads the folder like any
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import attrs
import numpy as np
import torch

from onnxspec.build.pages import release_heap
from onnxspec.pipeline.gguf_read import GgufFile, GgufTensor, drop_pages, read_gguf

__all__ = ["DEQUANTIZE_ROWS_BYTES", "SHARD_BYTES", "load_streamed"]

SHARD_BYTES = 1 << 28
"""A scratch shard is closed once its tensors reach this many bytes (256 MiB); a larger tensor is a shard of its own."""

DEQUANTIZE_ROWS_BYTES = 1 << 22
"""A tensor is dequantized this many float32 bytes of rows at a time (4 MiB): ``gguf``'s
dequantizers make float32 temporaries several times their output (gemma-3-270m's 262k x 640
embedding, dequantized at once, took 2.2 GiB more than its 0.63 GiB; in 64 MiB blocks 0.13 GiB,
in 16 MiB blocks 37 MiB, in 4 MiB blocks 13 MiB, for the same CPU time)."""

_PER_TENSOR = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor", "NemotronTensorProcessor")
"""transformers' GGUF tensor processors that transform each tensor on its own (no state kept
across tensors) and keep its name and shape."""


def _processor_class(architecture: str) -> type:
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(architecture, TensorProcessor)


def _row_blocks(tensor: Any, dequantize: Any, done: Callable[[np.ndarray], None] = lambda _: None) -> Iterator[np.ndarray]:
    """``tensor`` (with a ``gguf`` reader's ``data`` and ``tensor_type``) dequantized to float32,
    as consecutive blocks of its rows of at most :data:`DEQUANTIZE_ROWS_BYTES` each; ``done`` is
    given each block's quantized rows once they are dequantized."""
    data = tensor.data
    if data.ndim < 2:
        yield np.asarray(dequantize(data, tensor.tensor_type), dtype=np.float32)
        done(data)
        return
    row_bytes = dequantize(data[:1], tensor.tensor_type).nbytes
    rows = max(1, DEQUANTIZE_ROWS_BYTES // max(1, row_bytes))
    for start in range(0, data.shape[0], rows):
        yield np.asarray(dequantize(data[start : start + rows], tensor.tensor_type), dtype=np.float32)
        done(data[start : start + rows])


@attrs.frozen(eq=False)
class _Planned:
    """One tensor's place in a scratch shard: the model's name for it, and its byte range in the
    shard's data section."""

    name: str
    tensor: GgufTensor
    offset: int

    @property
    def nbytes(self) -> int:
        return 4 * self.tensor.n_elements


def _plan(tensors: Sequence[GgufTensor], names: Mapping[str, str]) -> list[list[_Planned]]:
    """The scratch shards: the tensors transformers' name map knows, in file order, under the
    model's names, grouped into shards of at most :data:`SHARD_BYTES` (a larger tensor alone)."""
    shards: list[list[_Planned]] = []
    size = 0
    taken: set[str] = set()
    for tensor in tensors:
        name = names.get(tensor.name)
        if name is None:
            continue
        if name in taken:
            raise ValueError(f"two GGUF tensors map to the model's {name!r} (the second is {tensor.name!r})")
        taken.add(name)
        nbytes = 4 * tensor.n_elements
        if not shards or (size and size + nbytes > SHARD_BYTES):
            shards.append([])
            size = 0
        shards[-1].append(_Planned(name=name, tensor=tensor, offset=size))
        size += nbytes
    return shards


def _header(shard: Sequence[_Planned]) -> bytes:
    """A safetensors file's start for ``shard``'s float32 tensors: the little-endian u64 length of
    the JSON header, then the header (names, dtypes, shapes, byte ranges), padded with spaces so
    that the data starts 8-byte aligned."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    for p in shard:
        header[p.name] = {"dtype": "F32", "shape": list(p.tensor.shape), "data_offsets": [p.offset, p.offset + p.nbytes]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _write_tensor(f: BinaryIO, path: str, start: int, planned: _Planned, file: GgufFile | None, processor: Any,
                  names: Mapping[str, str], dequantize: Any) -> None:
    """Dequantize ``planned``'s tensor into the open shard ``f`` (at ``path``) from byte ``start``,
    a block of rows at a time, then give it transformers' fix-up (``processor``) on the tensor
    mapped from the file, writing back what it returns in its place."""
    tensor = planned.tensor
    f.seek(start)
    for block in _row_blocks(tensor, dequantize, (lambda rows: drop_pages(file, rows)) if file is not None else (lambda _: None)):
        f.write(memoryview(np.ascontiguousarray(block)).cast("B"))
        del block
    f.flush()
    mapped = np.memmap(path, dtype=np.float32, mode="r+", offset=start, shape=tensor.shape)
    result = processor.process(weights=mapped, name=tensor.name, tensor_key_mapping=names, parsed_parameters={})
    if result.name != tensor.name or tuple(np.shape(result.weights)) != tuple(tensor.shape):
        raise ValueError(
            f"transformers' {type(processor).__name__} turned GGUF tensor {tensor.name!r} {tuple(tensor.shape)} into "
            f"{result.name!r} {tuple(np.shape(result.weights))}; streamed loading needs each tensor's name and shape kept"
        )
    if result.weights is not mapped:
        weights = np.asarray(result.weights)
        weights = (np.array(weights, dtype=np.float32, order="C") if np.shares_memory(weights, mapped)
                   else np.ascontiguousarray(weights, dtype=np.float32))
        del result
        mapped.flush()
        f.seek(start)
        f.write(memoryview(weights).cast("B"))
        del weights
    else:
        del result
        mapped.flush()  # a fix-up made in place
    del mapped


def _write_shards(file: GgufFile | None, tensors: Sequence[GgufTensor], processor: Any, skeleton: torch.nn.Module,
                  folder: str) -> None:
    """Write ``tensors`` (of ``file``, whose pages are given back after each) into safetensors
    shards in ``folder``, dequantized, fixed up (``processor``) and renamed, with the index
    transformers reads; no tensor whole in anonymous memory."""
    from gguf import dequantize
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    names = get_gguf_hf_weights_map(skeleton, processor)
    weight_map: dict[str, str] = {}
    total = 0
    for index, shard in enumerate(_plan(tensors, names)):
        filename = f"model-{index:05d}.safetensors"
        path = os.path.join(folder, filename)
        head = _header(shard)
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(len(head) + sum(p.nbytes for p in shard))
            for planned in shard:
                _write_tensor(f, path, len(head) + planned.offset, planned, file, processor, names, dequantize)
                weight_map[planned.name] = filename
                total += planned.nbytes
        release_heap()  # the dequantizers' temporaries
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


def load_streamed(auto: Any, path: str, config: Any, *, scratch_dir: str | None = None) -> torch.nn.Module | None:
    """The model of the transformers auto class ``auto`` for ``config``, its weights read from
    the GGUF file at ``path`` a tensor at a time through a scratch safetensors folder (in
    ``scratch_dir``, default the system's temporary folder; it needs the float32 weights' bytes
    on disk while the model loads), memory-mapped, in float32, in eval mode; ``None`` when the
    file's architecture needs transformers' own loading (see the module's docstring)."""
    file = read_gguf(path, strings=False)  # the tensors; a vocabulary's strings are not needed here
    kind = _processor_class(str(file.fields.get("general.architecture", "")))
    if kind.__name__ not in _PER_TENSOR:
        return None
    with torch.device("meta"):
        skeleton = auto.from_config(config)
    folder = tempfile.mkdtemp(prefix="onnxspec-gguf-", dir=scratch_dir)
    try:
        _write_shards(file, file.tensors, kind(config=config.to_dict()), skeleton, folder)
        del file, skeleton
        config.save_pretrained(folder)
        model = auto.from_pretrained(folder, config=config, dtype=torch.float32, local_files_only=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return model.eval()
