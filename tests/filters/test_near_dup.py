"""filters.near_dup: band choice, verification, clusters, keep policies, decontamination,
datasketch compatibility, and recall/precision on a small generated corpus."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash, MinHashLSH

from filters import near_dup as nd

BASE = "please tell me how i can transfer money from my savings account to my checking account today"
NEAR = "please tell me how i can transfer money from my savings account to my checking account tonight"
OTHER = "what is the weather going to be like in boston tomorrow morning before my flight leaves"


def _words(n: int, offset: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(offset, offset + n))


# --- band choice ------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.7, 128), (0.9, 64), (0.8, 256)])
def test_choose_bands_is_recall_oriented(threshold, num_perm):
    bands, rows = nd.choose_bands(threshold, num_perm, min_recall=0.99)
    assert bands * rows <= num_perm
    assert nd.s_curve(threshold, bands, rows) >= 0.99
    # the next longer band no longer reaches the recall target: r is as selective as allowed
    assert nd.s_curve(threshold, num_perm // (rows + 1), rows + 1) < 0.99


def test_choose_bands_default_beats_datasketch_choice():
    assert nd.choose_bands(0.8, 128) == (21, 6)
    assert nd.s_curve(0.8, 9, 13) < 0.75  # datasketch's 9 x 13: the 72%


# --- shingles and verification ----------------------------------------------------------
def test_shingles_normalise_case_and_punctuation():
    assert nd.shingles("Hello, World!  It's me", ngram=3) == [b"hello world it", b"world it s", b"it s me"]
    assert nd.shingles("two words", ngram=3) == [b"two words"]
    assert nd.shingles(None) == [] and nd.shingles("?!") == []
    assert nd.shingles("Ab cd", ngram=3, shingle="char") == [b"ab ", b"b c", b" cd"]


@pytest.mark.parametrize("shingle", ["word", "char"])
def test_kernel_hashes_match_python_reference(shingle):
    texts = [BASE, NEAR.upper(), None, "", "ab", "Café au lait, s'il vous plaît — très bien", "a  b\tc\nd"]
    sets = nd.shingle_hashes(texts, ngram=3, shingle=shingle)
    for i, text in enumerate(texts):
        expected = sorted({nd.fast_hash64(s) for s in nd.shingles(text, ngram=3, shingle=shingle)})
        assert sets.row(i).tolist() == expected


def test_verification_rejects_false_candidate():
    texts = [BASE, NEAR, OTHER]
    sets = nd.shingle_hashes(texts)
    left, right = np.array([0, 0]), np.array([1, 2])  # (0, 2) is a false candidate
    vl, vr, sim = nd.verify_pairs(sets, left, right, threshold=0.8)
    assert vl.tolist() == [0] and vr.tolist() == [1]
    a, b = set(nd.shingles(BASE)), set(nd.shingles(NEAR))
    assert sim[0] == pytest.approx(len(a & b) / len(a | b))


def test_jaccard_below_threshold_is_not_linked():
    # 16 of 20 shingles shared: Jaccard 16/24 = 0.67 < 0.8, although MinHash may well collide
    a = _words(22)
    b = _words(18) + " x1 x2 x3 x4"
    df = pl.DataFrame({"row_id": [1, 2], "input": [a, b]})
    out = nd.dedupe_near(df)
    assert out["kept"].to_list() == [True, True]


# --- clusters, duplicate_of, keep policies ----------------------------------------------
def _toy() -> pl.DataFrame:
    # rows 0, 2, 5: exact duplicates; 1 ~ 3 ~ 6 is a chain (1-3 and 3-6 >= 0.8, 1-6 below);
    # 4 is alone; 7 is empty and 8 null
    # 60 words = 58 shingles; two words changed kill 6: 52/64 = 0.81 per step, 46/70 = 0.66 over two
    chain0 = _words(60)
    chain1 = chain0.replace("w10 ", "y10 ").replace("w40 ", "y40 ")
    chain2 = chain1.replace("w20 ", "y20 ").replace("w50 ", "y50 ")
    return pl.DataFrame(
        {
            "row_id": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
            "input": [BASE, chain0, BASE, chain1, OTHER, BASE, chain2, "", None],
            "label": ["x", "p", "x", "q", "z", "x", "p", "x", "x"],
        }
    )


def test_clusters_and_duplicate_of_on_hand_made_example():
    out = nd.dedupe_near(_toy(), label_col="label")
    assert out.columns[:3] == ["row_id", "input", "label"]
    assert out["cluster"].to_list() == [0, 1, 0, 1, 4, 0, 1, 7, 8]
    assert out["kept"].to_list() == [True, True, False, False, True, False, False, True, True]
    assert out["duplicate_of"].to_list() == [None, None, "a", "b", None, "a", "b", None, None]
    sim = out["similarity"].to_list()
    assert sim[2] == 1.0 and sim[5] == 1.0  # exact duplicates
    assert sim[3] >= 0.8 and sim[6] >= 0.8  # verified edges
    assert sim[0] is None and sim[4] is None
    assert out["duplicate_of"].dtype == pl.String and out["cluster"].dtype == pl.Int64


def test_chain_member_links_through_middle_row():
    df = _toy()
    res = nd.near_dup_clusters(df["input"])
    # row 6 is not similar enough to the kept row 1, so it was linked through row 3
    assert res.keeper[6] == 1 and res.linked_to[6] == 3
    a, c = set(nd.shingles(df["input"][1])), set(nd.shingles(df["input"][6]))
    assert len(a & c) / len(a | c) < 0.8


def test_keep_longest():
    df = pl.DataFrame({"row_id": [10, 11, 12], "input": [BASE, BASE + " !!!", BASE.upper() + "?"]})
    out = nd.dedupe_near(df, keep="longest")
    # all three have the same shingles; the longest text is row 11 (ties would go to the earliest)
    assert out["kept"].to_list() == [False, True, False]
    assert out["duplicate_of"].to_list() == [11, None, 11]


def test_keep_most_common_label():
    df = pl.DataFrame(
        {"row_id": [1, 2, 3, 4], "input": [BASE] * 4, "label": ["a", "b", "b", "a"]}
    )
    # tie between a (first seen row 0) and b: a wins on first appearance
    out = nd.dedupe_near(df, keep="most_common_label", label_col="label")
    assert out["kept"].to_list() == [True, False, False, False]
    df2 = df.with_columns(label=pl.Series(["a", "b", "b", "c"]))
    out2 = nd.dedupe_near(df2, keep="most_common_label", label_col="label")
    assert out2["kept"].to_list() == [False, True, False, False]
    assert out2["duplicate_of"].to_list() == [2, None, 2, 2]
    with pytest.raises(ValueError, match="label"):
        nd.dedupe_near(df, keep="most_common_label")


def test_label_conflict_flag_and_listing():
    out = nd.dedupe_near(_toy(), label_col="label")
    # cluster 0 (a, c, f) all "x": no conflict; cluster 1 (b, d, g) has p and q
    assert out["label_conflict"].to_list() == [False, True, False, True, False, False, True, False, False]
    listing = nd.label_conflicts(out, id_col="row_id", label_col="label")
    assert listing["cluster"].to_list() == [1]
    assert listing["labels"].to_list() == [["p", "q"]]
    assert listing["ids"].to_list() == [["b", "d", "g"]] and listing["kept_id"].to_list() == ["b"]
    assert nd.dedupe_near(_toy())["label_conflict"].sum() == 0  # no label column: never flagged


def test_empty_and_null_rows_are_singletons():
    df = pl.DataFrame({"row_id": [1, 2, 3, 4, 5], "input": [None, "", None, "...", ""]})
    out = nd.dedupe_near(df)
    assert out["kept"].all() and out["cluster"].to_list() == [0, 1, 2, 3, 4]


def test_invalid_settings_are_reported_together():
    with pytest.raises(ValueError, match="threshold.*shingle"):
        nd.NearDupSettings(threshold=1.5, shingle="token")


def test_one_settings_object_reaches_every_pass():
    """A looser threshold handed to dedupe_near folds more rows, as it does when given to find_links."""
    df = _toy()
    strict, loose = nd.NearDupSettings(threshold=0.95), nd.NearDupSettings(threshold=0.3, ngram=2)
    assert (~nd.dedupe_near(df, loose)["kept"]).sum() > (~nd.dedupe_near(df, strict)["kept"]).sum()
    assert nd.find_links(df["input"], loose).left.shape[0] > nd.find_links(df["input"], strict).left.shape[0]


# --- decontamination --------------------------------------------------------------------
def test_find_contamination_matches_eval_and_leaves_eval_alone():
    train = pl.DataFrame({"row_id": [100, 101, 102, 103], "input": [OTHER, NEAR, _words(25), BASE]})
    eval_ = pl.DataFrame({"row_id": ["e1", "e2"], "input": [BASE, _words(40, 1000)]})
    before = eval_.clone()
    hits = nd.find_contamination(train, eval_)
    assert eval_.equals(before)
    assert hits.columns == ["row_id", "eval_match", "similarity"]
    assert hits["row_id"].to_list() == [101, 103]
    assert hits["eval_match"].to_list() == ["e1", "e1"]
    assert hits["similarity"].to_list()[1] == 1.0 and hits["similarity"].to_list()[0] >= 0.8


# --- datasketch compatibility -----------------------------------------------------------
TEXTS = [BASE, NEAR, OTHER, "short one", None, "Ünïcödé words, with PUNCTUATION; and more words here"]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("shingle", ["word", "char"])
def test_sha1_mode_is_bit_identical_to_datasketch(scheme, shingle):
    sig = nd.signatures(TEXTS, num_perm=64, seed=7, hash="sha1", scheme=scheme, shingle=shingle, ngram=3)
    for i, text in enumerate(TEXTS):
        m = MinHash(num_perm=64, seed=7, scheme=scheme)  # datasketch's default sha1_hash32
        for s in nd.shingles(text, ngram=3, shingle=shingle):
            m.update(s)
        assert sig.dtype == m.hashvalues.dtype
        assert np.array_equal(sig[i], m.hashvalues)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_fast_mode_is_bit_identical_to_datasketch_with_our_hashfunc(scheme):
    sig = nd.signatures(TEXTS, num_perm=128, seed=1, scheme=scheme)
    for i, text in enumerate(TEXTS):
        m = MinHash(num_perm=128, seed=1, scheme=scheme, hashfunc=nd.fast_hash32)
        m.update_batch(nd.shingles(text))
        assert np.array_equal(sig[i], m.hashvalues)


def test_default_scheme_matches_plain_datasketch_minhash():
    sig = nd.signatures([BASE], hash="sha1")
    m = MinHash(num_perm=128, seed=1)
    m.update_batch(nd.shingles(BASE))
    assert np.array_equal(sig[0], m.hashvalues)


def test_lean_minhash_in_datasketch_lsh_finds_planted_duplicate():
    sig = nd.signatures([BASE, OTHER, NEAR], num_perm=128, seed=1)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    lsh.insert("base", nd.to_lean_minhash(sig[0], seed=1))
    lsh.insert("other", nd.to_lean_minhash(sig[1], seed=1))
    assert lsh.query(nd.to_lean_minhash(sig[2], seed=1)) == ["base"]
    # and a user's own datasketch MinHash of the same shingles lands on the same buckets
    m = MinHash(num_perm=128, seed=1, hashfunc=nd.fast_hash32)
    m.update_batch(nd.shingles(NEAR))
    assert lsh.query(m) == ["base"]


# --- shard functions give what the in-process path uses ---------------------------------
def test_sharded_passes_agree_with_in_process_path():
    texts = [BASE, NEAR, OTHER, BASE, _words(30)]
    bands, rows = nd.choose_bands(0.8, 128)
    shard_a = nd.band_shard(nd.sign_shard(texts[:2]), bands=bands, rows=rows, row_offset=0)
    shard_b = nd.band_shard(nd.sign_shard(texts[2:]), bands=bands, rows=rows, row_offset=2)
    records = pl.concat([shard_a, shard_b])
    assert records.height == bands * len(texts)
    pairs = set()
    for (band,), part in records.partition_by("band", as_dict=True).items():  # the shuffle
        left, right = nd.candidate_pairs(part["band_key"].to_numpy(), part["row"].to_numpy())
        pairs |= set(zip(left.tolist(), right.tolist()))
    assert (0, 3) in pairs and (0, 1) in pairs
    sets = nd.shingle_hashes(texts)
    pl_, pr, _ = nd.verify_pairs(sets, *map(np.array, zip(*sorted(pairs))), threshold=0.8)
    assert nd.cluster_rows(len(texts), pl_, pr).tolist() == nd.find_links(texts).cluster.tolist()


# --- recall and precision on a generated corpus -----------------------------------------
def test_recall_and_precision_on_generated_corpus():
    from bench.near_dup_corpus import make_corpus

    corpus, planted = make_corpus(3000, seed=1)
    links = nd.find_links(corpus["text"])
    truth = planted.filter(pl.col("jaccard") >= 0.8)
    assert truth.height > 150
    found = links.cluster[truth["a"].to_numpy()] == links.cluster[truth["b"].to_numpy()]
    assert found.mean() >= 0.99
    band = (truth["jaccard"] < 0.85).to_numpy()
    assert band.sum() > 20 and found[band].mean() >= 0.97
    # precision: every reported edge checked against Jaccard over the shingle strings
    texts = corpus["text"].to_list()
    true_sim = [
        len(set(nd.shingles(texts[a])) & set(nd.shingles(texts[b])))
        / len(set(nd.shingles(texts[a])) | set(nd.shingles(texts[b])))
        for a, b in zip(links.left.tolist(), links.right.tolist())
    ]
    assert len(true_sim) > 150
    assert np.mean(np.array(true_sim) >= 0.8) >= 0.999
    assert np.allclose(true_sim, links.similarity)


# --- sharded driver (the units of work a Ray runner maps) --------------------------------
def _sample_texts() -> pl.Series:
    import json

    texts = []
    for line in open("data/banking77/raw/messages.jsonl", errors="replace"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            texts.append(rec["text"])
    # exact copies, case variants and rows without shingles: every kind of cluster and edge
    return pl.Series(texts + texts[:700] + [t.upper() for t in texts[700:1200]] + ["", None, "?"], dtype=pl.String)


@pytest.mark.parametrize("split", [-1, 2500])
def test_sharded_passes_give_the_in_process_links(split):
    texts = _sample_texts()
    calls = []

    def counting_map(fn, *iterables):
        calls.append(fn.func.__name__)
        return list(map(fn, *iterables))

    a = nd.find_links(texts, split=split)
    b = nd.find_links_mapped(texts, map_fn=counting_map, shards=3, split=split, pair_chunk=500)
    assert a.left.shape[0] > 100  # the sample has plenty of duplicates to link
    for field in ("left", "right", "similarity", "cluster"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.candidates == b.candidates
    # signing per shard, grouping per band, verifying per chunk of pairs: three kinds of work
    assert calls[:2] == ["shard_band_keys", "band_candidates"] and set(calls[2:]) == {"text_pair_jaccard"}


def test_dedupe_near_with_sharded_links_marks_the_same_rows():
    texts = _sample_texts()
    df = pl.DataFrame({"input": texts, "row_id": [f"r{i}" for i in range(len(texts))], "label": ["x"] * len(texts)})
    mapped = lambda t, settings, **kw: nd.find_links_mapped(t, settings, map_fn=map, shards=4, **kw)  # noqa: E731
    assert nd.dedupe_near(df, label_col="label").equals(nd.dedupe_near(df, label_col="label", links_fn=mapped))
