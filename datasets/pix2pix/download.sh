#!/usr/bin/env bash
# Download one of the public pix2pix datasets (Isola et al. 2017) from the authors' server.
# Usage: bash datasets/pix2pix/download.sh NAME [DEST]   (NAME: facades, maps, edges2shoes, edges2handbags,
#        cityscapes, night2day; DEST defaults to data/pix2pix)
set -euo pipefail
name="${1:?usage: download.sh NAME [DEST] (facades, maps, edges2shoes, edges2handbags, cityscapes, night2day)}"
dest="${2:-data/pix2pix}"
case "$name" in
  facades|maps|edges2shoes|edges2handbags|cityscapes|night2day) ;;
  *) echo "unknown pix2pix dataset: $name" >&2; exit 2 ;;
esac
url="http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/${name}.tar.gz"
mkdir -p "$dest"
archive="$dest/${name}.tar.gz"
echo "downloading $url"
curl -fL --retry 3 -o "$archive.part" "$url"
mv "$archive.part" "$archive"
tar -xzf "$archive" -C "$dest"
rm "$archive"
echo "extracted to $dest/$name (train/, val/, test/ hold side-by-side A|B images)"
echo "train with: img2img train pix2pix --aligned $dest/$name/train --direction b2a   # facades: labels -> photo"
