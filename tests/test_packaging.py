"""The install exposes img2img (with img2img.cli) and no generic top-level `cli` or `datasets` module."""

import subprocess
import sys


def test_cli_and_datasets_are_not_top_level_modules(tmp_path):
    probe = ("import importlib.util as u, img2img.cli; "
             "print(u.find_spec('cli'), u.find_spec('datasets'), img2img.cli.main.name)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["None", "None", "main"]


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "img2img.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "sample" in result.stdout


def test_the_command_line_starts_without_the_libraries_only_some_commands_need(tmp_path):
    """`img2img --help` (or a mistyped option) took 4.8 s, 2.4 s of it importing what only some commands use:
    torchvision (whose import brings torch._dynamo, for sample grids), albumentations (training's augmentation),
    kornia (SSIM) and torchmetrics (FID).  Each is imported where it is used."""
    heavy = ("torchvision", "torch._dynamo", "albumentations", "kornia", "torchmetrics")
    probe = f"import sys, img2img.cli; print(*[m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.split() == []
