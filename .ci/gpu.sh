#!/usr/bin/env bash
# The GPU check, in one call on a machine with a CUDA GPU (BENCHMARKS.md, "GPU", says how it was run):
#
#   bash .ci/gpu.sh OUT        # from the repository root; wheels of the packages the machine lacks in .whl/
#                              # (bash .ci/gpu-wheels.sh writes them, here, before the lease)
#
# 1. installs img2img (and the carried wheels) into /tmp/site, without the network;
# 2. part "tests", alone on the GPU: the tests marked `cuda`;
# 3. part "commands", side by side on the GPU: the README's commands exactly as it gives them (the pix2pix and
#    CycleGAN demos: demo, train, eval, translate both ways, export; the MNIST GAN; CycleGAN at 256² with every
#    default on folders of JPEGs of mixed sizes), each model's benchmark step, and where a training step
#    synchronises with the host (.ci/find_syncs.py);
# 4. part "speed", alone on the GPU: the CycleGAN and pix2pix steps with the defaults (each whole step one CUDA
#    graph), with channels_last added, and with a graph per network (--cuda-graph off, the former default), and
#    their profiles; folder translation with and without graphs, with 8 workers, and its pipeline's ceiling over
#    2,048 images; `img2img bench --ladder` for cyclegan, pix2pix and translate at 256², and a
#    batch-size sweep.  Its compiled configurations are first compiled side by side (each bench once, briefly,
#    GPU_WARM_S at most), which fills TorchInductor's caches on disk: the timed runs after it, one at a time,
#    then load their compiled code instead of compiling it again.
#
# Every log and JSON goes under OUT/logs, packed into OUT/gpu-logs.tar.gz at the end; OUT/summary.txt (also
# printed last) has the statuses and the figures.  Each command has its own time limit and the whole a budget
# (GPU_BUDGET_S, default 540 s; the tests and the commands GPU_TESTS_S and GPU_COMMANDS_S of it at most): what
# would not fit is skipped and says so, and one failure costs only itself.  GPU_PARTS (default "tests commands
# speed") runs some parts only, in the order given ("tests+speed": the tests beside the speed part's compiling,
# which is bound by the host's cores as they are, then the timed runs alone; "tests+demos+speed": the two demos
# trained with the defaults beside them too, within the tests' time, and evaluated after the compiling),
# GPU_TESTS_K some tests only (pytest -k), GPU_TESTS_N the tests' processes (default 12), and GPU_SKIP (a bash
# regular expression of command names, e.g. "ladder-.*|sweep-.*") leaves out commands, for a session whose GPU
# time comes in pieces.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: bash .ci/gpu.sh OUT}")
BUDGET=${GPU_BUDGET_S:-540}
REPO=$(pwd)
WORK=${GPU_WORK:-/tmp/img2img-gpu}
LOGS=$OUT/logs
mkdir -p "$LOGS" "$WORK"
STATUS=$OUT/status.tsv
PARTS=${GPU_PARTS:-tests commands speed}
: >"$STATUS"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5 NO_ALBUMENTATIONS_UPDATE=1

END=$BUDGET  # the end of the current part, in seconds since the start
left() { local end=$((END < BUDGET ? END : BUDGET)); echo $((end - SECONDS)); }

# run NAME LIMIT COMMAND...: COMMAND with its output in LOGS/NAME.log, at most LIMIT seconds and never past the
# budget; its status (ok, failed N, timed out, skipped) goes to STATUS
run() {
    local name=$1 limit=$2
    shift 2
    if [[ -n ${GPU_SKIP:-} && $name =~ ^(${GPU_SKIP})$ ]]; then
        printf '%s\tskipped (GPU_SKIP)\t0\n' "$name" >>"$STATUS"
        return 1
    fi
    local remaining
    remaining=$(left)
    if ((remaining < 15)); then
        printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$STATUS"
        return 1
    fi
    ((limit > remaining)) && limit=$remaining
    local start=$SECONDS code
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    code=$?
    local took=$((SECONDS - start)) state=ok
    if ((code == 124 || code == 137)); then state="timed out after ${limit}s"; elif ((code)); then state="failed ($code)"; fi
    printf '%s\t%s\t%ss\n' "$name" "$state" "$took" >>"$STATUS"
    return "$code"
}

# -- 1. install ---------------------------------------------------------------------------------------------
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
    nproc
} >"$LOGS/machine.log" 2>&1
wheels=()
[ -d .whl ] && wheels=(.whl/*.whl)
run install 120 python3 -m pip install --no-index --no-deps --no-build-isolation --target /tmp/site "${wheels[@]}" "$REPO" \
    || { cat "$LOGS/install.log"; exit 1; }
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
# the CPUs this process may use (a container's quota counts), which set the folder pipeline's pace: one lease's
# host said 16 (nproc) and ran the pipeline at a fifth of another's
python3 -c 'import os; from img2img.resources import available_cpus
print("CPUs usable:", available_cpus(), "of", os.cpu_count(), "(affinity", len(os.sched_getaffinity(0)), end=")\n")' \
    >>"$LOGS/machine.log" 2>&1
# the host's pace at folder translation's own work, one process and 16 side by side: a 256² PNG encoded and a
# 256² JPEG decoded, as the pipeline does per image (hosts of the same kind ran the pipeline 4-5x apart)
{ uname -r; python3 "$REPO/.ci/host_pace.py"; } >>"$LOGS/machine.log" 2>&1
# run from WORK, never from the checkout: there `import img2img` would find the sources, not the installed package
cd "$WORK" || exit 1

# -- 2. the tests, alone ---------------------------------------------------------------------------------
# each failure is written to OUT/logs/failures.txt as it happens (a run cut at its limit still says what failed);
# the slowest tests come first, and four compiler processes each (GPU_COMPILE_THREADS): the quick tests are done
# early, and then the few that compile CycleGAN's and CUT's networks have the machine's cores
part_tests() {
    END=$((SECONDS + ${GPU_TESTS_S:-300}))
    run cuda-tests 999 env TORCHINDUCTOR_COMPILE_THREADS="${GPU_COMPILE_THREADS:-4}" IMG2IMG_FAILURES="$LOGS/failures.txt" \
        python3 -m pytest -m cuda -n "${GPU_TESTS_N:-12}" -v -p no:cacheprovider ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} \
        "$REPO/tests/test_cuda.py"
}

# -- 3. the README's commands, side by side ---------------------------------------------------------------
# the README's settings for the two demos
P2P=(--a data/skeletons/train/a --b data/skeletons/train/b --size 32 --load-size 32 --no-flip --batch-size 16
     --steps 3000 --decay-steps 1000)
CG=(--a data/colour-digits/train/a --b data/colour-digits/train/b --size 32 --load-size 32 --no-flip --batch-size 4
    --steps 3000 --decay-steps 1000 --ngf 32 --ndf 32)

# the two demos alone, trained with the defaults (each whole step one CUDA graph), each in the background; the
# demos' data first.  Their evaluations (the quality must not move) wait for the compiling (demo_evals): beside
# the tests and the compiles, on a host whose cores they saturate, each took more than its minute, twice
demos() {
    [ -d data/skeletons ] || run p2p-demo 60 img2img demo pix2pix data/skeletons &
    [ -d data/colour-digits ] || run cg-demo 60 img2img demo cyclegan data/colour-digits &
    wait
    run cg-train 999 img2img train cyclegan "${CG[@]}" --out runs/colour &
    run p2p-train 999 img2img train pix2pix "${P2P[@]}" --out runs/skeletons &
    wait
}

demo_evals() {  # the demos trained by demos(), evaluated side by side
    [ -f runs/colour/last.ckpt ] && run cg-eval 90 img2img eval runs/colour --a data/colour-digits/test/a \
        --b data/colour-digits/test/b --json "$LOGS/eval-cyclegan.json" &
    [ -f runs/skeletons/last.ckpt ] && run p2p-eval 90 img2img eval runs/skeletons --a data/skeletons/test/a \
        --b data/skeletons/test/b --json "$LOGS/eval-pix2pix.json" &
    wait
}

part_commands() {
END=$((SECONDS + ${GPU_COMMANDS_S:-260}))
run p2p-demo 60 img2img demo pix2pix data/skeletons &
run cg-demo 60 img2img demo cyclegan data/colour-digits &
run jpeg-folders 60 python3 -c '
import numpy as np
from pathlib import Path
from PIL import Image
rng = np.random.default_rng(0)
for side, count in (("a", 24), ("b", 20)):
    Path("jpegs", side).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(180, 520, 2))
        low = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((width, height), Image.BICUBIC)
        image.convert("L" if index % 7 == 3 else "RGB").save(Path("jpegs", side, f"{index:03d}.jpg"), quality=90)' &
wait
(   # the README's commands with every CUDA default (--cuda-graph auto: each step one CUDA graph)
    run p2p-train 999 img2img train pix2pix "${P2P[@]}" --out runs/skeletons &&
        run p2p-eval 60 img2img eval runs/skeletons --a data/skeletons/test/a --b data/skeletons/test/b \
            --json "$LOGS/eval-pix2pix.json" &&
        run p2p-translate 60 img2img translate runs/skeletons data/skeletons/test/a out/skeletons
    run mnist-train 999 img2img train mnist-gan --out runs/mnist &&
        run mnist-sample 60 img2img sample runs/mnist --n 1000 --out digits/ --grid digits.png --seed 0 &&
        run mnist-eval 60 img2img eval runs/mnist --json "$LOGS/eval-mnist.json"
) &
(
    run cg-train 999 img2img train cyclegan "${CG[@]}" --out runs/colour &&
        run cg-eval 60 img2img eval runs/colour --a data/colour-digits/test/a --b data/colour-digits/test/b \
            --json "$LOGS/eval-cyclegan.json" &&
        run cg-translate-a2b 60 img2img translate runs/colour data/colour-digits/test/a out/colour-a2b &&
        run cg-translate-b2a 60 img2img translate runs/colour data/colour-digits/test/b out/colour-b2a \
            --direction b2a &&
        run cg-translate-fp32 60 img2img translate runs/colour data/colour-digits/test/a out/colour-a2b-fp32 --no-amp &&
        run cg-bf16-vs-fp32 30 python3 -c '
import sys, numpy as np
from pathlib import Path
from PIL import Image
worst, total, off = 0, 0, 0
for path in sorted(Path("out/colour-a2b").rglob("*.png")):
    bf16 = np.asarray(Image.open(path)).astype(int)
    fp32 = np.asarray(Image.open(Path("out/colour-a2b-fp32") / path.relative_to("out/colour-a2b"))).astype(int)
    difference = np.abs(bf16 - fp32)
    worst, total, off = max(worst, int(difference.max())), total + difference.size, off + int((difference > 2).sum())
print(f"bf16 against float32 translation of the held-out digits: max {worst} levels, {off} of {total} values off by more than 2")
sys.exit(worst > 2)'
    run cg-export 90 img2img export runs/colour --format onnx --out colour.onnx
) &
(
    run find-syncs 150 python3 "$REPO/.ci/find_syncs.py" cyclegan pix2pix
    run h2z-train 999 img2img train cyclegan --a jpegs/a --b jpegs/b --steps 50 --out runs/h2z &&
        run h2z-translate 60 img2img translate runs/h2z jpegs/a out/h2z
    for target in discogan cut fastcut stargan; do  # every model's step on CUDA with the defaults
        run "bench-$target" 90 img2img bench "$target" --steps 5 --warmup 2 --json
    done
) &
wait
}

# -- 4. speed, alone on the GPU -----------------------------------------------------------------------------
# each timed benchmark: NAME LIMIT ARGUMENTS (of img2img bench), most told per second first: folder translation and
# the training steps with the defaults (each whole step one CUDA graph, with their profiles: where a replayed
# step's time goes), with channels_last added (which removes cuDNN's layout conversions, a quarter of CycleGAN's
# kernel time, but instance norm's NCHW outputs bring as many copies back: no gain in the seventh run), and with
# a graph per network (--cuda-graph off, the former default); the folder pipeline's ceiling, and with 8 workers;
# then each mean's effect (the ladders) and a batch-size sweep.  An entry's arguments may begin with VAR=value
# words, set for it alone: translation with one intra-op thread per CPU (OMP_NUM_THREADS=nproc, the former
# default) against the default on a GPU, one (resources.host_threads): in the eighth run the main thread's tensor
# copies beside 14 writers and 4 decoders: 941 images/s with one against 915 over four pairs, within their spread
SPEED=(
    "translate-2048 60 translate --size 256 --steps 2048 --profile $LOGS/profile-translate.txt"
    "io-only-2048 50 translate --size 256 --steps 2048 --io-only --profile $LOGS/profile-io-only.txt"
    "translate-2048-all-threads 40 OMP_NUM_THREADS=$(nproc) translate --size 256 --steps 2048"
    "bench-cyclegan 150 cyclegan --size 256 --batch-size 1 --profile $LOGS/profile-cyclegan.txt"
    "bench-cyclegan-channels-last 150 cyclegan --size 256 --batch-size 1 --channels-last --profile $LOGS/profile-cyclegan-channels-last.txt"
    "bench-pix2pix 90 pix2pix --size 256 --batch-size 1 --profile $LOGS/profile-pix2pix.txt"
    "bench-pix2pix-channels-last 90 pix2pix --size 256 --batch-size 1 --channels-last"
    "translate-2048-workers-8 40 translate --size 256 --steps 2048 --workers 8"
    "io-only-2048-workers-8 30 translate --size 256 --steps 2048 --io-only --workers 8"
    "translate-2048-off 40 translate --size 256 --steps 2048 --cuda-graph off"
    "bench-cyclegan-off 150 cyclegan --size 256 --batch-size 1 --cuda-graph off"
    "bench-pix2pix-off 90 pix2pix --size 256 --batch-size 1 --cuda-graph off"
    "translate-2048-b32 40 translate --size 256 --steps 2048 --batch-size 32"
    "ladder-cyclegan 240 cyclegan --size 256 --batch-size 1 --steps 20 --ladder"
    "ladder-pix2pix 180 pix2pix --size 256 --batch-size 1 --steps 20 --ladder"
    "ladder-translate 120 translate --size 256 --steps 512 --ladder"
    "sweep-cyclegan-4 120 cyclegan --size 256 --batch-size 4 --steps 20"
    "sweep-cyclegan-16 120 cyclegan --size 256 --batch-size 16 --steps 20"
    "sweep-cyclegan-2 120 cyclegan --size 256 --batch-size 2 --steps 20"
    "sweep-cyclegan-8 120 cyclegan --size 256 --batch-size 8 --steps 20"
)
assignments() { local word; for word in $1; do [[ $word == [A-Z]*=* ]] || break; echo "$word"; done; }
arguments() {  # an entry's arguments after its VAR=value words
    local rest=$1
    while [[ $rest == [A-Z]*=* ]]; do rest=${rest#* }; done
    echo "$rest"
}
part_speed() {  # part_speed [tests|tests+demos]: the tests (and the demos) beside the compiling (none timed)
    local entry name limit args
    if [[ ${1:-} == tests* ]]; then
        part_tests &  # in a subshell of its own, with its own time limit; waited for with the compiling below
    fi
    if [[ ${1:-} == *demos ]]; then
        (END=$((SECONDS + ${GPU_TESTS_S:-300})); demos) &  # within the tests' time
    fi
    # the compiling, side by side: every compiled timed benchmark (training targets; the ladders compile the same networks as the single runs with channels_last) for a few steps,
    # which leaves their compiled code in TorchInductor's caches for the timed runs below
    END=$((SECONDS + ${GPU_WARM_S:-150}))
    for entry in "${SPEED[@]}"; do
        read -r name limit args <<<"$entry"
        [[ $name == translate-* || $name == io-only-* || $name == ladder-* ]] && continue
        [[ -n ${GPU_SKIP:-} && $name =~ ^(${GPU_SKIP})$ ]] && continue
        args=${args%% --profile *}
        # shellcheck disable=SC2086
        run "warm-$name" 999 env TORCHINDUCTOR_COMPILE_THREADS=4 $(assignments "$args") img2img bench \
            $(arguments "$args") --steps 1 --warmup 3 --json &
    done
    for entry in "ladder-cyclegan cyclegan" "ladder-pix2pix pix2pix"; do  # the ladders' compiled rungs
        read -r name args <<<"$entry"
        [[ -n ${GPU_SKIP:-} && $name =~ ^(${GPU_SKIP})$ ]] && continue
        run "warm-$name" 999 env TORCHINDUCTOR_COMPILE_THREADS=4 img2img bench "$args" --size 256 --batch-size 1 --steps 1 --warmup 3 --channels-last \
            --compile default --cuda-graph off --json &
        run "warm-$name-graphs" 999 env TORCHINDUCTOR_COMPILE_THREADS=4 img2img bench "$args" --size 256 --batch-size 1 --steps 1 --warmup 3 \
            --channels-last --compile reduce-overhead --json &
    done
    wait
    END=$BUDGET
    [[ ${1:-} == *demos ]] && demo_evals
    for entry in "${SPEED[@]}"; do
        read -r name limit args <<<"$entry"
        # shellcheck disable=SC2086
        run "$name" "$limit" env $(assignments "$args") img2img bench $(arguments "$args") --json
    done
}

for PART in $PARTS; do
    case $PART in
        tests) part_tests ;;
        commands) part_commands ;;
        speed) part_speed ;;
        tests+speed) part_speed tests ;;
        tests+demos+speed) part_speed tests+demos ;;
        *) echo "GPU_PARTS: unknown part $PART (tests, commands, speed, tests+speed, tests+demos+speed)" >&2 ;;
    esac
    END=$BUDGET
done

# -- the summary ----------------------------------------------------------------------------------------------
python3 - "$LOGS" "$STATUS" >"$OUT/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path

logs, status = Path(sys.argv[1]), Path(sys.argv[2])
print((logs / "machine.log").read_text().strip())
print("\n== statuses")
print(status.read_text().strip())

def last_json(name):
    try:
        lines = (logs / f"{name}.log").read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None

def line(r):
    s = r["settings"]
    keys = ("amp", "cudnn_benchmark", "channels_last", "compile", "cuda_graph", "fused_adam", "workers", "generator")
    return (f"{s['target']} {s['size']}² b{s['batch_size']}: {r['seconds_per_step'] * 1000:.2f} ms, "
            f"{r['images_per_second']:.1f} img/s, {r['peak_memory_bytes'] / 2**30:.2f} GiB held "
            f"({r.get('peak_tensor_bytes', 0) / 2**30:.2f} in tensors, {r.get('device_in_use_bytes', 0) / 2**30:.2f} "
            "of the device in use), "
            f"{r['achieved_tflops']:.1f} TFLOP/s, syncs {r.get('host_syncs_per_step', '-')}; "
            + ", ".join(f"{k}={s[k]}" for k in keys if k in s))

print("\n== ladders")
for name in ("ladder-cyclegan", "ladder-pix2pix", "ladder-translate"):
    data = last_json(name)
    for r in (data or {}).get("ladder", []):
        print(f"{name}: {r['rung']}: " + line(r))
    if data is None and (logs / f"{name}.log").exists():  # cut short: the rungs it printed as it went
        print("\n".join(f"{name} (cut short): {l}" for l in (logs / f"{name}.log").read_text().splitlines()
                        if " per step" in l))
print("\n== single runs")
for path in sorted(logs.glob("*.log")):
    name = path.stem
    if name.startswith(("io-only", "translate-", "sweep", "bench-")):
        data = last_json(name)
        if data and "settings" in data:
            print(f"{name}: " + line(data))
print("\n== the defaults (each whole step, or translated batch, one CUDA graph) against --cuda-graph off")
for base, target in (("bench-cyclegan", "15 ms"), ("bench-pix2pix", "6 ms"), ("translate-2048", "850 img/s")):
    graphed, plain = last_json(base), last_json(f"{base}-off")
    if plain and graphed and "settings" in plain and "settings" in graphed:
        print(f"{base}: {graphed['seconds_per_step'] * 1000:.2f} ms, {graphed['images_per_second']:.1f} img/s "
              f"against {plain['seconds_per_step'] * 1000:.2f} ms, {plain['images_per_second']:.1f} img/s: "
              f"x{graphed['images_per_second'] / plain['images_per_second']:.2f} (target {target})")
every, default = last_json("translate-2048-all-threads"), last_json("translate-2048")
if every and default and "settings" in every and "settings" in default:
    print(f"translate-2048 with one intra-op thread (the default on a GPU): {default['images_per_second']:.1f} "
          f"img/s against {every['images_per_second']:.1f} with one per CPU (OMP_NUM_THREADS=nproc): "
          f"x{default['images_per_second'] / every['images_per_second']:.2f}")
print("\n== evaluations")
for path in sorted(logs.glob("eval-*.json")):
    metrics = json.loads(path.read_text()).get("metrics", {})
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, (int, float))}
    print(f"{path.stem}: {shown}")
print("\n== test results")
tests = (logs / "cuda-tests.log")
if tests.exists():
    text = tests.read_text().splitlines()
    print("\n".join(l for l in text if any(w in l for w in ("PASSED", "FAILED", "ERROR", "passed", "failed")))[-6000:])
for name in ("cg-bf16-vs-fp32",):
    path = logs / f"{name}.log"
    if path.exists():
        print(f"\n== {name}\n" + "\n".join(path.read_text().splitlines()[-3:]))
path = logs / "find-syncs.log"
if path.exists():
    print("\n== find-syncs\n" + path.read_text()[:8000])
for name in ("profile-translate", "profile-io-only"):  # where the folder pipeline's threads were
    path = logs / f"{name}.txt"
    if path.exists():
        print(f"\n== {name}.txt\n" + path.read_text()[:5000])
for name in ("profile-cyclegan", "profile-cyclegan-channels-last", "profile-pix2pix"):
    path = logs / f"{name}.txt"
    if path.exists():
        lines = path.read_text().splitlines()
        python = next((i for i, l in enumerate(lines) if l.startswith("host time by Python")), len(lines))
        print(f"\n== {name}.txt\n" + "\n".join(lines[:30] + lines[python:python + 32]))
failures = logs / "failures.txt"
if failures.exists():
    print("\n== failed tests\n" + "\n".join(l for l in failures.read_text().splitlines()
                                           if l.startswith(("== ", "E ")))[:6000])
EOF
# failures: the last lines of each failed or timed-out command's log
awk -F'\t' '$2 != "ok" {print $1}' "$STATUS" | while read -r name; do
    [ -f "$LOGS/$name.log" ] && { echo; echo "== tail of $name"; tail -n 12 "$LOGS/$name.log"; }
done >>"$OUT/summary.txt"
cp "$WORK/runs/colour/samples/last.png" "$OUT/colour-samples.png" 2>/dev/null
cp "$WORK/runs/skeletons/samples/last.png" "$OUT/skeleton-samples.png" 2>/dev/null
tar -czf "$OUT/gpu-logs.tar.gz" -C "$OUT" logs status.tsv && rm -rf "$LOGS"
cat "$OUT/summary.txt"
echo "script time: ${SECONDS}s of a ${BUDGET}s budget"
