"""The real rows most like a text: TF-IDF over words and word pairs, cosine similarity.

    index = NearestRows(train.select("row_id", "input", "label").to_dicts())
    index.nearest(["my card still hasn't come"], k=16)     # per text: 16 rows, the closest last

Label-check templates with `shots: nearest` show each text the real rows closest to it
instead of one fixed sample (demonstrations chosen per input, as in kNN in-context
learning). A small model that labels among 77 intents from a fixed handful of examples
is close to guessing; with the nearest real rows in front of it, it mostly recognises
the intent (docs/synthesis.md has the measurements).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"\w+")


def features(text: str) -> set[str]:
    """Lowercased words and adjacent word pairs."""
    words = _WORD.findall(text.lower())
    return {*words, *(f"{a} {b}" for a, b in zip(words, words[1:]))}


def _normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


class NearestRows:
    """A TF-IDF index over rows' `field` (binary term counts, smoothed idf, unit rows)."""

    def __init__(self, rows: Sequence[dict], *, field: str = "input"):
        self.rows = list(rows)
        self.position = {r["row_id"]: i for i, r in enumerate(self.rows)}
        self.vocab: dict[str, int] = {}
        terms = [[self.vocab.setdefault(f, len(self.vocab)) for f in sorted(features(r[field]))] for r in self.rows]
        df = np.bincount(np.fromiter((t for ts in terms for t in ts), dtype=np.int64), minlength=len(self.vocab))
        self.idf = (np.log((1 + len(self.rows)) / (1 + df)) + 1).astype(np.float32)
        self.matrix = self._unit_tfidf(terms)

    def vectors(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Unit TF-IDF vectors of texts over the index's vocabulary (unknown terms carry nothing)."""
        return self._unit_tfidf([sorted(self.vocab[f] for f in features(t) if f in self.vocab) for t in texts])

    def _unit_tfidf(self, terms: list[list[int]]) -> sp.csr_matrix:
        """Rows of binary term counts (vocabulary ids per text) weighted by idf, scaled to unit length."""
        indptr = np.cumsum([0, *map(len, terms)])
        indices = [t for ts in terms for t in ts]
        counts = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(terms), len(self.vocab)))
        return _normalize(counts @ sp.diags(self.idf))

    def nearest(self, texts: Sequence[str], k: int, *, exclude: Sequence[set[str] | Sequence[str]] | None = None,
                chunk: int = 512) -> list[list[dict]]:
        """Per text the k most similar rows, least similar first (the closest sits next to the text).

        Ties go to the earlier row, so the answer depends on the inputs alone. `exclude`
        gives per text the row ids it must not be shown (e.g. the rows it was written from).
        """
        k = min(k, len(self.rows))
        out: list[list[dict]] = []
        order_key = np.arange(len(self.rows))
        for a in range(0, len(texts), chunk):
            sims = (self.vectors(texts[a : a + chunk]) @ self.matrix.T).toarray()
            for i, s in enumerate(sims):
                banned = [self.position[r] for r in (exclude[a + i] if exclude else ()) if r in self.position]
                s[banned] = -np.inf
                top = np.lexsort((order_key, -s))[: k + len(banned)]
                top = [j for j in top if np.isfinite(s[j])][:k]
                out.append([self.rows[j] for j in reversed(top)])
        return out
