"""What the process may use, as a container or a job scheduler limits it (cgroup v1 and v2)."""

from __future__ import annotations

import os

import pytest
import torch

from img2img import resources
from img2img.nn.resnet import ResnetGenerator
from img2img.resources import available_cpus, cgroup_cpu_quota, cgroup_memory_left
from img2img.translate import Translator, generator_info

from test_cli import invoke


@pytest.mark.parametrize("version", [1, 2])
def test_a_memory_cgroup_limit_bounds_the_memory_translation_counts_on(tmp_path, monkeypatch, version):
    """In a container (or a job scheduler's cgroup) of 2 GiB, translating a 1600² image on the CPU was killed by
    the kernel, without a word and with nothing written: the pixel budget read the machine's free memory,
    not what the cgroup leaves.  Its limit, less its usage and above it its parents', now bounds the budget."""
    gib = 1 << 30
    proc = tmp_path / "cgroup"
    if version == 2:
        root = mount = tmp_path / "sys"
        proc.write_text("0::/jobs/job7\n")
        files = ("memory.max", "memory.current", "inactive_file")
    else:
        root, mount = tmp_path / "sys", tmp_path / "sys" / "memory"
        proc.write_text("5:cpu,cpuacct:/jobs/job7\n4:memory:/jobs/job7\n0::/\n")
        files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")

    def limit(folder, value, usage, cache):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / files[0]).write_text(f"{value}\n")
        (folder / files[1]).write_text(f"{usage}\n")
        (folder / "memory.stat").write_text(f"anon 1\n{files[2]} {cache}\nother 5\n")

    assert cgroup_memory_left(root, proc) is None  # no cgroup files: no limit
    unlimited = "max" if version == 2 else 9223372036854771712
    for folder in (mount, mount / "jobs", mount / "jobs" / "job7"):
        limit(folder, unlimited, 5 * gib, 0)
    assert cgroup_memory_left(root, proc) is None
    limit(mount / "jobs", 8 * gib, 5 * gib, 1 * gib)  # above: 3 GiB left, and 1 GiB of page cache it can drop
    assert cgroup_memory_left(root, proc) == 4 * gib
    limit(mount / "jobs" / "job7", 2 * gib, gib // 2, 0)  # the job's own: less
    assert cgroup_memory_left(root, proc) == 3 * gib // 2
    limit(mount / "jobs" / "job7", 2 * gib, 3 * gib, 0)  # over its limit (it reclaims, or is killed): nothing
    assert cgroup_memory_left(root, proc) == 0
    # in a container, the path names the cgroup on the host, and the mount's root is the container's cgroup
    proc.write_text("0::/docker/c0ffee\n" if version == 2 else "4:memory:/docker/c0ffee\n")
    limit(mount, gib, gib // 4, 0)
    assert cgroup_memory_left(root, proc) == 3 * gib // 4
    monkeypatch.setattr(resources, "cgroup_memory_left", lambda: 64 * 64 * 4 * 8 * 8 * 4)
    net = ResnetGenerator(3, 3, base_channels=8, n_blocks=1)
    assert Translator(net, generator_info(net, 3, 3)).max_pixels == 64 * 64


@pytest.mark.parametrize("version", [1, 2])
def test_a_cpu_quota_bounds_the_cpus_counted_and_torch_threads(tmp_path, monkeypatch, version):
    """In a container of 1 CPU on a host of many, torch ran one thread per host core, which the quota then
    throttled (a CycleGAN step at 128² on this 2-core machine under a 1-CPU quota: 3.2 s with two threads,
    2.9 s with one), and translation started a writer thread per host core."""
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    if version == 2:
        mount = root
        proc.write_text("0::/jobs/job7\n")
    else:
        mount = root / "cpu"
        proc.write_text("4:memory:/jobs/job7\n3:cpu,cpuacct:/jobs/job7\n0::/\n")

    def quota(folder, value, period=100000):
        folder.mkdir(parents=True, exist_ok=True)
        if version == 2:
            (folder / "cpu.max").write_text(f"{value} {period}\n")
        else:
            (folder / "cpu.cfs_quota_us").write_text(f"{-1 if value == 'max' else value}\n")
            (folder / "cpu.cfs_period_us").write_text(f"{period}\n")

    assert cgroup_cpu_quota(root, proc) is None
    for folder in (mount, mount / "jobs", mount / "jobs" / "job7"):
        quota(folder, "max")
    assert cgroup_cpu_quota(root, proc) is None
    quota(mount / "jobs", 400000)  # 4 CPUs above
    quota(mount / "jobs" / "job7", 150000)  # 1.5 of its own
    assert cgroup_cpu_quota(root, proc) == 1.5
    monkeypatch.setattr(resources, "cgroup_cpu_quota", lambda: 1.5)
    assert available_cpus() == min(2, len(os.sched_getaffinity(0)))  # 1.5 CPUs' time keeps two busy at times
    monkeypatch.setattr(resources, "cgroup_cpu_quota", lambda: 0.2)
    assert available_cpus() == 1
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("cli.available_cpus", lambda: 1)
    try:
        torch.set_num_threads(2)
        result, output = invoke("train", "mnist-gan", "--out", tmp_path / "run", "--dry-run")
        assert result.exit_code == 0, output
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        torch.set_num_threads(2)
        invoke("train", "mnist-gan", "--out", tmp_path / "run", "--dry-run")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_host_threads_sets_torchs_threads_for_the_block_unless_omp_num_threads_says(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        with resources.host_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt), resources.host_threads(1):
            raise KeyboardInterrupt
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's number stands
        with resources.host_threads(1):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
