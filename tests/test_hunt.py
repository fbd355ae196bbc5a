"""Hunting for tracebacks: every command driven with bad values of every option, broken image files and broken
checkpoints.  Whatever comes in, the answer is a one-line error naming the option or file, or a file skipped
with its name while the rest completes: never a traceback, never a crash."""

from __future__ import annotations

import os
import struct
import warnings
import zlib

import click
import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from img2img.cli import main

from test_cli import invoke
from test_translate import write_bomb, write_damaged_exif_jpeg, write_rgb
from test_unpaired import write_unpaired


def assert_clean(result, output, *names):
    """No exception escaped (``invoke`` lets them through), no traceback, and a failure is one ``Error:`` line
    that names one of ``names`` (an option or a path)."""
    assert "Traceback" not in output, output
    if result.exit_code in (0, 3):  # 3: translation skipped some files, each named
        return
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    if names:
        assert any(str(name) in errors[0] for name in names), (names, errors[0])


# -- the corpus of broken and unusual image files -------------------------------------------------------------
def write_corpus(folder):
    """Broken files (named in errors or skips) and unusual valid ones (read like any other)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "source.png")
    data = (folder / "source.png").read_bytes()
    broken = {
        "bomb.png": lambda p: write_bomb(p),
        "truncated.png": lambda p: p.write_bytes(data[: len(data) // 2]),
        "zero-bytes.png": lambda p: p.write_bytes(b""),
        "text.jpg": lambda p: p.write_text("this is not a JPEG"),
        "garbage.tif": lambda p: p.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes()),
        "cut-short.jpg": lambda p: p.write_bytes(cv2.imencode(".jpg", rgb)[1].tobytes()[:200]),
        "bad-zlib.png": lambda p: p.write_bytes(_png(rgb, corrupt_data=True)),
    }
    valid = {
        "jpeg-named.png": lambda p: p.write_bytes(cv2.imencode(".jpg", rgb)[1].tobytes()),  # wrong extension
        "cmyk.jpg": lambda p: Image.fromarray(rgb).convert("CMYK").save(p),
        "palette.png": lambda p: Image.fromarray(rgb).convert("P").save(p),
        "palette-alpha.png": lambda p: Image.fromarray(rgb).convert("P").save(p, transparency=0),
        "grey16.png": lambda p: Image.fromarray((rng.random((12, 10)) * 65535).astype(np.uint16)).save(p),
        "rgb16.png": lambda p: cv2.imwrite(str(p), (rng.random((12, 10, 3)) * 65535).astype(np.uint16)),
        "one-pixel.png": lambda p: Image.fromarray(rgb[:1, :1]).save(p),
        "grey-alpha.png": lambda p: Image.fromarray(rgb[:, :, :2].copy(), mode="LA").save(p),
        # a wrong checksum over intact data (torchvision's decoder died on it; Pillow reads the pixels)
        "bad-crc.png": lambda p: p.write_bytes(_png(rgb, bad_crc=True)),
        "exif-damaged.jpg": lambda p: write_damaged_exif_jpeg(p, rgb),  # read turned, Pillow's warning unsaid
    }
    for name, write in {**broken, **valid}.items():
        write(folder / name)
    (folder / "source.png").unlink()
    return sorted(broken), sorted(valid)


def _png(rgb, bad_crc=False, corrupt_data=False):
    """A PNG written by hand: with a wrong IDAT checksum, or with its compressed pixels damaged (checksum right)."""
    packed = zlib.compress(b"".join(b"\0" + row.tobytes() for row in rgb))
    if corrupt_data:
        packed = packed[:2] + bytes(b ^ 0x5A for b in packed[2:12]) + packed[12:]

    def chunk(kind, payload, crc=None):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF if crc is None else crc
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", packed, crc=0 if bad_crc else None)
            + chunk(b"IEND", b""))


def test_translating_the_corpus_skips_each_broken_file_by_name_and_translates_the_rest(cyclegan_run, tmp_path):
    broken, valid = write_corpus(tmp_path / "corpus")
    result, output = invoke("translate", cyclegan_run, tmp_path / "corpus", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 3, output
    assert_clean(result, output)
    skipped = {line.split()[1].rsplit("/", 1)[-1].rstrip(":") for line in output.splitlines()
               if line.startswith("skipped")}
    assert skipped == set(broken), output
    written = {p.stem for p in (tmp_path / "out").rglob("*.png")}
    assert written == {name.rsplit(".", 1)[0] for name in valid}
    for name in valid:
        with warnings.catch_warnings():  # Pillow's own, opening the damaged EXIF block here, in the test
            warnings.simplefilter("ignore")
            source = ImageOps.exif_transpose(Image.open(tmp_path / "corpus" / name))  # upright
        assert Image.open(tmp_path / "out" / (name.rsplit(".", 1)[0] + ".png")).size == source.size
    assert "warn" not in output.lower()  # Pillow's warning of the damaged EXIF block (naming no file) is unsaid


def test_each_corpus_file_in_a_training_folder_is_read_or_named(tmp_path):
    broken, valid = write_corpus(tmp_path / "corpus")
    for name in broken + valid:
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        write_rgb(folder / "good.png", 20, 20)
        (folder / name).write_bytes((tmp_path / "corpus" / name).read_bytes())
        result, output = invoke("train", "cyclegan", "--a", folder, "--b", folder, "--size", 32, "--load-size", 36,
                                "--batch-size", 2, "--dry-run")
        assert_clean(result, output, name)
        assert (result.exit_code == 0) == (name in valid), (name, output)


# -- every option of every command, with values it cannot take -----------------------------------------------
BAD_INTS = ["-1", "0", "x", "2.5", "99999999999999999999999"]
BAD_FLOATS = ["-1", "0", "nan", "inf", "x"]
BAD_TEXTS = ["", "bogus", "cuda:99"]


def _command(path):
    command = main
    for name in path:
        command = command.commands[name]
    return command


def _bad_values(param, huge_ok):
    kind = param.type
    if isinstance(kind, click.Choice):
        return ["bogus", ""]
    if isinstance(kind, (click.IntRange, type(click.INT))):
        return BAD_INTS if huge_ok else BAD_INTS[:-1]
    if isinstance(kind, (click.FloatRange, type(click.FLOAT))):
        return BAD_FLOATS if huge_ok else BAD_FLOATS[:2] + BAD_FLOATS[4:]
    if isinstance(kind, click.Path):
        return ["__MISSING__", "__FILE__", "__FOLDER__"]
    if isinstance(kind, type(click.STRING)):
        return BAD_TEXTS
    return []


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, cyclegan_run):
    root = tmp_path_factory.mktemp("hunt")
    write_unpaired(root)
    (root / "file.txt").write_text("a file")
    (root / "folder").mkdir()
    mnist = root / "mnist-run"
    result, output = invoke("train", "mnist-gan", "--out", mnist, "--steps", 2, "--batch-size", 4, "--device", "cpu")
    assert result.exit_code == 0, output
    return root, mnist, cyclegan_run


# base arguments of each command (valid), and whether a huge value is safe to accept (it starts no work)
COMMANDS = {
    ("train", "mnist-gan"): (lambda r, m, c: ["--dry-run", "--device", "cpu"], True),
    ("train", "cyclegan"): (lambda r, m, c: ["--a", r / "a", "--b", r / "b", "--size", 32, "--batch-size", 2,
                                             "--dry-run", "--device", "cpu"], True),
    ("train", "pix2pix"): (lambda r, m, c: ["--a", r / "a", "--b", r / "a", "--size", 32, "--batch-size", 2,
                                            "--dry-run", "--device", "cpu"], True),
    ("train", "stargan"): (lambda r, m, c: ["--data", r, "--size", 32, "--batch-size", 2, "--dry-run",
                                            "--device", "cpu"], True),
    ("translate",): (lambda r, m, c: [c, r / "b", r / "out", "--device", "cpu", "--overwrite"], False),
    ("sample",): (lambda r, m, c: [m, "--n", 4, "--out", r / "samples", "--overwrite", "--device", "cpu"], False),
    ("export",): (lambda r, m, c: [c, "--out", r / "exported.onnx", "--overwrite"], False),
    ("eval",): (lambda r, m, c: [c, "--a", r / "a", "--b", r / "b", "--features", "random", "--device", "cpu"],
                False),
    ("bench",): (lambda r, m, c: ["pix2pix", "--size", 32, "--steps", 1, "--warmup", 0, "--device", "cpu"], False),
}
SKIP = {"help", "dry_run", "resume", "out", "overwrite", "json", "profile", "grid", "output", "input_path",
        "checkpoint", "target"}


def _cases():
    import dataclasses  # noqa: PLC0415

    from img2img.config import TrainConfig  # noqa: PLC0415

    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    for path, (_, huge_ok) in COMMANDS.items():
        for param in _command(path).params:
            if param.name in SKIP or isinstance(param.type, type(click.BOOL)):
                continue
            if path == ("train", "stargan") and param.name in shared:  # the loop's options: swept above
                continue
            for value in _bad_values(param, huge_ok):
                yield pytest.param(path, param.opts[0], param.name, value, id=f"{'-'.join(path)}{param.opts[0]}={value}")


@pytest.mark.parametrize(("path", "flag", "name", "value"), list(_cases()))
def test_bad_values_of_every_option_are_one_line_errors_or_accepted(fixtures, tmp_path, path, flag, name, value):
    root, mnist, cyclegan = fixtures
    base, _ = COMMANDS[path]
    # a path that does not exist lies in the test's own folder: an option that writes there (eval --json) may
    value = {"__FILE__": root / "file.txt", "__FOLDER__": root / "folder",
             "__MISSING__": tmp_path / "missing" / "img2img"}.get(value, value)
    result, output = invoke(*path, *base(root, mnist, cyclegan), flag, value)
    assert_clean(result, output, flag, flag.lstrip("-"), value)


def _commands(command, path=()):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _integer_options():
    """Each command's integer options; train's once each (its targets share them, and their types come from one
    place, cli.options.config_options)."""
    seen = set()
    for path, command in _commands(main):
        for param in command.params:
            if not (isinstance(param, click.Option) and isinstance(param.type, (click.IntRange, type(click.INT)))):
                continue
            key = ("train", param.opts[0]) if path[0] == "train" else (path, param.opts[0])
            if key not in seen:
                seen.add(key)
                yield path, param.opts[0]


INTEGER_OPTIONS = list(_integer_options())


@pytest.mark.parametrize(("path", "flag"), INTEGER_OPTIONS, ids=[f"{'-'.join(p)}{f}" for p, f in INTEGER_OPTIONS])
def test_an_integer_past_64_bits_is_refused_in_one_line_by_every_option(path, flag):
    """``--batch-size``, ``--seed`` and the like, given 10**23: torch and numpy take 64-bit integers at most, and
    ``sample --seed``, ``eval --seed``, ``translate --batch-size`` and ``bench --batch-size`` passed it on to them
    (a traceback: "Overflow when unpacking long long")."""
    result, output = invoke(*path, flag, "99999999999999999999999")
    assert result.exit_code == 2, output
    assert_clean(result, output, flag)


# -- broken checkpoints ---------------------------------------------------------------------------------------
def _broken_checkpoints(folder, good):
    folder.mkdir()
    data = good.read_bytes()
    made = {
        "zero-bytes.ckpt": b"",
        "truncated.ckpt": data[: len(data) // 3],
        "random.ckpt": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text.ckpt": b"not a checkpoint\n",
    }
    for name, payload in made.items():
        (folder / name).write_bytes(payload)
    torch.save({"something": "else"}, folder / "foreign.ckpt")
    payload = torch.load(good, weights_only=False)
    del payload["networks"]
    torch.save(payload, folder / "no-networks.ckpt")
    payload = torch.load(good, weights_only=False)
    payload["config"]["model"] = "no-such-model"
    torch.save(payload, folder / "unknown-model.ckpt")
    (folder / "empty-run").mkdir()
    return [*(folder / name for name in [*made, "foreign.ckpt", "no-networks.ckpt", "unknown-model.ckpt"]),
            folder / "empty-run", folder / "missing.ckpt"]


def test_every_command_names_a_broken_checkpoint_in_one_line(fixtures, tmp_path):
    root, mnist, cyclegan = fixtures
    bad = _broken_checkpoints(tmp_path / "broken", cyclegan / "last.ckpt")
    for checkpoint in bad:
        for args in (["translate", checkpoint, root / "a", tmp_path / "out"], ["sample", checkpoint, "--n", 2,
                     "--out", tmp_path / "samples"], ["export", checkpoint, "--out", tmp_path / "x.onnx"],
                     ["eval", checkpoint, "--a", root / "a", "--b", root / "b"],
                     ["train", "mnist-gan", "--resume", checkpoint]):
            result, output = invoke(*args)
            assert result.exit_code != 0, (args, output)
            assert_clean(result, output, checkpoint.name)


# -- hypothesis: random combinations of values --------------------------------------------------------------
# The suite draws the same examples on every run, so that a red CI says the change broke something rather than
# that a rare draw came up; IMG2IMG_HUNT=N draws N new examples a test (the hunt itself, run by hand).
_HUNT = int(os.environ.get("IMG2IMG_HUNT", "0") or 0)


def hunt(examples: int):
    return settings(max_examples=_HUNT or examples, derandomize=not _HUNT, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


ANY_VALUE = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(alphabet="abcxyz-_./:0123456789", max_size=6))
TRAIN_FLAGS = [p.opts[0] for p in _command(("train", "cyclegan")).params
               if p.name not in SKIP and p.opts and not isinstance(p.type, type(click.BOOL))]


@hunt(40)
@given(st.dictionaries(st.sampled_from(TRAIN_FLAGS), ANY_VALUE, min_size=1, max_size=4))
def test_random_training_options_never_bring_a_traceback(fixtures, options):
    root, _, _ = fixtures
    args = ["train", "cyclegan", "--a", root / "a", "--b", root / "b", "--size", 32, "--batch-size", 2,
            "--device", "cpu"]
    for flag, value in options.items():
        args += [flag, value]
    result, output = invoke(*args, "--dry-run")
    # a value like "-10" after a flag that may stand alone (--cuda-graph: on) is an option of its own to click (a
    # cluster of short ones), which names its start: "No such option '-1'"
    strays = [str(value)[:2] for value in options.values() if str(value).startswith("-")]
    assert_clean(result, output, *options, *strays)


@hunt(15)
@given(resize=st.one_of(st.none(), st.integers(-2, 40)), tile=st.one_of(st.none(), st.integers(-2, 40)),
       batch=st.integers(-1, 9), workers=st.integers(-1, 3), pixels=st.one_of(st.none(), st.integers(-1, 500)))
def test_random_translation_options_translate_or_refuse_in_one_line(fixtures, tmp_path_factory, resize, tile,
                                                                    batch, workers, pixels):
    root, _, cyclegan = fixtures
    args = ["translate", cyclegan, root / "b", tmp_path_factory.mktemp("out"), "--device", "cpu",
            "--batch-size", batch, "--workers", workers]
    for flag, value in (("--resize", resize), ("--tile", tile), ("--max-pixels", pixels)):
        if value is not None:
            args += [flag, value]
    default = Image.MAX_IMAGE_PIXELS
    result, output = invoke(*args)
    assert Image.MAX_IMAGE_PIXELS == default  # --max-pixels holds for its command only
    assert_clean(result, output, "--resize", "--tile", "--batch-size", "--workers", "--max-pixels")


def test_no_damaged_png_kills_the_decoder(tmp_path):
    """Damaged PNGs (bytes flipped, checksums right or wrong, cut short): each is read or refused in one line,
    and none kills the process (torchvision's decode_png died on most of them)."""
    from img2img.data import guard  # noqa: PLC0415
    from img2img.data.images import read_image_levels  # noqa: PLC0415
    from img2img.errors import UserError  # noqa: PLC0415

    rng = np.random.default_rng(1)
    rgb = (rng.random((16, 12, 3)) * 255).astype(np.uint8)
    clean = _png(rgb)
    paths = []
    for index in range(36):
        data = bytearray(_png(rgb, corrupt_data=True) if index % 3 == 0 else clean)
        if index % 3 == 1:
            for _ in range(3):
                data[int(rng.integers(8, len(data)))] ^= int(rng.integers(1, 256))
        elif index % 3 == 2:
            data = data[: int(rng.integers(20, len(data)))]
        paths.append(tmp_path / f"{index:02d}.png")
        paths[-1].write_bytes(bytes(data))
    assert guard.find_crashes(paths) == {}
    for path in paths:
        try:
            levels, _ = read_image_levels(path)
            assert levels.shape == (16, 12, 3)
        except UserError as error:
            assert str(error).startswith(str(path)) and "\n" not in str(error)
