"""`devin-fleet report`: one self-contained HTML file, checked by parsing it (stdlib
html.parser), and rendered by headless Chromium when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launcher import build_plan, load_manifest
from launcher.cli import cli
from launcher.run.status import ATTENTION, CampaignView, Outcome, SessionView
from launcher.views.report import render_report
from tests.helpers import OUTPUT_COLUMNS, expected_outcome


class Doc(HTMLParser):
    """Every start tag with its attributes, the text per element id, and style contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.text_by_id: dict[str, str] = {}
        self.styles: list[str] = []
        self.open_ids: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if "id" in a:
            self.open_ids.append((a["id"], len(self.stack)))
            self.text_by_id[a["id"]] = ""
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        self.open_ids = [(i, d) for i, d in self.open_ids if d < len(self.stack)]

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.styles.append(data)
        for i, _ in self.open_ids:
            self.text_by_id[i] += data

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(html: str) -> Doc:
    doc = Doc()
    doc.feed(html)
    doc.close()
    return doc


def test_the_report_holds_the_campaign_and_fetches_nothing(
    mixed_campaign: tuple[Path, Path, dict[str, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    path, ledger, truth = mixed_campaign
    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", str(path), "--ledger", str(ledger), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    doc = parse(html)
    want = {k: expected_outcome(t) for k, t in truth.items()}

    # self-contained: no script, no external stylesheet, font, image or frame
    assert not doc.all("script") and not doc.all("link") and not doc.all("iframe")
    assert not any("src" in a for _, a in doc.tags)
    css = "".join(doc.styles)
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    # the only links: sessions and pull requests, http(s)
    hrefs = [a["href"] for a in doc.all("a")]
    session_urls = {t["url"] for t in truth.values()}
    pr_urls = {p["pr_url"] for t in truth.values() for p in t["pull_requests"]}
    assert set(hrefs) == session_urls | pr_urls

    # header and outcome bar: the counts per outcome, segment by segment
    assert doc.text_by_id["campaign"] == "Campaign mig"
    counts = Counter(want.values())
    legend = {a["data-outcome"]: int(a["data-count"]) for a in doc.all("span") if "data-count" in a}
    assert legend == dict(counts)
    assert {a["data-outcome"] for a in doc.all("rect") if a.get("class") == "seg"} == set(counts)
    widths = {a["data-outcome"]: float(a["width"]) for a in doc.all("rect") if a.get("class") == "seg"}
    for o, n in counts.items():
        assert widths[o] == pytest.approx(800 * n / len(want), abs=0.1)

    # ACUs against the budget
    total = round(sum(round(t["acus_consumed"], 2) for t in truth.values()), 2)
    assert doc.text_by_id["acu-text"].startswith(f"{total:.2f} ACUs consumed of a 500 ACU budget")

    # outcomes over time: the stacked columns add up to every launched session, per outcome
    cols = Counter()
    for a in doc.all("rect"):
        if a.get("class") == "col":
            cols[a["data-outcome"]] += int(a["data-count"])
    assert cols == counts

    # per-field summaries, one per output field; the list field counted per element
    fields = [a["data-field"] for a in doc.all("div") if "data-field" in a]
    assert fields == OUTPUT_COLUMNS

    # the session table: a row per session, its outcome, what needs attention first (then in
    # plan order)
    rows = [a for a in doc.all("tr") if "data-key" in a]
    rank = [o.value for o in ATTENTION]
    assert [r["data-key"] for r in rows] == sorted(truth, key=lambda k: (rank.index(want[k]), k))
    assert {r["data-key"]: r["data-outcome"] for r in rows} == want


def test_values_are_escaped_and_only_http_links_are_made(write: Any) -> None:
    path = write(
        "x.yaml",
        """
        version: 1
        campaign: x
        fleets:
          - name: f
            for_each: {items: ["<script>alert(1)</script>"]}
            key: "k"
            session: {prompt: "p"}
        """,
    )
    plan = build_plan(load_manifest(path))
    evil = SessionView(
        "k",
        "f",
        "<script>alert(1)</script>",
        "devin-1",
        "javascript:alert(1)",
        "running",
        "finished",
        Outcome.succeeded,
        [{"pr_url": "javascript:alert(2)", "pr_state": "open"}],
        1.0,
        {"note": "<img src=x onerror=alert(3)>"},
        None,
    )
    html = render_report(plan, CampaignView("x", [evil]), {"k": 1.0}, now=0)
    doc = parse(html)
    assert not doc.all("script") and not doc.all("img") and not doc.all("a")
    assert "&lt;img src=x onerror=alert(3)&gt;" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_the_report(tmp_path: Path, write: Any) -> None:
    path = write(
        "x.yaml",
        """
        version: 1
        campaign: x
        fleets:
          - name: f
            for_each: {items: [a, b, c]}
            session: {prompt: "p"}
        """,
    )
    plan = build_plan(load_manifest(path))
    views = [
        SessionView(k, "f", k, f"devin-{k}", None, "running", "finished", o, [], 1.5, None, None)
        for k, o in zip("abc", (Outcome.succeeded, Outcome.failed, Outcome.running), strict=True)
    ]
    html_path = tmp_path / "r.html"
    html_path.write_text(render_report(plan, CampaignView("x", views), {}, now=0), encoding="utf-8")
    png = tmp_path / "r.png"
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={png}",
            "--window-size=1000,800",
            html_path.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
