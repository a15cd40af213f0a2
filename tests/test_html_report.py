"""The HTML report: each report's own caption (``snakemake --report``: one per report, written from its
registry entry, on every figure and table of its experiments), and the front page
(figures/<...>/index.html, rule ``index``) opened in a real headless browser: the page loads, every figure
renders (each image decoded, non-empty), the headline numbers are there and no link is broken. The
browser is a headless Chromium that tests/browser/browser-up.sh installs from the Debian archive when
missing (root and apt-get; like the SLURM tests' cluster); without one the browser test skips and says
why. WARMSTART_BROWSER=0 skips it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from test_report_figures import rounds, summary
from warmstart.plan.experiments import EXPERIMENT_KINDS
from warmstart.reports import REPORTS
from warmstart.reports.captions import caption, caption_template, front_page

BROWSER_UP = Path(__file__).parent / "browser" / "browser-up.sh"
REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report" / "captions"
DEMO = REPO / "config" / "demo.yaml"  # its experiments use every report


def test_every_report_has_its_own_caption_written_from_its_registry_entry():
    assert sorted(p.stem for p in CAPTIONS.glob("*.rst")) == sorted(REPORTS.names()), \
        "one caption per report: python -m warmstart.reports captions workflow/report/captions"
    for name, report in REPORTS.items():
        assert report.shows, f"report {name!r} does not say what it shows"
        assert (CAPTIONS / f"{name}.rst").read_text() == caption_template(name, report), \
            f"{name}.rst is stale: python -m warmstart.reports captions workflow/report/captions"


def test_a_reports_caption_renders_the_experiments_caption_then_the_reports_own():
    """Rendered as ``snakemake --report`` renders it (Jinja with the job's params, then reStructuredText)."""
    import yaml
    from docutils.core import publish_parts
    from jinja2 import Template

    config = yaml.safe_load(DEMO.read_text())
    for experiment, exp in config["experiments"].items():
        report = REPORTS[exp["report"]]
        params = SimpleNamespace(caption=caption(experiment, exp, report, EXPERIMENT_KINDS[exp["kind"]]))
        job = SimpleNamespace(params=params, wildcards=SimpleNamespace(experiment=experiment))
        rst = Template((CAPTIONS / f"{exp['report']}.rst").read_text()).render(snakemake=job)
        html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["body"]
        assert "system-message" not in html, html  # valid reStructuredText
        assert f"<strong>{experiment}</strong> (experiment kind" in html and "<em>Protocol.</em>" in html
        own = f'<em>Report</em> <tt class="docutils literal">{exp["report"]}</tt>'
        assert html.index("<em>Protocol.</em>") < html.index(own)
        assert report.shows in html


PRODUCERS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
repo, config, experiments = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(snakefile=repo / "Snakefile", workdir=Path.cwd(), resource_settings=ResourceSettings(),
                            config_settings=ConfigSettings(configfiles=[config]))._workflow
    figures = workflow.config["figures_dir"]
    print(json.dumps({e: [[r.name, str(f.flags["report"].caption)] for r in workflow.rules for f in r.output
                          if f.flags.get("report") and r.is_producer(f"{figures}/{e}.png")] for e in experiments}))
"""


def test_every_figure_and_table_goes_into_the_html_report_with_its_reports_caption(tmp_path):
    import yaml

    experiments = yaml.safe_load(DEMO.read_text())["experiments"]
    out = subprocess.run([sys.executable, "-c", PRODUCERS, str(REPO), str(DEMO), *experiments], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    producers = json.loads(out.stdout.strip().splitlines()[-1])
    for experiment, exp in experiments.items():
        assert len(producers[experiment]) == 1, (experiment, producers[experiment])
        rule, caption_file = producers[experiment][0]
        assert rule == f"report_{exp['report']}"
        assert Path(caption_file).resolve() == CAPTIONS / f"{exp['report']}.rst", (experiment, caption_file)


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
