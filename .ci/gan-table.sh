#!/usr/bin/env bash
# The noise-to-image GANs at equal CPU time (BENCHMARKS.md, "The noise-to-image GANs at equal CPU time"):
#
#   bash .ci/gan-table.sh SECONDS OUT [NAME ...]     # with img2img installed; on an otherwise idle machine
#
# trains every row one after another, each for SECONDS of wall-clock time (--time-limit), evaluates it by the
# MNIST GAN protocol, and writes the table's markdown rows, with those of earlier calls into the same OUT, to
# OUT/table.md (also printed). The runs, their logs and their JSON stay in OUT. NAMEs pick rows (default:
# all); GAN_TABLE_DEVICE (default cpu) picks the device. Nothing else may run beside it: the steps a run
# reaches in its time are what the table compares.
set -euo pipefail
SECONDS_EACH=${1:?usage: bash .ci/gan-table.sh SECONDS OUT [NAME ...]}
OUT=$(realpath -m "${2:?usage: bash .ci/gan-table.sh SECONDS OUT [NAME ...]}")
shift 2
DEVICE=${GAN_TABLE_DEVICE:-cpu}
mkdir -p "$OUT"

# NAME|title|model and options (each row of the table)
ROWS='mlp|MLP GAN (baseline)|mnist-gan
mlp-mbstd|MLP GAN + minibatch std|mnist-gan --minibatch-std
mlp-fm|MLP GAN + feature matching|mnist-gan --feature-matching
mlp-pac2|MLP GAN + PacGAN|mnist-gan --pac 2
dcgan|DCGAN (the paper'"'"'s batch 128)|dcgan
dcgan-b32|DCGAN, batch 32|dcgan --batch-size 32
dcgan-b16|DCGAN, batch 16|dcgan --batch-size 16
dcgan-b32-lr16|DCGAN, batch 32, lr 1.6e-3, NHWC|dcgan --batch-size 32 --lr 1.6e-3 --channels-last
wgan|WGAN (clipping, RMSprop)|wgan
cgan|conditional GAN|cgan
acgan|AC-GAN|acgan
acgan-b32-lr16-real|AC-GAN, batch 32, lr 1.6e-3, NHWC, class head on real only|acgan --batch-size 32 --lr 1.6e-3 --channels-last --no-fake-classes
gmmn|GMMN (MMD)|gmmn'

for name in "$@"; do
    grep -q "^$name|" <<<"$ROWS" || { echo "no row called $name; the rows: $(cut -d'|' -f1 <<<"$ROWS" | xargs)" >&2; exit 2; }
done
chosen=" $* "
touch "$OUT/rows.txt"  # rows already in OUT stay; a row run again replaces its line
while IFS='|' read -r name title command; do
    [ $# -gt 0 ] && [[ $chosen != *" $name "* ]] && continue
    # shellcheck disable=SC2086
    img2img train $command --out "$OUT/$name" --steps 1000000 --time-limit "$SECONDS_EACH" --log-every 100 \
        --sample-every 1000000 --save-every 1000000 --device "$DEVICE" >"$OUT/$name.log" 2>&1 \
        || { echo "$name: training failed, see $OUT/$name.log" >&2; continue; }
    img2img eval "$OUT/$name" --device "$DEVICE" --json "$OUT/$name.json" >"$OUT/$name.eval" 2>&1 \
        || { echo "$name: evaluation failed, see $OUT/$name.eval" >&2; continue; }
    grep -v "^$name|" "$OUT/rows.txt" >"$OUT/rows.tmp" || true
    printf '%s|%s|%s\n' "$name" "$title" "$command" >>"$OUT/rows.tmp"
    mv "$OUT/rows.tmp" "$OUT/rows.txt"
    echo "$name done" >&2
done <<<"$ROWS"

python3 - "$OUT" >"$OUT/table.md" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
print("| model | options | training time | steps | FID | FID / floor | classes covered | KL to uniform | NN distance "
      "| class agreement |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for line in (out / "rows.txt").read_text().splitlines():
    name, title, command = line.split("|")
    result = json.loads((out / f"{name}.json").read_text())
    m = result["metrics"]
    took = re.search(r"finished at step \d+ in ([0-9.]+) s", (out / name / "train.log").read_text()).group(1)
    agreement = f"{100 * m['class_agreement']:.1f}%" if "class_agreement" in m else "–"
    print(f"| {title} | `{command}` | {float(took):.0f} s | {result['step']:,} | {m['fid']:.2f} | "
          f"{m['fid_over_floor']:.1f} | {m['classes_covered']:.0f} | {m['kl_to_uniform']:.3f} | "
          f"{m['nn_distance_to_train']:.3f} | {agreement} |")
EOF
cat "$OUT/table.md"
