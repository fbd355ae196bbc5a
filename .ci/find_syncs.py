"""Where a training step makes the host wait for the GPU (part of .ci/gpu.sh; needs CUDA).

    python3 .ci/find_syncs.py cyclegan pix2pix

For each model, eager and then with --compile auto's CUDA graphs, at 256² and batch 1 as `img2img bench` runs it:
one step under CUDA's sync debug mode "warn" (each synchronising call, as bench counts them, with its full
message, and every other warning), then one under "error", so that the first synchronising call raises where it
happens, with its Python traceback.  The step that raised is abandoned; the next model starts afresh.
"""

from __future__ import annotations

import sys
import traceback

import torch

from img2img import bench


def report(step, device) -> None:
    torch.cuda.synchronize(device)
    caught = bench.warnings_in_sync_debug_mode(step)
    torch.cuda.synchronize(device)
    count, sites = bench.sync_warnings(caught)
    print(f"warn mode: {count} synchronisation(s) at {', '.join(sites) or '-'}")
    for w in caught:
        print(f"  warning at {w.filename}:{w.lineno}: {str(w.message)[:3000]}")
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        print("error mode: the step ran without a synchronisation")
    except RuntimeError as error:
        print("error mode: the first synchronisation raised\n" + "".join(traceback.format_exception(error))[-12000:])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main(targets: list[str]) -> None:
    bench._host_syncs = lambda step, device: report(step, device)  # called once, after the timed steps
    for target in targets:
        for mode in ("off", "reduce-overhead"):
            print(f"\n== {target}, --compile {mode}", flush=True)
            torch.compiler.reset()
            try:
                bench.bench_training(target, size=256, batch_size=1, steps=2, warmup=3, device="cuda",
                                     speed=bench.SpeedSettings(compile=mode))
            except Exception:  # noqa: BLE001 - a diagnosis: say what failed and go on to the next
                traceback.print_exc()
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:] or ["cyclegan", "pix2pix"])
