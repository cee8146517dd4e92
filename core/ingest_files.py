"""A source file's bytes and text, and the batches of records readers yield, for the
readers of core/ingest.py and core/ingest_csv.py.

    data = read_input_bytes(path, max_bytes)   # regular files only; decompressed; UTF-8
    text, clean = decode_text(data)            # bad bytes kept, to be found line by line

Only a regular file is opened (open_regular): a FIFO would block the run for ever, and a
device such as /dev/zero, whose size reads as 0, would be read for ever. gzip, bzip2 and
xz are told by their first bytes; UTF-16 and UTF-32 by a byte-order mark or, without one,
by where their NUL bytes fall. Whatever cannot be decoded stays in the text as surrogate
escapes, so a reader quarantines the one line that holds it (invalid_utf8) and keeps the rest.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

BOM = "\ufeff"
# Raw text kept in quarantine rows is capped so a 10 MB field cannot bloat the table;
# the source and line still point at the full record.
MAX_RAW_CHARS = 4096


# How often (in records) a reader reports progress.
TICK = 50_000
BATCH = 50_000  # records a reader parses before it yields them (ingest.batch_records)



@dataclass
class Records:
    """A batch of what a reader produced: parsed records and quarantined ones.

    Readers yield one batch per `batch` records (ingest.batch_records) and ingest types each
    into a frame before the next is parsed, so memory holds one batch's Python objects, not
    the whole file's (several times the file: bench/bench_ingest_memory.py). A value is
    what the file held, of any type; a field the record lacks is core.ingest's _MISSING.
    """

    lines: list[int] = field(default_factory=list)
    values: list[tuple[object, object]] = field(default_factory=list)  # (input, output) as found
    quarantine: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, reason, detail, raw)

    def __len__(self) -> int:
        return len(self.lines) + len(self.quarantine)


class IngestError(RuntimeError):
    """A source cannot be read at all (missing file, configured field absent)."""


# Compressed files, told by their first bytes (the name may or may not say .gz).
_COMPRESSED = ((b"\x1f\x8b", "gzip", gzip.open), (b"BZh", "bzip2", bz2.open), (b"\xfd7zXZ\x00", "xz", lzma.open))
_ZSTD = b"\x28\xb5\x2f\xfd"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
# Byte-order marks of the wide Unicode encodings (UTF-32 first: its LE mark starts with UTF-16's).
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


# Where a wide file holds a code unit that does not decode (cut mid-character, a lone
# surrogate), a byte that is not UTF-8 takes its place once re-encoded: that line is then
# quarantined as invalid_utf8, as a bad byte in a UTF-8 file is, and the rest is read.
_MARK = "curate-ingest-mark"
codecs.register_error(_MARK, lambda exc: ("\udcff", exc.end))

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path):
    """`path` opened to read bytes, refused up front (IngestError) unless it is a regular file.

    Checked on the opened file itself, so a path swapped after `config check` is caught too:
    a FIFO would block the run for ever and a device such as /dev/zero (its size reads as 0)
    would be read for ever. The open does not wait for a FIFO's writer (O_NONBLOCK).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise IngestError(f"{path}: cannot be opened: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise IngestError(f"{path}: {kind}, not a regular file; name a file (a FIFO or a device would block or never end)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _sniff_wide(data: bytes) -> str | None:
    """UTF-16 or UTF-32 without a byte-order mark, told by where its NUL bytes fall.

    Text in those encodings has a NUL in the high byte of every ASCII character (and
    of most others), always at the same offsets; UTF-8 text has NULs, if any, anywhere.
    Read as UTF-8, the NUL after the last newline was a line, and a phantom record.
    """
    sample = data[:4096]
    if len(sample) < 4 or b"\x00" not in sample:
        return None

    def nul(offset: int, step: int) -> float:
        part = sample[offset::step]
        return part.count(0) / max(len(part), 1)

    candidates = (
        ("utf-32-le", nul(2, 4) > 0.9 and nul(3, 4) > 0.9 and nul(0, 4) < 0.05),
        ("utf-32-be", nul(0, 4) > 0.9 and nul(1, 4) > 0.9 and nul(3, 4) < 0.05),
        ("utf-16-le", nul(1, 2) > 0.2 and nul(0, 2) < 0.05),
        ("utf-16-be", nul(0, 2) > 0.2 and nul(1, 2) < 0.05),
    )
    for encoding, fits in candidates:
        # the reading must explain the NULs: far fewer are left in the decoded text
        if fits and sample.decode(encoding, errors=_MARK).count("\x00") * 4 < sample.count(0):
            return encoding
    return None


_CHUNK = 16 * 2**20


def _read_bounded(fh, max_bytes: int) -> bytes:
    """What is left of `fh`, up to one byte past `max_bytes` (so that more than the bound shows).

    In chunks: `read(n)` reserves n bytes before it reads, and a bound of 4 GiB reserved as
    address space fails at once under `ulimit -v`, whatever the file's size.
    """
    chunks, total = [], 0
    while total <= max_bytes and (chunk := fh.read(min(_CHUNK, max_bytes + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_input_bytes(path: Path, max_bytes: int) -> bytes:
    """A text source's bytes, decompressed and in UTF-8 where they were UTF-16/32.

    A path that is not a regular file, a file (after decompression) larger than
    max_bytes, or one that does not decompress to its end (a cut download) is an
    IngestError naming it: records past a cut cannot be counted, so none are kept.
    """
    with open_regular(path) as fh:
        head = fh.read(6)
        fh.seek(0)
        if head.startswith(_ZSTD):
            raise IngestError(f"{path}: the file is zstd-compressed; decompress it, or compress it with gzip, bzip2 or xz")
        kind = next(((name, opener) for magic, name, opener in _COMPRESSED if head.startswith(magic)), None)
        if kind is None:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise IngestError(f"{path}: {size:,} bytes, more than ingest.max_file_bytes ({max_bytes:,}); split the file or raise the bound")
            data = fh.read(size + 1)  # (read(n) reserves n bytes first: not the bound's 4 GiB)
            if len(data) > size:
                data += _read_bounded(fh, max_bytes - len(data))
            if len(data) > max_bytes:  # it grew while read
                raise IngestError(f"{path}: more than ingest.max_file_bytes ({max_bytes:,}); split the file or raise the bound")
        else:
            name, opener = kind
            try:
                with opener(fh, "rb") as unpacked:
                    data = _read_bounded(unpacked, max_bytes)  # never more than the bound, whatever the file expands to
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise IngestError(f"{path}: {name}-compressed, but it does not decompress: {exc}") from exc
            if len(data) > max_bytes:
                raise IngestError(f"{path}: decompresses to more than ingest.max_file_bytes ({max_bytes:,}); split the file or raise the bound")
    wide = next((enc for bom, enc in _WIDE_BOMS if data.startswith(bom)), None) or _sniff_wide(data)
    if wide is not None:  # the utf-16/utf-32 codecs read a BOM for the byte order and drop it
        data = _decode_wide(data, wide).encode("utf-8", "surrogateescape")
    return data


def _decode_wide(data: bytes, encoding: str) -> str:
    """`data` decoded; what does not decode marked (_MARK). FF FE 00 00 opens UTF-32-LE, and
    UTF-16-LE text whose first character is NUL: the reading with fewer NULs and marks is taken
    (UTF-16 read as UTF-32 hardly decodes; UTF-32 read as UTF-16 is half NULs)."""
    if encoding == "utf-32" and data.startswith(b"\xff\xfe\x00\x00"):
        readings = [data.decode(candidate, errors=_MARK) for candidate in ("utf-32", "utf-16")]
        return min(readings, key=lambda text: text.count("\x00") + text.count("\udcff"))
    return data.decode(encoding, errors=_MARK)


def decode_text(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8, keeping undecodable bytes as surrogates so they can be located per line."""
    try:
        text = data.decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        clean = False
    if text.startswith(BOM):
        text = text[1:]
    return text, clean


def has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(raw: str) -> str:
    """Raw text made safe to store: undecodable bytes and lone surrogates become U+FFFD, length capped."""
    try:
        fixed = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate a JSON escape named ("\ud800", which json.loads takes): no byte
        fixed = _SURROGATE.sub("\ufffd", raw)
    return fixed if len(fixed) <= MAX_RAW_CHARS else fixed[:MAX_RAW_CHARS] + f"... [{len(fixed)} chars]"
