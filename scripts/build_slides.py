"""Build the lecture decks: slides/src/<lab>.md -> slides/build/<lab>.html (reveal.js, offline).

    python scripts/build_slides.py                 # every deck in slides/src/
    python scripts/build_slides.py 09-pipeline     # one deck
    python scripts/build_slides.py --pdf           # and a PDF of each, through headless chromium
    python scripts/build_slides.py 01-flops --shot 3 --shot 7   # and PNGs of slides 3 and 7, to look at

A source is Markdown: a line `---` starts a new slide, a line `Note:` starts the speaker notes of
the slide (shown with the `s` key), and `![caption](fig:NAME)` is a figure: the function
`fig_NAME()` of slides/src/<lab>.py returns it as a matplotlib figure, drawn with labkit from the
same code (or recorded measurements, with their provenance) the lab uses. Figures are drawn with
torch on one thread (timings steadier on a shared machine). The build folder is
self-contained: the decks, their figures, and reveal.js copied from slides/vendor/. It opens from
disk with no network. manifest.json lists each deck's slide count.
"""
import argparse
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mistune  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REVEAL = "reveal.js-6.0.2"

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="vendor/{reveal}/reset.css">
<link rel="stylesheet" href="vendor/{reveal}/reveal.css">
<link rel="stylesheet" href="vendor/{reveal}/theme/white.css">
<style>
.reveal {{ font-size: 30px; }}
.reveal h1 {{ font-size: 1.7em; }} .reveal h2 {{ font-size: 1.25em; }}
.reveal section img {{ max-height: 400px; max-width: 100%; margin: 0.2em auto; border: none; box-shadow: none; }}
.reveal table {{ font-size: 0.7em; }} .reveal li {{ margin: 0.15em 0; }}
.reveal code {{ font-size: 0.9em; }}
</style>
</head>
<body>
<div class="reveal"><div class="slides">
{slides}
</div></div>
<script src="vendor/{reveal}/reveal.js"></script>
<script src="vendor/{reveal}/plugin/notes.js"></script>
<script>
Reveal.initialize({{ width: 960, height: 700, margin: 0.04, hash: true, plugins: [RevealNotes] }});
</script>
</body>
</html>
"""


FIGURES = {name[4:]: fn for name, fn in globals().items() if name.startswith("fig_")}


# ---------------------------------------------------------------- build


def figures(src: Path) -> dict:
    """The deck's figure functions, by name: fig_NAME() in slides/src/<lab>.py (none without one)."""
    path = src.with_suffix(".py")
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location(f"slides_{src.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name[4:]: fn for name, fn in vars(module).items() if name.startswith("fig_") and callable(fn)}


def _on_one_thread(fn):
    """fn() with torch on one thread, restored after. Figures that time work on the CPU say "one
    core": on a shared build machine two threads that wait for each other can be slowed a
    hundredfold by another job, one thread only a few times. Ranks and workers set their own."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def render(src: Path, out: Path) -> int:
    """Write out/<stem>.html and its figures; return the slide count."""
    from labkit.plots import use_style
    use_style()
    text = src.read_text()
    FIGURES = figures(src)
    title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), src.stem)
    md = mistune.create_markdown(plugins=["table"])
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections = []
    for i, chunk in enumerate(re.split(r"^---\s*$", text, flags=re.M)):
        body, _, notes = chunk.partition("\nNote:")

        def figure(m):
            name = m.group(2)
            if name not in FIGURES:
                raise ValueError(f"{src.name}, slide {i + 1}: no figure named {name!r} "
                                 f"(fig_NAME functions in {src.with_suffix('.py').name}: {sorted(FIGURES)})")
            fig = _on_one_thread(FIGURES[name])
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            path = out / "figures" / f"{src.stem}-{name}.png"
            path.write_bytes(buf.getvalue())
            return f"![{m.group(1)}](figures/{path.name})"

        html = md(re.sub(r"!\[([^\]]*)\]\(fig:(\w+)\)", figure, body))
        aside = f'<aside class="notes">{md(notes.strip())}</aside>' if notes.strip() else ""
        sections.append(f"<section>\n{html}{aside}\n</section>")
    (out / f"{src.stem}.html").write_text(TEMPLATE.format(title=title, reveal=REVEAL, slides="\n".join(sections)))
    return len(sections)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, evaluate, collect errors and requests."""

    def __init__(self, exe):
        import websocket
        self.profile = tempfile.mkdtemp(prefix="labkit-chromium-")
        self.proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                                      f"--user-data-dir={self.profile}", "--window-size=1000,760", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its debugging port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request
        for _ in range(50):
            pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                     if t["type"] == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], suppress_origin=True, timeout=30)
        self.n, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:60]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, timeout_s: float = 20) -> None:
        """Navigate to url and wait until reveal.js is ready and the fonts are loaded."""
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout_s
        while not self.eval("typeof Reveal !== 'undefined' && Reveal.isReady()"):
            if time.time() > deadline:
                raise RuntimeError(f"{url}: reveal.js never became ready")
            time.sleep(0.1)
        self.eval("document.fonts.ready.then(() => true)")

    def close(self):
        self.ws.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)



def pdf(deck: Path, browser: "Browser | None" = None) -> Path:
    """deck.pdf: reveal's print view (?print-pdf, one page per slide) printed by headless chromium
    once the deck is ready (a plain --print-to-pdf can print before reveal lays the slides out)."""
    import base64
    exe = chromium()
    if browser is None and not exe:
        raise SystemExit("--pdf needs chromium (Debian: apt-get install chromium)")
    b = browser or Browser(exe)
    try:
        b.open(deck.resolve().as_uri() + "?print-pdf")
        time.sleep(0.3)
        data = b.call("Page.printToPDF", printBackground=True, preferCSSPageSize=True)["data"]
    finally:
        if browser is None:
            b.close()
    target = deck.with_suffix(".pdf")
    target.write_bytes(base64.b64decode(data))
    return target


def screenshots(deck: Path, slides, browser: "Browser | None" = None) -> list[Path]:
    """PNGs of the given slides (numbered from 1), as the browser shows them: <deck>-<n>.png beside the deck."""
    import base64
    b = browser or Browser(chromium())
    shots = []
    try:
        b.open(deck.resolve().as_uri())
        for n in slides:
            b.eval(f"Reveal.slide({n - 1})")
            time.sleep(0.8)                                   # reveal's transition
            path = deck.with_name(f"{deck.stem}-{n}.png")
            path.write_bytes(base64.b64decode(b.call("Page.captureScreenshot", format="png")["data"]))
            shots.append(path)
    finally:
        if browser is None:
            b.close()
    return shots


def build(src: Path, out: Path, with_pdf: bool = False, shots=()) -> int:
    """One deck: its HTML and figures, and its PDF and screenshots if asked; returns the slide count."""
    n = render(src, out)
    deck = out / f"{src.stem}.html"
    lines = [f"{deck}: {n} slides"]
    if with_pdf:
        lines.append(f"  {pdf(deck)}")
    lines += [f"  {shot}" for shot in (screenshots(deck, shots) if shots else [])]
    print("\n".join(lines), flush=True)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("decks", nargs="*", help="lab names (default: every slides/src/*.md)")
    ap.add_argument("--src", type=Path, default=REPO / "slides" / "src")
    ap.add_argument("--out", type=Path, default=REPO / "slides" / "build")
    ap.add_argument("--pdf", action="store_true", help="also print each deck to PDF with headless chromium")
    ap.add_argument("--shot", type=int, action="append", default=[], metavar="N",
                    help="also save a PNG of slide N (from 1) of each deck, as chromium shows it")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="decks built at once, each in its own process (default: one per core)")
    a = ap.parse_args(argv)
    sources = [a.src / f"{d}.md" for d in a.decks] if a.decks else sorted(a.src.glob("*.md"))
    missing = [s for s in sources if not s.exists()]
    if missing:
        raise SystemExit(f"no deck source {missing[0]} (have: {sorted(p.stem for p in a.src.glob('*.md'))})")
    if (a.pdf or a.shot) and not chromium():
        raise SystemExit("--pdf and --shot need chromium (Debian: apt-get install chromium)")
    if a.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {a.jobs}")
    a.out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "slides" / "vendor", a.out / "vendor", dirs_exist_ok=True)
    manifest_path = a.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    args = [(src, a.out, a.pdf, tuple(a.shot)) for src in sources]
    if a.jobs == 1 or len(sources) == 1:
        counts = [build(*x) for x in args]
    else:   # saving the figures is most of the time, and it is one core's work per deck
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(a.jobs, len(sources)), mp_context=multiprocessing.get_context("spawn")) as pool:
            counts = list(pool.map(build, *zip(*args)))
    manifest.update({src.stem: n for src, n in zip(sources, counts)})
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
