#!/usr/bin/env bash
# Copy the few files of reveal.js that the decks need into slides/vendor/ (committed), so that
# `make slides` and the decks themselves never reach a network. Run by hand, once per upgrade:
#   bash scripts/vendor_slides.sh
# White theme: its fonts are embedded (data: URIs); several other themes load Google Fonts.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=6.0.2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "reveal.js@$VERSION" --silent >/dev/null && tar xzf "reveal.js-$VERSION.tgz")
dest=slides/vendor/reveal.js-$VERSION
rm -rf "$dest" && mkdir -p "$dest/theme" "$dest/plugin"
src=$tmp/package
cp "$src/LICENSE" "$src/dist/reveal.js" "$src/dist/reveal.css" "$src/dist/reset.css" "$dest/"
cp "$src/dist/theme/white.css" "$dest/theme/"
cp "$src/dist/plugin/notes.js" "$dest/plugin/"
echo "reveal.js $VERSION copied to $dest ($(du -sh "$dest" | cut -f1))"
