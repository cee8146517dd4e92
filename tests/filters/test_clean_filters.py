"""The clean filters: each drop carries its reason; PII is redacted, not dropped."""

import re

import polars as pl

from filters.blocklist import filter_blocklist, load_terms
from filters.labels import filter_labels
from filters.normalize import normalize_text
from filters.pii import iban_valid, luhn_valid, redact_pii
from filters.quality import filter_by_length, filter_repetition


def frame(texts, outputs=None):
    return pl.DataFrame(
        {"input": texts, "output": outputs or ["x"] * len(texts), "label": outputs or ["x"] * len(texts), "pii": [[] for _ in texts]},
        schema={"input": pl.String, "output": pl.String, "label": pl.String, "pii": pl.List(pl.String)},
    )


def test_normalize_nfkc_and_whitespace():
    out = normalize_text(frame(["  Ｆｕｌｌ\u00a0width\n\ttext\u200b here  "]), unicode_form="NFKC", collapse_whitespace=True)
    assert out["input"][0] == "Full width text here"


def test_length_and_word_bounds_name_their_reason():
    out = filter_by_length(frame(["hi", "a fine message", "x" * 50, "single"]), min_chars=3, max_chars=40, min_words=2)
    assert out["drop_reason"].to_list() == ["too_short", None, "too_long", "too_few_words"]
    assert out["drop_detail"][0] == "2 chars < 3"


def test_repetition():
    out = filter_repetition(
        frame(["card card card card card", "my card my card is lost", "nooooooooo way", "I paid 1000000 pounds"]),
        max_repeated_word_fraction=0.5,
        max_char_run=6,
    )
    assert out["drop_reason"].to_list() == ["repetitive", None, "repetitive", None]


def test_first_reason_wins():
    out = filter_repetition(filter_by_length(frame(["aaaaaaaaaaa"]), min_chars=20, max_chars=40, min_words=1), max_repeated_word_fraction=0.5, max_char_run=6)
    assert out["drop_reason"].to_list() == ["too_short"]


def test_pii_redacted_and_marked_not_dropped():
    out = redact_pii(
        frame([
            "mail me at jane.doe@example.com",
            "call +44 7700 900123 today",
            "card 4111 1111 1111 1111 declined",
            "IBAN GB82 WEST 1234 5698 7654 32 please",
            "order 1234 5678 9012 3456 failed",  # not a Luhn-valid number
            "I topped up £1000 on 12 10 2019",
        ]),
        kinds=["email", "phone", "card", "iban"],
    )
    assert out["input"].to_list() == [
        "mail me at [EMAIL]",
        "call [PHONE] today",
        "card [CARD] declined",
        "IBAN [IBAN] please",
        "order 1234 5678 9012 3456 failed",
        "I topped up £1000 on 12 10 2019",
    ]
    assert out["pii"].to_list() == [["email"], ["phone"], ["card"], ["iban"], [], []]
    assert out.height == 6


def test_pii_kinds_can_be_limited():
    out = redact_pii(frame(["jane@example.com or 4111 1111 1111 1111"]), kinds=["card"])
    assert out["input"][0] == "jane@example.com or [CARD]"


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_blocklist_whole_words_case_insensitive(tmp_path):
    f = tmp_path / "block.txt"
    f.write_text("# comment\nBomb\nburn down\n")
    terms = load_terms([f], ["shoot you"])
    out = filter_blocklist(frame(["I will BOMB it", "a bombastic offer", "they will burn  down the place", "screenshot attached", "I will shoot you"]), terms=terms)
    assert out["drop_reason"].to_list() == ["blocklisted", None, "blocklisted", None, "blocklisted"]
    assert out["drop_detail"][0] == "matched 'bomb'"


def test_blocklist_terms_that_start_or_end_with_punctuation_match_at_token_boundaries():
    terms = load_terms([], ["$$$", "@sshole", "f*ck off", "bomb"])
    texts = [
        "pay $$$ now",          # punctuation on both ends, spaces around
        "$$$",                  # the whole input
        "you @sshole!",         # followed by punctuation
        "(f*ck off)",           # a phrase inside brackets
        "mail me@sshole.com",   # a word character right before: not this token
        "cost$$$ today",        # likewise
        "BOMB.",                # word terms as before: a full stop after is a boundary
        "a bombastic offer",    # ... and a longer word is not the term
        "no money signs $ $ $ here",
    ]
    out = filter_blocklist(frame(texts), terms=terms)
    assert out["drop_reason"].to_list() == ["blocklisted"] * 4 + [None, None, "blocklisted", None, None]
    assert out["drop_detail"].to_list()[:4] + [out["drop_detail"][6]] == [
        "matched '$$$'", "matched '$$$'", "matched '@sshole'", "matched 'f*ck off'", "matched 'bomb'",
    ]


def test_blocklist_word_terms_match_exactly_where_word_boundaries_did():
    terms = ["bomb", "shot", "burn down", "café", "x"]
    words = ["bomb", "BOMBS", "shot", "screenshot", "burn down", "burn\tdown", "café", "cafés", "x", "x-ray", "_x"]
    around = ["", " ", ".", "a", "_", "é", "$", "\n", "9", "'"]
    texts = [f"{a}{w}{b}" for w in words for a in around for b in around]
    alternation = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in sorted(terms, key=len, reverse=True))
    old = rf"(?i)\b(?:{alternation})\b"  # the pattern before terms with punctuation were matched
    out = filter_blocklist(frame(texts), terms=terms)
    assert out["drop_reason"].is_not_null().to_list() == pl.Series(texts).str.contains(old).to_list()
    assert out["drop_reason"].is_not_null().sum() > 100 and out["drop_reason"].is_null().sum() > 100


def test_label_validity():
    df = frame(["a", "b", "c"], ["inform(name[X])", "inform(name[X]", "oops(name[Y])"]).with_columns(label=pl.Series(["inform", "inform", "oops"]))
    out = filter_labels(df, labels=["inform"], output_pattern=r"[a-z_]+\((?:[a-z_]+\[[^\[\]]*\])?\)")
    assert out["drop_reason"].to_list() == [None, "invalid_output", "unknown_label"]
