"""Build the course's text corpus from Debian's King James Version package.

    apt-get install bible-kjv          # the `bible` program and its data (package bible-kjv-text)
    python scripts/make_corpus.py      # -> data/corpus/kjv-{train,heldout}.txt.xz + provenance.json

The KJV text is in the public domain. Output format: one chapter per block, its heading line
("Genesis 1") then one verse per line, verse numbers dropped; blocks separated by a blank line.
Every 20th chapter (chapter index 10, 30, 50, ...) goes to the held-out split, the rest to train:
held-out text comes from all over the book, but no held-out chapter is seen in training.
"""
import datetime as dt
import hashlib
import json
import lzma
import re
import shutil
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "corpus"
HELDOUT_EVERY, HELDOUT_OFFSET = 20, 10


def dump_bible() -> str:
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv")
    return subprocess.run(["bible", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout


def chapters(raw: str) -> list[tuple[str, list[str]]]:
    """Parse `bible` output (headings, numbered verses wrapped at 80 columns) into chapters."""
    out: list[tuple[str, list[str]]] = []
    after_blank = True
    for line in raw.splitlines():
        if not line.strip():
            after_blank = True
            continue
        if after_blank and re.match(r"^\S.* \d+$", line):   # a heading, after a blank line: "Genesis 1"
            out.append((line.strip(), []))
        elif m := re.match(r"^  (\d+) (.*)$", line):          # a new verse
            out[-1][1].append(m.group(2).strip())
        else:                                                  # a wrapped continuation line
            out[-1][1][-1] += " " + line.strip()
        after_blank = False
    return out


def main() -> None:
    chs = chapters(dump_bible())
    assert len(chs) == 1189, f"expected the 1189 chapters of the KJV, parsed {len(chs)}"
    assert sum(len(v) for _, v in chs) == 31102, "expected 31102 verses"
    split = {"train": [], "heldout": []}
    for i, (head, verses) in enumerate(chs):
        name = "heldout" if i % HELDOUT_EVERY == HELDOUT_OFFSET else "train"
        split[name].append(head + "\n" + "\n".join(verses) + "\n")
    OUT.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, blocks in split.items():
        text = "\n".join(blocks)
        path = OUT / f"kjv-{name}.txt.xz"
        path.write_bytes(lzma.compress(text.encode(), preset=9))
        files[path.name] = {"chapters": len(blocks), "characters": len(text),
                            "sha256_of_text": hashlib.sha256(text.encode()).hexdigest()}
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "bible-kjv-text"],
                             capture_output=True, text=True).stdout or "unknown"
    prov = {"source": f"Debian package bible-kjv-text {version} (King James Version, public domain), "
                      "read with the `bible` program of package bible-kjv",
            "license": "public domain",
            "split": f"chapter i is held out when i % {HELDOUT_EVERY} == {HELDOUT_OFFSET}",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python scripts/make_corpus.py", "files": files}
    (OUT / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()
