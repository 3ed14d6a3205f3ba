"""A GGUF file read once, compactly: its metadata as plain values, its tensors as views over one
read-only memory map.

The ``gguf`` package's ``GGUFReader`` (which transformers uses to read a GGUF file's config and
tokenizer) makes a numpy view of the file for every element of every metadata array: for
gemma-3-270m's 262k-token vocabulary (tokens, scores, token types) that is about a million small
objects, 0.7 GiB, for a file of 0.24 GiB. :func:`read_gguf` reads the same file into a
:class:`GgufFile`: scalars as Python values, strings as ``str``, string arrays as lists of
``str`` (or only their counts, ``strings=False``), numeric arrays as numpy arrays over the map,
and each tensor as a numpy view over the map with the shape and dtype ``GGUFReader`` gives it
(float and integer types as their dtypes, quantized ones as rows of ``uint8`` blocks).

:func:`compact_gguf_reader` lets transformers' own GGUF code (its config mapping, its tokenizer
converters, with their per-architecture fixes) read the file through a :class:`GgufFile`: while
it is active, ``gguf.GGUFReader`` is replaced by a view with the interface transformers reads
(``fields[key].parts`` / ``.data`` / ``.types``, ``tensors[i].name`` / ``.data`` /
``.tensor_type``), whose parts are made one element at a time as transformers asks for them.

The layout read (GGUF versions 2 and 3, little-endian): the magic ``GGUF``, the version (u32),
the tensor count and the key/value count (u64 each); the key/value pairs (key as a string, the
value type as u32, the value); the tensor infos (name, dimension count as u32, dimensions as u64
fastest-moving first, GGML type as u32, data offset as u64); the data section, starting at the
next multiple of ``general.alignment`` (default 32). A string is its byte length (u64) then its
UTF-8 bytes; an array is its element type (u32), its length (u64), then its elements.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np

from onnxspec.errors import ModelLoadError

__all__ = ["GgufFile", "GgufTensor", "compact_gguf_reader", "drop_pages", "read_gguf"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
"""The GGUF versions read (version 1 counted in 32 bits; ``gguf.GGUFReader`` reads 2 and 3 too)."""
DEFAULT_ALIGNMENT = 32

STRING, ARRAY = 8, 9
"""The two GGUF value types that are not fixed-size scalars."""
_SCALARS: Mapping[int, tuple[str, Any]] = MappingProxyType({
    0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
    4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
    10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64),
})
"""GGUF scalar value type -> (its ``struct`` format, its numpy type)."""
_PLAIN_TENSORS: Mapping[str, Any] = MappingProxyType({
    "F16": np.float16, "F32": np.float32, "F64": np.float64,
    "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
})
"""GGML types whose tensors ``gguf.GGUFReader`` gives as arrays of their own dtype (the others:
``uint8`` rows of blocks, BF16 included)."""


@attrs.frozen(eq=False)
class GgufTensor:
    """One tensor of a GGUF file: ``data`` is a read-only view over the file's map (nothing read
    until touched), shaped as ``gguf.GGUFReader`` shapes it: ``dims`` reversed (torch order),
    the last one in bytes of blocks for a quantized type."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    dims: tuple[int, ...]  # as the file stores them: fastest-moving first
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape in torch order (its element count per axis, dequantized)."""
        return tuple(reversed(self.dims))


@attrs.frozen(eq=False)
class GgufFile:
    """A GGUF file's metadata and tensors (see the module docstring for what each value is).

    ``types[key]`` is the key's GGUF value type, ``(ARRAY, element type)`` for an array. With
    ``strings=False`` a string array's value is its length."""

    path: str
    version: int
    fields: Mapping[str, Any]
    types: Mapping[str, tuple[int, ...]]
    tensors: tuple[GgufTensor, ...]
    alignment: int
    data_start: int
    map: mmap.mmap = attrs.field(repr=False)


def _error(path: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"cannot read the GGUF file {path!r}: {what}. Check that the file is complete and is a GGUF file")


@attrs.define
class _Cursor:
    """A position in the map while it is parsed (the one mutable piece, local to :func:`read_gguf`)."""

    view: memoryview
    path: str
    pos: int = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.view):
            raise _error(self.path, f"it ends at byte {len(self.view)}, inside its header (truncated?)")
        values = struct.unpack_from(fmt, self.view, self.pos)
        self.pos += size
        return values

    def raw(self, n: int) -> memoryview:
        if self.pos + n > len(self.view):
            raise _error(self.path, f"it ends at byte {len(self.view)}, inside its header (truncated?)")
        out = self.view[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        return str(self.raw(n), "utf-8", "surrogateescape")

    def skip_string(self) -> None:
        (n,) = self.unpack("<Q")
        self.pos += n


def _value(cur: _Cursor, key: str, kind: int, strings: bool) -> tuple[Any, tuple[int, ...]]:
    if kind in _SCALARS:
        return cur.unpack(_SCALARS[kind][0])[0], (kind,)
    if kind == STRING:
        return cur.string(), (kind,)
    if kind != ARRAY:
        raise _error(cur.path, f"metadata key {key!r} has value type {kind}, which GGUF does not define")
    element, count = cur.unpack("<IQ")
    if element in _SCALARS:
        dtype = np.dtype(_SCALARS[element][1])
        array = np.frombuffer(cur.raw(count * dtype.itemsize), dtype=dtype)
        return array, (ARRAY, element)
    if element == STRING:
        if not strings:
            for _ in range(count):
                cur.skip_string()
            return count, (ARRAY, element)
        return [cur.string() for _ in range(count)], (ARRAY, element)
    # transformers cannot read an array of arrays either (its value parser takes one element type)
    raise _error(cur.path, f"metadata key {key!r} is an array of value type {element} (arrays of arrays are not read)")


def read_gguf(path: str | os.PathLike[str], *, strings: bool = True) -> GgufFile:
    """Read the GGUF file at ``path`` (see the module docstring); ``strings=False`` leaves string
    arrays (a tokenizer's vocabulary and merges) as their lengths, which is faster."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quant_shape_to_byte_shape

    path = os.fspath(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 24:
            raise _error(path, "it is shorter than a GGUF header")
        blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(memoryview(blob), path)
    if bytes(cur.raw(4)) != MAGIC:
        raise _error(path, "it does not start with the GGUF magic bytes")
    (version,) = cur.unpack("<I")
    if version not in VERSIONS:
        big = version & 0xFFFF == 0 and struct.unpack(">I", struct.pack("<I", version))[0] in VERSIONS
        raise _error(path, "it is a big-endian GGUF file, which is not read" if big else
                     f"it is GGUF version {version}; versions {', '.join(map(str, VERSIONS))} are read")
    tensor_count, kv_count = cur.unpack("<QQ")
    fields: dict[str, Any] = {}
    types: dict[str, tuple[int, ...]] = {}
    for _ in range(kv_count):
        key = cur.string()
        if key in fields:
            raise _error(path, f"its metadata has key {key!r} twice")
        (kind,) = cur.unpack("<I")
        fields[key], types[key] = _value(cur, key, kind, strings)
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if types.get("general.alignment", (4,)) != (4,) or alignment <= 0 or alignment & (alignment - 1):
        raise _error(path, f"its general.alignment ({alignment!r}) is not a power of two stored as uint32")
    infos = []
    for _ in range(tensor_count):
        name = cur.string()
        (n_dims,) = cur.unpack("<I")
        dims = cur.unpack(f"<{n_dims}Q")
        raw_type, offset = cur.unpack("<IQ")
        infos.append((name, dims, raw_type, offset))
    data_start = -(-cur.pos // alignment) * alignment
    tensors = []
    seen: set[str] = set()
    for name, dims, raw_type, offset in infos:
        if name in seen:
            raise _error(path, f"it holds tensor {name!r} twice")
        seen.add(name)
        try:
            kind = GGMLQuantizationType(raw_type)
        except ValueError:
            raise _error(path, f"tensor {name!r} has GGML type {raw_type}, which the installed gguf package does not know "
                         "(upgrade it: pip install -U gguf)") from None
        n_elements = math.prod(dims)
        block, type_size = GGML_QUANT_SIZES[kind]
        n_bytes = n_elements * type_size // block
        start = data_start + offset
        if start + n_bytes > len(blob):
            raise _error(path, f"tensor {name!r} ends at byte {start + n_bytes}, past the file's end ({len(blob)}: truncated?)")
        shape = tuple(reversed(dims))
        if kind.name in _PLAIN_TENSORS:
            data = np.frombuffer(blob, dtype=_PLAIN_TENSORS[kind.name], count=n_elements, offset=start).reshape(shape)
        else:
            data = np.frombuffer(blob, dtype=np.uint8, count=n_bytes, offset=start).reshape(quant_shape_to_byte_shape(shape, kind))
        tensors.append(GgufTensor(name=name, tensor_type=kind, dims=tuple(dims), n_elements=n_elements, n_bytes=n_bytes,
                                  data_offset=start, data=data))
    return GgufFile(path=path, version=version, fields=MappingProxyType(fields), types=MappingProxyType(types),
                    tensors=tuple(tensors), alignment=alignment, data_start=data_start, map=blob)


def drop_pages(file: GgufFile, data: np.ndarray) -> None:
    """Take the pages of ``data`` (a contiguous view over ``file``'s map: a tensor's ``data`` or a
    block of its rows) out of this process's resident set: ``madvise(MADV_DONTNEED)`` on the
    read-only map, so the next read faults them in again from the file, unchanged."""
    dont_need = getattr(mmap, "MADV_DONTNEED", None)
    if dont_need is None or not hasattr(file.map, "madvise") or data.size == 0:
        return
    base = np.frombuffer(file.map, dtype=np.uint8, count=1).__array_interface__["data"][0]
    offset = data.__array_interface__["data"][0] - base
    if not data.flags.c_contiguous or offset < 0 or offset + data.nbytes > len(file.map):
        raise ValueError("drop_pages takes a contiguous view over the GGUF file's map")
    start = offset - offset % mmap.PAGESIZE
    file.map.madvise(dont_need, start, offset + data.nbytes - start)


# --- what transformers reads ------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Parts:
    """``gguf.GGUFReader``'s ``ReaderField.parts`` for one key, each part made when asked for:
    the key's length, the key, the value type, then for a scalar its value, for a string its
    length and bytes, for an array its element type, its length, and per element its value (or
    its length and bytes)."""

    head: tuple[np.ndarray, ...]
    value: Any
    types: tuple[int, ...]

    def _body(self) -> int:
        if self.types[0] == ARRAY:
            return 2 + len(self.value) * (2 if self.types[1] == STRING else 1)
        return 2 if self.types[0] == STRING else 1

    def __len__(self) -> int:
        return len(self.head) + self._body()

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            raise IndexError(i)
        if i < len(self.head):
            return self.head[i]
        i -= len(self.head)
        kind = self.types[0]
        if kind in _SCALARS:
            return np.array([self.value], dtype=_SCALARS[kind][1])
        if kind == STRING:
            return _string_parts(self.value)[i]
        if i < 2:
            return np.array([self.types[1] if i == 0 else len(self.value)], dtype=np.uint32 if i == 0 else np.uint64)
        i -= 2
        if self.types[1] == STRING:
            return _string_parts(self.value[i // 2])[i % 2]
        return self.value[i : i + 1]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


def _string_parts(text: str) -> tuple[np.ndarray, np.ndarray]:
    data = text.encode("utf-8", "surrogateescape")
    return np.array([len(data)], dtype=np.uint64), np.frombuffer(data, dtype=np.uint8)


@attrs.frozen(eq=False)
class _Field:
    """``gguf.GGUFReader``'s ``ReaderField``: ``parts[i] for i in data`` are the value's elements."""

    name: str
    parts: _Parts
    data: range
    types: list[Any]


def _field(key: str, value: Any, types: tuple[int, ...]) -> _Field:
    from gguf import GGUFValueType

    encoded = key.encode("utf-8", "surrogateescape")
    head = (np.array([len(encoded)], dtype=np.uint64), np.frombuffer(encoded, dtype=np.uint8), np.array([types[0]], dtype=np.uint32))
    parts = _Parts(head=head, value=value, types=types)
    if types[0] == ARRAY:
        step = 2 if types[1] == STRING else 1
        data = range(len(head) + 2 + step - 1, len(parts), step)
        shown = types if len(value) else types[:1]  # GGUFReader learns the element type from the first element
    else:
        data = range(len(head) + (1 if types[0] == STRING else 0), len(head) + (2 if types[0] == STRING else 1))
        shown = types
    return _Field(name=key, parts=parts, data=data, types=[GGUFValueType(t) for t in shown])


def _plain_field(key: str, value: int, kind: int) -> _Field:
    from gguf import GGUFValueType

    parts = _Parts(head=(), value=value, types=(kind,))
    return _Field(name=key, parts=parts, data=range(0, 1), types=[GGUFValueType(kind)])


@attrs.frozen(eq=False)
class _ReaderView:
    """What transformers reads of a ``gguf.GGUFReader``: ``fields`` (``GGUF.version``,
    ``GGUF.tensor_count``, ``GGUF.kv_count``, then the file's keys, in order) and ``tensors``."""

    fields: Mapping[str, _Field]
    tensors: list[GgufTensor]
    alignment: int
    data_offset: int


def reader_view(path: str | os.PathLike[str], mode: str = "r") -> _ReaderView:
    """A ``gguf.GGUFReader`` look-alike of the GGUF file at ``path`` (read-only: ``mode`` "r")."""
    if mode != "r":
        raise ValueError(f"onnxspec's GGUF reader only reads (mode 'r'), not mode {mode!r}")
    file = read_gguf(path)
    fields = {
        "GGUF.version": _plain_field("GGUF.version", file.version, 4),
        "GGUF.tensor_count": _plain_field("GGUF.tensor_count", len(file.tensors), 10),
        "GGUF.kv_count": _plain_field("GGUF.kv_count", len(file.fields), 10),
    }
    fields.update({key: _field(key, value, file.types[key]) for key, value in file.fields.items()})
    return _ReaderView(fields=MappingProxyType(fields), tensors=list(file.tensors), alignment=file.alignment,
                       data_offset=file.data_start)


@contextlib.contextmanager
def compact_gguf_reader() -> Iterator[None]:
    """While active, ``gguf.GGUFReader`` (which transformers imports when it reads a GGUF file) is
    :func:`reader_view`: transformers reads the file's metadata through a :class:`GgufFile`."""
    import gguf

    real = gguf.GGUFReader
    gguf.GGUFReader = reader_view
    try:
        yield
    finally:
        gguf.GGUFReader = real
