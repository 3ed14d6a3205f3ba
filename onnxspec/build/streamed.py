"""Weights streamed from a safetensors checkpoint: export and run a model that never holds them.

A model larger than memory is built *hollow*: every parameter is a dense tensor of the right
shape and dtype whose storage is a read-only private anonymous mapping that nothing ever writes
(:func:`hollow_tensors`, :func:`hollow_parameters`). Reading it maps the kernel's shared zero
page, so it takes no memory however often it is read, and PyTorch's kernels see an ordinary
dense weight (the trace's fp16 Linear runs at its usual speed; on a zero-strided weight it took
a slow path, about 80 times slower). A write faults at once (``SIGSEGV``) instead of quietly
taking memory. Where no anonymous mapping can be made (no ``mmap.MAP_ANONYMOUS``), each
parameter is a zero-strided view of a one-element tensor instead: no memory either, slower.
So the model can be traced and its graph written without its weights ever being materialised.
The weights are read from the checkpoint's shards (memory-mapped by safetensors) one tensor at a time:

- when the graph is written (:func:`fold_transposes`, :func:`tensor_for`): each initializer
  the exporter left a hollow parameter in is read from its shard, cast to the export dtype,
  transposed when the graph transposes it (a Linear's weight; the Transpose node is folded),
  written and freed;
- when PyTorch runs the model for validation (:func:`load_on_call`): each block of the model (a
  child of its top-level ``ModuleList``, a decoder layer) reads its own weights when it is called
  and gives them back when it returns; the parameters outside the blocks (embeddings, final norm,
  head) are read for the length of the model's call.

Parameters are matched to checkpoint keys by the tensors themselves, not by the names the
exporter gives them: each hollow parameter has its own storage, which names it. A parameter the
checkpoint does not hold is an error that names it, never a zero or random weight.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import onnx
import torch

from onnxspec.errors import ModelLoadError

__all__ = [
    "WeightSource",
    "checkpoint_bytes",
    "checkpoint_keys",
    "fold_transposes",
    "hollow_parameters",
    "hollow_tensors",
    "is_hollow",
    "load_on_call",
    "params_on_meta",
    "read_weight",
    "tensor_for",
]

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def checkpoint_keys(folder: str) -> dict[str, str]:
    """Each tensor of the folder's safetensors checkpoint -> the shard file holding it (a path):
    from ``model.safetensors.index.json``, else the one ``model.safetensors``."""
    index = os.path.join(folder, _INDEX)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map") or {}
        missing = sorted({name for name in weight_map.values() if not os.path.isfile(os.path.join(folder, name))})
        if missing:
            raise ModelLoadError(
                f"{index!r} names shard files that are not in {folder!r}: {', '.join(missing[:5])}; "
                "copy the whole checkpoint folder (every shard) before exporting it"
            )
        return {key: os.path.join(folder, name) for key, name in weight_map.items()}
    single = os.path.join(folder, _SINGLE)
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            return {key: single for key in f.keys()}
    raise ModelLoadError(
        f"streaming weights needs a safetensors checkpoint, and {folder!r} has neither {_INDEX!r} nor {_SINGLE!r}; "
        "save the model with save_pretrained (safetensors is its default format), or export without --stream-weights"
    )


def checkpoint_bytes(folder: str, itemsize: int = 4) -> int:
    """Bytes the folder's checkpoint takes with every floating tensor at ``itemsize`` bytes an
    element (4: its float32 size), read from the shards' headers only."""
    from safetensors import safe_open

    total = 0
    for path in sorted(set(checkpoint_keys(folder).values())):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                piece = f.get_slice(key)
                count = 1
                for size in piece.get_shape():
                    count *= size
                floating = piece.get_dtype() in ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")
                total += count * (itemsize if floating else {"I64": 8, "I32": 4, "BOOL": 1, "U8": 1, "I8": 1}.get(piece.get_dtype(), 4))
    return total


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """While the block runs, every parameter a module registers goes to the ``meta`` device (no
    memory, no initialisation cost); buffers (a rotary embedding's frequencies) stay real."""
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


@attrs.frozen(kw_only=True, eq=False)
class WeightSource:
    """Where a hollow model's weights are: the checkpoint key of each hollow parameter, by the
    address of its storage, and the shard holding each key."""

    folder: str
    dtype: torch.dtype
    keys: Mapping[int, str]
    """storage address of a hollow parameter -> its checkpoint key"""
    names: Mapping[int, str]
    """storage address of a hollow parameter -> its name in the model (for messages)"""
    shards: Mapping[str, str]
    """checkpoint key -> shard file"""
    hollow: Mapping[int, torch.Tensor] = attrs.field(factory=dict)
    """storage address -> the hollow tensor itself (what a parameter goes back to)"""


def _address(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def is_hollow(source: WeightSource, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is (a view of) one of ``source``'s hollow parameters."""
    return tensor.device.type == "cpu" and _address(tensor) in source.keys


_ALIGN = mmap.PAGESIZE
"""Each hollow tensor starts on a page of its own in the shared mapping."""


def _zero_strided(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros((), dtype=dtype).expand(shape)


def hollow_tensors(specs: list[tuple[tuple[int, ...], torch.dtype]]) -> list[torch.Tensor]:
    """One hollow tensor per ``(shape, dtype)``: dense, all zeros, each with a storage of its own
    (its address names it), in one read-only private anonymous mapping that is never written, so
    they use no memory when read (the kernel's zero page) and a write faults; the mapping lives as
    long as any of them. Zero-strided views of one element each where no such mapping can be made."""
    flags = getattr(mmap, "MAP_PRIVATE", None), getattr(mmap, "MAP_ANONYMOUS", None)
    sizes = [max(1, int(torch.Size(shape).numel())) * torch.empty((), dtype=dtype).element_size() for shape, dtype in specs]
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // _ALIGN) * _ALIGN
    region = None
    if specs and None not in flags:
        try:
            region = mmap.mmap(-1, total, flags=flags[0] | flags[1], prot=mmap.PROT_READ)
        except (OSError, ValueError, OverflowError):
            region = None
    if region is None:
        return [_zero_strided(shape, dtype) for shape, dtype in specs]
    tensors = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")  # on purpose: a write faults
        for (shape, dtype), offset in zip(specs, offsets):
            numel = int(torch.Size(shape).numel())
            flat = torch.frombuffer(region, dtype=dtype, count=max(1, numel), offset=offset)
            tensors.append(flat[:numel].view(shape))
    return tensors


def hollow_parameters(model: torch.nn.Module, folder: str, dtype: torch.dtype) -> WeightSource:
    """Replace every parameter of ``model`` (on ``meta`` or not) by a hollow one of the same shape
    in ``dtype`` (a parameter several modules share stays one), and say where each one's weights
    are in the folder's checkpoint. A parameter with no tensor in the checkpoint, or one of
    another shape, raises :class:`~onnxspec.errors.ModelLoadError` naming it."""
    from safetensors import safe_open

    shards = checkpoint_keys(folder)
    aliases: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
        params[id(param)] = param
    keys: dict[int, str] = {}
    names: dict[int, str] = {}
    hollow: dict[int, torch.Tensor] = {}
    missing: list[str] = []
    found_keys: dict[int, str] = {}
    for pid, param in params.items():
        found = next((n for n in aliases[pid] if n in shards), None)
        if found is None:
            missing.append(" = ".join(aliases[pid]))
            continue
        with safe_open(shards[found], framework="pt") as f:
            shape = tuple(f.get_slice(found).get_shape())
        if shape != tuple(param.shape):
            raise ModelLoadError(
                f"checkpoint tensor {found!r} has shape {shape}, the model's parameter {tuple(param.shape)}; "
                "the folder's config.json does not describe its weights"
            )
        found_keys[pid] = found
    if missing:
        raise ModelLoadError(
            f"the checkpoint in {folder!r} has no tensor for {len(missing)} parameter(s) of the model: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the checkpoint is incomplete or was saved "
            "by another model class (save it again with save_pretrained)"
        )
    values = hollow_tensors([(tuple(params[pid].shape), dtype if params[pid].is_floating_point() else params[pid].dtype)
                             for pid in found_keys])
    replaced: dict[int, torch.nn.Parameter] = {}
    for (pid, found), value in zip(found_keys.items(), values):
        keys[_address(value)] = found
        names[_address(value)] = aliases[pid][0]
        hollow[_address(value)] = value
        replaced[pid] = torch.nn.Parameter(value, requires_grad=False)
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[key] = replaced[id(param)]
    return WeightSource(folder=folder, dtype=dtype, keys=keys, names=names, shards=shards, hollow=hollow)


def read_weight(source: WeightSource, key: str, dtype: torch.dtype) -> torch.Tensor:
    """The checkpoint tensor ``key``, read from its shard, in ``dtype`` (floating tensors only)."""
    from safetensors import safe_open

    with safe_open(source.shards[key], framework="pt") as f:
        value = f.get_tensor(key)
    return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value


def tensor_for(source: WeightSource, captured: torch.Tensor, perm: tuple[int, ...] | None) -> torch.Tensor:
    """The values of an initializer the exporter captured as ``captured``: read from the checkpoint
    when it is a hollow parameter (in ``captured``'s dtype), else ``captured`` itself; permuted by
    ``perm`` (a folded Transpose) and contiguous."""
    if is_hollow(source, captured):
        value = read_weight(source, source.keys[_address(captured)], captured.dtype)
    else:
        value = captured.detach()
    if perm is not None:
        value = value.permute(perm)
    return value.contiguous()


def fold_transposes(model: onnx.ModelProto, weights: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Fold each Transpose node whose input is one of ``weights`` (graph inputs to become
    initializers) and which is that weight's only use: the node is removed and the weight renamed
    to the node's output; the permutation of each renamed weight is returned, by its new name.

    Without this the graph would transpose every Linear weight at run time, and onnxruntime would
    fold those nodes itself when the session opens: a transposed copy of every weight in memory."""
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {v.name for v in model.graph.output}
    folded: dict[str, tuple[int, ...]] = {}
    keep = []
    for node in model.graph.node:
        source = node.input[0] if node.op_type == "Transpose" and node.input else ""
        if source in weights and uses[source] == 1 and source not in outputs and node.output[0] not in weights:
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm is None:
                perm = tuple(reversed(range(weights[source].dim())))
            weights[node.output[0]] = weights.pop(source)
            folded[node.output[0]] = perm
            for value in model.graph.input:
                if value.name == source:
                    value.name = node.output[0]
                    shape = value.type.tensor_type.shape
                    dims = [onnx.TensorShapeProto.Dimension() for _ in perm]
                    for i, p in enumerate(perm):
                        dims[i].CopyFrom(shape.dim[p])
                    del shape.dim[:]
                    shape.dim.extend(dims)
            continue
        keep.append(node)
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return folded


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The children of the model's outermost ``ModuleList`` modules (a decoder's layers)."""
    found: list[torch.nn.Module] = []

    def walk(module: torch.nn.Module) -> None:
        for child in module.children():
            if isinstance(child, torch.nn.ModuleList):
                found.extend(child)
            else:
                walk(child)

    walk(model)
    return found


def load_on_call(model: torch.nn.Module, source: WeightSource) -> Callable[[], None]:
    """Hooks that give ``model``'s hollow parameters their weights only while they run (see the
    module docstring): each block's when it is called, the rest for the model's call; given back
    to their hollow selves when the call returns or raises. Nothing is read while a tracer runs
    (the exporter traces the hollow model). Returns a function that removes the hooks."""
    blocks = _blocks(model)
    inside = {id(p) for block in blocks for p in block.parameters()}
    units: list[tuple[torch.nn.Module, list[torch.nn.Parameter]]] = [
        (block, [p for p in block.parameters() if is_hollow(source, p)]) for block in blocks
    ]
    units.append((model, [p for p in model.parameters() if id(p) not in inside and is_hollow(source, p)]))
    hollow = {id(p): (p.data, source.keys[_address(p)]) for _, params in units for p in params}

    def load(params: list[torch.nn.Parameter]) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if torch.jit.is_tracing():
                return
            for param in params:
                empty, key = hollow[id(param)]
                if is_hollow(source, param.data):
                    param.data = read_weight(source, key, empty.dtype)

        return hook

    def give_back(params: list[torch.nn.Parameter]) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            for param in params:
                param.data = hollow[id(param)][0]

        return hook

    handles = []
    for module, params in units:
        if params:
            handles.append(module.register_forward_pre_hook(load(params)))
            handles.append(module.register_forward_hook(give_back(params), always_call=True))

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove
