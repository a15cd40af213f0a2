"""The HTML front page (figures/<...>/index.html, rule ``index``) opened in a real headless browser: the page
loads, every figure renders (each image decoded, non-empty), the headline numbers are there and no link
is broken. The browser is a headless Chromium that tests/browser/browser-up.sh installs from the Debian
archive when missing (root and apt-get; like the SLURM tests' cluster); without one these tests skip and
say why. WARMSTART_BROWSER=0 skips them."""
from __future__ import annotations

import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from test_report_figures import rounds, summary
from warmstart.report_captions import front_page
from warmstart.reports import REPORTS

BROWSER_UP = Path(__file__).parent / "browser" / "browser-up.sh"


@pytest.fixture(scope="module")
def browser() -> str:
    if os.environ.get("WARMSTART_BROWSER", "1").strip().lower() in ("0", "no", "false", "off"):
        pytest.skip("WARMSTART_BROWSER=0: browser tests disabled")
    try:
        up = subprocess.run(["bash", str(BROWSER_UP)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("no headless browser: browser-up.sh timed out installing one")
    if up.returncode != 0:
        lines = [line for line in up.stderr.splitlines() if line.strip()]
        pytest.skip(f"no headless browser: {lines[-1] if lines else 'browser-up.sh failed'}")
    return up.stdout.strip().splitlines()[-1]


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A front page over three reports drawn from hand-made tables, as the workflow lays them out."""
    out = tmp_path_factory.mktemp("figures")
    frames = {"summary": summary(), "rounds": rounds()}
    entries = []
    for experiment, name in (("table1", "table"), ("fig5", "correlation"), ("leaderboard", "leaderboard")):
        report = REPORTS[name]
        files = [f"{experiment}.{ext}" for ext in report.outputs]
        report.draw(*(frames[t] for t in report.tables), *(out / f for f in files), title=report.title(experiment))
        entries.append({"experiment": experiment, "title": report.title(experiment), "caption": "what it shows",
                        "files": files + [f"{experiment}.png"]})
    (out / "index.html").write_text(front_page(out, entries, "config/demo.yaml"))
    return out / "index.html"


def test_every_link_of_the_front_page_resolves(page):
    parser = Links()
    parser.feed(page.read_text())
    assert parser.links
    for link in parser.links:
        target, fragment = urldefrag(link)
        if target:
            assert (page.parent / target).is_file(), f"broken link {link!r}"
        else:
            assert fragment in parser.ids, f"broken anchor {link!r}"
    text = page.read_text()
    assert "Table 1's gap" in text and "top arms" in text and "Online cost" in text


def test_the_front_page_loads_in_a_browser_and_every_figure_renders(page, browser):
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's load handler did not run (the page did not load)"
    ok, total = map(int, loaded.groups())
    assert total == 3 and ok == total, f"only {ok} of {total} figures rendered"
    assert "Table 1: does a warm start generalise worse" in dom.stdout
