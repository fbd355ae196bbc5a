#!/usr/bin/env bash
# Download one of the public CycleGAN datasets (Zhu et al. 2017) from the authors' server.
# Usage: bash datasets/cyclegan/download.sh NAME [DEST]   (NAME: horse2zebra, apple2orange, summer2winter_yosemite,
#        monet2photo, cezanne2photo, ukiyoe2photo, vangogh2photo, maps, cityscapes, facades, iphone2dslr_flower)
set -euo pipefail
name="${1:?usage: download.sh NAME [DEST]}"
dest="${2:-data/cyclegan}"
case "$name" in
  horse2zebra|apple2orange|summer2winter_yosemite|monet2photo|cezanne2photo|ukiyoe2photo|vangogh2photo|maps|\
  cityscapes|facades|iphone2dslr_flower) ;;
  *) echo "unknown CycleGAN dataset: $name" >&2; exit 2 ;;
esac
url="http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/${name}.zip"
mkdir -p "$dest"
archive="$dest/${name}.zip"
echo "downloading $url"
curl -fL --retry 3 -o "$archive.part" "$url"
mv "$archive.part" "$archive"
unzip -q "$archive" -d "$dest"
rm "$archive"
echo "extracted to $dest/$name (trainA/, trainB/, testA/, testB/)"
echo "train with: img2img train cyclegan --a $dest/$name/trainA --b $dest/$name/trainB --out runs/$name"
