"""Quantization of exported graphs with onnxruntime's quantization tools.

``int8``: dynamic quantization (``onnxruntime.quantization.quantize_dynamic``): the weights of
``MatMul``, ``Gemm``, ``Gather`` ... are stored as signed 8-bit integers with one scale per
output channel, the activations are quantized at run time. ``int4``: weight-only 4-bit
quantization of the ``MatMul`` weights into ``MatMulNBits`` nodes (blocks of 32 values along
the input axis, symmetric, round to nearest), which onnxruntime's CPU provider runs.

:func:`quantize_file` quantizes one graph; :func:`quantize` a whole export folder into a new
one, each graph then judged against PyTorch by agreement (:mod:`onnxspec.post.agreement`:
cosine, top-1, greedy tokens) and the figures written to ``onnxspec_post.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from onnxspec.errors import ExportError, UnknownNameError
from onnxspec.post.agreement import DEFAULTS, Thresholds
from onnxspec.post.folder import PostReport, quiet_tools, transform_folder

__all__ = ["METHODS", "quantize", "quantize_file"]

METHODS = ("int8", "int4")
"""The quantization methods :func:`quantize_file` knows."""

INT4_BLOCK_SIZE = 32
"""Values of one row of a ``MatMul`` weight sharing a 4-bit scale (onnxruntime accepts 16 and up,
powers of two); 32 fits the tiny test models, whose widths are 32 and up."""

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
        raise UnknownNameError("quantization method", method, METHODS, "Use --method int8 or --method int4.")
    src, dst = Path(src), Path(dst)
    with quiet_tools():
        _quantize(src, dst, method)


def _quantize(src: Path, dst: Path, method: str) -> None:
    model = onnx.load(os.fspath(src))
    if method == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # EnableSubgraph: the weights a merged decoder's If branches use are quantized too
        quantize_dynamic(model, dst, per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=_weights_bytes(model) > _EXTERNAL_ABOVE, extra_options={"EnableSubgraph": True})
        _require_quantized(onnx.load(os.fspath(dst), load_external_data=False), src, method)
        return
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=INT4_BLOCK_SIZE, is_symmetric=True)
    quantizer.process()
    _require_quantized(quantizer.model.model, src, method)
    _save(quantizer.model.model, dst)


_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "MatMulNBits", "DynamicQuantizeMatMul", "GatherBlockQuantized"}


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """The op types of a graph and of every subgraph (If branches, Loop bodies)."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found |= _op_types(attribute.g)
            for sub in attribute.graphs:
                found |= _op_types(sub)
    return found


def _require_quantized(model: onnx.ModelProto, src: Path, method: str) -> None:
    """Refuse a result in which onnxruntime quantized nothing (a graph left in float is no ``int8``)."""
    if not _op_types(model.graph) & _QUANTIZED_OPS:
        what = "MatMul weights (int4 quantizes nothing else)" if method == "int4" else "MatMul, Gemm, Conv or Gather weights"
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
        raise UnknownNameError("quantization method", method, METHODS, "Use --method int8 or --method int4.")
    settings = {"kind": "quantize", "method": method}
    if method == "int8":
        settings.update(quantizer="onnxruntime.quantization.quantize_dynamic", weights="int8, per channel, symmetric",
                        activations="uint8, dynamic")
    else:
        settings.update(quantizer="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
                        weights=f"int4, blocks of {INT4_BLOCK_SIZE}, symmetric (MatMul only)")
    return transform_folder(
        folder, output_dir, lambda src, dst: quantize_file(src, dst, method=method), transformation=settings,
        judged_by="agreement", thresholds=thresholds or DEFAULTS[method], model=model, overwrite=overwrite,
    )
