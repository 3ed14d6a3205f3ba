"""SpeechT5 text to speech: four graphs, each a function of the model composing its parts.

``SpeechT5ForTextToSpeech.generate_speech`` runs the text encoder once, then a loop whose body
is no module's ``forward``: the decoder prenet over the whole spectrogram so far (with the
speaker embedding), the decoder layers over the frames not yet in the cache, the postnet's
``feat_out`` (the next ``reduction_factor`` mel frames) and ``prob_out`` (the stop
probability); after the loop the postnet refines the spectrogram and a HiFi-GAN vocoder, a
checkpoint of its own, turns it into a waveform. Optimum's files follow that split, and so do
these (:func:`speecht5`):

- ``encoder_model.onnx``: ``input_ids`` -> ``encoder_outputs``, ``encoder_attention_mask``
  (the mask ``generate_speech`` derives from the pad token when given none);
- ``decoder_model.onnx`` [/ ``decoder_with_past_model.onnx``]: ``output_sequence`` (the mel
  frames so far, the first one zeros), ``speaker_embeddings``, ``encoder_outputs``,
  ``encoder_attention_mask``, ``prenet_noise`` [, the cache] -> ``output_sequence_out`` (one
  frame appended), ``spectrum`` (the step's ``reduction_factor`` frames), ``prob`` [, the cache];
- ``decoder_postnet_and_vocoder.onnx``: ``spectrogram`` (every step's frames, in order) ->
  ``waveform``.

Two things differ from Optimum's files, both named in the README:

- every tensor has a batch axis (Optimum's have none and are for one text only): the functions
  run as ``generate_speech`` runs a batch, so ``spectrum`` is ``(batch, reduction_factor,
  num_mel_bins)``, ``prob`` ``(batch, reduction_factor)`` and ``waveform`` ``(batch, samples)``;
- the decoder prenet keeps each unit with probability ``speech_decoder_prenet_dropout`` on every
  call, even in eval mode (a fresh ``torch.bernoulli`` draw over the whole sequence, one mask for
  the batch): a graph drawing it could never agree with PyTorch, so the decoder takes the draws as
  ``prenet_noise`` (``(prenet layers, frames, prenet units)``, uniform in ``[0, 1)``; a unit is
  kept where its draw is below ``speech_decoder_prenet_dropout``), the way ``vit_mae`` takes its
  noise. A runtime draws it afresh for every step, as the model does.

The vocoder is not part of the model folder: the pipeline loads it from the folder given as
``vocoder`` (``--vocoder PATH``, :func:`onnxspec.pipeline.loading.load_vocoder`) and attaches it
to the model as ``model.vocoder``, where :func:`speecht5_postnet_and_vocoder` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from onnxspec.catalog import normalizers
from onnxspec.errors import SpecError
from onnxspec.pieces import generators as g
from onnxspec.pieces import kinds
from onnxspec.pieces.axes import Kind, TensorSpec, spec, symbol_size
from onnxspec.pieces.kinds import GraphKind
from onnxspec.pieces.normalize import Normalizer, normalizer
from onnxspec.pieces.past import PastKind
from onnxspec.pieces.shapes import torch_dtype
from onnxspec.pieces.spec import Call, GraphIO, ModelSpec

__all__ = [
    "DECODER_POSTNET_AND_VOCODER",
    "SPEECHT5",
    "SPEECH_DECODER",
    "VOCODER_ATTRIBUTE",
    "needs_vocoder",
    "speecht5",
    "speecht5_decoder",
    "speecht5_encoder",
    "speecht5_postnet_and_vocoder",
]

VOCODER_ATTRIBUTE = "vocoder"
"""The attribute of the model the vocoder is attached as (the pipeline sets it)."""

SPEECHT5: Normalizer = normalizer(
    normalizers.SEQ2SEQ,
    num_mel_bins=("num_mel_bins",),
    speaker_embedding_dim=("speaker_embedding_dim",),
    reduction_factor=("reduction_factor",),
    prenet_layers=("speech_decoder_prenet_layers",),
    prenet_units=("speech_decoder_prenet_units",),
    pad_token_id=("pad_token_id",),
)
"""SpeechT5: seq2seq dims (its decoder's cache), the mel bins, the speaker embedding's width, the
frames per step and the decoder prenet's layers and units (the shape of ``prenet_noise``)."""

_ROLE = "speech_decoder"
_FIRST_STEP = GraphKind(name="speecht5-decoder-first-step", role=_ROLE, filename="decoder_model.onnx", cache_out=True)
_WITH_PAST = GraphKind(name="speecht5-decoder-with-past", role=_ROLE, filename="decoder_with_past_model.onnx", cache_out=True, cache_in=True)
SPEECH_DECODER = GraphKind(name="speecht5-decoder", role=_ROLE, filename="decoder_model.onnx", cache_variants=(_FIRST_STEP, _WITH_PAST))
"""SpeechT5's decoder step, with the cache a first step and later steps. No merged form: the two
take ``output_sequence`` over different lengths (all frames so far; the first step's are all new)."""
DECODER_POSTNET_AND_VOCODER = GraphKind(name="postnet-and-vocoder", role="postnet_and_vocoder", filename="decoder_postnet_and_vocoder.onnx")
"""SpeechT5's postnet and the HiFi-GAN vocoder: the spectrogram of every step -> the waveform."""

_B = {0: "batch_size"}
_TEXT = {0: "batch_size", 1: "encoder_sequence_length"}
_FRAMES = "past_decoder_sequence_length + decoder_sequence_length"
"""The frames of ``output_sequence``: those in the cache, then the new ones (a first step: all new)."""
_SPECTROGRAM = {0: "batch_size", 1: "n_spectrums_x_reduction_factor"}


def needs_vocoder(spec: ModelSpec) -> bool:
    """Whether an export of ``spec`` runs a vocoder the model folder does not hold."""
    return any(graph.call.function is speecht5_postnet_and_vocoder for graph in spec.graphs.values())


def speecht5_encoder(model: Any, input_ids: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
    """The text encoder as ``generate_speech`` runs it without a mask: pad tokens masked out."""
    mask = (input_ids != model.config.pad_token_id).to(input_ids.dtype)
    hidden = model.speecht5.encoder(input_values=input_ids, attention_mask=mask, return_dict=True).last_hidden_state
    return {"encoder_outputs": hidden, "encoder_attention_mask": mask}


def _prenet(prenet: Any, frames: torch.Tensor, speaker_embeddings: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``SpeechT5SpeechDecoderPrenet.forward`` with its dropout masks read from ``noise``: layer ``i``
    keeps a unit where ``noise[i]`` is below ``p`` (what ``torch.bernoulli(p)`` draws), one mask for
    the batch, and scales the kept ones by ``1 / (1 - p)``."""
    p = prenet.config.speech_decoder_prenet_dropout
    hidden = frames
    for layer, draws in zip(prenet.layers, noise.unbind(0), strict=True):
        hidden = torch.nn.functional.relu(layer(hidden))
        hidden = torch.where(draws < p, hidden, 0) * (1 / (1 - p))
    hidden = prenet.encode_positions(prenet.final_layer(hidden))
    speaker = torch.nn.functional.normalize(speaker_embeddings).unsqueeze(1).expand(-1, hidden.size(1), -1)
    return torch.nn.functional.relu(prenet.speaker_embeds_layer(torch.cat([hidden, speaker], dim=-1)))


def speecht5_decoder(
    model: Any,
    output_sequence: torch.Tensor,
    speaker_embeddings: torch.Tensor,
    encoder_outputs: Any,
    encoder_attention_mask: torch.Tensor,
    prenet_noise: torch.Tensor,
    cache: Any = None,
    use_cache: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """One step of ``generate_speech``'s loop: the prenet over every frame so far, the decoder
    layers over the frames the cache does not hold yet (one, when generating), then from the last
    one the step's ``reduction_factor`` frames, the sequence with the last of them appended and the
    stop probability."""
    config = model.config
    hidden = _prenet(model.speecht5.decoder.prenet, output_sequence, speaker_embeddings, prenet_noise)
    past = cache.get_seq_length() if cache is not None else 0
    decoded = model.speecht5.decoder.wrapped_decoder(
        hidden_states=hidden[:, past:],
        attention_mask=None,
        encoder_hidden_states=encoder_outputs[0],
        encoder_attention_mask=encoder_attention_mask,
        cache=cache,
        use_cache=use_cache,
        return_dict=True,
    )
    last = decoded.last_hidden_state[:, -1]
    spectrum = model.speech_decoder_postnet.feat_out(last).view(last.shape[0], config.reduction_factor, config.num_mel_bins)
    return {
        "output_sequence_out": torch.cat((output_sequence, spectrum[:, -1:]), dim=1),
        "spectrum": spectrum,
        "prob": torch.sigmoid(model.speech_decoder_postnet.prob_out(last)),
        "cache": decoded.cache,
    }


def speecht5_postnet_and_vocoder(model: Any, spectrogram: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
    """The spectrogram refined by the postnet, then the waveform of the vocoder attached to the
    model (``model.vocoder``), as ``generate_speech`` ends."""
    vocoder = getattr(model, VOCODER_ATTRIBUTE, None)
    if vocoder is None:
        raise SpecError(
            "speecht5/text-to-audio: decoder_postnet_and_vocoder.onnx runs a HiFi-GAN vocoder, a checkpoint of its own, and the "
            "model has none attached (model.vocoder); an export or a re-validation (onnxspec validate) loads it from the folder "
            "given as vocoder=PATH (--vocoder PATH), e.g. microsoft/speecht5_hifigan"
        )
    return {"waveform": vocoder(model.speech_decoder_postnet.postnet(spectrogram))}


def _prenet_noise(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Uniform draws in ``[0, 1)``, ``(prenet layers, frames, prenet units)``."""
    layers, units = ctx.dims.require("prenet_layers", "prenet_units")
    frames = symbol_size(tensor.dynamic_axes[1], ctx.sizes)
    return torch.rand((int(layers), frames, int(units)), generator=rng).to(torch_dtype(Kind.FLOAT, ctx.dtypes))


def _spectrogram(tensor: TensorSpec, ctx: g.DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mel frames ``(batch, steps * reduction_factor, num_mel_bins)``, a step per decoder position."""
    mel, factor = ctx.dims.require("num_mel_bins", "reduction_factor")
    shape = (ctx.sizes["batch_size"], ctx.sizes["decoder_sequence_length"] * int(factor), int(mel))
    return torch.randn(shape, generator=rng).to(torch_dtype(Kind.FLOAT, ctx.dtypes))


def speecht5(
    model_type: str,
    task: str,
    *,
    use_past: bool = False,
    normalizer: Normalizer = SPEECHT5,
    **fields: Any,
) -> ModelSpec:
    """SpeechT5 text to speech: ``encoder_model.onnx``, the decoder step (``decoder_model.onnx``;
    with the cache ``decoder_model.onnx`` and ``decoder_with_past_model.onnx``) and
    ``decoder_postnet_and_vocoder.onnx`` (see the module docstring). The decoder's cache is a
    seq2seq one; ``encoder_outputs`` stays an input of later steps, as in Optimum's files."""
    frames = {0: "batch_size", 1: _FRAMES}
    graphs = {
        "encoder": GraphIO(
            inputs=[spec("input_ids", _TEXT, Kind.INT)],
            outputs=[spec("encoder_outputs", _TEXT, rank=3), spec("encoder_attention_mask", _TEXT, Kind.INT)],
            call=Call(function=speecht5_encoder),
        ),
        _ROLE: GraphIO(
            inputs=[
                spec("output_sequence", frames, Kind.FLOAT, rank=3),
                spec("speaker_embeddings", _B, Kind.FLOAT, rank=2),
                spec("encoder_outputs", _TEXT, Kind.FLOAT, rank=3),
                spec("encoder_attention_mask", _TEXT, Kind.INT),
                spec("prenet_noise", {1: _FRAMES}, Kind.FLOAT, rank=3),
            ],
            outputs=[
                spec("output_sequence_out", {0: "batch_size", 1: f"{_FRAMES} + one_frame"}, rank=3),
                spec("spectrum", _B, rank=3),
                spec("prob", _B, rank=2),
            ],
            call=Call(function=speecht5_decoder),
            past=True,
        ),
        "postnet_and_vocoder": GraphIO(
            inputs=[spec("spectrogram", _SPECTROGRAM, Kind.FLOAT, rank=3)],
            outputs=[spec("waveform", {0: "batch_size", 1: "n_samples"}, rank=2)],
            call=Call(function=speecht5_postnet_and_vocoder),
        ),
    }
    made = ModelSpec(
        model_type=model_type,
        task=task,
        family="speecht5",
        graphs=graphs,
        files=(kinds.ENCODER, SPEECH_DECODER, DECODER_POSTNET_AND_VOCODER),
        use_past=use_past,
        generators={
            "input_ids": g.token_ids,
            "output_sequence": g.floats("num_mel_bins"),
            "speaker_embeddings": g.floats("speaker_embedding_dim"),
            "encoder_outputs": g.encoder_hidden_states,
            "encoder_attention_mask": g.attention_mask,
            "prenet_noise": _prenet_noise,
            "spectrogram": _spectrogram,
        },
        normalizer=normalizer,
        past_kind=PastKind.SEQ2SEQ,
        **fields,
    )
    return made
