"""Hostile strings in a dataset diff: row text, labels, the reviewer's name and note, config keys,
file and template names. Rendered to markdown (and from there to HTML, as GitHub or the Prefect UI
would) and to the HTML report, no tag, link or image of theirs is live, no script of theirs runs,
and each still reads as written."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
from markdown_it import MarkdownIt

from core.diff import diff_report
from core.diff_render import render_html, render_markdown
from core.io import write_text
from core.markdown import md_code, md_text
from core.review import record_review
from core.schema import QUARANTINE_SCHEMA, StageCounts
from core.snapshot import write_snapshot
from tests.core.test_diff import dropped, rows
from tests.core.test_diff_html import browse, console_errors

# Each one tries to run a script that marks the page (data-pwned), or to be a live link, an image,
# a table break or formatting.
PWN = "document.documentElement.setAttribute('data-pwned','1')"
HOSTILE = [
    f"</td><script>{PWN}</script>",
    f'<img src=x onerror="{PWN}">',
    f"[x](javascript:{PWN})",
    "![i](https://evil.example/i.png)",
    "<https://evil.example/auto>",
    "see https://evil.example/bare and www.evil.example and mail me@evil.example",
    "<!-- an HTML comment that never closes",
    f"</script><script>{PWN}</script>",
    "line\u2028separator\u2029paragraph",
    "a | b || c",
    "`code` and ``` fence",
    "**bold** _em_ ~~gone~~ $x^2$ # not a heading",
    "&lt;script&gt; &amp; \\ backslash",
    "x" * 300,
]
LABELS = [f"<img src=x onerror=\"{PWN}\">", "a|b", "[bold]x[/]", "`tick`", f"[l](javascript:{PWN})"]


def hostile_pair(root: Path) -> tuple[Path, Path]:
    """Two snapshots of a dataset whose every user-controlled string is hostile."""
    name = "demo"  # a dataset name is [a-z0-9_.-]: config validation

    def snap(train: pl.DataFrame, rejected: pl.DataFrame, config: dict, extra: dict, inputs: list[dict]) -> Path:
        n = train.height + rejected.height
        stages = [StageCounts("dedupe", n, train.height, filtered=dict(rejected.group_by("reason").len().iter_rows())).check()]
        return write_snapshot(root, name, train=train, eval=rows([], "eval"), rejected=rejected,
                              quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA), stages=stages, config=config,
                              config_hash="c", inputs=inputs, extra=extra)

    a_train = rows([(f"a{i}", f"plain message {i}", LABELS[i % len(LABELS)]) for i in range(10)]
                   + [(f"h{i}", text, LABELS[i % len(LABELS)]) for i, text in enumerate(HOSTILE)])
    a = snap(a_train, dropped(rows([("z1", "short", LABELS[0])]), "clean", "too_short"),
             {"balance": {"weights": {LABELS[0]: 1}}}, {"model": "m1", "templates": {LABELS[1]: {"hash": "h1"}}},
             [{"split": "train", "path": f"data/{LABELS[0]}.jsonl", "sha256": "aa", "bytes": 1}])
    b_train = rows([("a0", HOSTILE[2], LABELS[1])]  # input and label changed
                   + [(f"a{i}", f"plain message {i}", LABELS[i % len(LABELS)]) for i in range(1, 3)]
                   + [(f"n{i}", text, LABELS[(i + 1) % len(LABELS)]) for i, text in enumerate(HOSTILE)])
    b_rejected = pl.concat([
        dropped(rows([(f"a{i}", f"plain message {i}", LABELS[i % len(LABELS)]) for i in range(3, 10)]), "dedupe", "near_duplicate",
                "n1", "c1"),
        *[dropped(rows([(f"h{i}", text, LABELS[i % len(LABELS)])]), "dedupe", "near_duplicate", f"n{i}", f"c{i}")
          for i, text in enumerate(HOSTILE)],
        dropped(rows([("z1", "short", LABELS[0])]), "clean", "too_short"),
    ])
    b = snap(b_train, b_rejected, {"balance": {"weights": {LABELS[0]: 2, LABELS[4]: 1}}},
             {"model": f"models/{LABELS[3]}", "templates": {LABELS[1]: {"hash": "h2"}}},
             [{"split": "train", "path": f"data/{LABELS[0]}.jsonl", "sha256": "bb", "bytes": 2}])
    record_review(b, "approve", by=f"</td><script>{PWN}</script> <img src=x onerror=\"{PWN}\">",
                  note=f"[note](javascript:{PWN}) <!--", root=root)
    return a, b


def pwned(dom: str) -> bool:
    """Whether a script of the data's ran: it marks the page's <html> element."""
    return re.search(r"<html[^>]*data-pwned", dom) is not None


class _Page(HTMLParser):
    """The tags, attributes and text of an HTML fragment."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [k for k, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.tags.append("!--")


def markdown_to_html(md: str) -> str:
    """Markdown rendered as GitHub renders a comment before sanitizing it: CommonMark, GFM tables and
    strikethrough, raw HTML passed through."""
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(md)


# Tags the diff's own markdown makes; anything else came from the data.
OWN_TAGS = {"h2", "h3", "p", "strong", "em", "code", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "sub"}


def test_user_text_in_markdown_is_inert_and_reads_as_written():
    for value in HOSTILE + LABELS:
        html = markdown_to_html(f"- {md_text(value)}\n\n| h |\n|---|\n| {md_text(value)} |\n\n{md_code(value)}\n")
        page = _Page()
        page.feed(html)
        assert set(page.tags) <= {"ul", "li", "table", "thead", "tbody", "tr", "th", "td", "p", "code"}, (value, html)
        assert not page.attrs, (value, html)
        cells = re.findall(r"<td>(.*?)</td>", html, re.S)
        assert len(cells) == 1, (value, html)  # a pipe did not split the cell
        flat = " ".join(value.replace("\u2028", " ").replace("\u2029", " ").split())
        text = "".join(page.text)
        assert text.count(flat) == 3, (value, text)  # in the list item, the cell and the code span, unchanged
    # GitHub's own autolinks (scheme URLs, www., e-mail) are broken up by escapes that render as nothing.
    assert "\\://" in md_text("https://x.example") and "www\\." in md_text("www.x.example") and "\\@" in md_text("a@b.example")
    assert md_text("too_short near_duplicate") == "too_short near_duplicate"  # intraword underscores stay readable


def test_markdown_diff_with_hostile_strings_has_no_live_tag_link_or_image(tmp_path):
    a, b = hostile_pair(tmp_path)
    report = diff_report(a, b, root=tmp_path, fail_on=["share=0", "conflicts"])
    md = render_markdown(report)
    html = markdown_to_html(md)
    page = _Page()
    page.feed(html)
    assert set(page.tags) <= OWN_TAGS, sorted(set(page.tags) - OWN_TAGS)
    assert set(page.attrs) <= {"style"}, page.attrs  # the tables' own column alignment
    assert "<a " not in html and "<img" not in html and "<script" not in html
    text = "".join(page.text)
    # The hostile strings are shown, as text: the reviewer, a label in a gate line, a row.
    assert "by </td><script>" in text and "class '<img src=x onerror=" in text
    assert "[x](javascript:" in text and "| a|b |" not in md and "a|b" in text
    assert "`code` and ``` fence" in text and "**bold** _em_ ~~gone~~ $x^2$ # not a heading" in text
    # Every table row has as many cells as its header: no pipe broke a table.
    for table in re.findall(r"<table>.*?</table>", html, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", tr)) for tr in re.findall(r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, table[:500]

    # In a real browser: the markdown's HTML runs no script of the data's.
    shown = write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{html}"
                       "<script>document.documentElement.setAttribute('data-ready','1')</script></body></html>", tmp_path / "md.html")
    dom = browse(shown, tmp_path / "profile-md", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-ready="1"' in dom.stdout and not pwned(dom.stdout)


def test_html_report_with_hostile_strings_runs_no_script_and_its_explorer_works(tmp_path):
    a, b = hostile_pair(tmp_path)
    report = diff_report(a, b, root=tmp_path, fail_on=["share=0"])
    page = write_text(render_html(report), tmp_path / "report.html")
    source = page.read_text()
    embedded = source[source.index('id="diff-data">'):source.index("</script>", source.index('id="diff-data">'))]
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in embedded.removeprefix('id="diff-data">'), raw  # JSON embedded as inert text
    assert json.loads(embedded.removeprefix('id="diff-data">')) == json.loads(json.dumps(
        {"rows": report["rows"], "rows_truncated": report["rows_truncated"]}, default=str))

    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    assert 'data-diff-ready="1"' in html and not pwned(html)  # the explorer's script ran; none of the data's
    assert html.count("<script") == 2  # the report's JSON and its script: no other
    assert "<img" not in html  # the SVG chart has no image; an <img> would be the data's
    count = re.search(r'id="row-count"[^>]*data-shown="(\d+)"', html) or re.search(r'data-shown="(\d+)"[^>]*id="row-count"', html)
    assert count and int(count.group(1)) == report["totals"]["removed"] == 7 + len(HOSTILE)
    # The explorer shows the hostile rows as text (the DOM dump escapes it again).
    explorer = html[html.index('id="rows-table"'):]
    for text in ("&lt;!-- an HTML comment that never closes", "&lt;/script&gt;&lt;script&gt;", "[x](javascript:", "a | b || c"):
        assert text in explorer, text
