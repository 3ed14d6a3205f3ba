"""Quantization of exported graphs with onnxruntime's quantization tools.

``int8``: 8-bit quantization of the ``MatMul`` weights into ``MatMulNBits`` nodes (blocks of 32
values along the input axis, symmetric) at ``accuracy_level=4``: onnxruntime quantizes each
block of 32 activations to int8 at run time and multiplies with its integer kernels, so these
layers run faster than in float32 (an 8-bit ``MatMulNBits`` at level 0 dequantizes its weights
at each run: 2-10x slower than float32). The layers whose errors a trained decoder amplifies
stay float32 (see :func:`_kept_in_float`): a SwiGLU MLP's ``down_proj``, the attention
projections, the first tenth of the blocks, and a head tied to the embedding table; ``Gather``
tables (embeddings) stay float32; ``Conv`` by ``onnxruntime.quantization.quantize_dynamic``.
Measured 2026-11-30 on the real SmolLM2-135M (worst logits cosine / top-1 / greedy at the
export's validation sets; one thread, 128-token prefill and one decode step after it, against
float32 run in turn): 0.9948 / 0.886 / 1, 0.89x-0.93x and 0.77x-0.84x the time, 0.74x the size. Computing
every layer at level 4 gives 0.962 / 0.886 / 0.78; all but ``down_proj`` 0.988 / 0.886 / 0.84;
all but ``down_proj`` and the first blocks 0.967 / 0.83 at the validation seed; level 0
everywhere but ``down_proj`` (the former ``int8``) 0.992 / 0.94 / 1 but 2x and 10x float32's
time; activations with one scale per tensor (``int8-dynamic``) 0.72 / 0.40 / 0.
``int8-dynamic``: every ``MatMul``, ``Gemm``, ``Gather`` and ``Conv`` by ``quantize_dynamic``
(``MatMulInteger``, the activations quantized at run time with one uint8 scale per tensor), for
runtimes without ``MatMulNBits``: small and fast, but a trained Llama-family model fails its
agreement. ``int4``: weight-only 4-bit quantization of the ``MatMul`` weights into
``MatMulNBits`` nodes (blocks of 32 values along the input axis, symmetric, round to nearest),
which onnxruntime's CPU provider runs. ``MatMulNBits`` knows ``MatMul`` only, so
each ``Gemm`` with a constant weight (a 2-D ``Linear``: a classifier head, a pooler) is first
rewritten as ``MatMul`` (+ ``Add`` of its bias) by :func:`gemm_to_matmul`, and quantized too, for
both methods.

:func:`quantize_file` quantizes one graph; :func:`quantize` a whole export folder into a new
one, each graph then judged against PyTorch by agreement (:mod:`onnxspec.post.agreement`:
cosine, top-1, greedy tokens) and the figures written to ``onnxspec_post.json``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxspec.build.graphs import all_nodes, subgraphs
from onnxspec.errors import ExportError, UnknownNameError
from onnxspec.post.agreement import DEFAULTS, Thresholds
from onnxspec.post.folder import PostReport, quiet_tools, transform_folder

__all__ = ["METHODS", "gemm_to_matmul", "quantize", "quantize_file"]

METHODS = ("int8", "int4", "int8-dynamic")
"""The quantization methods :func:`quantize_file` knows."""

BLOCK_SIZE = 32
"""Values of one row of a ``MatMul`` weight sharing a scale, for 8 and 4 bits (onnxruntime accepts
16 and up, powers of two); 32 fits the tiny test models, whose widths are 32 and up."""

FLOAT_LAYERS = ("down_proj",)
"""Node-name parts of the ``MatMul`` layers int8 keeps in float32 (see :func:`_kept_in_float`)."""

FLOAT_FIRST_BLOCKS = 0.1
"""The fraction of a model's first blocks (rounded up: at least one, unless it has one only) whose
``MatMul`` layers int8 keeps in float32 (see :func:`_kept_in_float`)."""

ACCURACY_LEVEL = 4
"""``MatMulNBits``' ``accuracy_level`` int8 writes: activations int8 a block at a time, integer kernels."""

_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
"""An attention layer's node name (``self_attn``, ``/attn/``, ``/attention/``, ``SelfAttention`` ...)."""

_BLOCK = re.compile(r"/(?:layers|layer|h|blocks|block)\.(\d+)/")
"""A block's index in a node name of an exported graph (``/model/model/layers.3/mlp/...``,
``/model/transformer/h.3/attn/...``, ``/bert/encoder/layer.3/...``)."""

_EXTERNAL_ABOVE = 1_800_000_000
"""Bytes of weights above which the quantized graph keeps them in ``<file>.data`` (protobuf
cannot hold 2 GB in one message)."""


def _weights_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _save(model: onnx.ModelProto, dst: Path) -> None:
    if _weights_bytes(model) > _EXTERNAL_ABOVE:
        onnx.save_model(model, os.fspath(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, os.fspath(dst))


def quantize_file(src: Path, dst: Path, *, method: str = "int8") -> None:
    """Quantize the graph ``src`` (external data beside it is read) into ``dst`` with ``method``.

    ``dst`` is written whole or not at all is the caller's concern (it is meant to be written
    in a temporary folder); its weights go to ``<dst>.data`` when they exceed 1.8 GB. Raises
    :class:`UnknownNameError` for a method other than ``int8`` or ``int4``.
    """
    if method not in METHODS:
        raise UnknownNameError("quantization method", method, METHODS, "Use --method int8, int8-dynamic or int4.")
    src, dst = Path(src), Path(dst)
    with quiet_tools():
        _quantize(src, dst, method)


def _quantize(src: Path, dst: Path, method: str) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(os.fspath(src))
    before = _op_types(model.graph)
    if method == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(model, dst, per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=_weights_bytes(model) > _EXTERNAL_ABOVE, extra_options={"EnableSubgraph": True})
        _require_quantized(onnx.load(os.fspath(dst), load_external_data=False), before, src, method)
        return
    int8 = method == "int8"
    # MatMulNBits reads MatMul only; int8 leaves a Gemm by a tied embedding table (the head) in float32 as it is
    gemm_to_matmul(model, keep=_looked_up(model) if int8 else ())
    quantizer = MatMulNBitsQuantizer(model, bits=8 if int8 else 4, block_size=BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=ACCURACY_LEVEL if int8 else None, nodes_to_exclude=_kept_in_float(model) if int8 else None)
    quantizer.process()
    model = quantizer.model.model
    if method == "int4" or "Conv" not in before:  # quantize_dynamic would rewrite a Gemm kept in float32 with a transposed copy
        _require_quantized(model, before, src, method)
        _save(model, dst)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Conv; EnableSubgraph: the weights a merged decoder's If branches use are quantized too
    quantize_dynamic(model, dst, op_types_to_quantize=["Conv"], per_channel=True, weight_type=QuantType.QInt8,
                     use_external_data_format=_weights_bytes(model) > _EXTERNAL_ABOVE, extra_options={"EnableSubgraph": True})
    _require_quantized(onnx.load(os.fspath(dst), load_external_data=False), before, src, method)


def _looked_up(model: onnx.ModelProto) -> set[str]:
    """The tensors a ``Gather`` of ``model`` (or of its subgraphs) reads rows of: embedding tables."""
    return {node.input[0] for node in all_nodes(model.graph) if node.op_type == "Gather"}


def _kept_in_float(model: onnx.ModelProto) -> list[str]:
    """The ``MatMul`` nodes int8 leaves in float32 (measured on SmolLM2-135M: see the module docstring):

    - a SwiGLU MLP's ``down_proj`` (``FLOAT_LAYERS``): its input holds the activations a trained
      Llama-family model makes far larger than the rest, which one int8 scale per block rounds away;
    - the attention projections (a node name with ``attn`` or ``attention``): the attention scores
      multiply their errors;
    - every ``MatMul`` of the first ``FLOAT_FIRST_BLOCKS`` of the blocks (rounded up: at least one,
      but not the only one), which make the few huge channels of the residual stream that every
      later block reads;
    - a product by a weight a ``Gather`` also reads (a tied embedding used as the output head): the
      table stays float32 for the lookup anyway, so an int8 copy would only add to the file (a
      ``Gemm`` by the table, as the export writes a tied head, is not rewritten as ``MatMul`` at all).
    """
    nodes = list(all_nodes(model.graph))
    looked_up = _looked_up(model)
    matmuls = [node for node in nodes if node.op_type == "MatMul"]
    blocks = {node.name: int(found.group(1)) for node in matmuls if (found := _BLOCK.search(node.name))}
    count = max(blocks.values()) + 1 if blocks else 0
    first = min(math.ceil(FLOAT_FIRST_BLOCKS * count), count - 1)  # a single block is quantized
    return [node.name for node in matmuls
            if any(part in node.name for part in FLOAT_LAYERS) or _ATTENTION.search(node.name)
            or blocks.get(node.name, first) < first or (len(node.input) > 1 and node.input[1] in looked_up)]


def _attribute(node: onnx.NodeProto, name: str, default: float | int) -> float | int:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every name read by a node of ``graph`` or of its subgraphs, and its outputs."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for sub in subgraphs(node):
            used |= _used_names(sub)
    return used


def gemm_to_matmul(model: onnx.ModelProto, keep: Collection[str] = ()) -> int:
    """Rewrite in place each ``Gemm`` of ``model`` (and of its subgraphs) whose weight ``B`` is an
    initializer, with ``alpha = beta = 1`` and ``transA = 0``, as ``MatMul`` by a ``[K, N]``
    weight (``B`` itself, or ``B`` transposed when ``transB = 1``), followed by ``Add`` of ``C``
    when it has one. ``Y = A B' + C`` either way, ``C`` broadcast the same (Gemm's broadcast of
    ``C`` to ``[M, N]`` is NumPy's). Returns how many were rewritten; a weight no other node reads
    any more is dropped. A ``Gemm`` by a weight named in ``keep`` is left as it is.
    """
    replaced: set[str] = set()

    def rewrite(graph: onnx.GraphProto, outer: dict[str, tuple[onnx.GraphProto, onnx.TensorProto]]) -> int:
        inputs = {i.name for i in graph.input}  # an initializer that is also an input is a default, not a constant
        scope = {name: found for name, found in outer.items() if name not in inputs}
        scope |= {t.name: (graph, t) for t in graph.initializer if t.name not in inputs}
        count, nodes = 0, []
        for node in graph.node:
            for sub in subgraphs(node):
                count += rewrite(sub, scope)
            weight = scope.get(node.input[1]) if node.op_type == "Gemm" and len(node.input) >= 2 else None
            if (weight is None or weight[1].name in keep or len(weight[1].dims) != 2 or _attribute(node, "transA", 0) != 0
                    or _attribute(node, "alpha", 1.0) != 1.0 or _attribute(node, "beta", 1.0) != 1.0):
                nodes.append(node)
                continue
            owner, tensor = weight
            name = tensor.name
            if _attribute(node, "transB", 0):
                name = tensor.name + "_transposed"
                if not any(t.name == name for t in owner.initializer):
                    owner.initializer.append(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(tensor).T), name))
                replaced.add(tensor.name)
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            product = node.output[0] + "_matmul" if bias else node.output[0]
            nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name or product))
            if bias:
                nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=(node.name or product) + "_bias"))
            count += 1
        graph.ClearField("node")
        graph.node.extend(nodes)
        return count

    count = rewrite(model.graph, {})
    unused = replaced - _used_names(model.graph)

    def drop(graph: onnx.GraphProto) -> None:
        kept = [t for t in graph.initializer if t.name not in unused]
        if len(kept) != len(graph.initializer):
            graph.ClearField("initializer")
            graph.initializer.extend(kept)
        for node in graph.node:
            for sub in subgraphs(node):
                drop(sub)

    drop(model.graph)
    return count


_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DequantizeLinear", "MatMulNBits", "DynamicQuantizeMatMul",
                  "GatherBlockQuantized"}


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """The op types of a graph and of every subgraph (If branches, Loop bodies)."""
    return {node.op_type for node in all_nodes(graph)}


def _require_quantized(model: onnx.ModelProto, before: set[str], src: Path, method: str) -> None:
    """Refuse a result in which onnxruntime quantized nothing (a graph left in float is no ``int8``):
    no quantized op type the source graph (op types ``before``) did not already hold."""
    if not (_op_types(model.graph) - before) & _QUANTIZED_OPS:
        what = "MatMul or Gemm weights (int4 quantizes nothing else)" if method == "int4" else "MatMul, Gemm, Conv or Gather weights"
        raise ExportError(
            f"quantize ({src.name})", (),
            f"onnxruntime's {method} quantizer found nothing to quantize in {src.name}: it has no constant {what}; "
            + ("try --method int8, or " if method == "int4" else "") + "leave this graph in float32",
        )


def quantize(
    folder: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    method: str = "int8",
    model: str | os.PathLike[str] | None = None,
    thresholds: Thresholds | None = None,
    overwrite: bool = False,
) -> PostReport:
    """Quantize every graph of the export ``folder`` into ``output_dir`` and judge each against PyTorch.

    ``model``: the model folder to compare with (default: the folder the export read, if it
    still exists). ``thresholds``: the least agreement to reach (default:
    ``agreement.DEFAULTS[method]``). Returns the :class:`PostReport`, also written as
    ``onnxspec_post.json``; raises :class:`~onnxspec.errors.ValidationError` when a graph falls
    below a threshold (nothing is written to ``output_dir`` then).
    """
    if method not in METHODS:
        raise UnknownNameError("quantization method", method, METHODS, "Use --method int8, int8-dynamic or int4.")
    settings = {"kind": "quantize", "method": method}
    if method == "int8-dynamic":
        settings.update(quantizer="onnxruntime.quantization.quantize_dynamic", weights="int8, per channel, symmetric",
                        activations="uint8, dynamic")
    elif method == "int8":
        settings.update(quantizer="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer, then quantize_dynamic for Conv",
                        weights=f"int8, blocks of {BLOCK_SIZE}, symmetric (MatMul, and Gemm with a constant weight rewritten as MatMul + Add; "
                                f"not the MatMul layers named {', '.join(FLOAT_LAYERS)}, the attention projections, those of the first "
                                f"{FLOAT_FIRST_BLOCKS:.0%} of the blocks, nor a head tied to the embedding); Gather tables float32; "
                                "Conv int8 per channel",
                        activations=f"int8 in blocks of {BLOCK_SIZE} at run time (MatMulNBits accuracy_level {ACCURACY_LEVEL}); "
                                    "Conv: uint8, dynamic")
    else:
        settings.update(quantizer="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
                        weights=f"int4, blocks of {BLOCK_SIZE}, symmetric (MatMul, and Gemm with a constant weight rewritten as MatMul + Add)")
    return transform_folder(
        folder, output_dir, lambda src, dst: quantize_file(src, dst, method=method), transformation=settings,
        judged_by="agreement", thresholds=thresholds or DEFAULTS[method.split("-")[0]], model=model, overwrite=overwrite,
    )
