"""User text in markdown that stays text: no tag, link, image, table break or formatting of its own.

    f"| {md_text(label)} | {n} |"          # a table cell, or any inline text (list items, headings)
    f"- model {md_code(path)}"             # an inline code span (not inside a table: see md_code)

Row text, labels, reviewer names and file names end up in PR comments (GitHub renders the
markdown) and in Prefect markdown artifacts (the UI renders it), so each piece is escaped where
it is placed. CommonMark lets a backslash escape any ASCII punctuation and renders it as the
character alone, so escaping changes what is shown by nothing:

- `&`, `<`, `>` become entities: no raw HTML (`<script>`, `<img onerror>`, comments) and no
  `<https://...>` autolink; `&lt;` in the text shows as `&lt;`, not as `<`;
- `[` and `]` are escaped: no link, image, footnote or reference definition (`[x](javascript:...)`);
- `|` (a table cell's end), backticks (code spans), `*`, `~`, `$` (GitHub's math), `#`, `!` and
  `_` where it could open or close emphasis (not inside a word: `too_short` stays as it is);
- GitHub's extended autolinks are broken up: `://` becomes `\\://`, `www.` becomes `www\\.`, `@`
  becomes `\\@` (no e-mail link, no mention);
- a bullet, an ordered list's number or a `---` rule at the start is escaped: the text can open
  a list item or follow one and stay text;
- line breaks (`\\r`, `\\n`, U+2028/9, ...) become spaces: a value cannot end its line, its table
  row or its list item and start a block of its own.
"""

from __future__ import annotations

import re

# Line and paragraph breaks of any kind: markdown only breaks on \r and \n, but a value is one line.
_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Punctuation escaped wherever it stands (each has a meaning in CommonMark, GFM or on GitHub).
_PUNCT = set("\\`*~[]|$#!@")
_AUTOLINK = re.compile(r"(?i)(?<=www)\.|:(?=//)")
# What would start a block at the start of a line (a list item's text): a bullet, an ordered
# list's `1.` / `1)`, a `---` rule. The character escaped is the marker.
_BLOCK_START = re.compile(r"[ \t]*(?:(?P<bullet>[-+])(?=[ \t]|$)|\d{1,9}(?P<ordered>[.)])(?=[ \t]|$)|(?P<rule>-)(?=(?:[ \t]*-){2,}[ \t]*$))")


def _one_line(value: object) -> str:
    return _BREAKS.sub(" ", "" if value is None else str(value))


def _underscore_escaped(text: str, i: int) -> bool:
    """A run of `_` between two letters or digits can neither open nor close emphasis."""
    start, end = i, i
    while start > 0 and text[start - 1] == "_":
        start -= 1
    while end < len(text) and text[end] == "_":
        end += 1
    inside = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return not inside


def md_text(value: object, limit: int | None = None) -> str:
    """`value` as markdown inline text (a table cell, a list item): shown exactly as written, on one line.

    `limit` cuts the text (before escaping) to that many characters, the last one an ellipsis.
    """
    text = _one_line(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    escaped = {m.start() for m in _AUTOLINK.finditer(text)}
    block = _BLOCK_START.match(text)
    if block:
        escaped.add(next(block.start(g) for g in ("bullet", "ordered", "rule") if block.group(g)))
    out = []
    for i, ch in enumerate(text):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _PUNCT or i in escaped or (ch == "_" and _underscore_escaped(text, i)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def md_code(value: object) -> str:
    """`value` as an inline code span, backticks included: shown verbatim, whatever it holds.

    The fence is one backtick longer than the longest run inside, with a space either side when
    the value starts or ends with a backtick (CommonMark strips one). Not for table cells: GFM
    splits a row at `|` even inside a code span; use md_text there.
    """
    text = _one_line(value)
    if not text:
        return "` `"
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"
