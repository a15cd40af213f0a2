"""The README a newcomer reads first and the reference in docs/: every relative link (Markdown links and
images) of README.md and docs/*.md resolves to a file of the checkout, the README's first screen says
what the project answers, the two commands and the headline result, and every docs page is reachable
from docs/index.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for link in links(page):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue  # web links and same-page anchors
        target = (page.parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{page.relative_to(ROOT)}: broken link {link!r}"


def test_the_readme_first_screen_answers_what_how_and_the_result():
    first_screen = "\n".join(ROOT.joinpath("README.md").read_text().splitlines()[:40])
    assert "retrain from scratch" in first_screen  # the question it answers
    assert "make demo" in first_screen and "make test" in first_screen
    assert "The headline result" in first_screen and "warm start" in first_screen
    assert len(ROOT.joinpath("README.md").read_text().splitlines()) < 120  # five minutes


def test_every_docs_page_is_linked_from_the_index():
    linked = {Path(link.split("#")[0]).name for link in links(ROOT / "docs" / "index.md")}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs pages missing from docs/index.md: {sorted(pages - linked)}"
