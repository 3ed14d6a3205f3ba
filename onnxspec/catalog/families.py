"""Families: plain functions composing the pieces into an (unbound) export spec.

A family knows the sub-graphs of a kind of model (their inputs, outputs and how they call the
PyTorch module) and which generators, normalizer and cache layout they use. Every family has
the signature ``(model_type, task, *, use_past, **options) -> ModelSpec``; options are explicit
keyword arguments. A model entry (``onnxspec.catalog.models``) is a family plus a few options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import attrs
import toolz
import torch

from onnxspec.pieces import generators as g
from onnxspec.catalog import normalizers
from onnxspec.pieces.axes import Kind, TensorSpec, spec, symbol_size
from onnxspec.errors import SpecError
from onnxspec.pieces.normalize import Normalizer
from onnxspec.pieces.normalize import normalizer as normalize_fields
from onnxspec.pieces.past import PastKind
from onnxspec.pieces.patches import Patch
from onnxspec.pieces.shapes import torch_dtype
from onnxspec.pieces import kinds
from onnxspec.pieces.kinds import GraphKind
from onnxspec.pieces.spec import Call, GraphIO, ModelSpec
from onnxspec.pieces.tasks import TASKS

__all__ = [
    "DecoderPart",
    "EncoderPart",
    "FILTERBANK_ENCODER",
    "Family",
    "GENERATORS",
    "IMAGE_ENCODER",
    "LOG_MEL_ENCODER",
    "MUSICGEN_DELAY_PATTERN",
    "MUSICGEN_ENCODEC_DECODE",
    "MUSICGEN_TEXT_ENCODER",
    "PATCH_ENCODER",
    "PROMPT_ENCODER_MASK_DECODER",
    "MODEL_DECODER",
    "SUBMODULE_DECODER",
    "TEXT_ENCODER",
    "WAVEFORM_ENCODER",
    "INTERLEAVE_BY_STACK",
    "UNFOLD_POSITIVE_DIM",
    "audio",
    "decoder_alone",
    "encoder_decoder",
    "generators_for",
    "musicgen",
    "musicgen_delay_pattern",
    "musicgen_encodec_decode",
    "patch_noise",
    "segment_anything",
    "speech_to_text",
    "tensors",
    "text_decoder",
    "text_encoder",
    "text_seq2seq",
    "text_and_vision",
    "vision",
]

_B = {0: "batch_size"}
_BS = {0: "batch_size", 1: "sequence_length"}
_BT = {0: "batch_size", 1: "past_sequence_length + sequence_length"}
_BD = {0: "batch_size", 1: "decoder_sequence_length"}
_BE = {0: "batch_size", 1: "encoder_sequence_length"}

GENERATORS: Mapping[str, g.Generator] = MappingProxyType(
    {
        "input_ids": g.token_ids,
        "decoder_input_ids": g.token_ids,
        "attention_mask": g.attention_mask,
        "decoder_attention_mask": g.attention_mask,
        "encoder_attention_mask": g.attention_mask,
        "token_type_ids": g.token_type_ids,
        "bbox": g.bounding_boxes,
        "xpath_tags_seq": g.ids_per_token("max_depth", "max_xpath_tag_unit_embeddings"),
        "xpath_subs_seq": g.ids_per_token("max_depth", "max_xpath_subs_unit_embeddings"),
        "position_ids": g.position_ids,
        "pixel_values": g.pixel_values,
        "input_values": g.audio_values,
        "input_features": g.audio_features,
        "encoder_hidden_states": g.encoder_hidden_states,
    }
)
"""The default generator of each well-known input name."""


class Family(Protocol):
    """The signature of a family function."""

    def __call__(self, model_type: str, task: str, *, use_past: bool = False, **options: Any) -> ModelSpec: ...


def generators_for(inputs: Iterable[TensorSpec], overrides: Mapping[str, g.Generator] | None = None) -> dict[str, g.Generator]:
    """The generator of each input in ``inputs`` (cache inputs are handled by ``make_dummies``)."""
    table = toolz.merge(GENERATORS, overrides or {})
    return {t.name: table[t.name] for t in inputs if t.name in table}


def _outputs(task: str, replace: Mapping[str, Mapping[int, str]] | None = None) -> tuple[TensorSpec, ...]:
    """The task's common outputs, with some outputs' axes replaced (e.g. a static sequence)."""
    outs = TASKS[task].outputs
    replace = replace or {}
    return tuple(attrs.evolve(o, axes=replace[o.name]) if o.name in replace else o for o in outs)


def _make(
    model_type: str,
    task: str,
    family: str,
    graphs: Mapping[Behavior, GraphIO],
    *,
    normalizer: Normalizer,
    files: tuple[GraphKind, ...] = (kinds.SINGLE,),
    use_past: bool = False,
    past_kind: PastKind | None = None,
    padding_side: str = "right",
    **fields: Any,
) -> ModelSpec:
    every_input = [t for graph in graphs.values() for t in graph.inputs]
    return ModelSpec(
        model_type=model_type,
        task=task,
        family=family,
        graphs=graphs,
        files=files,
        use_past=use_past,
        generators=generators_for(every_input),
        normalizer=normalizer,
        past_kind=past_kind,
        padding_side=padding_side,
        **fields,
    )


def text_encoder(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    token_type_ids: bool = True,
    bbox: bool = False,
    xpath: bool = False,
    image: bool = False,
    tokens: str = "sequence_length",
    normalizer: Normalizer = normalizers.TEXT,
    **fields: Any,
) -> ModelSpec:
    """BERT-like encoders: ``input_ids`` [, ``bbox``], ``attention_mask`` [, ``token_type_ids``]
    [, ``xpath_tags_seq``, ``xpath_subs_seq``] [, ``pixel_values``] -> task outputs.

    Multiple choice adds a ``num_choices`` axis to every input. With ``bbox`` (document layout
    models) each token also has a box ``(x0, y0, x1, y1)``: one more, static axis of size 4.
    With ``xpath`` (markup models) each token has the tag and subscript ids of its XPath, one per
    depth up to the config's ``max_depth``. With ``image`` (LayoutLMv3) the page image comes too,
    of the config's size (its patch position table is fixed), so only its batch is dynamic.
    ``tokens``: the name of the outputs' token axis when it is not the input's (image patches appended).
    """
    axes = {0: "batch_size", 1: "num_choices", 2: "sequence_length"} if task == "multiple-choice" else _BS
    inputs = [spec("input_ids", axes, Kind.INT)]
    if bbox:
        inputs.append(spec("bbox", axes, Kind.INT, rank=len(axes) + 1))
    inputs.append(spec("attention_mask", axes, Kind.INT))
    if token_type_ids:
        inputs.append(spec("token_type_ids", axes, Kind.INT))
    if xpath:
        inputs += [spec("xpath_tags_seq", axes, Kind.INT, rank=len(axes) + 1), spec("xpath_subs_seq", axes, Kind.INT, rank=len(axes) + 1)]
    if image:
        inputs.append(spec("pixel_values", _B, Kind.FLOAT, rank=4))
    outputs = tuple(attrs.evolve(o, axes={**o.dynamic_axes, 1: tokens}) if o.dynamic_axes.get(1) == "sequence_length" else o for o in _outputs(task))
    graphs = {"monolith": GraphIO(inputs=inputs, outputs=outputs)}
    return _make(model_type, task, "text-encoder", graphs, normalizer=normalizer, **fields)


def text_decoder(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    position_ids: bool = True,
    normalizer: Normalizer = normalizers.TEXT,
    **fields: Any,
) -> ModelSpec:
    """Decoder-only models: ``input_ids``, ``attention_mask`` over past + current tokens
    [, ``position_ids``] [, cache] -> task outputs [, ``present.*``]. Padded on the left.

    With a cache, one graph serves every step: an empty past (length 0) is the first step.
    """
    inputs = [spec("input_ids", _BS, Kind.INT), spec("attention_mask", _BT, Kind.INT)]
    if position_ids:
        inputs.append(spec("position_ids", _BS, Kind.INT))
    graphs = {"monolith": GraphIO(inputs=inputs, outputs=_outputs(task), past=True)}
    return _make(
        model_type,
        task,
        "text-decoder",
        graphs,
        normalizer=normalizer,
        use_past=use_past,
        past_kind=PastKind.DECODER_ONLY,
        padding_side="left",
        **fields,
    )


_NO_PACKED_SEQUENCES = Patch(
    target="transformers.masking_utils",
    attribute="find_packed_sequence_indices",
    value=lambda position_ids: None,
    reason=(
        "the decoder graphs take no position_ids (positions follow the cache length), so no batch row packs "
        "several sequences; the packing probe uses aten::diff, which the TorchScript exporter lacks"
    ),
)


@attrs.frozen(kw_only=True)
class EncoderPart:
    """The encoder graph of an encoder-decoder model: what it takes and how it is called.

    ``inputs``: the encoder's inputs, named as the model's forward names them (the monolith
    graph passes them to the whole model). ``hidden_axes``: the axes of its
    ``last_hidden_state`` (an image encoder's sequence is static; an audio encoder's is a
    derived number of frames). ``call``: how the encoder graph calls the model
    (``module="get_encoder()"``). ``mask``: the input the decoder gets as
    ``encoder_attention_mask`` (the model's forward keyword ``attention_mask``), or ``""``
    when the decoder reads the encoder output unmasked. ``generators``: generators of inputs
    no default generator knows.
    """

    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple)
    hidden_axes: Mapping[int, str] = attrs.field(converter=lambda m: MappingProxyType(dict(m)), hash=False)
    call: Call = attrs.field(factory=lambda: Call(module="get_encoder()"))
    mask: str = attrs.field(default="")
    generators: Mapping[str, g.Generator] = attrs.field(factory=dict, converter=lambda m: MappingProxyType(dict(m)), hash=False)

    @mask.validator
    def _check_mask(self, attribute: attrs.Attribute, value: str) -> None:
        if value and value not in {t.name for t in self.inputs}:
            raise SpecError(f"EncoderPart.mask {value!r} is not one of its inputs {[t.name for t in self.inputs]}")


_SEQ2SEQ_DECODER_CALL = Call(arguments={"input_ids": "decoder_input_ids", "encoder_hidden_states": "encoder_outputs"})


@attrs.frozen(kw_only=True)
class DecoderPart:
    """The decoder graph of an encoder-decoder model, for every step of generation: what it
    takes and how it is called. Its cache is the decoder's (a seq2seq cache: self and cross
    attention, at the decoder's heads and head dims).

    It takes ``input_ids`` (the decoder's), ``encoder_attention_mask`` when ``encoder_mask`` and
    the encoder part has a mask, and ``encoder_hidden_states``: the encoder's *output*, of the
    encoder's width (a projection to the decoder's width, if the model has one, runs inside this
    graph). ``call``: how the graph calls the model (by default the whole model, with
    ``decoder_input_ids`` and ``encoder_outputs``). ``generators``: overrides (an encoder output
    whose length the mask's length implies). ``hidden_axes``: the axes of ``encoder_hidden_states``
    (a subsampling encoder's frames are not the mask's length).
    """

    call: Call = _SEQ2SEQ_DECODER_CALL
    encoder_mask: bool = True
    hidden_axes: Mapping[int, str] = attrs.field(default=_BE, converter=lambda m: MappingProxyType(dict(m)), hash=False)
    generators: Mapping[str, g.Generator] = attrs.field(factory=dict, converter=lambda m: MappingProxyType(dict(m)), hash=False)


MODEL_DECODER = DecoderPart()
"""The decoder of the whole model, called with ``decoder_input_ids`` and ``encoder_outputs``."""
SUBMODULE_DECODER = DecoderPart(call=Call(module="model.decoder"))
"""A causal LM's decoder body called alone with ``input_ids`` and ``encoder_hidden_states`` (TrOCR)."""


TEXT_ENCODER = EncoderPart(inputs=(spec("input_ids", _BE, Kind.INT), spec("attention_mask", _BE, Kind.INT)), hidden_axes=_BE, mask="attention_mask")
"""Token ids and their mask (T5, BART, BERT-to-BERT)."""
LOG_MEL_ENCODER = EncoderPart(inputs=(spec("input_features", _B, Kind.FLOAT, rank=3),), hidden_axes=_B)
"""Fixed-length log-mel features ``(batch, mel bins, frames)`` (Whisper)."""
IMAGE_ENCODER = EncoderPart(inputs=(spec("pixel_values", _B, Kind.FLOAT, rank=4),), hidden_axes=_B)
"""Images of the encoder's own size (ViT, Swin, Donut)."""
WAVEFORM_ENCODER = EncoderPart(inputs=(spec("input_values", {0: "batch_size", 1: "audio_sequence_length"}, Kind.FLOAT),), hidden_axes={0: "batch_size", 1: "encoder_frames"})
"""A raw waveform, downsampled by convolutions into frames (Moonshine)."""
_FRAMES = {0: "batch_size", 1: "encoder_sequence_length"}
FILTERBANK_ENCODER = EncoderPart(
    inputs=(spec("input_features", _FRAMES, Kind.FLOAT, rank=3), spec("attention_mask", _FRAMES, Kind.INT)),
    hidden_axes={0: "batch_size", 1: "encoder_frames"},
    mask="attention_mask",
    generators={"input_features": g.filterbank_features},
)
"""Filterbank frames ``(batch, frames, features)`` with their mask, subsampled by convolutions
(Speech2Text); the decoder's ``encoder_attention_mask`` is over the input frames."""
PATCH_ENCODER = EncoderPart(
    inputs=(spec("flattened_patches", _BE, Kind.FLOAT, rank=3), spec("attention_mask", _BE, Kind.INT)),
    hidden_axes=_BE,
    mask="attention_mask",
    generators={"flattened_patches": g.flattened_patches},
)
"""Variable-resolution image patches, each row ``(row, column, pixels...)``, and their mask (Pix2Struct)."""


def _decoder_graph(task: str, encoder: EncoderPart | None, decoder: DecoderPart) -> GraphIO:
    """The decoder graph: first step reads ``encoder_hidden_states``; later steps
    (``decoder_with_past_model``) read the cross-attention cache instead, so that input is
    ``replaced_by_cache``. ``encoder_attention_mask`` stays: it still masks the cross attention.
    """
    inputs = [spec("input_ids", _BD, Kind.INT)]
    arguments = dict(decoder.call.arguments)
    if encoder is not None and encoder.mask and decoder.encoder_mask:
        mask = next(t for t in encoder.inputs if t.name == encoder.mask)
        inputs.append(attrs.evolve(mask, name="encoder_attention_mask"))
        arguments["encoder_attention_mask"] = encoder.mask
    inputs.append(spec("encoder_hidden_states", decoder.hidden_axes, Kind.FLOAT, rank=3))
    return GraphIO(
        inputs=inputs,
        outputs=_outputs(task, {"logits": _BD, "last_hidden_state": _BD}),
        call=attrs.evolve(decoder.call, arguments=arguments),
        past=True,
        replaced_by_cache={"encoder_hidden_states"},
    )


def encoder_decoder(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    encoder: EncoderPart | None = TEXT_ENCODER,
    decoder: DecoderPart = MODEL_DECODER,
    normalizer: Normalizer = normalizers.SEQ2SEQ,
    family: str = "encoder-decoder",
    **fields: Any,
) -> ModelSpec:
    """Encoder-decoder models, composed from an encoder part and a decoder part; split into
    ``encoder_model`` / ``decoder_model`` [/ ``decoder_with_past_model``] graphs (merged into
    ``decoder_model_merged`` by the pipeline), or one monolith graph on request. Without an
    encoder part (``None``) the decoder is exported alone: ``decoder_model`` [/ with past].

    The decoder's ``encoder_hidden_states`` have the encoder's width (the ``encoder_hidden_size``
    dimension when the normalizer has one, else ``hidden_size``); its cache has the decoder's.
    """
    graphs = {"decoder": _decoder_graph(task, encoder, decoder)}
    if encoder is not None:
        graphs["encoder"] = GraphIO(
            inputs=encoder.inputs, outputs=[spec("last_hidden_state", encoder.hidden_axes, rank=3)], call=encoder.call
        )
        graphs["monolith"] = GraphIO(
            inputs=[*encoder.inputs, spec("decoder_input_ids", _BD, Kind.INT)],
            outputs=_outputs(task, {"logits": _BD, "last_hidden_state": _BD}),
        )
    fields = {**fields, "patches": tuple(dict.fromkeys((*fields.get("patches", ()), _NO_PACKED_SEQUENCES)))}
    made = _make(
        model_type,
        task,
        family,
        graphs,
        normalizer=normalizer,
        files=(kinds.ENCODER, kinds.DECODER) if encoder is not None else (kinds.DECODER,),
        use_past=use_past,
        past_kind=PastKind.SEQ2SEQ,
        **fields,
    )
    return attrs.evolve(made, generators={**made.generators, **(encoder.generators if encoder else {}), **decoder.generators})


def decoder_alone(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    decoder: DecoderPart = SUBMODULE_DECODER,
    normalizer: Normalizer = normalizers.SEQ2SEQ_DECODER,
    **fields: Any,
) -> ModelSpec:
    """The decoder of an encoder-decoder pair exported alone (TrOCR: Optimum registers it as the
    decoder vision-encoder-decoder models use): :func:`encoder_decoder` with no encoder part."""
    return encoder_decoder(model_type, task, use_past=use_past, encoder=None, decoder=decoder, normalizer=normalizer, family="decoder-alone", **fields)


def _eos_terminated_ids(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Token ids with exactly one end-of-sequence token per row, in the last column.

    Sequence classification heads of encoder-decoder models (BART) pool the hidden state at
    the ``eos_token_id`` token and refuse rows with differing eos counts.
    """
    ids = g.token_ids(tensor, ctx, rng, made)
    eos = int(ctx.dims["eos_token_id"])
    vocab = int(ctx.dims["vocab_size"])
    ids = torch.where(ids == eos, (ids + 1) % vocab, ids)
    ids[..., -1] = eos
    return ids


def _encoder_only_task(task: str) -> bool:
    return task in ("text-classification", "question-answering", "audio-classification")


def text_seq2seq(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = normalizers.SEQ2SEQ,
    **fields: Any,
) -> ModelSpec:
    """Encoder-decoder text models: :func:`encoder_decoder` with a :data:`TEXT_ENCODER`.

    Masks are padded on the right. Classification and question answering heads run the whole
    model in one graph from ``input_ids`` and ``attention_mask`` (classification inputs end
    with the eos token the head pools at).
    """
    if _encoder_only_task(task):
        graphs = {"monolith": GraphIO(inputs=[spec("input_ids", _BS, Kind.INT), spec("attention_mask", _BS, Kind.INT)], outputs=_outputs(task))}
        made = _make(model_type, task, "text-seq2seq", graphs, normalizer=normalizer, **fields)
        if task != "text-classification":
            return made
        # The classification head reads the hidden state at each row's end-of-sequence token.
        return attrs.evolve(
            made,
            normalizer=normalize_fields(made.normalizer, eos_token_id=("eos_token_id",)),
            generators={**made.generators, "input_ids": _eos_terminated_ids},
        )
    return encoder_decoder(model_type, task, use_past=use_past, encoder=TEXT_ENCODER, normalizer=normalizer, family="text-seq2seq", **fields)


def _interleave_by_stack(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def repeat_interleave(self: torch.Tensor, repeats: Any, dim: int | None = None, *, output_size: int | None = None) -> torch.Tensor:
        if isinstance(repeats, int) and dim is not None:
            axis = dim % self.dim()
            return torch.stack([self] * repeats, dim=axis + 1).flatten(axis, axis + 1)
        return original(self, repeats, dim, output_size=output_size)

    return repeat_interleave


_INTERLEAVE_REASON = (
    "the TorchScript exporter's repeat_interleave over a dynamic axis fails (concat of tensors of differing rank); "
    "stacking the copies and flattening gives the same tensor"
)
INTERLEAVE_BY_STACK: tuple[Patch, ...] = (
    Patch(target=torch, attribute="repeat_interleave", wrap=_interleave_by_stack, reason=_INTERLEAVE_REASON),
    Patch(target=torch.Tensor, attribute="repeat_interleave", wrap=_interleave_by_stack, reason=_INTERLEAVE_REASON),
)
"""Patches for models whose rotary embedding interleaves ``cos``/``sin`` (Cohere, GLM, Helium):
``x.repeat_interleave(n, dim)`` with an int ``n`` traced as ``stack([x] * n, dim + 1).flatten``."""


def _unfold_positive_dim(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def unfold(self: torch.Tensor, dimension: int, size: int, step: int) -> torch.Tensor:
        return original(self, dimension % self.dim(), size, step)

    return unfold


UNFOLD_POSITIVE_DIM: tuple[Patch, ...] = (
    Patch(
        target=torch.Tensor,
        attribute="unfold",
        wrap=_unfold_positive_dim,
        reason=(
            "the TorchScript exporter's unfold over a negative dimension builds a graph whose windows do not fit the "
            "following ops (onnxruntime refuses to load it); the same dimension counted from the front traces right"
        ),
    ),
)
"""Patch time-series models (PatchTST, PatchTSMixer) cut windows with ``x.unfold(-2, ...)``: traced as ``x.unfold(x.dim() - 2, ...)``."""


def speech_to_text(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    encoder: EncoderPart = LOG_MEL_ENCODER,
    decoder: DecoderPart = MODEL_DECODER,
    normalizer: Normalizer = normalizers.WHISPER,
    **fields: Any,
) -> ModelSpec:
    """Speech-to-text models: :func:`encoder_decoder` with an audio encoder part (Whisper's
    log-mel features by default). Audio classification runs the encoder with a head in one graph.
    """
    fields = {**fields, "patches": (*fields.get("patches", ()), _NO_PACKED_SEQUENCES)}
    if _encoder_only_task(task):
        graphs = {"monolith": GraphIO(inputs=encoder.inputs, outputs=_outputs(task))}
        made = _make(model_type, task, "speech-to-text", graphs, normalizer=normalizer, **fields)
        return attrs.evolve(made, generators={**made.generators, **encoder.generators})
    return encoder_decoder(
        model_type, task, use_past=use_past, encoder=encoder, decoder=decoder, normalizer=normalizer, family="speech-to-text", **fields
    )


def vision(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = normalizers.VISION,
    dynamic_image_size: bool = False,
    feature_map: bool = False,
    **fields: Any,
) -> ModelSpec:
    """Image encoders: ``pixel_values`` -> task outputs.

    Height and width are static (the config's ``image_size``) unless ``dynamic_image_size``;
    every spatial or patch axis of the outputs (``last_hidden_state``'s sequence, segmentation
    maps, detection queries) then is static too, so only the batch is dynamic. With
    ``feature_map`` (convolutional backbones) ``last_hidden_state`` is ``[b, c, h, w]``.
    """
    pixel_axes = {0: "batch_size", 2: "height", 3: "width"} if dynamic_image_size else _B
    outputs = _outputs(task, {"last_hidden_state": _B})
    if not dynamic_image_size:
        outputs = tuple(attrs.evolve(o, axes=_B) for o in outputs)
    if feature_map:
        outputs = tuple(attrs.evolve(o, rank=4) if o.name == "last_hidden_state" else o for o in outputs)
    graphs = {"monolith": GraphIO(inputs=[spec("pixel_values", pixel_axes, Kind.FLOAT, rank=4)], outputs=outputs)}
    return _make(model_type, task, "vision", graphs, normalizer=normalizer, **fields)


def audio(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = normalizers.AUDIO,
    spectrogram: bool = False,
    **fields: Any,
) -> ModelSpec:
    """Raw-waveform encoders: ``input_values`` -> task outputs over feature frames.

    With ``spectrogram`` (AST) ``input_values`` is a fixed-size spectrogram ``[b, frames, mel
    bins]`` from the config, so only the batch is dynamic, in the outputs too.
    """
    if spectrogram:
        inputs = [spec("input_values", _B, Kind.FLOAT, rank=3)]
        outputs = tuple(attrs.evolve(o, axes=_B) for o in _outputs(task))
    else:
        frames = {0: "batch_size", 1: "feature_sequence_length"}
        framewise = task in ("automatic-speech-recognition", "audio-frame-classification")
        outputs = _outputs(task, {"last_hidden_state": frames, "logits": frames if framewise else _B})
        inputs = [spec("input_values", {0: "batch_size", 1: "audio_sequence_length"}, Kind.FLOAT)]
    graphs = {"monolith": GraphIO(inputs=inputs, outputs=outputs)}
    made = _make(model_type, task, "audio", graphs, normalizer=normalizer, **fields)
    return attrs.evolve(made, generators={**made.generators, "input_values": g.spectrogram}) if spectrogram else made


def text_and_vision(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = normalizers.CLIP,
    attention_mask: bool = True,
    **fields: Any,
) -> ModelSpec:
    """Dual encoders (CLIP): texts and images with batches of their own -> similarity logits
    and embeddings. Image classification uses the vision tower alone. Without
    ``attention_mask`` (SigLIP, trained on unpadded max-length texts) the text graph reads ids only."""
    if task == "image-classification":
        return attrs.evolve(vision(model_type, task, normalizer=normalizer, **fields), family="text-and-vision")
    text = {0: "text_batch_size", 1: "sequence_length"}
    inputs = [
        spec("input_ids", text, Kind.INT),
        spec("pixel_values", {0: "image_batch_size"}, Kind.FLOAT, rank=4),
    ]
    if attention_mask:
        inputs.append(spec("attention_mask", text, Kind.INT))
    outputs = _outputs("zero-shot-image-classification")
    graphs = {"monolith": GraphIO(inputs=inputs, outputs=outputs)}
    return _make(model_type, task, "text-and-vision", graphs, normalizer=normalizer, **fields)


def tensors(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    inputs: Iterable[TensorSpec],
    outputs: Iterable[TensorSpec] | None = None,
    static_outputs: bool = False,
    generators: Mapping[str, g.Generator] | None = None,
    call: Call | None = None,
    normalizer: Normalizer,
    **fields: Any,
) -> ModelSpec:
    """Models fed named tensors no other family knows (trajectories, time series, text with
    visual features): the given ``inputs`` -> ``outputs`` (the task's common outputs unless given),
    in one graph. ``static_outputs``: only the outputs' batch axis is dynamic (a series of the
    config's fixed length). ``generators``: for inputs no default generator knows. ``call``:
    how the graph calls the model (outputs read from other attributes of its output).
    """
    outs = tuple(outputs) if outputs is not None else _outputs(task)
    if static_outputs:
        outs = tuple(attrs.evolve(o, axes=_B) for o in outs)
    graphs = {"monolith": GraphIO(inputs=tuple(inputs), outputs=outs, call=call or Call())}
    made = _make(model_type, task, "tensors", graphs, normalizer=normalizer, **fields)
    return attrs.evolve(made, generators={**made.generators, **(generators or {})})


def patch_noise(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Uniform noise in ``[0, 1)``, one value per image patch: ``(batch, (image_size / patch_size) ** 2)``.

    ViTMAE keeps the patches of lowest noise (``random_masking`` sorts it), drawing fresh noise on
    every call unless given some; as a graph input it makes the graph, and PyTorch run at the same
    input, deterministic.
    """
    (height, width), (rows, columns) = (
        tuple(v) if isinstance(v, (list, tuple)) else (v, v) for v in ctx.dims.require("image_size", "patch_size")
    )
    patches = (int(height) // int(rows)) * (int(width) // int(columns))
    batch = symbol_size(tensor.dynamic_axes[0], ctx.sizes)
    return torch.rand((batch, patches), generator=rng).to(torch_dtype(Kind.FLOAT, ctx.dtypes))


PROMPT_ENCODER_MASK_DECODER = GraphKind(
    name="prompt-encoder-mask-decoder", role="prompt_decoder", filename="prompt_encoder_mask_decoder.onnx"
)
"""SAM's second file: the prompt encoder and the mask decoder, fed the vision encoder's two outputs
and the prompt (points and their labels)."""

_POINTS = {0: "batch_size", 1: "point_batch_size", 2: "nb_points_per_image"}
_PER_PROMPT = {0: "batch_size", 1: "point_batch_size"}


def sam_image_encoder(model: Any, pixel_values: Any, **_: Any) -> dict[str, Any]:
    """SAM's image side, as ``SamModel.forward`` computes it: the vision encoder's embeddings and
    the image-wide positional table (input-independent), repeated per image."""
    positions = model.get_image_wide_positional_embeddings().repeat(pixel_values.shape[0], 1, 1, 1)
    return {"image_embeddings": model.vision_encoder(pixel_values).last_hidden_state, "image_positional_embeddings": positions}


def sam_prompt_decoder(
    model: Any, image_embeddings: Any, image_positional_embeddings: Any, input_points: Any, input_labels: Any, **_: Any
) -> dict[str, Any]:
    """SAM's prompt side, as ``SamModel.forward`` computes it from image embeddings: the prompt
    encoder, then the mask decoder (three masks per prompt)."""
    sparse, dense = model.prompt_encoder(input_points=input_points, input_labels=input_labels, input_boxes=None, input_masks=None)
    masks, scores = model.mask_decoder(
        image_embeddings=image_embeddings,
        image_positional_embeddings=image_positional_embeddings,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return {"iou_scores": scores, "pred_masks": masks}


def segment_anything(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    split: bool = True,
    normalizer: Normalizer = normalizers.SAM,
    **fields: Any,
) -> ModelSpec:
    """SAM: an image and point prompts -> ``iou_scores`` and ``pred_masks`` per prompt (three masks each).

    ``split`` (Optimum's default variant) writes ``vision_encoder.onnx`` (``pixel_values`` ->
    ``image_embeddings``, ``image_positional_embeddings``) and ``prompt_encoder_mask_decoder.onnx``
    (those two, ``input_points`` and ``input_labels`` -> the masks), so an image is encoded once for
    many prompts; the ``"monolith"`` graph (``model.onnx``) runs all of it. The image is of the
    config's size: only the batch and the prompt axes are dynamic. Not split: ``model.onnx`` alone.

    No module of ``SamModel`` does either split file's work, so their calls are functions of the
    model (:func:`sam_image_encoder`, :func:`sam_prompt_decoder`) made of the very parts
    ``SamModel.forward`` runs, in its order.
    """
    pixels = spec("pixel_values", _B, Kind.FLOAT, rank=4)
    points, labels = spec("input_points", _POINTS, Kind.FLOAT, rank=4), spec("input_labels", _POINTS, Kind.INT)
    embeddings = spec("image_embeddings", _B, Kind.FLOAT, rank=4)
    positions = spec("image_positional_embeddings", _B, Kind.FLOAT, rank=4)
    masks = (spec("iou_scores", _PER_PROMPT, rank=3), spec("pred_masks", _PER_PROMPT, rank=5))
    graphs = {"monolith": GraphIO(inputs=[pixels, points, labels], outputs=masks, call=Call(fixed={"multimask_output": True}))}
    if split:
        graphs["vision_encoder"] = GraphIO(inputs=[pixels], outputs=[embeddings, positions], call=Call(function=sam_image_encoder))
        graphs["prompt_decoder"] = GraphIO(
            inputs=[positions, embeddings, points, labels], outputs=masks, call=Call(function=sam_prompt_decoder)
        )
    made = _make(
        model_type, task, "segment-anything", graphs, normalizer=normalizer,
        files=(kinds.VISION_ENCODER, PROMPT_ENCODER_MASK_DECODER) if split else (kinds.SINGLE,), **fields,
    )
    sam_generators = {
        "input_points": g.prompt_points,
        "input_labels": g.point_labels,
        "image_embeddings": g.image_embeddings,
        "image_positional_embeddings": g.image_positional_embeddings,
    }
    return attrs.evolve(made, generators={**made.generators, **sam_generators})



MUSICGEN_TEXT_ENCODER = GraphKind(name="text-encoder", role="text_encoder", filename="text_encoder.onnx")
"""MusicGen's text encoder: the prompt's ids and mask -> the hidden states the decoder attends to."""
MUSICGEN_ENCODEC_DECODE = GraphKind(name="encodec-decode", role="encodec_decode", filename="encodec_decode.onnx")
"""MusicGen's EnCodec decoder: generated audio codes -> the waveform."""
MUSICGEN_DELAY_PATTERN = GraphKind(name="delay-pattern", role="delay_pattern", filename="build_delay_pattern_mask.onnx")
"""MusicGen's delay pattern: the prompt's codes, the pad id and the generation's length -> the codes shifted one
step per codebook and the mask of the positions generation fills."""

_CODEBOOK_ROWS = "total_batch_size_x_num_codebooks"
_CODE_STEPS = {0: _CODEBOOK_ROWS, 1: "decoder_sequence_length"}


def _reflect_pad_any_length(hidden_states: torch.Tensor, paddings: tuple[Any, Any], mode: str = "zero", value: float = 0.0) -> torch.Tensor:
    """EnCodec's ``_pad1d`` without its Python branch: a reflection over a signal shorter than the
    padding reflects the zeros it is first extended with (``max_pad - length + 1`` of them), and the
    extension is cut from the end again; here the source index of every output sample is computed for
    any length, so one graph serves short and long code sequences alike."""
    if mode != "reflect":
        return torch.nn.functional.pad(hidden_states, paddings, mode, value)
    left, right = (int(p) for p in paddings)  # the convolution's constant padding (stride 1 in the decoder)
    length = torch.arange(hidden_states.shape[-1], device=hidden_states.device)[-1] + 1  # a tensor, in either exporter's trace
    longest = max(left, right)
    extended = length + torch.clamp(longest - length + 1, min=0)  # the signal once zero-extended
    source = torch.arange(hidden_states.shape[-1] + left + right, device=hidden_states.device) - left
    source = torch.where(source < 0, -source, source)
    source = torch.where(source >= extended, 2 * (extended - 1) - source, source)
    source = torch.where(source < length, source, length)  # past the signal: the zero column appended below
    return torch.nn.functional.pad(hidden_states, (0, 1)).index_select(-1, source)


_ENCODEC_PAD = Patch(
    target="transformers.models.encodec.modeling_encodec:EncodecConv1d",
    attribute="_pad1d",
    value=staticmethod(_reflect_pad_any_length),
    reason=(
        "EnCodec's reflect padding zero-extends a signal no longer than the padding behind a Python branch on its length, "
        "which a trace freezes (a graph traced at 5 frames fails at 1); the same samples are gathered by computed indices"
    ),
)


def _delay_pattern_any_length(self: Any, input_ids: torch.Tensor, pad_token_id: Any, max_length: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``MusicgenForCausalLM.build_delay_pattern_mask`` without its Python branches, for a ``max_length``
    given as a tensor: every position's source is computed (codebook ``k`` reads the prompt ``k`` steps
    late, or ``k // 2`` in stereo), the pad positions are the two triangles of the pattern, and the
    "too short for the pattern" case is a ``torch.where``. The prompt's ids are codes (never -1), so
    generation starts right after the prompt and the edited ids keep its length."""
    codebooks = self.num_codebooks
    stereo = self.config.audio_channels == 2
    channel_codebooks = codebooks // 2 if stereo else codebooks
    ids = input_ids.reshape(-1, codebooks, input_ids.shape[-1])
    length = torch.as_tensor(max_length if max_length is not None else self.generation_config.max_length)
    positions = torch.arange(length, device=ids.device)[None, :]
    offset = torch.arange(codebooks, device=ids.device)[:, None]
    offset = offset // 2 if stereo else offset
    source = positions - offset  # (codebooks, max_length): where each position reads the prompt
    read = torch.gather(ids, 2, source.clamp(0, ids.shape[-1] - 1).expand(ids.shape[0], -1, -1))
    shifted = torch.where((source >= 0) & (source < ids.shape[-1]), read, -1)
    padded = (positions <= offset) | (positions - offset >= length - channel_codebooks + 1)
    pattern = torch.where(padded, torch.as_tensor(pad_token_id).to(shifted.dtype), shifted)
    too_short = length < 2 * channel_codebooks - 1  # the model then returns the prompt as is and no pattern
    mask = torch.where(too_short, -1, pattern).reshape(-1, pattern.shape[-1])
    edited = torch.where(too_short, ids, pattern[..., : ids.shape[-1]]).reshape(-1, ids.shape[-1])
    return edited, mask


_DELAY_PATTERN_PATCH = Patch(
    target="transformers.models.musicgen.modeling_musicgen:MusicgenForCausalLM",
    attribute="build_delay_pattern_mask",
    value=_delay_pattern_any_length,
    reason=(
        "build_delay_pattern_mask sizes its tensors by max_length and branches on it and on the first -1 it finds "
        "(Python ints a trace freezes); the same pattern is computed from index arithmetic on the max_length input"
    ),
)


def musicgen_delay_pattern(model: Any, input_ids: Any, pad_token_id: Any, max_length: Any, **_: Any) -> dict[str, Any]:
    """The prompt's codes delayed one step per codebook and the pattern generation fills, as
    ``MusicgenForConditionalGeneration.generate`` builds them (the decoder's ``build_delay_pattern_mask``)."""
    edited, mask = model.decoder.build_delay_pattern_mask(input_ids, pad_token_id=pad_token_id, max_length=max_length)
    return {"input_ids_edited": edited, "delay_pattern_mask": mask}


def _delay_max_length(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A generation length that varies with the shape set: ``sequence_length + num_codebooks + 1`` (at one
    token it is below ``2 * num_codebooks - 1``, where the model leaves the prompt without a pattern)."""
    return torch.tensor(ctx.sizes["sequence_length"] + int(ctx.dims["num_codebooks"]) + 1, dtype=torch_dtype(Kind.INT, ctx.dtypes))


def musicgen_encodec_decode(model: Any, audio_codes: Any, **_: Any) -> dict[str, Any]:
    """The waveform of one chunk of codes ``(1, batch, num_codebooks, frames)``, as
    ``MusicgenForConditionalGeneration.generate`` decodes its output: EnCodec's ``decode``, unscaled."""
    return {"audio_values": model.audio_encoder.decode(audio_codes, [None]).audio_values}


def _musicgen_ids(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's ``input_ids`` are audio codes, one row per item and codebook; the text encoder's are text tokens."""
    generate = g.codebook_ids if tensor.dynamic_axes.get(0) == _CODEBOOK_ROWS else g.token_ids
    return generate(tensor, ctx, rng, made)


def musicgen(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = normalizers.MUSICGEN,
    **fields: Any,
) -> ModelSpec:
    """MusicGen, text to audio: ``text_encoder.onnx`` (``input_ids``, ``attention_mask`` ->
    ``last_hidden_state``), the decoder (``decoder_model.onnx`` [/ ``decoder_with_past_model.onnx``
    / ``decoder_model_merged.onnx``]: audio-code ``input_ids`` of ``(batch * num_codebooks, steps)``,
    the prompt's mask as ``encoder_attention_mask``, the text encoder's output as
    ``encoder_hidden_states`` (projected to the decoder's width inside) -> ``logits`` of each
    codebook row), and ``encodec_decode.onnx`` (``audio_codes`` -> ``audio_values``). The decoder's
    cache is a seq2seq one over ``batch`` rows (the codebooks' embeddings are summed per item).
    No module of the model does the EnCodec file's work alone: its call is :func:`musicgen_encodec_decode`.
    """
    text = {0: "batch_size", 1: "encoder_sequence_length"}
    mask = spec("attention_mask", text, Kind.INT)
    graphs = {
        "text_encoder": GraphIO(
            inputs=[spec("input_ids", text, Kind.INT), mask],
            outputs=[spec("last_hidden_state", text, rank=3)],
            call=Call(module="text_encoder"),
        ),
        "decoder": GraphIO(
            inputs=[
                spec("input_ids", _CODE_STEPS, Kind.INT),
                attrs.evolve(mask, name="encoder_attention_mask"),
                spec("encoder_hidden_states", text, Kind.FLOAT, rank=3),
            ],
            outputs=[spec("logits", _CODE_STEPS, rank=3)],
            call=attrs.evolve(_SEQ2SEQ_DECODER_CALL, arguments={**_SEQ2SEQ_DECODER_CALL.arguments, "encoder_attention_mask": "attention_mask"}),
            past=True,
            replaced_by_cache={"encoder_hidden_states"},
        ),
        "encodec_decode": GraphIO(
            inputs=[spec("audio_codes", {1: "batch_size", 3: "chunk_length"}, Kind.INT, rank=4)],
            outputs=[spec("audio_values", {0: "batch_size", 2: "audio_length"}, rank=3)],
            call=Call(function=musicgen_encodec_decode),
        ),
        "delay_pattern": GraphIO(
            inputs=[spec("input_ids", _CODE_STEPS, Kind.INT), spec("pad_token_id", {}, Kind.INT, rank=0), spec("max_length", {}, Kind.INT, rank=0)],
            outputs=[spec("input_ids_edited", _CODE_STEPS, Kind.INT), spec("delay_pattern_mask", {0: _CODEBOOK_ROWS, 1: "max_length"}, Kind.INT)],
            call=Call(function=musicgen_delay_pattern),
        ),
    }
    made = _make(
        model_type, task, "musicgen", graphs, normalizer=normalizer,
        files=(MUSICGEN_TEXT_ENCODER, MUSICGEN_ENCODEC_DECODE, MUSICGEN_DELAY_PATTERN, kinds.DECODER), use_past=use_past,
        past_kind=PastKind.SEQ2SEQ, patches=(*fields.pop("patches", ()), _NO_PACKED_SEQUENCES, _ENCODEC_PAD, _DELAY_PATTERN_PATCH), **fields,
    )
    musicgen_generators = {
        "input_ids": _musicgen_ids, "audio_codes": g.audio_codes, "pad_token_id": g.config_scalar("pad_token_id"), "max_length": _delay_max_length,
    }
    return attrs.evolve(made, generators={**made.generators, **musicgen_generators})


FAMILIES: Mapping[str, Callable[..., ModelSpec]] = MappingProxyType(
    {
        "text-encoder": text_encoder,
        "text-decoder": text_decoder,
        "text-seq2seq": text_seq2seq,
        "speech-to-text": speech_to_text,
        "encoder-decoder": encoder_decoder,
        "decoder-alone": decoder_alone,
        "vision": vision,
        "audio": audio,
        "text-and-vision": text_and_vision,
        "tensors": tensors,
        "segment-anything": segment_anything,
        "musicgen": musicgen,
    }
)

