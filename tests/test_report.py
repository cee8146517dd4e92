"""curate.report: the class-mix chart artifact."""

from curate.report import class_mix_chart


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
