"""The bitstream's manifest, read as untrusted input: every field checked before it is used.

The manifest says which files a bitstream decodes to (name, size, sha256) and where each coded
payload goes back (offset, length, codec, element type, count, shape). A crafted manifest with
valid checksums is the way into the decoder, so nothing in it is used until it has been checked:
names are plain file names, every number is a non-negative integer, spans lie in order inside
their file, a shape multiplies to its count, payload sections exist, and the whole output fits
the caller's limit. Only then does the decoder allocate, and never more than these numbers
justify.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import BitstreamError
from ..paths import plain_name_problem
from .payloads import CODECS

#: A tensor has at most this many dimensions (ONNX Runtime's and numpy's limit is lower).
MAX_DIMS = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SpanEntry:
    """Where one coded payload goes back into its file, and how it was coded."""

    offset: int
    length: int
    codec: str
    elem_type: int
    count: int
    section: int
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class FileEntry:
    """One decoded file: its plain name, size, digest, and the payload spans inside it."""

    name: str
    size: int
    sha256: str
    spans: tuple[SpanEntry, ...]

    @property
    def skeleton_bytes(self) -> int:
        """Bytes of this file that the skeleton holds (everything outside the spans)."""
        return self.size - sum(span.length for span in self.spans)


@dataclass(frozen=True)
class Manifest:
    """The checked manifest: files in bitstream order, and the writer's metadata."""

    files: tuple[FileEntry, ...]
    meta: dict

    @property
    def output_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def skeleton_bytes(self) -> int:
        return sum(f.skeleton_bytes for f in self.files)


def _bad(what: str) -> BitstreamError:
    return BitstreamError(f"bitstream manifest is corrupted ({what})")


def _count(value: object, what: str) -> int:
    """A non-negative integer (JSON ``true`` is not one, nor is ``1.0``)."""
    if type(value) is not int or value < 0:
        raise _bad(f"{what} is not a non-negative integer")
    return value


def _shape(value: object, count: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise _bad("a span's shape is not a list of at most 64 dimensions")
    dims = tuple(_count(d, "a dimension") for d in value)
    if math.prod(dims) != count:  # Python integers: no overflow can make a huge shape match
        raise _bad("a span's shape does not multiply to its element count")
    return dims


def _span(raw: object, version: int, section: int) -> SpanEntry:
    """One span; ``section`` is the payload section it takes when the format leaves it implicit."""
    head = 5 if version >= 5 else 7
    if not isinstance(raw, list) or len(raw) not in (head, head + 1):
        raise _bad("a span is not a list of the format's fields")
    offset, length = _count(raw[0], "a span offset"), _count(raw[1], "a span length")
    codec, elem_type, count = raw[2], _count(raw[3], "an element type"), _count(raw[4], "an element count")
    if not isinstance(codec, str) or codec not in CODECS:
        raise BitstreamError(f"unknown payload codec {codec!r} in bitstream")
    if length == 0:
        raise _bad("an empty span")
    if version < 5:
        section = _count(raw[5], "a span's section")
    shape = _shape(raw[head], count) if len(raw) > head else None
    return SpanEntry(offset, length, codec, elem_type, count, section, shape)


def _file(raw: object, version: int, next_section: int) -> FileEntry:
    if not isinstance(raw, dict):
        raise _bad("a file entry is not an object")
    name = raw.get("name")
    problem = plain_name_problem(name)
    if problem:
        raise BitstreamError(f"bitstream names a file {name!r}, which is not a plain file name ({problem}); "
                             "nothing was written")
    size = _count(raw.get("size"), "a file size")
    digest = raw.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise _bad("a file digest is not a sha256")
    spans_raw = raw.get("spans")
    if not isinstance(spans_raw, list):
        raise _bad("a file's spans are not a list")
    spans, cursor = [], 0
    for item in spans_raw:
        span = _span(item, version, next_section)
        if span.offset < cursor or span.offset + span.length > size:
            raise _bad("spans overlap, are out of order or run past their file")
        cursor = span.offset + span.length
        next_section = span.section + 1
        spans.append(span)
    return FileEntry(name, size, digest, tuple(spans))


def parse_manifest(doc: object, version: int, sections: int) -> Manifest:
    """Check a decoded manifest JSON against the format ``version`` and the bitstream's
    ``sections``; raises :class:`BitstreamError` naming the first thing that is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list) or not doc["files"]:
        raise _bad("no file list")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise _bad("no metadata")
    files, next_section = [], 2
    for raw in doc["files"]:
        entry = _file(raw, version, next_section)
        next_section = entry.spans[-1].section + 1 if entry.spans else next_section
        files.append(entry)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise BitstreamError("bitstream names the same file twice; nothing was written")
    used = [span.section for f in files for span in f.spans]
    if any(not 2 <= s < sections for s in used):
        raise _bad("a span names a payload section the bitstream does not have")
    if version >= 5 and next_section != sections:
        raise BitstreamError("bitstream is corrupted (payload sections without a place in any file)")
    return Manifest(tuple(files), meta)
