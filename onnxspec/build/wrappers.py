"""The thin module each sub-graph is traced through: flat named tensors in, flat tensors out.

transformers 5 passes a KV cache as ``DynamicCache`` / ``EncoderDecoderCache`` objects; a graph
needs flat ``past_key_values.*`` inputs and ``present.*`` outputs. :func:`graph_module` takes
the tensors of ``spec.inputs`` positionally, rebuilds the cache, calls the model as the spec's
:class:`~onnxspec.pieces.spec.Call` says, and returns the tensors of ``spec.outputs`` in order.
Inputs the cache replaces (a seq2seq decoder's ``encoder_hidden_states`` once the
cross-attention cache is an input) are given to the model as zeros shaped from the cache.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from onnxspec.pieces.axes import Kind, names
from onnxspec.pieces.cache_names import Part, Which, cache_name, is_cache_input, is_cache_output, parse
from onnxspec.errors import SpecError
from onnxspec.pieces.past import PastKind
from onnxspec.pieces.spec import GraphSpec

__all__ = ["cache_argument", "graph_module", "read_result", "target_module"]

def cache_argument(module: torch.nn.Module) -> str | None:
    """The forward keyword that takes the KV cache: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (earlier); ``None`` when the module takes neither."""
    params = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def target_module(model: torch.nn.Module, spec: GraphSpec) -> torch.nn.Module:
    """The module the graph calls: ``spec.call.module`` read from the model, part by part:
    ``""`` is the model, a name is an attribute (``"model.decoder"``), and a part ending in
    ``()`` calls that method (``"get_encoder()"``, ``"model.get_decoder()"``)."""
    path = spec.call.module
    found: Any = model
    for part in path.split(".") if path else ():
        try:
            found = getattr(found, part[:-2])() if part.endswith("()") else getattr(found, part)
        except AttributeError as e:
            raise SpecError(
                f"spec {spec.model_type}/{spec.task} ({spec.filename}): call module {path!r} cannot be read from "
                f"{type(model).__name__}: {type(found).__name__} has no {part.removesuffix('()')!r} ({e}); use '' (the model), "
                "a dotted path of model.named_modules(), or a method call such as 'get_encoder()'"
            ) from e
    if not isinstance(found, torch.nn.Module):
        raise SpecError(
            f"spec {spec.model_type}/{spec.task} ({spec.filename}): call module {path!r} is a {type(found).__name__}, "
            "not a torch.nn.Module"
        )
    return found


def read_result(output: Any, path: str) -> torch.Tensor:
    """``output.a.b[0]`` for ``path="a.b[0]"``; model outputs are read by key."""
    value = output
    for part in path.split("."):
        match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        if match is None:
            raise SpecError(f"bad result path {path!r}")
        key, index = match.group(1), match.group(2)
        try:
            value = value[key] if isinstance(value, dict) else getattr(value, key)
        except (KeyError, AttributeError) as e:
            has = list(value.keys()) if isinstance(value, dict) else sorted(n for n in dir(value) if not n.startswith("_"))
            raise SpecError(
                f"result {path!r}: the model's {type(value).__name__} has no {key!r}; it has {has}. "
                "Rename the spec's output, or map it to one of these with Call.results"
            ) from e
        if index is not None:
            value = value[int(index)]
    return value


def _returned_cache(output: Any) -> Any:
    for key in ("cache", "past_key_values"):
        if isinstance(output, dict) and output.get(key) is not None:
            return output[key]
    raise SpecError("the model returned no cache although the spec asks for present.* outputs")


def _present(cache: Any, name: str) -> torch.Tensor:
    parsed = parse(name)
    if parsed is None or not is_cache_output(name):
        raise SpecError(f"output {name!r} is not a cache output name")
    if parsed.part is not None:
        cache = cache.self_attention_cache if parsed.part is Part.SELF else cache.cross_attention_cache
    entry = cache.layers[parsed.layer]
    return entry.keys if parsed.which is Which.KEY else entry.values


def _keyword_value(keyword: str, tensor: torch.Tensor) -> Any:
    """What the model's ``keyword`` takes: ``encoder_outputs`` wants a model output, not a tensor.

    The output carries no ``attention_mask`` (``None``: models that read the encoder's mask from
    its output, such as Moonshine, then attend to every encoder frame; the graph's
    ``encoder_attention_mask``, where it has one, is passed as its own keyword)."""
    if keyword != "encoder_outputs":
        return tensor
    output = BaseModelOutput(last_hidden_state=tensor)
    output.attention_mask = None  # a plain attribute, not an output field: indexing still yields the hidden states only
    return output


def _cache(spec: GraphSpec, past: dict[str, torch.Tensor]) -> Any:
    """The cache object transformers wants, rebuilt from flat ``past_key_values.*`` tensors."""
    layout = spec.past
    assert layout is not None
    layers = range(layout.num_layers)

    def pairs(part: Part | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(past[cache_name(i, Which.KEY, part=part)], past[cache_name(i, Which.VALUE, part=part)]) for i in layers]

    if layout.kind is PastKind.DECODER_ONLY:
        return DynamicCache(ddp_cache_data=pairs(None))
    return EncoderDecoderCache(DynamicCache(ddp_cache_data=pairs(Part.SELF)), DynamicCache(ddp_cache_data=pairs(Part.CROSS)))


def _stand_in(spec: GraphSpec, name: str, past: dict[str, torch.Tensor]) -> torch.Tensor:
    """A placeholder for an input the cache replaces, shaped from the cache.

    The model still wants ``encoder_outputs`` to know the encoder length and batch, but with
    a filled cross-attention cache it never reads its values: zeros of
    ``(batch, encoder length, encoder width)`` carry the right shape and no data (the width is
    the encoder's output width, ``encoder_hidden_size``, when the model pairs two configs: a
    projection to the decoder's width may run on it). The exporter then drops the unused input.
    """
    if name != "encoder_hidden_states":
        raise SpecError(
            f"spec {spec.model_type}/{spec.task}: input {name!r} is marked replaced_by_cache, but only "
            "'encoder_hidden_states' can be rebuilt from a cache (from the cross-attention keys)"
        )
    if spec.dims is None:
        raise SpecError(
            f"spec {spec.model_type}/{spec.task}: the stand-in for {name!r} needs the config's hidden_size; "
            "bind the spec to the model config first (bind(spec, config))"
        )
    key = past[cache_name(0, Which.KEY, part=Part.CROSS)]
    width = spec.dims.get("encoder_hidden_size") or spec.dims["hidden_size"]
    return key.new_zeros((key.shape[0], key.shape[2], int(width)))


def graph_module(model: torch.nn.Module, spec: GraphSpec) -> torch.nn.Module:
    """A module calling ``model`` as ``spec`` describes, from and to flat tensors, in eval mode.

    It is a plain ``torch.nn.Module`` instance (no subclass) holding ``model`` as a child, so
    the exporters see its parameters, with a ``forward`` closure taking the tensors of
    ``spec.inputs`` positionally and returning those of ``spec.outputs`` in order.
    """
    target = target_module(model, spec)
    input_names = names(spec.inputs)
    output_names = names(spec.outputs)
    int_inputs = frozenset(t.name for t in spec.inputs if t.kind is Kind.INT)
    cache_arg = cache_argument(target)
    takes_use_cache = "use_cache" in inspect.signature(target.forward).parameters
    if (spec.use_past_in_inputs or spec.use_past) and cache_arg is None:
        raise SpecError(f"spec {spec.model_type}/{spec.task}: {type(target).__name__}.forward takes no cache argument")
    call = spec.call

    def forward(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs: dict[str, Any] = {}
        past: dict[str, torch.Tensor] = {}
        for name, tensor in zip(input_names, tensors, strict=True):
            if is_cache_input(name):
                past[name] = tensor
                continue
            if name in int_inputs and tensor.dtype != torch.long:
                tensor = tensor.long()  # graphs may take int32/int8 ids; torch embeddings want int64
            kwargs[call.argument(name)] = _keyword_value(call.argument(name), tensor)
        if spec.use_past_in_inputs:
            for name in sorted(spec.graph.replaced_by_cache):
                kwargs[call.argument(name)] = _keyword_value(call.argument(name), _stand_in(spec, name, past))
        if cache_arg is not None:
            if past:
                kwargs[cache_arg] = _cache(spec, past)
            if takes_use_cache:
                kwargs["use_cache"] = spec.use_past
        kwargs.update(call.fixed)
        output = call.function(target, **kwargs) if call.function is not None else target(**kwargs, return_dict=True)
        return tuple(
            _present(_returned_cache(output), name) if is_cache_output(name) else read_result(output, call.result(name))
            for name in output_names
        )

    module = torch.nn.Module()
    module.model = model
    module.forward = forward
    return module.eval()
