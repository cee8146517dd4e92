"""core.report: the class-mix chart artifact."""

import pytest
from markdown_it import MarkdownIt

from core.report import class_mix_chart, manifest_markdown


def test_class_mix_chart_bars_follow_the_counts():
    manifest = {
        "snapshot_id": "abc",
        "class_distribution": {"ingested": {"big": 300, "small": 30}, "train": {"big": 150, "small": 30}, "eval": {}},
        "balance_plan": [{"label": "big", "planned": 150, "synth": 0}, {"label": "small", "planned": 45, "synth": 15}],
    }
    md = class_mix_chart(manifest, width=30)
    big = next(line for line in md.splitlines() if line.startswith("| big "))
    small = next(line for line in md.splitlines() if line.startswith("| small "))
    assert "| 300 | 150 | 150 |" in big and big.count("█") == 15 and big.count("░") == 30
    assert "| 30 | 30 | 45 |" in small and small.count("█") == 3 and small.count("░") == 3
    assert md.index("| big ") < md.index("| small ")  # largest class first


def test_artifact_keys_of_any_dataset_name_are_ones_prefect_accepts():
    from prefect.artifacts import MarkdownArtifact

    from flows.tasks import artifact_key

    for name in ("banking77", "banking77_full", "support.v2"):  # core/config.py allows _ and .
        key = artifact_key(name, "class-mix")
        assert MarkdownArtifact(key=key, markdown="x").key == key
    assert artifact_key("banking77_full", "synthesis") == "banking77-full-synthesis"
    with pytest.raises(ValueError, match="lowercase letters, numbers, and dashes"):  # what the rewrite avoids
        MarkdownArtifact(key="banking77_full-synthesis", markdown="x")


def test_the_snapshot_artifacts_show_labels_and_folders_as_text():
    """A label is user text: in the Prefect UI's markdown it stays text (no tag, no link, no table break)."""
    hostile = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) | cell"
    manifest = {
        "snapshot_id": "abc", "name": "t", "config_hash": "h", "code": {"source_sha256": "c"},
        "rows": {"train": 1, "eval": 0, "rejected": 0, "quarantine": 0},
        "stages": [{"stage": "ingest", "rows_in": 1, "kept": 1, "filtered": {}, "quarantined": {}}],
        "class_distribution": {"ingested": {hostile: 1}, "train": {hostile: 1}, "eval": {}},
    }
    for md in (class_mix_chart(manifest), manifest_markdown(manifest, "/data/snap <b>x</b>")):
        html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)  # raw HTML on, as a lax renderer
        assert "<img" not in html and "<b>" not in html and "<a " not in html, html
    row = next(line for line in class_mix_chart(manifest).splitlines() if "onerror" in line)
    assert row.count(" | ") == 4 and "&lt;img src=x onerror=alert(1)&gt;" in row  # the label's | does not split it
