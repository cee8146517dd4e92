"""The flow's diff artifact (Prefect renders its markdown) escapes user text as the PR markdown does:
the diff task's markdown, and the note of a first snapshot, whose reason names a path."""

from __future__ import annotations

from markdown_it import MarkdownIt

from core.config import load_config
from flows import tasks
from flows.cache import StageOutput
from tests.conftest import base_config, write_config
from tests.core.test_diff_hostile import _Page, hostile_pair


def _published(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(tasks, "publish_markdown", lambda config, what, markdown, description=None: seen.append(markdown))
    return seen


def _tags(markdown: str) -> set[str]:
    """The tags of the markdown rendered as the Prefect UI or GitHub would (raw HTML passed through)."""
    html = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    page = _Page()
    page.feed(html)
    return set(page.tags)


def test_the_diff_artifact_has_no_live_tag_or_link(tmp_path, monkeypatch):
    root = tmp_path / "snap<img src=x onerror=alert(1)>`x`|"  # (a [ in the root: polars globs it, see docs/reliability.md)
    a, b = hostile_pair(root)
    cfg = load_config(write_config(tmp_path, base_config(tmp_path, ["x.jsonl"], output={"snapshots": str(root)})))
    seen = _published(monkeypatch)
    tasks.diff.fn(cfg, StageOutput("snapshot", str(b), "computed"))
    first = tasks.diff.fn(cfg, StageOutput("snapshot", str(a), "computed"))  # no predecessor: a note naming the index
    assert len(seen) == 2 and "Nothing to compare" in seen[1] and "nothing to compare" in (first.note or "")
    for markdown in seen:
        assert _tags(markdown) <= {"h2", "h3", "p", "strong", "em", "code", "ul", "li", "table", "thead", "tbody", "tr", "th",
                                   "td", "sub"}, markdown[:3000]
