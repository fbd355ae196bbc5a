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
