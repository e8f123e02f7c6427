"""The lecture decks: built offline from slides/src, opened in a real headless Chromium from disk.

Each deck must open with no console error and no request leaving file:/data:, have the slide count
the build reported (10 to 20), every slide inside reveal's 960 × 700 area, every figure of its
source on a slide and loaded, speaker notes on every slide, and print to a PDF of one page per
slide; and no deck may contain solution code or hidden tests. The browser
is driven through the DevTools protocol (websocket-client), so nothing is downloaded. Without
Chromium the browser test skips, except under CI=true, where it fails. LABKIT_DECKS=01-flops,02-kernels
checks only those decks (while writing one).
"""
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import build_slides  # noqa: E402

DECKS = sorted(p.stem for p in (REPO / "slides" / "src").glob("*.md"))
if os.environ.get("LABKIT_DECKS"):
    DECKS = [d for d in DECKS if d in os.environ["LABKIT_DECKS"].split(",")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    assert build_slides.main(["--out", str(out), *DECKS]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_every_deck_is_built_and_names_a_lab(built):
    out, manifest = built
    labs = {p.name for p in (REPO / "notebooks").iterdir() if p.is_dir()}
    assert DECKS and set(manifest) == set(DECKS)
    assert all(d in labs for d in DECKS), f"a deck per lab, named as the lab: {DECKS} vs {sorted(labs)}"
    for deck in DECKS:
        html = (out / f"{deck}.html").read_text()
        assert "http://" not in html and "https://" not in html, f"{deck}: a link that needs the network"
        src = (REPO / "slides" / "src" / f"{deck}.md").read_text()
        unused = [n for n in build_slides.figures(REPO / "slides" / "src" / f"{deck}.md") if f"](fig:{n})" not in src]
        assert not unused, f"{deck}: figure functions no slide shows: {unused}"


def test_every_lab_has_a_deck():
    labs = sorted(p.name for p in (REPO / "notebooks").iterdir() if p.is_dir() and list(p.glob("*.ipynb")))
    decks = sorted(p.stem for p in (REPO / "slides" / "src").glob("*.md"))
    assert labs == decks, f"a deck per lab: labs without one {sorted(set(labs) - set(decks))}, decks without a lab {sorted(set(decks) - set(labs))}"


def test_no_deck_contains_solutions_or_hidden_tests(built):
    out, _ = built
    secret = set()
    for nb_path in (REPO / "notebooks").glob("*/*.ipynb"):
        for c in nbformat.read(nb_path, 4).cells:
            g = c.metadata.get("nbgrader", {})
            if g.get("solution") and c.cell_type == "code" or "BEGIN HIDDEN TESTS" in c.source:
                part = c.source.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0] if g.get("solution") \
                    else c.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
                secret |= {ln.strip() for ln in part.splitlines() if len(ln.strip()) >= 25}
    for deck in DECKS:
        html = (out / f"{deck}.html").read_text()
        assert "BEGIN SOLUTION" not in html and "HIDDEN TESTS" not in html
        leaked = [ln for ln in secret if ln in html]
        assert not leaked, f"{deck} shows solution or hidden-test lines: {leaked[:3]}"


CHECK = """(() => {
  const out = {total: Reveal.getTotalSlides(), images: document.querySelectorAll('.slides img').length,
               overflow: [], broken: [], notes: []};
  Reveal.getSlides().forEach((s, i) => {
    Reveal.slide(i);
    if (s.scrollHeight > 700 || s.scrollWidth > 960) out.overflow.push([i + 1, s.scrollWidth, s.scrollHeight]);
    s.querySelectorAll('img').forEach(img => { if (!(img.complete && img.naturalWidth > 0)) out.broken.push([i + 1, img.src]); });
    const n = s.querySelector('aside.notes');
    if (!n || !n.textContent.trim()) out.notes.push(i + 1);
  });
  return out;
})()"""


@pytest.fixture(scope="module")
def browser():
    exe = build_slides.chromium()
    if not exe:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test the decks in a browser: apt-get install chromium")
        pytest.skip("chromium is not installed here (Debian: apt-get install chromium)")
    b = build_slides.Browser(exe)
    yield b
    b.close()


@pytest.mark.parametrize("deck", DECKS)
def test_deck_opens_offline_and_every_slide_fits_in_a_real_browser(built, browser, deck):
    out, manifest = built
    browser.events.clear()
    browser.open((out / f"{deck}.html").as_uri())
    got = browser.eval(CHECK)
    time.sleep(0.2)
    browser.call("Runtime.evaluate", expression="1")                      # drain the events so far
    errors = [e["params"] for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    remote = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"
              and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:"))]
    assert not errors, f"{deck}: console errors {errors[:2]}"
    assert not remote, f"{deck}: requests that need the network {remote[:3]}"
    assert got["total"] == manifest[deck] and 10 <= got["total"] <= 20, (deck, got["total"], manifest[deck])
    assert not got["overflow"], f"{deck}: slides larger than 960 x 700 (slide, width, height): {got['overflow']}"
    figures = (REPO / "slides" / "src" / f"{deck}.md").read_text().count("](fig:")
    assert got["images"] == figures, f"{deck}: {got['images']} images on the slides, {figures} figures in the source"
    assert not got["broken"], f"{deck}: images that did not load: {got['broken']}"
    assert not got["notes"], f"{deck}: slides without speaker notes: {got['notes']}"


def test_a_deck_prints_to_pdf_one_page_per_slide(built, browser):
    import re
    out, manifest = built
    deck = DECKS[0]
    pdf = build_slides.pdf(out / f"{deck}.html", browser)
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
    assert pages == manifest[deck], f"{deck}.pdf: {pages} pages for {manifest[deck]} slides (a slide too tall spills over)"
