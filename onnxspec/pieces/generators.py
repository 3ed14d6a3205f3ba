"""Dummy-input generators: pure functions from a tensor spec and a context to a tensor.

Every generator has the signature ``(tensor, ctx, rng, made) -> torch.Tensor``: ``tensor`` is the
:class:`~onnxspec.pieces.axes.TensorSpec` to fill, ``ctx`` a :class:`DummyContext` (sizes, dtypes,
config dimensions, cache layout, padding side), ``rng`` a seeded ``torch.Generator`` (never the
global one) and ``made`` the inputs generated before this one (a mask, for position ids).
Values are realistic: ids below the vocabulary size, contiguous masks with no empty row,
positions as ``generate`` computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import attrs
import torch

from onnxspec.pieces.axes import Kind, TensorSpec, symbol_size
from onnxspec.pieces.cache_names import Part, Which, is_cache_input, parse
from onnxspec.errors import SpecError
from onnxspec.pieces.normalize import Dims
from onnxspec.pieces.past import PastKind, PastLayout
from onnxspec.pieces.shapes import DTypes, Shapes, size_table, torch_dtype

__all__ = [
    "DummyContext",
    "Generator",
    "attention_mask",
    "audio_features",
    "audio_codes",
    "audio_values",
    "bounding_boxes",
    "codebook_ids",
    "config_scalar",
    "context",
    "dynamic_shape",
    "encoder_hidden_states",
    "filterbank_features",
    "floats",
    "ids_below",
    "flattened_patches",
    "ids_per_token",
    "image_embeddings",
    "image_positional_embeddings",
    "image_prefix_mask",
    "image_prefix_token_types",
    "image_token_ids",
    "make_dummies",
    "past_tensor",
    "pixel_values",
    "point_labels",
    "prompt_points",
    "queries_per_image",
    "position_ids",
    "token_ids",
    "spectrogram",
    "subsampled_encoder_states",
    "token_type_ids",
    "up_to_positions",
    "zeros",
]


@attrs.frozen(kw_only=True)
class DummyContext:
    """Everything a generator may read: sizes per axis symbol, dtypes, dims, cache, padding."""

    shapes: Shapes
    dtypes: DTypes
    dims: Dims
    sizes: Mapping[str, int] = attrs.field(converter=lambda m: MappingProxyType(dict(m)), hash=False)
    past: PastLayout | None = None
    padding_side: str = attrs.field(default="right", validator=attrs.validators.in_(("left", "right")))


class Generator(Protocol):
    """The signature every dummy-input generator has."""

    def __call__(
        self, tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]
    ) -> torch.Tensor: ...


def context(
    shapes: Shapes,
    dtypes: DTypes,
    dims: Dims,
    *,
    past: PastLayout | None = None,
    padding_side: str = "right",
    extra_sizes: Mapping[str, int] | None = None,
) -> DummyContext:
    """A :class:`DummyContext` whose size table is derived from ``shapes``."""
    return DummyContext(
        shapes=shapes,
        dtypes=dtypes,
        dims=dims,
        sizes=size_table(shapes, extra_sizes),
        past=past,
        padding_side=padding_side,
    )


def dynamic_shape(tensor: TensorSpec, ctx: DummyContext) -> tuple[int, ...]:
    """The shape of a tensor whose every axis is dynamic, each read from the size table."""
    axes = tensor.dynamic_axes
    rank = tensor.rank if tensor.rank is not None else (max(axes) + 1 if axes else 0)
    if sorted(axes) != list(range(rank)):
        raise SpecError(
            f"tensor {tensor.name!r}: its generator needs every axis dynamic to infer a shape, "
            f"got axes {axes} for rank {rank}; give it a generator that knows the static sizes"
        )
    return tuple(symbol_size(axes[i], ctx.sizes) for i in range(rank))


def _size(tensor: TensorSpec, ctx: DummyContext, index: int, fallback: str) -> int:
    return symbol_size(tensor.dynamic_axes.get(index, fallback), ctx.sizes)


def _int(ctx: DummyContext) -> torch.dtype:
    return torch_dtype(Kind.INT, ctx.dtypes)


def _float(ctx: DummyContext) -> torch.dtype:
    return torch_dtype(Kind.FLOAT, ctx.dtypes)


def _randn(shape: tuple[int, ...], ctx: DummyContext, rng: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=rng).to(_float(ctx))


def token_ids(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Token ids in ``[0, vocab_size)`` (capped to what the int dtype holds)."""
    vocab = int(ctx.dims["vocab_size"])
    high = min(vocab, torch.iinfo(_int(ctx)).max + 1)
    return torch.randint(0, high, dynamic_shape(tensor, ctx), generator=rng).to(_int(ctx))


def token_type_ids(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Segment ids in ``[0, type_vocab_size)``."""
    high = int(ctx.dims.get("type_vocab_size", 1))
    return torch.randint(0, high, dynamic_shape(tensor, ctx), generator=rng).to(_int(ctx))


def zeros(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All zeros of the tensor's kind."""
    return torch.zeros(dynamic_shape(tensor, ctx), dtype=torch_dtype(tensor.kind, ctx.dtypes))


def attention_mask(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A contiguous 0/1 mask, padded on ``ctx.padding_side``.

    Row 0 keeps every position; other rows keep a random length in ``[1, length]`` (so a
    length of 1 is legal and no row is fully masked). Every row over the leading axes (batch,
    choices) draws its own length.
    """
    shape = dynamic_shape(tensor, ctx)
    length = shape[-1]
    rows = int(torch.tensor(shape[:-1]).prod().item()) if len(shape) > 1 else 1
    keep = torch.randint(1, length + 1, (rows,), generator=rng) if length else torch.zeros(rows, dtype=torch.long)
    keep[0] = length
    positions = torch.arange(length).unsqueeze(0)
    if ctx.padding_side == "right":
        mask = positions < keep.unsqueeze(1)
    else:
        mask = positions >= (length - keep).unsqueeze(1)
    return mask.reshape(shape).to(_int(ctx))


def position_ids(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Positions as ``generate`` computes them: cumulative sum of the mask minus one.

    Uses the last ``sequence_length`` columns of ``made["attention_mask"]`` (which spans past
    + current tokens); without a mask, plain ``past .. past + length``.
    """
    shape = dynamic_shape(tensor, ctx)
    mask = made.get("attention_mask")
    if mask is None:
        past = ctx.sizes.get("past_sequence_length", 0) if ctx.past is not None else 0
        return (torch.arange(shape[-1]) + past).expand(shape).contiguous().to(_int(ctx))
    pos = mask.long().cumsum(-1) - 1
    pos = pos.masked_fill(mask == 0, 1)
    return pos[..., -shape[-1]:].contiguous().to(_int(ctx))


def pixel_values(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Images in ``[0, 1)``: ``(batch, num_channels, height, width)``.

    Height and width are the dynamic sizes when the spec declares them dynamic, else the
    config's ``image_size``.
    """
    axes = tensor.dynamic_axes
    batch = _size(tensor, ctx, 0, "batch_size")
    channels = int(ctx.dims.get("num_channels", ctx.shapes.num_channels))
    image = ctx.dims.get("image_size")
    native = (image, image) if isinstance(image, int) else tuple(image) if image else (ctx.shapes.height, ctx.shapes.width)
    height = symbol_size(axes[2], ctx.sizes) if 2 in axes else int(native[0])
    width = symbol_size(axes[3], ctx.sizes) if 3 in axes else int(native[1])
    return torch.rand((batch, channels, height, width), generator=rng).to(_float(ctx))


def bounding_boxes(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Word boxes ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``: ``(*leading axes, 4)``.

    Coordinates stay below ``max_2d_position_embeddings`` (default 1024, the layout models'
    normalised page grid), since each corner and the box width and height index an embedding.
    """
    axes = tensor.dynamic_axes
    leading = tuple(symbol_size(axes[i], ctx.sizes) for i in range(len(axes)))
    top = int(ctx.dims.get("max_2d_position_embeddings", 1024))
    corners = torch.randint(0, top, (*leading, 2, 2), generator=rng)
    low, high = corners.min(dim=-1).values, corners.max(dim=-1).values  # per axis (x, y): low <= high
    return torch.stack([low[..., 0], low[..., 1], high[..., 0], high[..., 1]], dim=-1).to(_int(ctx))


def ids_per_token(width: str, high: str) -> Generator:
    """A generator of ids in ``[0, dims[high])`` with one more, static axis of ``dims[width]``
    per token: ``(*dynamic axes, width)`` (MarkupLM's XPath tag / subscript ids per depth)."""

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        axes = tensor.dynamic_axes
        leading = tuple(symbol_size(axes[i], ctx.sizes) for i in range(len(axes)))
        size, top = ctx.dims.require(width, high)
        return torch.randint(0, int(top), (*leading, int(size)), generator=rng).to(_int(ctx))

    generate.__doc__ = f"Ids below the config's {high}, {width} of them per token."
    return generate


def _leading(tensor: TensorSpec, ctx: DummyContext) -> tuple[int, ...]:
    """The sizes of a tensor's leading dynamic axes ``0 .. k-1``."""
    axes = tensor.dynamic_axes
    return tuple(symbol_size(axes[i], ctx.sizes) for i in range(len(axes)))


def floats(*static: str | int) -> Generator:
    """A generator of unit-variance floats: the tensor's dynamic axes (leading), then one static
    axis per entry of ``static``, a config dimension's name or a number: ``states`` of a trajectory
    ``(batch, steps, state_dim)``, a time series ``(batch, context_length, num_input_channels)``."""

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        names = [s for s in static if isinstance(s, str)]
        found = dict(zip(names, ctx.dims.require(*names))) if names else {}
        sizes = tuple(int(found[s]) if isinstance(s, str) else s for s in static)
        return _randn((*_leading(tensor, ctx), *sizes), ctx, rng)

    generate.__doc__ = f"Unit-variance floats: the dynamic axes, then {', '.join(map(str, static))}."
    return generate


def ids_below(high: str) -> Generator:
    """A generator of ids in ``[0, dims[high])`` over the tensor's dynamic axes (a trajectory's
    ``timesteps`` below ``max_ep_len``)."""

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        (top,) = ctx.dims.require(high)
        return torch.randint(0, int(top), dynamic_shape(tensor, ctx), generator=rng).to(_int(ctx))

    generate.__doc__ = f"Ids below the config's {high}."
    return generate


def audio_values(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A raw waveform, roughly unit variance: ``(batch, audio_sequence_length)``."""
    return _randn(dynamic_shape(tensor, ctx), ctx, rng)


def spectrogram(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A fixed-size log-mel spectrogram ``(batch, max_length, num_mel_bins)`` (frames first),
    the config's sizes: models such as AST embed it as one image of patches."""
    batch = _size(tensor, ctx, 0, "batch_size")
    frames, bins = ctx.dims.require("max_length", "num_mel_bins")
    return _randn((batch, int(frames), int(bins)), ctx, rng)


def audio_features(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Log-mel features ``(batch, feature_size, frames)``; frames from the config when static."""
    axes = tensor.dynamic_axes
    batch = _size(tensor, ctx, 0, "batch_size")
    features = int(ctx.dims.get("feature_size", ctx.shapes.feature_size))
    frames = symbol_size(axes[2], ctx.sizes) if 2 in axes else int(ctx.dims.get("nb_max_frames", ctx.shapes.nb_max_frames))
    return _randn((batch, features, frames), ctx, rng)


def _encoder_width(ctx: DummyContext) -> int:
    """The width of the encoder's output: ``encoder_hidden_size`` (an encoder-decoder pair of
    two configs) or the model's ``hidden_size``."""
    return int(ctx.dims.get("encoder_hidden_size") or ctx.dims["hidden_size"])


def encoder_hidden_states(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Encoder outputs fed to a decoder graph: ``(batch, encoder_sequence_length, encoder width)``."""
    batch = _size(tensor, ctx, 0, "batch_size")
    length = _size(tensor, ctx, 1, "encoder_sequence_length")
    return _randn((batch, length, _encoder_width(ctx)), ctx, rng)


def subsampled_encoder_states(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Encoder outputs of an encoder whose ``num_conv_layers`` stride-2 convolutions subsample
    the frames ``made["encoder_attention_mask"]`` covers (Speech2Text): ``(batch, frames', width)``."""
    mask = made.get("encoder_attention_mask")
    if mask is None:
        raise SpecError(f"tensor {tensor.name!r}: its length follows encoder_attention_mask, which must come first among the inputs")
    length = int(mask.shape[1])
    for _ in range(int(ctx.dims["num_conv_layers"])):
        length = (length - 1) // 2 + 1
    return _randn((int(mask.shape[0]), length, _encoder_width(ctx)), ctx, rng)


def filterbank_features(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Filterbank frames, frames first: ``(batch, frames, feature_size)`` (Speech2Text)."""
    batch = _size(tensor, ctx, 0, "batch_size")
    frames = _size(tensor, ctx, 1, "encoder_sequence_length")
    return _randn((batch, frames, int(ctx.dims["feature_size"])), ctx, rng)


def flattened_patches(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Pix2Struct's patches: ``(batch, patches, 2 + patch_embed_hidden_size)``, each row its
    1-based row and column index (below ``seq_len``, the position tables' size), then pixels."""
    batch = _size(tensor, ctx, 0, "batch_size")
    patches = _size(tensor, ctx, 1, "sequence_length")
    width, positions = ctx.dims.require("patch_embed_hidden_size", "seq_len")
    side = max(1, min(int(positions) - 1, 8))
    index = torch.randint(1, side + 1, (batch, patches, 2), generator=rng).to(_float(ctx))
    return torch.cat([index, _randn((batch, patches, int(width)), ctx, rng)], dim=-1)


def image_token_ids(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A prompt of ``num_image_tokens`` image placeholders (``image_token_id``), then
    ``sequence_length`` text tokens that are not the placeholder: the image's features replace the
    placeholders (PaliGemma and ColPali check that there are as many as the image has patches)."""
    count, image = (int(d) for d in ctx.dims.require("num_image_tokens", "image_token_id"))
    ids = token_ids(tensor, ctx, rng, made)
    ids = torch.where(ids == image, (ids + 1) % int(ctx.dims["vocab_size"]), ids)
    return torch.cat([torch.full((ids.shape[0], count), image, dtype=ids.dtype), ids], dim=1)


def image_prefix_mask(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The mask of an :func:`image_token_ids` prompt: every image placeholder kept, then an
    :func:`attention_mask` over the text tokens."""
    (count,) = ctx.dims.require("num_image_tokens")
    text = attention_mask(tensor, ctx, rng, made)
    return torch.cat([torch.ones((text.shape[0], int(count)), dtype=text.dtype), text], dim=1)


def image_prefix_token_types(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The segment ids of an :func:`image_token_ids` prompt that is all prefix (0), as PaliGemma
    processors mark a prompt with no suffix: its tokens attend to one another both ways."""
    ids = made.get("input_ids")
    if ids is None:
        raise SpecError(f"tensor {tensor.name!r}: its shape follows input_ids, which must come first among the inputs")
    return torch.zeros_like(ids)


def up_to_positions(base: Generator) -> Generator:
    """``base`` over at most the config's ``max_position_embeddings`` tokens: a text tower can
    read no longer text than its position table (OWL-ViT's holds 16), so a longer validation
    prompt is cut to that length, as an image takes the config's size whatever the shapes say."""

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        (positions,) = ctx.dims.require("max_position_embeddings")
        length = min(ctx.sizes["sequence_length"], int(positions))
        return base(tensor, attrs.evolve(ctx, sizes={**ctx.sizes, "sequence_length": length}), rng, made)

    generate.__doc__ = f"{(base.__doc__ or base.__name__).splitlines()[0]} At most max_position_embeddings tokens."
    return generate


def queries_per_image(base: Generator) -> Generator:
    """``base`` over text rows that are the queries of each image, image-major: its
    ``text_batch_size`` is ``image_batch_size * batch_size`` (``batch_size`` queries per image).

    Zero-shot detectors (OWL-ViT) read ``(images * queries, tokens)`` ids and split them per image.
    """

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows = ctx.sizes["image_batch_size"] * ctx.sizes["batch_size"]
        return base(tensor, attrs.evolve(ctx, sizes={**ctx.sizes, "text_batch_size": rows}), rng, made)

    generate.__doc__ = f"{(base.__doc__ or base.__name__).splitlines()[0]} Text rows: batch_size queries per image."
    return generate


def past_tensor(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One cache tensor ``(batch, heads, length, key_dim | value_dim)`` from ``ctx.past``."""
    if ctx.past is None:
        raise SpecError(f"tensor {tensor.name!r} is a cache input but the spec has no past layout")
    layout = ctx.past
    parsed = parse(tensor.name)
    if parsed is None:
        raise SpecError(f"tensor {tensor.name!r} is not a cache tensor name; past_tensor fills only past_key_values.* inputs")
    cross = layout.kind is PastKind.SEQ2SEQ and parsed.part is Part.CROSS
    heads = layout.encoder_heads if cross else layout.num_heads
    dim = layout.value_dim if parsed.which is Which.VALUE else layout.key_dim
    batch = _size(tensor, ctx, 0, "batch_size")
    length = _size(tensor, ctx, 2, "past_sequence_length")
    return _randn((batch, heads, length, dim), ctx, rng)


def make_dummies(
    inputs: tuple[TensorSpec, ...],
    generators: Mapping[str, Callable[..., torch.Tensor]],
    ctx: DummyContext,
    seed: int,
) -> dict[str, torch.Tensor]:
    """One tensor per input, in order, from a generator seeded with ``seed``.

    Cache inputs (``past_key_values.*``) use :func:`past_tensor` unless the mapping names them.
    The same arguments give the same tensors, whatever the global random state.
    """
    rng = torch.Generator().manual_seed(seed)
    made: dict[str, torch.Tensor] = {}
    for tensor in inputs:
        gen = generators.get(tensor.name)
        if gen is None and is_cache_input(tensor.name):
            gen = past_tensor
        if gen is None:
            raise SpecError(
                f"input {tensor.name!r} has no dummy generator; generators are given for {sorted(generators)}. "
                "Add one to the spec's generators mapping."
            )
        made[tensor.name] = gen(tensor, ctx, rng, MappingProxyType(made))
    return made


def prompt_points(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Prompt points ``(x, y)`` in pixel coordinates of the prompt encoder's image: ``(*dynamic axes, 2)``
    (SAM's ``(batch, point_batch_size, nb_points_per_image, 2)``), each in ``[0, prompt_image_size)``
    (the config's ``image_size`` when the normalizer has no ``prompt_image_size``)."""
    side = ctx.dims.get("prompt_image_size") or ctx.dims.require("image_size")[0]
    return (torch.rand((*_leading(tensor, ctx), 2), generator=rng) * float(side)).to(_float(ctx))


def point_labels(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A label per prompt point, 1 (on the object) or 0 (off it), over every dynamic axis."""
    return torch.randint(0, 2, dynamic_shape(tensor, ctx), generator=rng).to(_int(ctx))


def image_embeddings(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """An image encoder's feature map, unit variance: ``(batch, output_channels, image_embedding_size,
    image_embedding_size)`` (SAM's ``image_embeddings``, the vision encoder's output shape)."""
    channels, side = (int(v) for v in ctx.dims.require("output_channels", "image_embedding_size"))
    return _randn((*_leading(tensor, ctx), channels, side, side), ctx, rng)


def image_positional_embeddings(
    tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Positional embeddings of the image grid, of :func:`image_embeddings`' shape, in ``[-1, 1)``
    (SAM's are sines and cosines of a random projection of each cell's position)."""
    channels, side = (int(v) for v in ctx.dims.require("output_channels", "image_embedding_size"))
    return (torch.rand((*_leading(tensor, ctx), channels, side, side), generator=rng) * 2 - 1).to(_float(ctx))


def codebook_ids(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Audio-code ids of a decoder over ``num_codebooks`` parallel streams (MusicGen): one row per
    item and codebook, ``(batch_size * num_codebooks, length)`` (the length: the tensor's axis 1),
    each id below ``codebook_vocab_size``."""
    codebooks, vocab = (int(d) for d in ctx.dims.require("num_codebooks", "codebook_vocab_size"))
    rows = ctx.sizes["batch_size"] * codebooks
    length = _size(tensor, ctx, 1, "decoder_sequence_length")
    high = min(vocab, torch.iinfo(_int(ctx)).max + 1)
    return torch.randint(0, high, (rows, length), generator=rng).to(_int(ctx))


def audio_codes(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Codes an EnCodec decoder turns into a waveform: ``(1, batch, num_codebooks, frames)`` (one chunk;
    ``frames`` is the decoder sequence length: the codes a generation produced), each below ``codebook_size``."""
    codebooks, size = (int(d) for d in ctx.dims.require("num_codebooks", "codebook_size"))
    frames = ctx.sizes["decoder_sequence_length"]
    return torch.randint(0, size, (1, ctx.sizes["batch_size"], codebooks, frames), generator=rng).to(_int(ctx))


def config_scalar(name: str) -> Generator:
    """A generator of a 0-d integer tensor holding the config's ``name`` (a pad token id a graph takes as an input)."""

    def generate(tensor: TensorSpec, ctx: DummyContext, rng: torch.Generator, made: Mapping[str, torch.Tensor]) -> torch.Tensor:
        (value,) = ctx.dims.require(name)
        return torch.tensor(int(value), dtype=_int(ctx))

    generate.__doc__ = f"The config's {name}, a 0-d integer tensor."
    return generate
