"""Near-duplicate removal: MinHash signatures, LSH banding, exact-Jaccard verification.

The passes live together here, in the order they run (the shape of datatrove's
``pipeline/dedup/minhash.py``: signatures -> buckets -> clusters -> filter):

1. shingle   ``shingle_hashes``  normalise text, cut word (or char) n-grams, hash each to 64 bits
2. sign      ``sign_shard``      MinHash signature per row, datasketch's hash family
3. band      ``band_shard``      one (band, band_key, row) record per row and band
4. group     ``candidate_pairs`` rows sharing (band, band_key) become candidate pairs
5. verify    ``verify_pairs``    exact Jaccard of the two shingle sets; keep pairs >= threshold
6. cluster   ``cluster_rows``    connected components over the verified edges
7. keep      ``dedupe_near``     one row per cluster by policy; the rest record duplicate_of

Passes 2 and 3 are embarrassingly parallel over row shards, pass 4 is a shuffle by band
(every record of one band goes to one grouping task), so a Ray/Prefect task runner can
run ``sign_shard``/``band_shard`` on workers and ``candidate_pairs`` per band partition
without collecting signatures on one worker. In process, ``dedupe_near`` simply calls
them in sequence (numba kernels use every core inside each pass).

Where the numbers come from
---------------------------
* threshold 0.8, 128 permutations, word 3-grams: the issue's defaults (and datasketch's).
* bands/rows: ``choose_bands`` picks the largest r (fewest false candidates) whose
  S-curve 1 - (1 - s^r)^b still gives >= 0.99 at s = threshold. For 0.8/128 that is
  21 bands x 6 rows (P(candidate | J=0.8) = 0.998). datasketch's own choice, 9 x 13,
  weighs false positives equally and gives only 0.72 at J=0.8 -- too low when every
  candidate is verified anyway, because verification makes false candidates cheap.
* ``MAX_PARTNERS`` 16: inside one bucket each row is paired with at most the 16 rows
  before it, so a bucket of m identical rows costs O(16 m) pairs, not O(m^2); the
  chain still connects the whole bucket.
* Shingle hashes are 64-bit; two different shingles of one candidate pair collide with
  probability ~ (60 * 60) / 2^64 ~ 2e-16, so Jaccard over hashes equals Jaccard over
  strings for every practical purpose. The MinHash input is the low 32 bits (datasketch
  feeds 32-bit hashes to its 32-bit schemes).

Text normalisation (both hash modes, and the pure-Python ``shingles`` reference):
UTF-8 bytes, ASCII letters lower-cased, every run of ASCII non-alphanumeric bytes
(space, punctuation, control) is a separator; non-ASCII bytes are word characters and
are not case-folded. Word shingles are n consecutive tokens joined by one space; a row
with 1..n-1 tokens has one shingle (all its tokens); a row with no tokens (null, empty,
punctuation only) has an empty shingle set and is never a duplicate of anything.
Char shingles are n consecutive characters of the tokens joined by single spaces.

Hash compatibility with datasketch (>= 2.0 has permutation *schemes*):
* ``scheme="affine32"`` (default; datasketch 2.x's default): h -> fmix32(h), then
  a*h + b mod 2^32, signatures uint32.
* ``scheme="legacy"`` (datasketch < 2.0, and ``scheme="legacy"`` in 2.x):
  ((a*h + b) mod (2^61 - 1)) & (2^32 - 1) with uint64 wraparound, signatures uint64.
  a, b come from ``np.random.RandomState(seed)`` exactly as datasketch draws them.
* ``hash="sha1"``: shingle hash = datasketch's ``sha1_hash32`` -- signatures are
  bit-identical to ``datasketch.MinHash(num_perm, seed=seed, scheme=...)`` updated with
  every shingle's bytes. ``hash="fast"`` (default): shingle hash = ``fast_hash32``,
  bit-identical to datasketch given ``hashfunc=fast_hash32``.

Settings: one ``NearDupSettings`` (threshold, permutations, shingles, seed, hash family) is
built once and handed to every driver and pass that needs it (the shape of datatrove's
``MinhashConfig``).

Run: ``python -c "import polars as pl; from filters.near_dup import dedupe_near; ..."``,
or ``curate dedupe`` (see ``filters/dedupe_file.py``).
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import polars as pl

# The kernels are numba's, compiled on first call; numba itself (and its llvmlite) is imported
# then too, not when this module is. A process that only imports the project (the CLI, the
# flow's child processes) never loads llvmlite: vLLM 0.32's CPU worker fails to start in a
# process that has (its Triton-kernel rebinding scans every module's objects and trips over
# llvmlite's lock-wrapped ctypes functions), and the worker imports the main module again.
_KERNELS: dict[str, tuple[Callable, dict]] = {}
_numba_lock = threading.Lock()
prange = range  # numba.prange once the kernels are made


def _make_kernels() -> None:
    """Replace every kernel of this module by its numba dispatcher (compiled lazily by numba, per signature)."""
    with _numba_lock:
        if globals()["prange"] is not range:
            return
        import numba

        for name, (fn, options) in _KERNELS.items():
            globals()[name] = numba.njit(**options)(fn)
        globals()["prange"] = numba.prange


def njit(**options):
    """numba.njit(**options), made on the first call of any kernel of this module (_make_kernels)."""
    def wrap(fn: Callable) -> Callable:
        _KERNELS[fn.__name__] = (fn, options)

        @functools.wraps(fn)
        def first_call(*args):
            _make_kernels()
            return globals()[fn.__name__](*args)

        return first_call

    return wrap

Shingle = Literal["word", "char"]
HashMode = Literal["fast", "sha1"]
Scheme = Literal["affine32", "legacy"]
KeepPolicy = Literal["earliest", "longest", "most_common_label"]

DEFAULT_SCHEME: Scheme = "affine32"  # datasketch 2.x's default (requirements/cpu.lock pins 2.0.0)
MAX_PARTNERS = 16  # pairs per row inside one bucket; see module docstring
SHARD_ROWS = 1 << 16  # rows signed at once in process: 64k x 128 x 8 B = 64 MiB of signature

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd (golden ratio): x -> (h ^ x) * _FOLD is a bijection
_SEP_RE = re.compile(rb"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+")


# ----------------------------------------------------------------------------------------
# Band choice
# ----------------------------------------------------------------------------------------
def s_curve(similarity: float, bands: int, rows: int) -> float:
    """P(two rows with Jaccard `similarity` share at least one of `bands` bands of `rows`)."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def choose_bands(threshold: float, num_perm: int, *, min_recall: float = 0.99) -> tuple[int, int]:
    """Return (bands, rows) with bands*rows <= num_perm and s_curve(threshold) >= min_recall.

    Among the (b, r) that reach `min_recall` at the threshold, the largest r wins: it has
    the steepest S-curve, so the fewest pairs below the threshold become candidates. If
    none reaches it (tiny num_perm), the most sensitive choice (num_perm bands of 1) is used.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if s_curve(threshold, bands, rows) >= min_recall:
            best = (bands, rows)
    return best


# ----------------------------------------------------------------------------------------
# Pass 1: shingles (pure-Python reference + numba kernels)
# ----------------------------------------------------------------------------------------
def tokens(text: str | None) -> list[bytes]:
    """Normalised tokens of `text` (see module docstring); the reference for the kernels."""
    if not text:
        return []
    return [t for t in _SEP_RE.split(text.encode("utf-8").lower()) if t]


def shingles(text: str | None, *, ngram: int = 3, shingle: Shingle = "word") -> list[bytes]:
    """The shingles of one text as bytes, in order (repeats kept), exactly as the kernels cut them.

    Feed these to ``datasketch.MinHash.update`` to reproduce ``signatures``.
    """
    toks = tokens(text)
    if not toks:
        return []
    if shingle == "word":
        if len(toks) < ngram:
            return [b" ".join(toks)]
        return [b" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)]
    if shingle == "char":
        s = b" ".join(toks).decode("utf-8")
        if len(s) < ngram:
            return [s.encode("utf-8")]
        return [s[i : i + ngram].encode("utf-8") for i in range(len(s) - ngram + 1)]
    raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")


def _fmix64_py(h: int) -> int:
    m = (1 << 64) - 1
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    return h ^ (h >> 33)


def fast_hash64(data: bytes) -> int:
    """The 64-bit shingle hash the kernels compute, for one shingle's bytes (slow, reference).

    Space-separated parts are hashed with FNV-1a 64 and folded in order, then mixed with
    the MurmurHash3 finalizer. Folding per part lets the word kernel hash each token once
    and reuse it in the n shingles that contain it.
    """
    m = (1 << 64) - 1
    h = 0
    for part in data.split(b" "):
        f = 0xCBF29CE484222325
        for byte in part:
            f = ((f ^ byte) * 0x100000001B3) & m
        h = ((h ^ f) * 0x9E3779B97F4A7C15) & m
    return _fmix64_py(h)


def fast_hash32(data: bytes) -> int:
    """Low 32 bits of ``fast_hash64``: the MinHash input of ``hash="fast"``.

    Pass as ``datasketch.MinHash(..., hashfunc=fast_hash32)`` to get our signatures.
    """
    return fast_hash64(data) & 0xFFFFFFFF


def sha1_hash32(data: bytes) -> int:
    """datasketch's default shingle hash (``datasketch.hashfunc.sha1_hash32``)."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


@njit(inline="always")
def _fmix64(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(inline="always")
def _is_word_byte(c):
    return c >= 0x80 or (0x30 <= c <= 0x39) or (0x41 <= c <= 0x5A) or (0x61 <= c <= 0x7A)


@njit(inline="always")
def _lower(c):
    if 0x41 <= c <= 0x5A:
        return c + 32
    return c


@njit(parallel=True, cache=True, nogil=True)
def _count_tokens(buf, offs):
    """Tokens per row and normalised characters per row (tokens joined by single spaces)."""
    n = offs.shape[0] - 1
    ntok = np.zeros(n, np.int64)
    nchar = np.zeros(n, np.int64)
    for i in prange(n):
        t = 0
        chars = 0
        inword = False
        for j in range(offs[i], offs[i + 1]):
            c = buf[j]
            if _is_word_byte(c):
                if not inword:
                    t += 1
                    inword = True
                if (c & 0xC0) != 0x80:  # not a UTF-8 continuation byte: a new character
                    chars += 1
            else:
                inword = False
        ntok[i] = t
        nchar[i] = chars + (t - 1 if t > 0 else 0)
    return ntok, nchar


@njit(inline="always")
def _sort_unique(out, a, b):
    """Sort out[a:b] in place and drop repeats; return the number of distinct values."""
    m = b - a
    if m <= 1:
        return m
    if m <= 96:  # insertion sort: short documents have a few dozen shingles
        for j in range(a + 1, b):
            x = out[j]
            q = j - 1
            while q >= a and out[q] > x:
                out[q + 1] = out[q]
                q -= 1
            out[q + 1] = x
    else:
        out[a:b].sort()
    k = a + 1
    for j in range(a + 1, b):
        if out[j] != out[k - 1]:
            out[k] = out[j]
            k += 1
    return k - a


@njit(parallel=True, cache=True, nogil=True)
def _word_shingle_kernel(buf, offs, ngram, sh_offs, out, lengths):
    n = offs.shape[0] - 1
    nchunks = (n + 1023) // 1024
    for ch in prange(nchunks):
        win = np.zeros(ngram, np.uint64)  # FNV-1a hashes of the last `ngram` tokens, oldest first
        for i in range(ch * 1024, min(n, ch * 1024 + 1024)):
            pos = sh_offs[i]
            t = 0
            f = _FNV_OFFSET
            inword = False
            end = offs[i + 1]
            for j in range(offs[i], end + 1):
                word = False
                c = np.uint8(0)
                if j < end:
                    c = buf[j]
                    word = _is_word_byte(c)
                if word:
                    f = (f ^ np.uint64(_lower(c))) * _FNV_PRIME
                    inword = True
                elif inword:
                    for q in range(ngram - 1):
                        win[q] = win[q + 1]
                    win[ngram - 1] = f
                    t += 1
                    f = _FNV_OFFSET
                    inword = False
                    if t >= ngram:
                        h = np.uint64(0)
                        for q in range(ngram):
                            h = (h ^ win[q]) * _FOLD
                        out[pos] = _fmix64(h)
                        pos += 1
            if 0 < t < ngram:
                h = np.uint64(0)
                for q in range(ngram - t, ngram):
                    h = (h ^ win[q]) * _FOLD
                out[pos] = _fmix64(h)
                pos += 1
            lengths[i] = _sort_unique(out, sh_offs[i], pos)


@njit(inline="always")
def _hash_span(norm, a, b):
    h = np.uint64(0)
    f = _FNV_OFFSET
    for j in range(a, b):
        c = norm[j]
        if c == 0x20:
            h = (h ^ f) * _FOLD
            f = _FNV_OFFSET
        else:
            f = (f ^ np.uint64(c)) * _FNV_PRIME
    h = (h ^ f) * _FOLD
    return _fmix64(h)


@njit(inline="always")
def _next_char(norm, j, end):
    j += 1
    while j < end and (norm[j] & 0xC0) == 0x80:
        j += 1
    return j


@njit(parallel=True, cache=True, nogil=True)
def _char_shingle_kernel(buf, offs, ngram, sh_offs, out, lengths):
    n = offs.shape[0] - 1
    norm = np.empty(buf.shape[0], np.uint8)  # normalised text is never longer than the input
    for i in prange(n):
        # normalise into norm[offs[i]: k]
        k = offs[i]
        pending_space = False
        for j in range(offs[i], offs[i + 1]):
            c = buf[j]
            if _is_word_byte(c):
                if pending_space and k > offs[i]:
                    norm[k] = 0x20
                    k += 1
                pending_space = False
                norm[k] = _lower(c)
                k += 1
            else:
                pending_space = True
        a = offs[i]
        pos = sh_offs[i]
        if k > a:
            # end of the first n-gram
            e = a
            nch = 0
            while nch < ngram and e < k:
                e = _next_char(norm, e, k)
                nch += 1
            s = a
            out[pos] = _hash_span(norm, s, e)
            pos += 1
            while e < k:
                s = _next_char(norm, s, k)
                e = _next_char(norm, e, k)
                out[pos] = _hash_span(norm, s, e)
                pos += 1
        lengths[i] = _sort_unique(out, sh_offs[i], pos)


@dataclass(frozen=True)
class ShingleSets:
    """Sorted distinct 64-bit shingle hashes per row: row i is hashes[offsets[i]:offsets[i]+lengths[i]]."""

    offsets: np.ndarray  # int64 (n + 1,)
    lengths: np.ndarray  # int64 (n,)
    hashes: np.ndarray  # uint64

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def row(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i] + self.lengths[i]]


def _utf8_buffer(texts: pl.Series | Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes as uint8, int64 row offsets into them) of the texts; null counts as empty.

    Through Arrow's large_string buffers when pyarrow is importable (no copy of the text),
    else by joining the strings (one copy).
    """
    s = texts if isinstance(texts, pl.Series) else pl.Series(values=list(texts), dtype=pl.String)
    s = s.cast(pl.String).fill_null("")
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        pa = None
    if pa is not None:
        arr = s.to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.type != pa.large_string():
            arr = pc.cast(arr, pa.large_string())
        bufs = arr.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        buf = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
        return buf, offs
    lens = s.str.len_bytes().cast(pl.Int64).to_numpy()
    offs = np.zeros(len(s) + 1, np.int64)
    np.cumsum(lens, out=offs[1:])
    joined = s.str.join("").item() if len(s) else ""
    buf = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
    return buf, offs


def shingle_hashes(
    texts: pl.Series | Sequence[str | None], *, ngram: int = 3, shingle: Shingle = "word"
) -> ShingleSets:
    """Hash every row's shingle set to sorted distinct 64-bit values (``fast_hash64``)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    buf, offs = _utf8_buffer(texts)
    ntok, nchar = _count_tokens(buf, offs)
    if shingle == "word":
        count = np.where(ntok == 0, 0, np.maximum(ntok - ngram + 1, 1))
    elif shingle == "char":
        count = np.where(nchar == 0, 0, np.maximum(nchar - ngram + 1, 1))
    else:
        raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")
    sh_offs = np.zeros(len(count) + 1, np.int64)
    np.cumsum(count, out=sh_offs[1:])
    out = np.empty(int(sh_offs[-1]), np.uint64)
    lengths = np.zeros(len(count), np.int64)
    kernel = _word_shingle_kernel if shingle == "word" else _char_shingle_kernel
    kernel(buf, offs, ngram, sh_offs, out, lengths)
    return ShingleSets(offsets=sh_offs, lengths=lengths, hashes=out)


# ----------------------------------------------------------------------------------------
# Pass 2: signatures (datasketch's permutation family)
# ----------------------------------------------------------------------------------------
def permutations(num_perm: int, seed: int, scheme: Scheme = DEFAULT_SCHEME) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) drawn from np.random.RandomState(seed) exactly as datasketch.MinHash draws them."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array(
            [
                (gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
        return ab[0].copy(), ab[1].copy()
    if scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return a.astype(np.uint64), b.astype(np.uint64)
    raise ValueError(f"scheme must be 'affine32' or 'legacy', got {scheme!r}")


@njit(inline="always")
def _minhash_affine32(values, start, stop, a, b, acc):
    """datasketch "affine32": fmix32(h), then a*h + b mod 2^32, min over the shingles."""
    p = a.shape[0]
    for k in range(p):
        acc[k] = np.uint32(0xFFFFFFFF)
    for j in range(start, stop):
        h = np.uint32(values[j] & np.uint64(0xFFFFFFFF))
        # datasketch's _fmix(hv, 32): the MurmurHash3 finalizer in uint32
        h = np.uint32(h ^ (h >> np.uint32(16)))
        h = np.uint32(h * np.uint32(0x85EBCA6B))
        h = np.uint32(h ^ (h >> np.uint32(13)))
        h = np.uint32(h * np.uint32(0xC2B2AE35))
        h = np.uint32(h ^ (h >> np.uint32(16)))
        for k in range(p):
            v = np.uint32(a[k] * h + b[k])  # truncation = datasketch's uint32 wraparound
            if v < acc[k]:
                acc[k] = v


@njit(inline="always")
def _minhash_legacy(values, start, stop, a, b, acc):
    """datasketch "legacy": ((a*h + b) mod (2^61 - 1)) & (2^32 - 1), uint64 wraparound."""
    p = a.shape[0]
    m32 = np.uint64(0xFFFFFFFF)
    prime = np.uint64((1 << 61) - 1)
    for k in range(p):
        acc[k] = m32
    for j in range(start, stop):
        h = values[j] & m32
        for k in range(p):
            x = a[k] * h + b[k]
            # x mod (2^61 - 1) without a division: 2^61 = 1 (mod p), and x < 2^64 leaves r < 2p
            r = (x & prime) + (x >> np.uint64(61))
            r = r - prime if r >= prime else r
            r &= m32
            if r < acc[k]:
                acc[k] = r


@njit(parallel=True, cache=True, nogil=True)
def _sign_kernel(offsets, lengths, values, a, b, legacy, out):
    n = lengths.shape[0]
    nchunks = (n + 255) // 256
    for ch in prange(nchunks):
        acc = np.empty(a.shape[0], a.dtype)
        for i in range(ch * 256, min(n, ch * 256 + 256)):
            if legacy:
                _minhash_legacy(values, offsets[i], offsets[i] + lengths[i], a, b, acc)
            else:
                _minhash_affine32(values, offsets[i], offsets[i] + lengths[i], a, b, acc)
            for k in range(a.shape[0]):
                out[i, k] = acc[k]


@njit(inline="always")
def _band_key(sig, band, rows):
    h = np.uint64(band)
    for k in range(band * rows, band * rows + rows):
        h = (h ^ np.uint64(sig[k])) * _FOLD
    return _fmix64(h)


@njit(parallel=True, cache=True, nogil=True)
def _sign_band_kernel(offsets, lengths, values, a, b, legacy, bands, rows, keys):
    """Passes 2+3 fused for the in-process path: band keys straight from a per-thread
    signature buffer, so the (n, num_perm) signature matrix never exists."""
    n = lengths.shape[0]
    nchunks = (n + 255) // 256
    for ch in prange(nchunks):
        acc = np.empty(a.shape[0], a.dtype)
        for i in range(ch * 256, min(n, ch * 256 + 256)):
            if legacy:
                _minhash_legacy(values, offsets[i], offsets[i] + lengths[i], a, b, acc)
            else:
                _minhash_affine32(values, offsets[i], offsets[i] + lengths[i], a, b, acc)
            for band in range(bands):
                keys[band, i] = _band_key(acc, band, rows)


def _perm_arrays(num_perm: int, seed: int, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, bool]:
    a, b = permutations(num_perm, seed, scheme)
    if scheme == "affine32":
        return a.astype(np.uint32), b.astype(np.uint32), False
    return a, b, True


def _sign_sets(sets: ShingleSets, num_perm: int, seed: int, scheme: Scheme) -> np.ndarray:
    a, b, legacy = _perm_arrays(num_perm, seed, scheme)
    out = np.empty((len(sets), num_perm), a.dtype)
    _sign_kernel(sets.offsets, sets.lengths, sets.hashes, a, b, legacy, out)
    return out


def _sha1_values(texts: Iterable[str | None], ngram: int, shingle: Shingle) -> ShingleSets:
    """Per row, the distinct sha1_hash32 values of its shingles (datasketch's default hash)."""
    lens, vals = [], []
    for t in texts:
        hs = sorted({sha1_hash32(s) for s in shingles(t, ngram=ngram, shingle=shingle)})
        lens.append(len(hs))
        vals.extend(hs)
    lengths = np.asarray(lens, np.int64)
    offs = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lengths, out=offs[1:])
    return ShingleSets(offsets=offs, lengths=lengths, hashes=np.asarray(vals, np.uint64))


def signatures(
    texts: pl.Series | Sequence[str | None],
    *,
    num_perm: int = 128,
    ngram: int = 3,
    shingle: Shingle = "word",
    seed: int = 1,
    hash: HashMode = "fast",
    scheme: Scheme = DEFAULT_SCHEME,
) -> np.ndarray:
    """MinHash signatures, shape (n, num_perm): uint32 for "affine32", uint64 for "legacy".

    Row i equals ``datasketch.MinHash(num_perm, seed=seed, scheme=scheme, hashfunc=H)``
    updated with ``shingles(texts[i])``, where H is ``sha1_hash32`` (datasketch's default)
    for ``hash="sha1"`` and ``fast_hash32`` for ``hash="fast"``. A row without shingles
    gets datasketch's empty signature (every value 2^32 - 1).
    """
    return sign_shard(texts, num_perm=num_perm, ngram=ngram, shingle=shingle, seed=seed, hash=hash, scheme=scheme)


def sign_shard(
    texts: pl.Series | Sequence[str | None],
    *,
    num_perm: int = 128,
    ngram: int = 3,
    shingle: Shingle = "word",
    seed: int = 1,
    hash: HashMode = "fast",
    scheme: Scheme = DEFAULT_SCHEME,
) -> np.ndarray:
    """Pass 2 for one shard of rows: texts in, signatures out. Needs nothing from other shards."""
    if hash == "fast":
        sets = shingle_hashes(texts, ngram=ngram, shingle=shingle)
    elif hash == "sha1":
        seq = texts.to_list() if isinstance(texts, pl.Series) else texts
        sets = _sha1_values(seq, ngram, shingle)
    else:
        raise ValueError(f"hash must be 'fast' or 'sha1', got {hash!r}")
    return _sign_sets(sets, num_perm, seed, scheme)


def to_lean_minhash(sig_row: np.ndarray, seed: int = 1, *, scheme: Scheme | None = None):
    """One signature row as a ``datasketch.LeanMinHash`` (insert/query it in a MinHashLSH).

    The scheme defaults from the dtype: uint32 rows are "affine32", uint64 rows "legacy".
    """
    import inspect

    from datasketch import LeanMinHash

    sig_row = np.asarray(sig_row)
    if scheme is None:
        scheme = "affine32" if sig_row.dtype == np.uint32 else "legacy"
    if "scheme" in inspect.signature(LeanMinHash.__init__).parameters:
        return LeanMinHash(seed=seed, hashvalues=sig_row, scheme=scheme)
    if scheme != "legacy":  # datasketch < 2.0 only knows the legacy scheme
        raise ValueError("this datasketch version has no permutation schemes; sign with scheme='legacy'")
    return LeanMinHash(seed=seed, hashvalues=sig_row)


# ----------------------------------------------------------------------------------------
# Pass 3: band keys (the shuffle key)
# ----------------------------------------------------------------------------------------
@njit(parallel=True, cache=True, nogil=True)
def _band_keys_kernel(sig, bands, rows, out):
    for i in prange(sig.shape[0]):
        for band in range(bands):
            out[band, i] = _band_key(sig[i], band, rows)


def band_keys(sig: np.ndarray, *, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64: one 64-bit key per band of r signature values (band-major for the shuffle)."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows needs {bands * rows} permutations, have {sig.shape[1]}")
    out = np.empty((bands, sig.shape[0]), np.uint64)
    _band_keys_kernel(sig, bands, rows, out)
    return out


def band_shard(sig: np.ndarray, *, bands: int, rows: int, row_offset: int = 0) -> pl.DataFrame:
    """Pass 3 for one shard: records (band UInt16, band_key UInt64, row Int64) to shuffle by band.

    Every record with the same (band, band_key) must reach the same ``candidate_pairs``
    call; partitioning by ``band`` (and, for huge inputs, by band_key's high bits) does that.
    """
    keys = band_keys(sig, bands=bands, rows=rows)
    n = sig.shape[0]
    return pl.DataFrame(
        {
            "band": np.repeat(np.arange(bands, dtype=np.uint16), n),
            "band_key": keys.reshape(-1),
            "row": np.tile(np.arange(row_offset, row_offset + n, dtype=np.int64), bands),
        }
    )


# ----------------------------------------------------------------------------------------
# Pass 4: group one band partition into candidate pairs
# ----------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _emit_pairs(skeys, srows, max_partners, split, left, right, write):
    """Pairs inside runs of equal keys; returns how many (written only when `write`).

    split < 0: each row with up to `max_partners` earlier rows of its run.
    split >= 0: only pairs (row < split, row >= split), each left row with up to
    `max_partners` right rows of its run (decontamination)."""
    n = skeys.shape[0]
    cnt = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and skeys[j] == skeys[i]:
            j += 1
        if j - i > 1:
            run = np.sort(srows[i:j])
            m = j - i
            if split < 0:
                for t in range(1, m):
                    for u in range(max(0, t - max_partners), t):
                        if write:
                            left[cnt] = run[u]
                            right[cnt] = run[t]
                        cnt += 1
            else:
                first_right = m
                for t in range(m):
                    if run[t] >= split:
                        first_right = t
                        break
                for t in range(first_right):
                    for u in range(first_right, min(m, first_right + max_partners)):
                        if write:
                            left[cnt] = run[t]
                            right[cnt] = run[u]
                        cnt += 1
        i = j
    return cnt


def candidate_pairs(
    keys: np.ndarray, rows: np.ndarray, *, max_partners: int = MAX_PARTNERS, split: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 4 for one partition (one band): rows sharing a band_key -> (left, right), left < right.

    `keys` and `rows` are the band_key and row columns of that partition's records.
    """
    order = np.argsort(keys)
    return candidate_pairs_sorted(keys[order], rows[order].astype(np.int64), max_partners=max_partners, split=split)


def _pack_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(left, right) row pairs as one uint64 each (rows < 2^32), ordered by left then right."""
    return (left.astype(np.uint64) << np.uint64(32)) | right.astype(np.uint64)


def _unpack_pairs(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (packed >> np.uint64(32)).astype(np.int64), (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _unique_pairs(lefts: list[np.ndarray], rights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not lefts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return _unpack_pairs(np.unique(_pack_pairs(np.concatenate(lefts), np.concatenate(rights))))


# ----------------------------------------------------------------------------------------
# Pass 5: exact verification
# ----------------------------------------------------------------------------------------
@njit(inline="always")
def _jaccard(hashes, a0, la, b0, lb):
    if la == 0 or lb == 0:
        return 0.0
    i = 0
    j = 0
    inter = 0
    while i < la and j < lb:
        x = hashes[a0 + i]
        y = hashes[b0 + j]
        if x == y:
            inter += 1
            i += 1
            j += 1
        elif x < y:
            i += 1
        else:
            j += 1
    return inter / (la + lb - inter)


@njit(parallel=True, cache=True, nogil=True)
def _jaccard_pairs(offsets, lengths, hashes, left, right, out):
    for p in prange(left.shape[0]):
        a = left[p]
        b = right[p]
        out[p] = _jaccard(hashes, offsets[a], lengths[a], offsets[b], lengths[b])


def pair_jaccard(sets: ShingleSets, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets of rows left[k] and right[k] (float64)."""
    out = np.empty(left.shape[0], np.float64)
    _jaccard_pairs(sets.offsets, sets.lengths, sets.hashes, left.astype(np.int64), right.astype(np.int64), out)
    return out


def verify_pairs(
    sets: ShingleSets, left: np.ndarray, right: np.ndarray, *, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 5: keep the candidate pairs whose exact Jaccard is >= threshold -> (left, right, similarity)."""
    sim = pair_jaccard(sets, left, right)
    ok = sim >= threshold
    return left[ok], right[ok], sim[ok]


@njit(cache=True, nogil=True)
def _link_band(skeys, srows, max_partners, offsets, lengths, hashes, threshold, parent, el, er, es, counts):
    """Passes 4-6 fused for one band, sequentially: walk the runs of equal keys, skip pairs
    already in one cluster (union-find), verify the rest exactly and union those that pass.

    A pair is only skipped when its rows are already connected by verified edges, so the
    clusters are exactly those of verifying every candidate; the edges kept form a
    spanning forest (< n edges, so el/er/es are preallocated with n slots).
    counts[0]: edges so far, counts[1]: pairs verified."""
    n = skeys.shape[0]
    i = 0
    while i < n:
        j = i + 1
        while j < n and skeys[j] == skeys[i]:
            j += 1
        m = j - i
        if m > 1:
            run = np.sort(srows[i:j]) if m > 2 else srows[i:j]
            for t in range(1, m):
                y = run[t]
                for u in range(max(0, t - max_partners), t):
                    x = run[u]
                    rx = _find(parent, x)
                    ry = _find(parent, y)
                    if rx == ry:
                        continue
                    counts[1] += 1
                    sim = _jaccard(hashes, offsets[x], lengths[x], offsets[y], lengths[y])
                    _link_if_similar(x, y, rx, ry, sim, threshold, parent, el, er, es, counts)
        i = j


@njit(inline="always")
def _link_if_similar(x, y, rx, ry, sim, threshold, parent, el, er, es, counts):
    """Union the components of x and y (roots rx != ry) and record the edge, if sim passes."""
    if sim >= threshold:
        if rx < ry:  # the smaller index becomes the root
            parent[ry] = rx
        else:
            parent[rx] = ry
        e = counts[0]
        el[e] = min(x, y)
        er[e] = max(x, y)
        es[e] = sim
        counts[0] = e + 1


# ----------------------------------------------------------------------------------------
# Pass 6: clusters
# ----------------------------------------------------------------------------------------
@njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _components(n, left, right):
    """Component id per row = smallest row index in its component (union-find)."""
    parent = np.arange(n)
    for k in range(left.shape[0]):
        ra = _find(parent, left[k])
        rb = _find(parent, right[k])
        if ra != rb:
            if ra < rb:  # the smaller index becomes the root, so the root is the minimum
                parent[rb] = ra
            else:
                parent[ra] = rb
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


def cluster_rows(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Pass 6: connected components over verified edges; cluster id = smallest row index in it."""
    return _components(n, left.astype(np.int64), right.astype(np.int64))


@njit(cache=True)
def _link_tree(n, left, right, sim, keepers):
    """Multi-source BFS from the kept rows over the verified edges: for every other row in a
    cluster, the neighbour it was reached from (closer to the kept row) and that edge's Jaccard."""
    deg = np.zeros(n + 1, np.int64)
    for k in range(left.shape[0]):
        deg[left[k] + 1] += 1
        deg[right[k] + 1] += 1
    for i in range(n):
        deg[i + 1] += deg[i]
    fill = deg[:-1].copy()
    nbr = np.empty(deg[n], np.int64)
    nsim = np.empty(deg[n], np.float64)
    for k in range(left.shape[0]):
        a = left[k]
        b = right[k]
        nbr[fill[a]] = b
        nsim[fill[a]] = sim[k]
        fill[a] += 1
        nbr[fill[b]] = a
        nsim[fill[b]] = sim[k]
        fill[b] += 1
    via = np.full(n, -1, np.int64)
    via_sim = np.full(n, np.nan)
    seen = np.zeros(n, np.bool_)
    queue = np.empty(n, np.int64)
    head = 0
    tail = 0
    for k in keepers:
        seen[k] = True
        queue[tail] = k
        tail += 1
    while head < tail:
        x = queue[head]
        head += 1
        for e in range(deg[x], deg[x + 1]):
            y = nbr[e]
            if not seen[y]:
                seen[y] = True
                via[y] = x
                via_sim[y] = nsim[e]
                queue[tail] = y
                tail += 1
    return via, via_sim


# ----------------------------------------------------------------------------------------
# In-process driver: passes 1-6 in sequence
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NearDupLinks:
    """Everything the passes found for n rows (positions 0..n-1)."""

    sets: ShingleSets | None  # None from the sharded driver (the sets stay in its workers)
    left: np.ndarray  # verified edges, left < right
    right: np.ndarray
    similarity: np.ndarray  # exact Jaccard of each edge (>= threshold)
    cluster: np.ndarray  # smallest row index of the row's component (own index when alone)
    candidates: int  # candidate pairs verified exactly


def _check_settings(threshold: float, num_perm: int, ngram: int, shingle: str, hash: str, scheme: str) -> None:
    problems = []
    if not 0.0 < threshold <= 1.0:
        problems.append(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        problems.append(f"num_perm must be positive, got {num_perm}")
    if ngram < 1:
        problems.append(f"ngram must be >= 1, got {ngram}")
    if shingle not in ("word", "char"):
        problems.append(f"shingle must be 'word' or 'char', got {shingle!r}")
    if hash not in ("fast", "sha1"):
        problems.append(f"hash must be 'fast' or 'sha1', got {hash!r}")
    if scheme not in ("affine32", "legacy"):
        problems.append(f"scheme must be 'affine32' or 'legacy', got {scheme!r}")
    if problems:
        raise ValueError("; ".join(problems))


def _check_rows(n: int) -> None:
    if n >= 1 << 32:
        raise ValueError("more than 2^32 rows: shard the input (pairs are packed in 64 bits)")


@dataclass(frozen=True)
class NearDupSettings:
    """What makes two rows near duplicates, and how the passes find them: built once (from a config's
    `dedupe.near` or by hand), validated, and handed to every driver and pass that needs it."""

    threshold: float = 0.8  # Jaccard of the shingle sets at or above which two rows are duplicates
    num_perm: int = 128  # MinHash permutations
    ngram: int = 3  # shingle length, in words (characters with shingle="char")
    shingle: Shingle = "word"
    seed: int = 1  # permutation seed (datasketch's default is 1)
    hash: HashMode = "fast"  # shingle hash fed to MinHash: fast_hash32, or datasketch's sha1_hash32
    scheme: Scheme = DEFAULT_SCHEME
    min_recall: float = 0.99  # P(candidate | Jaccard = threshold) the band choice must reach
    max_partners: int = MAX_PARTNERS

    def __post_init__(self) -> None:
        _check_settings(self.threshold, self.num_perm, self.ngram, self.shingle, self.hash, self.scheme)

    @property
    def bands_rows(self) -> tuple[int, int]:
        """(bands, rows per band) for this threshold and number of permutations (choose_bands)."""
        return choose_bands(self.threshold, self.num_perm, min_recall=self.min_recall)


DEFAULTS = NearDupSettings()


def _band_key_matrix(sets: ShingleSets, *, bands: int, rows: int, num_perm: int, seed: int, scheme: Scheme) -> np.ndarray:
    """Passes 2-3 fused: (bands, n) band keys straight from a per-thread signature buffer,
    so the (n, num_perm) signature matrix never exists (same keys as sign_shard -> band_keys)."""
    a, b, legacy = _perm_arrays(num_perm, seed, scheme)
    keys = np.empty((bands, len(sets)), np.uint64)
    _sign_band_kernel(sets.offsets, sets.lengths, sets.hashes, a, b, legacy, bands, rows, keys)
    return keys


def _sort_live(keys: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One band: the keys of rows with shingles, sorted, with their row ids. Rows without
    shingles share the empty signature; they must not meet in a bucket."""
    if live.all():
        row_ids = np.arange(keys.shape[0], dtype=np.int64)
    else:
        row_ids = np.flatnonzero(live)
        keys = keys[live]
    order = np.argsort(keys)
    return keys[order], row_ids[order]


def _link_state(n: int) -> tuple[np.ndarray, ...]:
    """Union-find parents, edge buffers (a spanning forest has < n edges) and counters for pass 6."""
    return (np.arange(n, dtype=np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64),
            np.zeros(2, np.int64))


def _linked_edges(state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(left, right, similarity, pairs verified) from a filled link state."""
    _, el, er, es, counts = state
    e = int(counts[0])
    return el[:e].copy(), er[:e].copy(), es[:e].copy(), int(counts[1])


def find_links(
    texts: pl.Series | Sequence[str | None], settings: NearDupSettings = DEFAULTS, *, split: int = -1
) -> NearDupLinks:
    """Run passes 1-6 over `texts` in this process and return the verified edges and clusters.

    ``split >= 0`` keeps only pairs between rows [0, split) and [split, n) (decontamination).
    """
    st = settings
    n = len(texts)
    _check_rows(n)
    sets = shingle_hashes(texts, ngram=st.ngram, shingle=st.shingle)
    if st.hash == "sha1":
        seq = texts.to_list() if isinstance(texts, pl.Series) else texts
        sets_for_sign = _sha1_values(seq, st.ngram, st.shingle)
    else:
        sets_for_sign = sets
    bands, rows = st.bands_rows
    threshold, max_partners = st.threshold, st.max_partners
    keys = _band_key_matrix(sets_for_sign, bands=bands, rows=rows, num_perm=st.num_perm, seed=st.seed, scheme=st.scheme)
    live = sets.lengths > 0

    def sort_band(band: int) -> tuple[np.ndarray, np.ndarray]:
        return _sort_live(keys[band], live)  # noqa: F821 - called only before `del keys` below

    if split >= 0:
        # Decontamination: every train-eval candidate pair is verified (best match wanted).
        lefts, rights = [], []
        for band in range(bands):
            left, right = candidate_pairs_sorted(*sort_band(band), max_partners=max_partners, split=split)
            lefts.append(left)
            rights.append(right)
        left, right = _unique_pairs(lefts, rights)
        candidates = int(left.shape[0])
        left, right, sim = verify_pairs(sets, left, right, threshold=threshold)
        cluster = cluster_rows(n, left, right)
    else:
        # Passes 4-6 band by band; the next band's argsort (GIL released) overlaps this band's walk.
        state = _link_state(n)
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(sort_band, 0)
            for band in range(bands):
                sk, sr = nxt.result()
                if band + 1 < bands:
                    nxt = pool.submit(sort_band, band + 1)
                _link_band(sk, sr, max_partners, sets.offsets, sets.lengths, sets.hashes, threshold, *state)
        left, right, sim, candidates = _linked_edges(state)
        cluster = cluster_rows(n, left, right)
    del keys
    return NearDupLinks(sets=sets, left=left, right=right, similarity=sim, cluster=cluster, candidates=candidates)


# ----------------------------------------------------------------------------------------
# Sharded driver: the same passes as units of work a runner maps over workers (Ray, ...)
# ----------------------------------------------------------------------------------------
def shard_band_keys(
    texts: pl.Series | Sequence[str | None], settings: NearDupSettings = DEFAULTS
) -> tuple[list[np.ndarray], np.ndarray]:
    """Passes 1-3 for one row shard: ([band keys of band 0, 1, ...], live mask). Needs no other shard."""
    st = settings
    bands, rows = st.bands_rows
    sets = shingle_hashes(texts, ngram=st.ngram, shingle=st.shingle)
    keys = _band_key_matrix(sets, bands=bands, rows=rows, num_perm=st.num_perm, seed=st.seed, scheme=st.scheme)
    return [keys[i].copy() for i in range(bands)], sets.lengths > 0


def band_candidates(
    key_parts: Sequence[np.ndarray], live_parts: Sequence[np.ndarray], *, max_partners: int = MAX_PARTNERS, split: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 4 for one band: its keys from every shard (in row order) -> candidate pairs, in the
    order the in-process driver meets them (so that linking them in that order gives its edges)."""
    skeys, srows = _sort_live(np.concatenate(key_parts), np.concatenate(live_parts))
    return candidate_pairs_sorted(skeys, srows, max_partners=max_partners, split=split)


def candidate_pairs_sorted(skeys: np.ndarray, srows: np.ndarray, *, max_partners: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs from band keys already sorted (with their row ids): count, then fill."""
    none = np.empty(0, np.int64)
    cnt = _emit_pairs(skeys, srows, max_partners, split, none, none, False)
    left = np.empty(cnt, np.int64)
    right = np.empty(cnt, np.int64)
    _emit_pairs(skeys, srows, max_partners, split, left, right, True)
    return left, right


def text_pair_jaccard(left: Sequence[str | None], right: Sequence[str | None],
                      settings: NearDupSettings = DEFAULTS) -> np.ndarray:
    """Pass 5 for a chunk of pairs given their texts: the exact Jaccard of each pair."""
    m = len(left)
    sets = shingle_hashes(pl.Series(values=list(left) + list(right), dtype=pl.String), ngram=settings.ngram,
                          shingle=settings.shingle)
    idx = np.arange(m, dtype=np.int64)
    return pair_jaccard(sets, idx, idx + m)


@njit(cache=True)
def _link_in_order(left, right, sim, threshold, parent, el, er, es, counts):
    """Pass 6 over pairs in the in-process driver's order: skip pairs already connected, keep
    the verified ones as edges (exactly the edges `_link_band` keeps)."""
    for k in range(left.shape[0]):
        x = left[k]
        y = right[k]
        rx = _find(parent, x)
        ry = _find(parent, y)
        if rx == ry:
            continue
        counts[1] += 1
        _link_if_similar(x, y, rx, ry, sim[k], threshold, parent, el, er, es, counts)


def find_links_mapped(
    texts: pl.Series,
    settings: NearDupSettings = DEFAULTS,
    *,
    map_fn: Callable[..., Iterable],
    shards: int = 4,
    split: int = -1,
    pair_chunk: int = 200_000,
) -> NearDupLinks:
    """`find_links` with its passes as units of work: `map_fn(fn, *iterables)` runs them
    (the builtin `map` in-process; a Ray map on a cluster, see filters/near_dup_ray.py).

    Signatures and band keys are made per row shard, each band is grouped on its own
    (it receives only that band's keys), and pairs are verified in chunks that carry
    their texts: no unit of work sees every row's signature. This process keeps the
    texts and gathers the candidate pairs, then links them in the in-process order, so
    the edges, clusters and similarities are the ones `find_links` returns.
    """
    if settings.hash != "fast":
        raise ValueError("the sharded driver signs with hash='fast' only")
    threshold = settings.threshold
    texts = texts.cast(pl.String)
    n = len(texts)
    _check_rows(n)
    bands, _ = settings.bands_rows
    bounds = np.linspace(0, n, max(1, min(shards, n)) + 1).astype(np.int64)
    parts = [texts.slice(int(lo), int(hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    signed = list(map_fn(functools.partial(shard_band_keys, settings=settings), parts))
    live_parts = [live for _, live in signed]
    group = functools.partial(band_candidates, max_partners=settings.max_partners, split=split)
    per_band = list(map_fn(group, [[keys[band] for keys, _ in signed] for band in range(bands)],
                           [live_parts] * bands))
    del signed
    left_all = np.concatenate([l for l, _ in per_band]) if per_band else np.empty(0, np.int64)
    right_all = np.concatenate([r for _, r in per_band]) if per_band else np.empty(0, np.int64)
    # Verify each distinct pair once, in chunks that carry their own texts.
    uniq, inverse = np.unique(_pack_pairs(left_all, right_all), return_inverse=True)
    ul, ur = _unpack_pairs(uniq)
    chunks = [(int(lo), int(min(lo + pair_chunk, uniq.shape[0]))) for lo in range(0, uniq.shape[0], pair_chunk)]
    verify = functools.partial(text_pair_jaccard, settings=settings)
    sims = list(map_fn(verify, [texts.gather(ul[lo:hi]).to_list() for lo, hi in chunks],
                       [texts.gather(ur[lo:hi]).to_list() for lo, hi in chunks]))
    usim = np.concatenate(sims) if sims else np.empty(0, np.float64)
    sim_all = usim[inverse.reshape(-1)] if usim.shape[0] else np.empty(0, np.float64)
    if split >= 0:  # decontamination: every verified train-eval pair, as find_links returns them
        ok = usim >= threshold
        left, right, sim = ul[ok], ur[ok], usim[ok]
        candidates = int(uniq.shape[0])
    else:
        state = _link_state(n)
        _link_in_order(left_all, right_all, sim_all, threshold, *state)
        left, right, sim, candidates = _linked_edges(state)
    return NearDupLinks(sets=None, left=left, right=right, similarity=sim, cluster=cluster_rows(n, left, right),
                        candidates=candidates)


def _keepers(
    cluster: np.ndarray, *, keep: KeepPolicy, lengths: np.ndarray | None, labels: pl.Series | None
) -> np.ndarray:
    """Row index of the kept row of every cluster with two or more rows, by policy."""
    frame = pl.DataFrame({"row": np.arange(cluster.shape[0], dtype=np.int64), "cluster": cluster})
    if keep == "longest":
        frame = frame.with_columns(length=pl.Series(lengths))
    if keep == "most_common_label":
        frame = frame.with_columns(label=labels.cast(pl.String))
    dup = frame.filter(pl.len().over("cluster") > 1)
    if keep == "earliest":
        chosen = dup.group_by("cluster").agg(pl.col("row").min())
    elif keep == "longest":
        # ties: the earliest of the longest
        chosen = dup.sort(["length", "row"], descending=[True, False]).group_by("cluster").agg(pl.col("row").first())
    elif keep == "most_common_label":
        # the label held by most rows (ties: the label seen first), then its earliest row
        per_label = dup.group_by(["cluster", "label"]).agg(
            n=pl.len(), first=pl.col("row").min()
        ).sort(["n", "first"], descending=[True, False])
        chosen = per_label.group_by("cluster").agg(pl.col("first").first().alias("row"))
    else:
        raise ValueError(f"keep must be 'earliest', 'longest' or 'most_common_label', got {keep!r}")
    return np.sort(chosen["row"].to_numpy()).astype(np.int64)


@dataclass(frozen=True)
class NearDupResult:
    """Per-row outcome of ``near_dup_clusters`` (numpy arrays of length n)."""

    cluster: np.ndarray  # int64, smallest row index in the cluster (own index when alone)
    kept: np.ndarray  # bool
    keeper: np.ndarray  # int64, row index of the kept row of the cluster (own index when kept)
    linked_to: np.ndarray  # int64, row whose verified edge brought this row in (-1 when kept)
    similarity: np.ndarray  # float64, Jaccard of that edge (nan when kept)
    links: NearDupLinks


def near_dup_clusters(
    texts: pl.Series | Sequence[str | None],
    settings: NearDupSettings = DEFAULTS,
    *,
    keep: KeepPolicy = "earliest",
    labels: pl.Series | None = None,
    links_fn: Callable[..., NearDupLinks] | None = None,
) -> NearDupResult:
    """Passes 1-7 on a text column: who is kept, and what every other row was folded into.

    `links_fn(texts, settings, split=...)` runs passes 1-6 (default `find_links`, in this
    process; `find_links_mapped` with a runner's map gives the same links from sharded work)."""
    if keep == "most_common_label" and labels is None:
        raise ValueError("keep='most_common_label' needs a label column")
    texts = texts if isinstance(texts, pl.Series) else pl.Series(values=list(texts), dtype=pl.String)
    links = (links_fn or find_links)(texts, settings)
    n = len(texts)
    lengths = texts.cast(pl.String).fill_null("").str.len_chars().to_numpy() if keep == "longest" else None
    keepers = _keepers(links.cluster, keep=keep, lengths=lengths, labels=labels)
    via, via_sim = _link_tree(n, links.left, links.right, links.similarity, keepers)
    kept = via < 0
    keeper_of_cluster = np.arange(n, dtype=np.int64)
    keeper_of_cluster[links.cluster[keepers]] = keepers
    keeper = np.where(kept, np.arange(n, dtype=np.int64), keeper_of_cluster[links.cluster])
    return NearDupResult(
        cluster=links.cluster, kept=kept, keeper=keeper, linked_to=via, similarity=via_sim, links=links
    )


# ----------------------------------------------------------------------------------------
# Public frame API
# ----------------------------------------------------------------------------------------
def dedupe_near(
    df: pl.DataFrame,
    settings: NearDupSettings = DEFAULTS,
    *,
    text_col: str = "input",
    id_col: str = "row_id",
    label_col: str | None = None,
    keep: KeepPolicy = "earliest",
    links_fn: Callable[..., NearDupLinks] | None = None,
) -> pl.DataFrame:
    """Mark near-duplicate rows; drop nothing (filter on ``kept`` to drop).

    Input columns: `text_col` (String, null/empty allowed: such a row is its own cluster),
    `id_col` (any dtype), `label_col` (optional; needed for keep="most_common_label").
    Output: the input frame, same order, plus
      cluster         Int64    smallest 0-based row position in the row's cluster
                               (a row without duplicates is its own cluster)
      kept            Boolean  one row per cluster, chosen by `keep`
      duplicate_of    id dtype id of the cluster's kept row; null when kept
      similarity      Float64  verified Jaccard of the edge that linked this row into the
                               cluster (breadth-first from the kept row, so for rows
                               linked directly it is the Jaccard to duplicate_of); null when kept
      label_conflict  Boolean  the cluster's `label_col` values differ (false without label_col)
    """
    missing = [c for c in (text_col, id_col, label_col) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"dedupe_near: missing columns {missing}; have {df.columns}")
    labels = df[label_col] if label_col is not None else None
    res = near_dup_clusters(df[text_col], settings, keep=keep, labels=labels, links_fn=links_fn)
    ids = df[id_col]
    out = df.with_columns(
        pl.Series("cluster", res.cluster, dtype=pl.Int64),
        pl.Series("kept", res.kept, dtype=pl.Boolean),
        pl.when(pl.Series(res.kept)).then(None).otherwise(ids.gather(res.keeper)).alias("duplicate_of"),
        pl.Series("similarity", res.similarity, dtype=pl.Float64).fill_nan(None),
    )
    if label_col is None:
        return out.with_columns(label_conflict=pl.lit(False))
    return out.with_columns(
        label_conflict=(pl.col(label_col).n_unique().over("cluster") > 1)
    )


def label_conflicts(deduped: pl.DataFrame, *, id_col: str = "row_id", label_col: str = "label") -> pl.DataFrame:
    """List clusters whose rows carry different labels (one row per cluster).

    Input columns: output of ``dedupe_near`` (cluster, kept, label_conflict) with `id_col`, `label_col`.
    Output columns: cluster, rows (count), ids (list), labels (sorted distinct list), kept_id.
    """
    return (
        deduped.filter(pl.col("label_conflict"))
        .group_by("cluster", maintain_order=True)
        .agg(
            rows=pl.len(),
            ids=pl.col(id_col),
            labels=pl.col(label_col).unique().sort(),
            kept_id=pl.col(id_col).filter(pl.col("kept")).first(),
        )
        .sort("cluster")
    )


def find_contamination(
    train: pl.DataFrame,
    eval: pl.DataFrame,  # noqa: A002 - the name the pipeline uses
    settings: NearDupSettings = DEFAULTS,
    *,
    text_col: str = "input",
    id_col: str = "row_id",
    links_fn: Callable[..., NearDupLinks] | None = None,
) -> pl.DataFrame:
    """Train rows that are near-duplicates (verified Jaccard >= threshold) of an eval row.

    Input columns: `text_col` and `id_col` in both frames. `eval` is only read.
    Output columns: `id_col` (train id), eval_match (eval id; the most similar eval row,
    ties to the earliest), similarity (Float64), in train order; one row per contaminated train row.
    Only train-eval pairs are generated and verified (train-train pairs cost nothing here).
    """
    for name, frame in (("train", train), ("eval", eval)):
        missing = [c for c in (text_col, id_col) if c not in frame.columns]
        if missing:
            raise ValueError(f"find_contamination: {name} lacks columns {missing}")
    nt = train.height
    texts = pl.concat([train[text_col].cast(pl.String), eval[text_col].cast(pl.String)])
    links = (links_fn or find_links)(texts, settings, split=nt)
    pairs = (
        pl.DataFrame({"t": links.left, "e": links.right - nt, "similarity": links.similarity})
        .sort(["t", "similarity", "e"], descending=[False, True, False])
        .unique("t", keep="first", maintain_order=True)
    )
    t_idx = pairs["t"].to_numpy()
    e_idx = pairs["e"].to_numpy()
    return pl.DataFrame(
        {
            id_col: train[id_col].gather(t_idx),
            "eval_match": eval[id_col].gather(e_idx),
            "similarity": pairs["similarity"].cast(pl.Float64),
        }
    )
