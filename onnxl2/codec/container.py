"""The ``.l2b`` container: a set of files stored as a skeleton plus entropy-coded tensor payloads.

Layout (all integers little-endian)::

    magic "ONNXL2B\\0" | version u16 | flags u16 | section count u32
    | varint length per section | crc32 of all sections | crc32 of everything before it
    | section 0: manifest (JSON, lzma) | section 1: skeleton (lzma) | sections 2..: payloads

The *skeleton* is every file's bytes with the coded payloads cut out, concatenated. The manifest
says where each payload goes back, with which codec, and holds a sha256 per decoded file, so
decoding either reproduces the files exactly or raises :class:`BitstreamError`.

Each section has a varint length and one checksum covers them all: a small model has a hundred
or more coded tensors, a fixed entry per section would be 2% of its bitstream, and the sha256
per decoded file already catches any damage a per-section checksum would. Formats 1-4 are
still read (the writer makes 5).

A bitstream may have been crafted, checksums and all, so the reader trusts none of it: the
manifest is checked field by field (``manifest.py``), what it declares must fit a limit tied to
the bitstream's own size (:func:`default_output_limit`, which the caller can raise), every
compressed stream is inflated with an output limit, and each decoder is told how many elements
to expect before it allocates.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import BitstreamError
from ..paths import plain_name_problem
from .entropy import CodecError, read_varints
from .lzma_raw import compress as lzma_compress, decompress as lzma_decompress
from .manifest import FileEntry, Manifest, parse_manifest
from .payloads import decode_payload, encode_payload
from .varint import encode_varints, varint_length
from .tensor_spans import TensorSpan

MAGIC = b"ONNXL2B\x00"
#: 2: integer tensors may be "classed" (row/column contexts; spans then carry their dims).
#: 3: varint section lengths and one checksum over all sections.
#: 4: float32 arrays may be stored as indices of the steps' logarithmic grid (``loggrid``).
#: 5: spans without tensor names and section numbers (payload sections follow span order).
FORMAT_VERSION = 5
_HEAD = struct.Struct("<8sHHI")
_SECTION = struct.Struct("<QI")
_CRC = struct.Struct("<I")

#: Payloads shorter than this stay in the skeleton: a section's overhead would exceed the gain.
MIN_CODED_PAYLOAD = 64
#: A bitstream may decode to at most this many times its own size, and at least to OUTPUT_FLOOR
#: bytes, unless the caller allows more: lossy bitstreams decode to 2-8 times their size and
#: lossless ones to under 2, while a crafted one of 163 bytes could otherwise declare gigabytes.
OUTPUT_RATIO = 64
OUTPUT_FLOOR = 1 << 20
#: The manifest (JSON, lzma) may inflate to this many times its coded size, plus a floor.
MANIFEST_RATIO, MANIFEST_FLOOR = 16, 1 << 20

@dataclass(frozen=True)
class StoredFile:
    """One file to store: its name relative to the model's folder, bytes, and payload spans."""

    name: str
    data: bytes
    spans: tuple[TensorSpan, ...] = ()


@dataclass(frozen=True)
class CodedTensor:
    """Accounting for one coded payload: which tensor, how it was coded, raw and coded bytes."""

    file: str
    name: str
    codec: str
    raw_bytes: int
    coded_bytes: int


def stored_size(raw_bytes: int, coded_bytes: int) -> int:
    """Bytes a payload adds to the bitstream, as :func:`encode_container` decides it.

    Short payloads, and payloads that coding would not shrink, stay in the skeleton; each coded
    one costs its section-table entry too (its length as a varint).
    """
    if raw_bytes < MIN_CODED_PAYLOAD or coded_bytes >= raw_bytes:
        return raw_bytes
    return coded_bytes + varint_length(coded_bytes)


# ----------------------------------------------------------------------------- writer

def encode_container(files: list[StoredFile], meta: dict) -> tuple[bytearray, list[CodedTensor]]:
    """Pack files into one self-contained bitstream; returns it and per-tensor accounting.

    Payloads are appended to one buffer as they are coded (none is kept beside it) and the
    header is put in front at the end, so the bitstream exists once in memory, not twice.
    """
    body = bytearray()
    table: list[int] = []  # length of every section after the first two
    skeleton = bytearray()
    manifest_files = []
    accounting: list[CodedTensor] = []
    for stored in files:
        if plain_name_problem(stored.name):
            raise ValueError(f"a stored file needs a plain name, got {stored.name!r}")
        data = stored.data
        cursor = 0
        entries = []
        for span in sorted(stored.spans, key=lambda s: s.offset):
            if span.offset < cursor or span.length < MIN_CODED_PAYLOAD or span.offset + span.length > len(data):
                continue
            raw = data[span.offset:span.offset + span.length]
            count = int(np.prod(span.dims, dtype=np.int64)) if span.dims else 1
            coded = encode_payload(raw, span.elem_type, count, tuple(span.dims))
            if coded is None or len(coded[1]) >= span.length:
                continue
            codec, payload = coded
            skeleton += data[cursor:span.offset]
            cursor = span.offset + span.length
            entries.append(_span_entry(span, codec, count))
            table.append(len(payload))
            body += payload
            accounting.append(CodedTensor(stored.name, span.name, codec, span.length, len(payload)))
        skeleton += data[cursor:]
        manifest_files.append({"name": stored.name, "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(), "spans": entries})
    manifest = {"format": FORMAT_VERSION, "meta": meta, "files": manifest_files}
    first = [lzma_compress(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()),
             lzma_compress(bytes(skeleton))]
    table = [len(section) for section in first] + table
    body[0:0] = first[0] + first[1]
    body[0:0] = _header(table, body)
    return body, accounting


def _span_entry(span: TensorSpan, codec: str, count: int) -> list:
    """A manifest span: where the payload goes back and how it is coded. Since format 5 the
    payload's section is implicit (the next one) and the tensor's name is left out (the decoder
    never used either; on the default model they were a third of the manifest)."""
    return [span.offset, span.length, codec, span.elem_type, count] + ([list(span.dims)] if codec == "classed" else [])


def _header(lengths: list[int], body: bytearray) -> bytearray:
    """Magic, version, section table and checksums in front of the sections ``body``."""
    header = bytearray(_HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(lengths)))
    header += encode_varints(np.array(lengths, dtype=np.int64)) + _CRC.pack(zlib.crc32(body))
    return header + _CRC.pack(zlib.crc32(header))


# ----------------------------------------------------------------------------- reader

def _read_sections(blob: bytes) -> list[memoryview]:
    if not blob[:len(MAGIC)] == MAGIC[:len(blob)] or not blob:
        raise BitstreamError("not an onnxl2 bitstream (bad magic)")
    if len(blob) < _HEAD.size:
        raise BitstreamError("bitstream is truncated (header incomplete)")
    _, version, _flags, count = _HEAD.unpack_from(blob, 0)
    if version > FORMAT_VERSION:
        raise BitstreamError(f"bitstream format version {version} is newer than this onnxl2 "
                             f"reads (up to {FORMAT_VERSION}); upgrade onnxl2")
    if count < 2:
        raise BitstreamError("bitstream is corrupted (fewer than two sections)")
    if version < 3:
        return _read_sections_v2(blob, count)
    if count > len(blob):
        raise BitstreamError("bitstream is truncated (section table incomplete)")
    try:
        lengths, table_end = read_varints(blob, count, _HEAD.size)
    except (ValueError, IndexError):
        raise BitstreamError("bitstream is truncated (section table incomplete)") from None
    if len(blob) < table_end + 2 * _CRC.size:
        raise BitstreamError("bitstream is truncated (section table incomplete)")
    body_crc, header_crc = struct.unpack_from("<II", blob, table_end)
    start = table_end + 2 * _CRC.size
    if zlib.crc32(blob[:table_end + _CRC.size]) != header_crc:
        raise BitstreamError("bitstream header is corrupted (checksum mismatch)")
    if int(lengths.max()) > len(blob):
        raise BitstreamError("bitstream is truncated")
    ends = start + np.cumsum(lengths.astype(np.int64))
    if ends[-1] > len(blob):
        raise BitstreamError("bitstream is truncated")
    if ends[-1] != len(blob):
        raise BitstreamError("bitstream has trailing bytes after its last section")
    view = memoryview(blob)
    if zlib.crc32(view[start:]) != body_crc:
        raise BitstreamError("bitstream is corrupted (checksum mismatch)")
    bounds = [start] + [int(e) for e in ends]
    return [view[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _read_sections_v2(blob: bytes, count: int) -> list[memoryview]:
    """Format 2: a fixed (u64 length, crc32) entry per section."""
    table_end = _HEAD.size + count * _SECTION.size
    if len(blob) < table_end + _CRC.size:
        raise BitstreamError("bitstream is truncated (section table incomplete)")
    (header_crc,) = _CRC.unpack_from(blob, table_end)
    if zlib.crc32(blob[:table_end]) != header_crc:
        raise BitstreamError("bitstream header is corrupted (checksum mismatch)")
    view = memoryview(blob)
    pos = table_end + _CRC.size
    sections = []
    for index in range(count):
        length, crc = _SECTION.unpack_from(blob, _HEAD.size + index * _SECTION.size)
        if pos + length > len(blob):
            raise BitstreamError("bitstream is truncated")
        section = view[pos:pos + length]
        if zlib.crc32(section) != crc:
            raise BitstreamError(f"bitstream section {index} is corrupted (checksum mismatch)")
        sections.append(section)
        pos += length
    if pos != len(blob):
        raise BitstreamError("bitstream has trailing bytes after its last section")
    return sections


def default_output_limit(bitstream_bytes: int) -> int:
    """The most bytes a bitstream of this size may decode to unless the caller allows more:
    ``OUTPUT_RATIO`` times its size, and at least ``OUTPUT_FLOOR``."""
    return max(OUTPUT_FLOOR, OUTPUT_RATIO * bitstream_bytes)


def read_manifest(blob: bytes) -> dict:
    """The manifest alone (meta and file list, as the JSON holds them), after checking every
    section's checksum and every field of the manifest."""
    return _manifest(_read_sections(blob), _HEAD.unpack_from(blob, 0)[1])[0]


def _manifest(sections: list[memoryview], version: int) -> tuple[dict, Manifest]:
    limit = MANIFEST_FLOOR + MANIFEST_RATIO * len(sections[0])
    try:
        doc = json.loads(lzma_decompress(sections[0], limit))
    except (lzma.LZMAError, ValueError, RecursionError) as exc:
        raise BitstreamError(f"bitstream manifest is unreadable ({exc})") from None
    return doc, parse_manifest(doc, version, len(sections))


def decode_container(blob: bytes, keep: bool = True, max_output_bytes: int | None = None
                     ) -> tuple[list[tuple[str, bytearray]], dict]:
    """Decode every file; raises :class:`BitstreamError` unless each matches its sha256.

    ``max_output_bytes`` bounds what the bitstream may decode to (default:
    :func:`default_output_limit` of its size); the manifest's sizes are checked against it
    before anything is allocated. With ``keep=False`` the files are only checked, piece by
    piece, and not assembled: a verification pass then needs no second copy of the model.
    """
    sections = _read_sections(blob)
    manifest = _manifest(sections, _HEAD.unpack_from(blob, 0)[1])[1]
    limit = default_output_limit(len(blob)) if max_output_bytes is None else max_output_bytes
    if manifest.output_bytes > limit:
        raise BitstreamError(f"bitstream declares {manifest.output_bytes:,} bytes of output, more than the "
                             f"{limit:,} allowed for a bitstream of {len(blob):,} bytes; if it is yours, "
                             "allow more (--max-output-size, or max_output_size in the API)")
    try:
        skeleton = lzma_decompress(sections[1], manifest.skeleton_bytes)
    except (lzma.LZMAError, ValueError) as exc:
        raise BitstreamError(f"bitstream skeleton is unreadable ({exc})") from None
    if len(skeleton) != manifest.skeleton_bytes:
        raise BitstreamError("bitstream skeleton does not hold the bytes its manifest declares")
    files, start, view = [], 0, memoryview(skeleton)
    try:
        for entry in manifest.files:  # the skeleton holds the files' gaps one after another
            files.append((entry.name, _assemble(entry, view[start:start + entry.skeleton_bytes], sections, keep)))
            start += entry.skeleton_bytes
    except MemoryError:
        raise BitstreamError("decoding this bitstream needs more memory than there is") from None
    except (CodecError, ValueError, IndexError, TypeError, OverflowError) as exc:
        raise BitstreamError(f"bitstream is corrupted ({type(exc).__name__}: {exc})") from None
    return files, manifest.meta


def _assemble(entry: FileEntry, gaps: memoryview, sections: list[memoryview], keep: bool) -> bytearray:
    """One file from its gaps (its part of the skeleton) and its payloads, checked against
    its sha256."""
    out = bytearray()
    digest = hashlib.sha256()

    def emit(piece) -> None:
        digest.update(piece)
        if keep:
            out.extend(piece)

    used = cursor = 0
    for span in entry.spans:
        gap = span.offset - cursor
        emit(gaps[used:used + gap])
        used += gap
        piece = decode_payload(span, bytes(sections[span.section]))
        if len(piece) != span.length:
            raise BitstreamError("bitstream is corrupted: a tensor decoded to the wrong size")
        emit(piece)
        cursor = span.offset + span.length
    emit(gaps[used:])
    if digest.hexdigest() != entry.sha256:
        raise BitstreamError(f"decoded {entry.name} does not match its checksum")
    return out
