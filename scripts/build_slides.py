"""Build the lecture decks: slides/src/<lab>.md -> slides/build/<lab>.html (reveal.js, offline).

    python scripts/build_slides.py                 # every deck in slides/src/
    python scripts/build_slides.py 09-pipeline     # one deck
    python scripts/build_slides.py --pdf           # and a PDF of each, through headless chromium

A source is Markdown: a line `---` starts a new slide, a line `Note:` starts the speaker notes of
the slide (shown with the `s` key), and `![caption](fig:NAME)` is a figure that a function below
draws with labkit, from the same code (or recorded measurements) the lab uses. The build folder is
self-contained: the decks, their figures, and reveal.js copied from slides/vendor/. It opens from
disk with no network. manifest.json lists each deck's slide count.
"""
import argparse
import io
import json
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


# ---------------------------------------------------------------- figures, by name


def _pipeline():
    from labkit import pipeline as PP
    return PP


def fig_gpipe(ax_fig):
    PP = _pipeline()
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw(PP.simulate(PP.schedule("gpipe", 4, 4)), ax=ax, title="GPipe, 4 stages, m = 4 (a backward takes 2 units)")
    return fig


def fig_1f1b(ax_fig):
    PP = _pipeline()
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw(PP.simulate(PP.schedule("1f1b", 4, 8)), ax=ax, title="1F1B, 4 stages, m = 8")
    return fig


def fig_bubble(ax_fig):
    PP = _pipeline()
    ms = [1, 2, 4, 8, 16, 32, 64]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for p in (2, 4, 8):
        ax.plot(ms, [100 * max(PP.idle_fraction(PP.simulate(PP.schedule("1f1b", p, m)))) for m in ms], "o-", label=f"p = {p}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="micro-batches m", ylabel="idle share of the step [%]", title="the bubble, simulated = (p−1)/(m+p−1)")
    ax.legend()
    return fig


def fig_measured(ax_fig):
    from labkit import parallel as P
    PP = _pipeline()
    res = P.run(PP.run_pipeline, 4, "1f1b", 8, 8, 64, 8, 0.01, backend="gloo")
    idle = max(PP.idle_fraction([r["timeline"] for r in res]))
    fig, ax = plt.subplots(figsize=(9, 2.6))
    PP.draw([r["timeline"] for r in res], ax=ax, t_unit=1e-3, unit="ms",
            title=f"measured on 4 gloo ranks, ops padded to 10/20 ms: idle {idle:.0%} (formula {PP.bubble_fraction(4, 8):.0%})")
    return fig


def fig_chimera(ax_fig):
    PP = _pipeline()
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.2))
    PP.draw(PP.simulate(PP.schedule("1f1b", 4, 4)), ax=axes[0],
            title=f"1F1B, m = 4: idle {max(PP.idle_fraction(PP.simulate(PP.schedule('1f1b', 4, 4)))):.0%}")
    ch = PP.chimera(4, 4)
    PP.draw(ch, ax=axes[1], labels=lambda i: f"{i}↓" if i < 2 else f"{i}↑",
            title=f"Chimera (list-scheduled), m = 4: idle {max(PP.idle_fraction(ch)):.0%}")
    axes[1].set_xlim(axes[0].get_xlim())
    fig.tight_layout()
    return fig


def fig_planner(ax_fig):
    PP = _pipeline()
    from labkit import memory as M
    llama = PP.Model("Llama-3.1-405B", 405e9, 126, 16384, 128, 8192)
    cluster = PP.Cluster("1024 x 8 H100", 1024, 8, 80e9, 989e12, 450e9, 50e9)
    rows = PP.layouts(llama, cluster, 2048, act_bytes=lambda b, s: 34 * b * s * 16384,
                      state_bytes=lambda dp: M.zero_bytes_per_param(1, dp))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for fits, mark in ((True, "o"), (False, "x")):
        pts = [r for r in rows if r["fits"] == fits]
        ax.scatter([r["memory"] / 1e9 for r in pts], [100 * r["mfu"] for r in pts], marker=mark,
                   label="fits in 80 GB" if fits else "does not fit")
    ax.axvline(80, color="gray", ls="--")
    ax.set_xscale("log")
    ax.set(xlabel="memory per GPU [GB]", ylabel="predicted MFU [%]", title="Llama-3.1-405B on 8192 H100: every dp × tp × pp")
    ax.legend()
    return fig


def _io_files(n=256):
    from labkit import dataio as IO
    root = Path(tempfile.gettempdir()) / f"labkit-io-{n}-16"
    return IO, IO.make_dataset(root, n=n, seed=0, scale=1 / 16)


def fig_sizes(ax_fig):
    IO = _io_files()[0]
    sizes = IO.file_sizes(20_000, seed=0, scale=1)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(sizes / 2**10, bins=100)
    ax.set_xscale("log")
    ax.set(xlabel="file size [KiB]", ylabel="files (of 20,000)",
           title=f"sizes drawn like ImageNet's: mean {sizes.mean() / 2**10:.0f} KiB, 508 B to 15 MiB")
    return fig


def fig_stages(ax_fig):
    IO, paths = _io_files()
    st = IO.stage_times(IO.Store(paths), IO.access_order(len(paths), 0), batch=32)
    parts = ["open", "read", "decode", "collate", "copy"]
    fig, ax = plt.subplots(figsize=(8, 2.2))
    left = 0.0
    total = sum(st[k] for k in parts)
    for k in parts:
        ax.barh(0, 1e6 * st[k] / st["samples"], left=left, label=f"{k} {st[k] / total:.0%}")
        left += 1e6 * st[k] / st["samples"]
    ax.set(yticks=[], xlabel="µs per sample, one core", title="where loading a sample goes (256 files, 7 KiB on average)")
    ax.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    return fig


def fig_caches(ax_fig):
    IO, paths = _io_files()
    n = len(paths)
    three = [i for e in range(3) for i in IO.access_order(n, 0, e)]
    shares = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for policy, mark in (("lru", "o-"), ("belady", "s-")):
        ax.plot([100 * f for f in shares], [100 * IO.simulate_cache(three, int(f * n), policy)["hit rate"] for f in shares],
                mark, label="LRU" if policy == "lru" else "Belady (the order is known)")
    ax.set(xlabel="cache size [% of the dataset]", ylabel="hit rate [%]", title="3 shuffled epochs through a cache")
    ax.legend()
    return fig


def fig_prefetch(ax_fig):
    import torch
    from torch.utils.data import DataLoader
    IO, paths = _io_files()
    slow = dict(latency_s=4e-3, bytes_per_s=100e6)
    order = IO.access_order(len(paths), 0)
    loader = DataLoader(IO.FileDataset(IO.ThrottledStore(paths, **slow)), batch_size=8, sampler=order, num_workers=2,
                        prefetch_factor=2, persistent_workers=True)
    for _ in loader:
        pass
    t = time.perf_counter()
    plain = sum(len(y) for _, y in loader) / (time.perf_counter() - t)
    rates = {"DataLoader\n2 workers": plain}
    for depth, threads in ((8, 8), (32, 16)):
        t = time.perf_counter()
        for _, data in IO.Prefetcher(IO.ThrottledStore(paths, **slow), order, depth, threads):
            IO.decode(data)
        rates[f"prefetch\ndepth {depth}"] = len(order) / (time.perf_counter() - t)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(list(rates), list(rates.values()))
    ax.set(ylabel="samples/s", title="a throttled store (4 ms + 100 MB/s per read), 32 samples in memory at most")
    return fig


FIGURES = {name[4:]: fn for name, fn in globals().items() if name.startswith("fig_")}


# ---------------------------------------------------------------- build


def render(src: Path, out: Path) -> int:
    """Write out/<stem>.html and its figures; return the slide count."""
    from labkit.plots import use_style
    use_style()
    text = src.read_text()
    title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), src.stem)
    md = mistune.create_markdown(plugins=["table"])
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections = []
    for i, chunk in enumerate(re.split(r"^---\s*$", text, flags=re.M)):
        body, _, notes = chunk.partition("\nNote:")

        def figure(m):
            name = m.group(2)
            if name not in FIGURES:
                raise ValueError(f"{src.name}, slide {i + 1}: no figure named {name!r} (known: {sorted(FIGURES)})")
            fig = FIGURES[name](None)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("decks", nargs="*", help="lab names (default: every slides/src/*.md)")
    ap.add_argument("--src", type=Path, default=REPO / "slides" / "src")
    ap.add_argument("--out", type=Path, default=REPO / "slides" / "build")
    ap.add_argument("--pdf", action="store_true", help="also print each deck to PDF with headless chromium")
    a = ap.parse_args(argv)
    sources = [a.src / f"{d}.md" for d in a.decks] if a.decks else sorted(a.src.glob("*.md"))
    missing = [s for s in sources if not s.exists()]
    if missing:
        raise SystemExit(f"no deck source {missing[0]} (have: {sorted(p.stem for p in a.src.glob('*.md'))})")
    if a.pdf and not chromium():
        raise SystemExit("--pdf needs chromium (Debian: apt-get install chromium)")
    a.out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "slides" / "vendor", a.out / "vendor", dirs_exist_ok=True)
    manifest_path = a.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for src in sources:
        manifest[src.stem] = render(src, a.out)
        print(f"{a.out / (src.stem + '.html')}: {manifest[src.stem]} slides")
        if a.pdf:
            print(f"  {pdf(a.out / (src.stem + '.html'))}")
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
