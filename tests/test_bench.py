"""`img2img bench`: every target runs its real step on the CPU at a tiny size and reports the documented fields
(no timing is asserted: speed targets are checked by hand on a GPU, see BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest

from test_cli import assert_one_line_error, invoke

FIELDS = {"seconds_per_step", "images_per_second", "peak_memory_bytes", "achieved_tflops", "device",
          "torch_version", "settings", "fraction_of_peak", "flops_per_step"}


@pytest.mark.parametrize("target, size", [("mnist-gan", 28), ("pix2pix", 32), ("cyclegan", 32), ("discogan", 16),
                                          ("translate", 16)])
def test_bench_runs_each_target_and_reports_json(target, size):
    only = ["--workers", 0] if target == "translate" else ["--warmup", 0]  # each applies to its kind only
    result, output = invoke("bench", target, "--size", size, "--batch-size", 2, "--steps", 2, *only,
                            "--device", "cpu", "--json")
    assert result.exit_code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert FIELDS <= set(report)
    assert report["settings"]["target"] == target and report["settings"]["batch_size"] == 2
    assert report["seconds_per_step"] > 0 and report["images_per_second"] > 0
    assert report["flops_per_step"] > 0 and report["peak_memory_bytes"] > 0 and report["device"].startswith("cpu")


def test_bench_refuses_sizes_the_networks_cannot_take():
    result, _ = invoke("bench", "discogan", "--size", 48, "--device", "cpu")
    assert_one_line_error(result, "--size", "power of two")
