"""The HTML diff report opens in a real headless Chromium without errors and shows the
chart and the tables (its script ran: the row table is filled and counted)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from core.diff import diff_report
from core.diff_render import render_html
from core.io import write_text
from tests.core.test_diff import make_pair

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--window-size=1280,2000",
]


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:  # fail, not skip: `make test` installs it
        pytest.fail("chromium is not installed (apt-get install -y chromium); the HTML report test needs a real browser")
    return binary


def browse(report: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *mode, report.resolve().as_uri()],
        capture_output=True, text=True, timeout=90,
    )


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or ("CONSOLE" in line and "rror" in line)]


@pytest.mark.parametrize("chart", ["svg", "png"])
def test_report_renders_in_chromium(tmp_path, chart):
    a, b = make_pair(tmp_path / "snapshots")
    report = diff_report(a, b, root=tmp_path / "snapshots", fail_on=["conflicts"])
    page = write_text(render_html(report, chart=chart), tmp_path / "report.html")
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")  # self-contained

    dom = browse(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    assert 'data-diff-ready="1"' in html  # the script ran to the end
    tag = "<svg" if chart == "svg" else '<img id="class-chart"'
    assert tag in html and 'id="class-chart"' in html
    assert html.count('class="bar"') == len(report["classes"]) if chart == "svg" else "data:image/png;base64," in html
    for table in ("split-table", "removed-table", "added-table", "class-table", "funnel-table", "recipe-table"):
        assert f'id="{table}"' in html, table
    # The row explorer is filled by the script: removed rows first, all three of them shown.
    count = re.search(r'id="row-count"[^>]*data-shown="(\d+)"', html) or re.search(r'data-shown="(\d+)"[^>]*id="row-count"', html)
    assert count and int(count.group(1)) == report["totals"]["removed"] == 3
    rows_table = html[html.index('id="rows-table"'):]
    assert "near_duplicate" in rows_table and "r1" in rows_table
    assert "Blocked: 1 gate(s) failed" in html

    shot = tmp_path / "report.png"
    done = browse(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert done.returncode == 0 and not console_errors(done.stderr)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_script_errors_would_be_caught(tmp_path):
    """The console check is real: a page whose script throws is reported."""
    page = write_text("<html><body><script>null.boom()</script></body></html>", tmp_path / "bad.html")
    res = browse(page, tmp_path / "profile", "--dump-dom")
    assert console_errors(res.stderr)
