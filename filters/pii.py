"""PII redaction: emails, phone numbers, payment card numbers and IBANs.

Input columns: input. Output columns: input (redacted), pii (list of kinds found).
A row with PII is redacted and marked, never dropped: the intent of "my card
4111 1111 1111 1111 was declined" survives as "my card [CARD] was declined".

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so
amounts, dates and reference numbers in ordinary messages are left alone. Phone
numbers need 9 to 15 digits with a leading + or area-code brackets or separators.
A vectorized polars pre-check finds the few rows that may hold PII; only those go
through the Python validators.
"""

from __future__ import annotations

import re

import polars as pl

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
CARD = r"\b\d(?:[ -]?\d){12,18}\b"
IBAN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"
PHONE = r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,6}(?:[ .-]\d{2,6}){1,4}\b|\+\d{9,15}\b"

PATTERNS = {"email": EMAIL, "iban": IBAN, "card": CARD, "phone": PHONE}
TOKENS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]"}


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def phone_valid(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    has_marker = candidate.lstrip().startswith("+") or "(" in candidate
    groups = len(re.findall(r"\d+", candidate))
    return 9 <= digits <= 15 and (has_marker or groups >= 3 or (groups >= 2 and digits >= 10))


def _card_match(match: re.Match) -> bool:
    # "+49 151 ..." is a phone number even when its digits happen to pass the Luhn check.
    preceded_by_plus = match.start() > 0 and match.string[match.start() - 1] == "+"
    return not preceded_by_plus and luhn_valid(match.group(0))


VALIDATORS = {
    "card": _card_match,
    "iban": lambda m: iban_valid(m.group(0)),
    "phone": lambda m: phone_valid(m.group(0)),
    "email": lambda m: True,
}


def redact(text: str, kinds: list[str]) -> tuple[str, list[str]]:
    """Redact the given PII kinds in one text; return the text and the kinds found (in order of kinds)."""
    found = []
    for kind in ("email", "iban", "card", "phone"):  # most specific first: a card number also looks like a phone
        if kind not in kinds:
            continue
        validator = VALIDATORS[kind]
        hit = False

        def sub(match: re.Match, validator=validator) -> str:
            nonlocal hit
            if validator(match):
                hit = True
                return TOKENS[kind]
            return match.group(0)

        text = re.sub(PATTERNS[kind], sub, text)
        if hit:
            found.append(kind)
    return text, found


def redact_pii(df: pl.DataFrame, *, kinds: list[str]) -> pl.DataFrame:
    """Redact PII in `input` and record the kinds found in `pii`."""
    if not kinds:
        return df
    maybe = pl.col("input").str.contains("|".join(f"(?:{PATTERNS[k]})" for k in kinds))
    df = df.with_row_index("_pos")
    candidates = df.filter(maybe)
    if candidates.height == 0:
        return df.drop("_pos")
    results = [redact(t, kinds) for t in candidates["input"].to_list()]
    patch = pl.DataFrame(
        {
            "_pos": candidates["_pos"],
            "_text": [r[0] for r in results],
            "_kinds": [r[1] for r in results],
        },
        schema={"_pos": pl.UInt32, "_text": pl.String, "_kinds": pl.List(pl.String)},
    )
    df = df.join(patch, on="_pos", how="left", maintain_order="left")
    return df.with_columns(
        input=pl.coalesce("_text", "input"),
        pii=pl.when(pl.col("_kinds").list.len() > 0)
        .then(pl.concat_list(pl.col("pii"), pl.col("_kinds")).list.unique(maintain_order=True))
        .otherwise(pl.col("pii")),
    ).drop("_pos", "_text", "_kinds")
