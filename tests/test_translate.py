"""Translation: mirrored folders, any size, channels and bit depth, safety with the user's files, tiles,
official weights, ONNX export and the Python API."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import stat
import struct
from copy import deepcopy as copy_module
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

import img2img
from img2img.config import RunConfig, TrainConfig
from img2img.errors import UserError
from img2img.data.images import pixel_limit, read_image_bits, read_image_levels
from img2img.models.pix2pix import Pix2Pix, Pix2PixConfig
from img2img.nn.resnet import ResnetGenerator
from img2img.train import train
from img2img.translate import (GeneratorInfo, Translator, full_resolution_in_float32, full_resolution_layers,
                               generator_info, tile_window)

from official_reference import (OfficialResnetGenerator, OfficialUnetGenerator, official_test_output,
                                settle_batch_norm)
from test_cli import assert_one_line_error, command_in_a_process, invoke, waited_on
from test_pix2pix import smooth_images


class Invert(nn.Module):
    """Exactly y = -x: outputs are predictable to the last bit, whatever the size."""

    size_multiple = 4

    def forward(self, x):
        return -x


def write_rgb(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(path)


@pytest.fixture
def photos(tmp_path):
    """A nested folder of images of several sizes and formats, a broken image and a text file."""
    root = tmp_path / "photos"
    write_rgb(root / "a.png", 37, 53, seed=1)
    write_rgb(root / "sub" / "b.jpg", 64, 48, seed=2)
    write_rgb(root / "sub" / "deeper" / "c.png", 5, 3, seed=3)
    (root / "notes.txt").write_text("not an image")
    return root


def test_names_and_relative_paths_are_mirrored_and_sizes_kept(photos, tmp_path):
    out = tmp_path / "out"
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(photos, out, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.png", "sub/b.png", "sub/deeper/c.png"]
    assert len(summary.translated) == 3 and summary.ignored == 1 and summary.ok
    for name, size in (("a.png", (53, 37)), ("sub/b.png", (48, 64)), ("sub/deeper/c.png", (3, 5))):
        assert Image.open(out / name).size == size
    original = np.asarray(Image.open(photos / "a.png"), dtype=np.int32)
    assert np.abs(np.asarray(Image.open(out / "a.png"), dtype=np.int32) - (255 - original)).max() <= 1
    same = tmp_path / "same"
    Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(photos, same, format="same", progress=False)
    assert (same / "sub" / "b.jpg").is_file() and (same / "a.png").is_file()


@pytest.mark.parametrize("orientation, upright", [
    (1, lambda a: a), (2, np.fliplr), (3, lambda a: np.rot90(a, 2)), (4, np.flipud),
    (5, lambda a: a.transpose(1, 0, 2)), (6, lambda a: np.rot90(a, -1)),
    (7, lambda a: np.rot90(a, 2).transpose(1, 0, 2)), (8, lambda a: np.rot90(a, 1))])
def test_photos_are_read_and_translated_upright_as_their_exif_orientation_says(tmp_path, orientation, upright):
    """A phone stores a photo as its sensor read it and tags how to turn it (EXIF orientation 6: a quarter turn
    clockwise); viewers show it turned, and so training and translation see it, and outputs are upright."""
    stored = (np.random.default_rng(orientation).random((6, 10, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "photo.png", exif=exif)
    levels, _ = read_image_levels(tmp_path / "photo.png")
    assert np.array_equal(levels, upright(stored))
    out = tmp_path / "out"
    Translator(Invert(), GeneratorInfo(3, 3, 2)).translate_folder(tmp_path / "photo.png", out, progress=False)
    assert np.abs(np.asarray(Image.open(out / "photo.png"), dtype=np.int32) - (255 - upright(stored))).max() <= 1
    if orientation == 6:  # and the common case, a JPEG from a phone; and one whose EXIF block is damaged
        image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
        assert read_image_levels(tmp_path / "phone.jpg")[0].shape == (10, 6, 3)
        write_damaged_exif_jpeg(tmp_path / "damaged.jpg", stored)
        with warnings.catch_warnings():  # Pillow warns of the damage (naming no file): read quietly, turned
            warnings.simplefilter("error")
            assert read_image_levels(tmp_path / "damaged.jpg")[0].shape == (10, 6, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["png", "tif"])
def test_16_bit_colour_pngs_and_tiffs_keep_their_bits_and_are_read_upright(tmp_path, kind, orientation):
    """OpenCV decodes 16-bit colour files, which Pillow cuts to 8 bits.  TIFFs went to Pillow (a scanner's or a
    raw converter's 16-bit TIFF trained and translated in 8 bits), and the EXIF orientation, which OpenCV's
    unchanged mode ignores, was not applied to either."""
    upright = dict(zip(range(1, 9), [lambda a: a, np.fliplr, lambda a: np.rot90(a, 2), np.flipud,
                                     lambda a: a.transpose(1, 0, 2), lambda a: np.rot90(a, -1),
                                     lambda a: np.rot90(a, 2).transpose(1, 0, 2), lambda a: np.rot90(a, 1)]))
    stored = (np.random.default_rng(orientation).random((6, 10, 3)) * 65535).astype(np.uint16)
    write = write_16_bit_png if kind == "png" else write_16_bit_tiff
    write(tmp_path / f"photo.{kind}", stored, orientation)
    assert Image.open(tmp_path / f"photo.{kind}").getexif().get(0x0112, 1) == orientation  # as a viewer reads it
    levels, bits = read_image_levels(tmp_path / f"photo.{kind}")
    assert bits == 16 and levels.dtype == np.uint16 and np.array_equal(levels, upright[orientation](stored))


@pytest.mark.parametrize("orientation", [1, 6])
def test_16_bit_grey_and_alpha_pngs_are_grey_in_16_bits(tmp_path, orientation):
    """Pillow reads a 16-bit grey+alpha PNG as 8-bit RGBA, so such a folder trained and translated as four
    channels of 8 bits, where an 8-bit grey+alpha PNG is grey (its alpha dropped): now one channel of 16 bits."""
    grey = (np.random.default_rng(orientation).random((6, 10)) * 65535).astype(np.uint16)
    pixels = np.stack([grey, np.full_like(grey, 40000)], axis=2).astype(">u2")  # grey, alpha, big-endian
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # each row: filter 0, then its pixels

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    exif = _exif(orientation)
    (tmp_path / "grey.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 6, 16, 4, 0, 0, 0))
                                        + chunk(b"eXIf", exif) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert Image.open(tmp_path / "grey.png").mode == "RGBA"  # Pillow's reading
    levels, bits = read_image_levels(tmp_path / "grey.png")
    upright = grey if orientation == 1 else np.rot90(grey, -1)
    assert bits == 16 and levels.dtype == np.uint16 and np.array_equal(levels[:, :, 0], upright)
    assert levels.shape == (*upright.shape, 1)


def write_float_tiff(path, rgb, orientation=1):
    """A colour TIFF of 32-bit floats written by hand (one uncompressed strip), with the orientation tag."""
    height, width, _ = rgb.shape
    pixels = rgb.astype(">f4").tobytes()
    arrays = 8 + 2 + 12 * 12 + 4  # where BitsPerSample's three values go, then SampleFormat's, then the pixels
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, arrays), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, arrays + 12), (274, 3, 1, orientation), (277, 3, 1, 3), (278, 3, 1, height),
            (279, 4, 1, len(pixels)), (284, 3, 1, 1), (339, 3, 3, arrays + 6)]
    ifd = struct.pack(">H", len(tags)) + b"".join(
        struct.pack(">HHI", tag, kind, count) + (struct.pack(">HH", value, 0) if kind == 3 and count == 1 else
                                                 struct.pack(">I", value)) for tag, kind, count, value in tags)
    path.write_bytes(b"MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + struct.pack(">HHH", 32, 32, 32)
                     + struct.pack(">HHH", 3, 3, 3) + pixels)


@pytest.mark.parametrize("orientation", [1, 3, 6])
def test_colour_tiffs_of_floats_are_read_upright(tmp_path, orientation, monkeypatch):
    """A raw converter's or renderer's colour TIFF of 32-bit floats, which Pillow cannot open, was named as not
    a readable image; OpenCV reads it: floats clipped to [0, 1], upright as its orientation tag says (OpenCV's
    TIFF decoder turns it itself).  One that claims more pixels than the limit is refused before it is
    decoded."""
    stored = np.random.default_rng(orientation).random((6, 10, 3)).astype(np.float32) * 1.2 - 0.1
    write_float_tiff(tmp_path / "linear.tif", stored, orientation)
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "linear.tif")
    upright = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1)}[orientation]
    levels, bits = read_image_levels(tmp_path / "linear.tif")
    assert levels.dtype == np.float32 and bits == 8
    assert np.array_equal(levels, upright(np.clip(stored, 0, 1)))
    if orientation == 6:  # an OpenCV that left a quarter turn unmade (4.10 and 5.0 make it)
        from img2img.data import images  # noqa: PLC0415

        monkeypatch.setattr(images.cv2, "imdecode", lambda data, flags: np.ascontiguousarray(stored[:, :, ::-1]))
        assert np.array_equal(read_image_levels(tmp_path / "linear.tif")[0], upright(np.clip(stored, 0, 1)))
        monkeypatch.undo()
    with pixel_limit(59):
        with pytest.raises(UserError, match="10×6 pixels, more than the limit of 59"):
            read_image_levels(tmp_path / "linear.tif")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "linear.tif").read_bytes()[:40])  # its IFD cut short
    with pytest.raises(UserError, match="not a readable image"):
        read_image_levels(tmp_path / "cut.tif")


def test_16_bit_ppms_keep_their_bits(tmp_path):
    """dcraw -4 writes a raw photo as a 16-bit PPM, which Pillow cut to 8 bits; other depths (12 bits) Pillow
    scales to 8, as before."""
    stored = (np.random.default_rng(0).random((6, 10, 3)) * 65535).astype(np.uint16)
    (tmp_path / "raw.ppm").write_bytes(b"P6\n# dcraw\n10 6\n65535\n" + stored.astype(">u2").tobytes())
    levels, bits = read_image_levels(tmp_path / "raw.ppm")
    assert bits == 16 and np.array_equal(levels, stored)
    (tmp_path / "12.ppm").write_bytes(b"P6 10 6 4095\n" + (stored >> 4).astype(">u2").tobytes())
    levels, bits = read_image_levels(tmp_path / "12.ppm")
    assert bits == 8 and np.abs(levels.astype(int) - (stored >> 8)).max() <= 1


def test_every_image_format_pillow_reads_under_a_common_name_is_an_image(tmp_path, cyclegan_run):
    """A folder of .jfif or .jpe photos (JPEG under other names), .avif, .qoi, .dib, .pnm or .apng files held
    'no images', and translation said it 'ignored 6 files that are not images'; AVIF counts where Pillow reads
    it (built with libavif)."""
    formats = Image.registered_extensions()  # what this Pillow writes (an older one reads QOI, writes no QOI)
    rgb = (np.random.default_rng(0).random((9, 7, 3)) * 255).astype(np.uint8)
    names = [name for name in ("a.jfif", "b.jpe", "c.qoi", "d.dib", "e.pnm", "f.apng", "g.avif")
             if formats.get(Path(name).suffix) in Image.SAVE]
    assert len(names) >= 5
    (tmp_path / "in").mkdir()
    for name in names:
        Image.fromarray(rgb).save(tmp_path / "in" / name)  # in the format the name says
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result, output = invoke("translate", cyclegan_run, tmp_path / "in", out, "--device", "cpu")
    assert result.exit_code == 0, output
    assert f"translated {len(names)} images" in output and "ignored 1 file that is not an image" in output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(n).stem}.png" for n in names)
    assert all(Image.open(out / f"{Path(n).stem}.png").size == (7, 9) for n in names)
    for name in names:  # --format same writes those that OpenCV encodes (JPEG and BMP under their other names)
        if Path(name).suffix not in (".jfif", ".jpe", ".dib", ".pnm"):
            (tmp_path / "in" / name).unlink()
    result, output = invoke("translate", cyclegan_run, tmp_path / "in", tmp_path / "same", "--format", "same",
                            "--device", "cpu")
    assert result.exit_code == 0, output
    written = {p.name: Image.open(p) for p in (tmp_path / "same").iterdir()}
    assert sorted(written) == ["a.jfif", "b.jpe", "d.dib", "e.pnm"]
    assert {name: (image.format, image.size) for name, image in written.items()} == {
        "a.jfif": ("JPEG", (7, 9)), "b.jpe": ("JPEG", (7, 9)), "d.dib": ("BMP", (7, 9)), "e.pnm": ("PPM", (7, 9))}


def test_every_image_of_a_mixed_folder_is_translated_whatever_its_format_or_name(tmp_path, cyclegan_run, monkeypatch):
    """A folder of photo.jpg and photo.png (or anim.gif and anim.webp) was refused whole ("would both be written
    to photo.png; use --format same"), and --format same refused it whole for one GIF among its files ("cannot
    write .gif files"), or failed to write a grey PGM's colour translation: the user could not go on without
    renaming files.  Now names that differ only in their extensions keep their whole names (photo.jpg.png), a
    format that is read but not written is translated to PNG, a PGM's colour translation to PPM, each said in a
    line; and one image to a named file whose format cannot hold the translation is refused in one line."""
    source = tmp_path / "in"
    source.mkdir()
    for name in ("photo.jpg", "photo.png", "anim.gif", "scan.pgm", "other.tga"):
        image = Image.fromarray(np.full((9, 7, 3), 90, dtype=np.uint8))
        (image.convert("L") if name.endswith(".pgm") else image).save(source / name)
    warned = []  # what the CLI logs, however the img2img logger is set up
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warned.append(record.getMessage())
    monkeypatch.setattr(logging.getLogger("img2img"), "handlers", [*logging.getLogger("img2img").handlers])
    logging.getLogger("img2img").addHandler(handler)  # (to the copy, which the test's end drops)
    result, output = invoke("translate", cyclegan_run, source, tmp_path / "png", "--device", "cpu")
    assert result.exit_code == 0 and "translated 5 images" in output, output
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "anim.png", "other.png", "photo.jpg.png", "photo.png.png", "scan.png"]
    assert warned == ["2 inputs share their names but for their extensions; the translation of each keeps its whole "
                      f"name ({source / 'photo.jpg'} → photo.jpg.png)"]
    warned.clear()
    result, output = invoke("translate", cyclegan_run, source, tmp_path / "same", "--format", "same", "--device", "cpu")
    assert result.exit_code == 0 and "translated 5 images" in output, output
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == [
        "anim.png", "other.png", "photo.jpg", "photo.png", "scan.ppm"]
    assert warned == ["--format same: .gif inputs are translated to .png files, .pgm inputs are translated to .ppm "
                      "files, .tga inputs are translated to .png files"]
    assert Image.open(tmp_path / "same" / "scan.ppm").mode == "RGB"
    result, _ = invoke("translate", cyclegan_run, source / "scan.pgm", tmp_path / "scan.pgm", "--device", "cpu")
    assert_one_line_error(result, "OUTPUT: a .pgm file cannot hold this model's colour translations; name the "
                          "output .ppm")
    assert not (tmp_path / "scan.pgm").exists()


def test_files_whose_names_near_the_limit_are_written_whole(tmp_path, cyclegan_run, mnist_run):
    """Every file is written as a hidden temporary beside it and renamed: a legal 250-byte name plus the mark
    went past the file system's 255, so translation 'failed to write' it (and a sample grid, a report or an
    export of such a name failed: the writers share the temporary's naming)."""
    name = "é" * 120 + "x" * 6  # 246 bytes in UTF-8, 250 with .png
    (tmp_path / "in").mkdir()
    write_rgb(tmp_path / "in" / f"{name}.png", 9, 7)
    write_rgb(tmp_path / "in" / "short.png", 9, 7)
    result, output = invoke("translate", cyclegan_run, tmp_path / "in", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0 and "translated 2 images" in output, output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([f"{name}.png", "short.png"])
    assert Image.open(tmp_path / "out" / f"{name}.png").size == (7, 9)
    train(mnist_run(steps=1, batch_size=4), tmp_path / "digits")
    result, output = invoke("sample", tmp_path / "digits", "--n", 2, "--out", tmp_path / "s", "--grid",
                            tmp_path / f"{name}.png", "--device", "cpu")
    assert result.exit_code == 0 and Image.open(tmp_path / f"{name}.png").size[0] > 0, output
    assert not list(tmp_path.rglob(".*.tmp-*"))  # no temporary left behind


def test_an_output_folder_that_is_a_file_is_named_and_the_rest_translated(tmp_path):
    """A file where a sub-folder of the output goes: each of its outputs was skipped saying "File exists", as if
    the output itself existed."""
    for name in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        write_rgb(tmp_path / "in" / name, 8, 8)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_bytes(b"a file of the user's")
    summary = Translator(Invert(), GeneratorInfo(3, 3, 1)).translate_folder(tmp_path / "in", tmp_path / "out",
                                                                             workers=0, progress=False)
    assert summary.translated == [tmp_path / "out" / "a.png"] and (tmp_path / "out" / "a.png").is_file()
    blocked = f"{tmp_path / 'out' / 'sub'} is a file, so no folder can be made there"
    assert sorted(summary.failed) == [(tmp_path / "out" / "sub" / "b.png", blocked),
                                      (tmp_path / "out" / "sub" / "deeper" / "c.png", blocked)]
    assert (tmp_path / "out" / "sub").read_bytes() == b"a file of the user's"


def _exif(orientation):
    """An EXIF block (TIFF-structured, no "Exif" prefix) holding the orientation tag."""
    return b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + \
        struct.pack(">I", 0)


def write_16_bit_png(path, rgb, orientation=1):
    """A 16-bit RGB PNG (OpenCV writes it) with an eXIf chunk after its header."""
    data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))[1].tobytes()
    exif = _exif(orientation)
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    path.write_bytes(data[:33] + chunk + data[33:])  # signature (8) and IHDR (25) first


def write_16_bit_tiff(path, rgb, orientation=1):
    """A 16-bit RGB TIFF written by hand (one uncompressed strip), with the orientation tag."""
    height, width, _ = rgb.shape
    pixels = rgb.astype(">u2").tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 8 + 2 + 12 * 11 + 4), (259, 3, 1, 1),
            (262, 3, 1, 2), (273, 4, 1, 8 + 2 + 12 * 11 + 4 + 6), (274, 3, 1, orientation), (277, 3, 1, 3),
            (278, 3, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    ifd = struct.pack(">H", len(tags)) + b"".join(
        struct.pack(">HHI", tag, kind, count) + (struct.pack(">HH", value, 0) if kind == 3 and count == 1 else
                                                 struct.pack(">I", value)) for tag, kind, count, value in tags)
    path.write_bytes(b"MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + struct.pack(">HHH", 16, 16, 16)
                     + pixels)


def write_damaged_exif_jpeg(path, rgb):
    """A JPEG whose EXIF block says orientation 6 and holds a tag whose data lie past the block's end (Pillow
    warns "Tag data larger than file", naming no file, when it opens it)."""
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, "JPEG", quality=95)
    jpeg = encoded.getvalue()
    entries = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">HHII", 0x010E, 2, 100, 0xFFFF)
    app1 = b"Exif\x00\x00MM\x00*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])


@pytest.mark.parametrize("name", ["resnet", "resnet-batch", "cut", "unet", "unet-instance", "discogan", "stargan"])
def test_every_generator_translates_the_smallest_images_to_their_own_size(name):
    """Images of one or a few pixels are padded up to what the network takes (a 1×1 image under StarGAN's
    generator, whose instance norm met a 1×1 map, stopped translation with a traceback)."""
    from img2img.models.stargan import ToDomain  # noqa: PLC0415
    from img2img.nn.cut import CutResnetGenerator  # noqa: PLC0415
    from img2img.nn.discogan import DiscoGenerator  # noqa: PLC0415
    from img2img.nn.stargan import StarGenerator  # noqa: PLC0415
    from img2img.nn.unet import UnetGenerator  # noqa: PLC0415

    net = {"resnet": lambda: ResnetGenerator(3, 3, 4, n_blocks=1),
           "resnet-batch": lambda: ResnetGenerator(3, 3, 4, n_blocks=1, norm="batch"),
           "cut": lambda: CutResnetGenerator(3, 3, 4, n_blocks=1),
           "unet": lambda: UnetGenerator(3, 3, num_downs=5, base_channels=4),
           "unet-instance": lambda: UnetGenerator(3, 3, num_downs=5, base_channels=4, norm="instance"),
           "discogan": lambda: DiscoGenerator(3, 3, size=32, base_channels=4),
           "stargan": lambda: ToDomain(StarGenerator(3, 2, 4, n_blocks=1), 1)}[name]().eval()
    translator = Translator(net, generator_info(net, 3, 3))
    for height, width in ((1, 1), (2, 3), (5, 1), (1, 9)):
        image = torch.rand(1, 3, height, width) * 2 - 1
        output = translator.translate_tensor(image)
        assert output.shape == image.shape and torch.isfinite(output).all(), (height, width)


@pytest.mark.parametrize("stop", [RuntimeError("the third batch fails"), KeyboardInterrupt(), signal.SIGTERM,
                                  signal.SIGHUP], ids=["fails", "ctrl-c", "sigterm", "sighup"])
def test_a_batch_that_fails_or_is_interrupted_leaves_the_batches_before_it_written(tmp_path, monkeypatch, caplog,
                                                                                   stop):
    """Batches are handed to the writers one batch late (the GPU translates the next meanwhile): when a batch's
    translation fails and the run stops, the batch translated before it is written all the same.  Ctrl-C (which
    stopped translation without a word) lets the writes under way end, and one line says how many images are
    written and that the same command translates the rest, which it does.  SIGTERM and SIGHUP (which ended the
    process on the spot, without a word, perhaps halfway through writing a file) do the same."""
    for index in range(6):
        write_rgb(tmp_path / "in" / f"{index}.png", 8, 8, seed=index)
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2)
    calls = []
    translate = translator.translate_tensor

    def third_stops(images):
        calls.append(len(images))
        if len(calls) == 3:
            if isinstance(stop, signal.Signals):
                os.kill(os.getpid(), stop)
            raise stop
        return translate(images)

    monkeypatch.setattr(translator, "translate_tensor", third_stops)
    raised = KeyboardInterrupt if isinstance(stop, signal.Signals) else type(stop)
    handlers = [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)]
    with caplog.at_level("WARNING", logger="img2img"), pytest.raises(raised) as error:
        translator.translate_folder(tmp_path / "in", tmp_path / "out", progress=False, workers=0)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    if isinstance(stop, RuntimeError):
        assert written == ["0.png", "1.png", "2.png", "3.png"]
        return
    assert getattr(error.value, "signal_number", signal.SIGINT) == (
        stop if isinstance(stop, signal.Signals) else signal.SIGINT)
    assert [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)] == handlers  # the ones it found
    assert written == ["0.png", "1.png"]  # the second batch was on the GPU, not yet handed over
    assert f"interrupted: 2 of 6 images translated into {tmp_path / 'out'}; the same command translates" in caplog.text
    monkeypatch.setattr(translator, "translate_tensor", translate)
    summary = translator.translate_folder(tmp_path / "in", tmp_path / "out", progress=False, workers=0)
    assert len(summary.kept) == 2 and len(summary.translated) == 4


def test_translated_images_waiting_for_the_writers_stay_bounded_in_bytes(tmp_path, monkeypatch):
    """Only their number was bounded (four per writer thread, one thread per core): some hundreds of
    24-megapixel photos, 72 MB each, could wait at once.  Now an eighth of the available memory bounds their
    bytes too."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from img2img import translate  # noqa: PLC0415

    for index in range(12):
        write_rgb(tmp_path / "in" / f"{index}.png", 16, 16, seed=index)
    outstanding, peak = [], [0]

    class Counting(ThreadPoolExecutor):  # futures handed out whose results were not yet collected
        def submit(self, fn, *args, **kwargs):
            future = super().submit(fn, *args, **kwargs)
            outstanding.append(future)
            peak[0] = max(peak[0], len(outstanding))
            result = future.result
            future.result = lambda *a, **k: outstanding.remove(future) or result(*a, **k)
            return future

    write = translate._write
    monkeypatch.setattr(translate, "ThreadPoolExecutor", Counting)
    monkeypatch.setattr(translate, "_write", lambda *args: time.sleep(0.02) or write(*args))
    monkeypatch.setattr(translate, "available_memory", lambda: 8 * 2 * 16 * 16 * 3)  # two images' worth
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=2).translate_folder(
        tmp_path / "in", tmp_path / "out", progress=False, workers=0)
    assert len(summary.translated) == 12 and not outstanding
    assert peak[0] <= 2 + 2  # two waiting, and the batch of two being handed over


def test_images_decoded_ahead_stay_bounded_in_bytes(tmp_path, monkeypatch):
    """The loading workers decoded 4 batches each ahead of the translation, 8 images a batch, whatever their
    size: 512 images on 16 cores, 36 GB of 24-megapixel photos.  Batches of large images now hold fewer."""
    from img2img import translate  # noqa: PLC0415

    for index in range(60):
        write_rgb(tmp_path / "in" / f"{index:02d}.png", 32, 48, seed=index)
    dispatched, arrived, peaks = [0], [0], []
    over, receive = translate.BoundedBatches.over, translate.received

    def counted_over(self, count):  # the loader draws a batch when it sends one to a worker
        for batch in over(self, count):
            dispatched[0] += len(batch)
            peaks[-1] = max(peaks[-1], dispatched[0] - arrived[0])
            yield batch

    def counted_received(loaded):
        arrived[0] += sum(len(b["indices"]) for b in loaded["batches"])
        return receive(loaded)

    monkeypatch.setattr(translate.BoundedBatches, "over", counted_over)
    monkeypatch.setattr(translate, "received", counted_received)
    image = 32 * 48 * 3
    outputs = {}
    for memory in (2**40, 8 * 8 * image):  # plenty; an eighth of it holds eight decoded images
        monkeypatch.setattr(translate, "available_memory", lambda memory=memory: memory)
        dispatched[0], arrived[0] = 0, 0
        peaks.append(0)
        out = tmp_path / f"out-{memory}"
        summary = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=8).translate_folder(
            tmp_path / "in", out, progress=False, workers=2)  # 2 workers × 4 batches decoded ahead
        assert len(summary.translated) == 60
        outputs[memory] = {p.name: np.asarray(Image.open(p)) for p in out.iterdir()}
    assert peaks[0] > 32 and peaks[1] <= 8 + 1  # eight batches of one in flight, and the one being taken
    assert outputs[2**40].keys() == outputs[8 * 8 * image].keys()
    for name, array in outputs[2**40].items():
        assert np.array_equal(array, outputs[8 * 8 * image][name])
        assert np.array_equal(array, 255 - np.asarray(Image.open(tmp_path / "in" / name)))


def test_bounded_batches_hold_fewer_large_images_and_one_at_the_least():
    from img2img.data.transfer import BoundedBatches  # noqa: PLC0415

    batches = BoundedBatches(batch_size=8, in_flight=4, budget=4 * 8 * 100)
    assert [len(b) for b in batches.over(3)] == [1, 1, 1]  # nothing seen: one image a batch
    batches.seen(100)
    assert batches.size() == 8 and [len(b) for b in batches.over(20)] == [8, 8, 4]
    batches.seen(50)  # the largest so far counts
    assert batches.size() == 8
    batches.seen(400)
    assert batches.size() == 2
    batches.seen(10**9)
    assert batches.size() == 1
    assert [b for b in batches.over(3)] == [[0], [1], [2]]


def test_bounded_batches_never_cross_a_multiple_of_the_batch_size():
    """The loader asks for its first batches before any image has arrived (one image each), then for whole ones:
    each of those began one image past a multiple of 8, and the translation joined and cut every batch again."""
    from img2img.data.transfer import BoundedBatches  # noqa: PLC0415

    batches = BoundedBatches(batch_size=8, in_flight=4, budget=2**30)
    sampler = batches.over(40)
    first = [next(sampler) for _ in range(5)]  # in flight, and one more, before the first arrives
    batches.seen(100)
    assert first == [[0], [1], [2], [3], [4]]
    assert list(sampler) == [[5, 6, 7], list(range(8, 16)), list(range(16, 24)), list(range(24, 32)),
                             list(range(32, 40))]
    tight = BoundedBatches(batch_size=8, in_flight=4, budget=4 * 3 * 100)  # three images a batch fit
    tight.seen(100)
    assert [len(b) for b in tight.over(20)] == [3, 3, 2, 3, 3, 2, 3, 1]


def test_a_folder_of_one_size_is_translated_in_whole_batches_as_they_were_decoded(tmp_path, monkeypatch):
    """After the first few, each batch goes to the network as the loader gave it: not joined to another and
    cut again (two copies of every batch in the main process)."""
    from img2img import translate  # noqa: PLC0415

    for index in range(70):
        write_rgb(tmp_path / "in" / f"{index:02d}.png", 16, 16, seed=index)
    joined, merge = [], translate._merge
    monkeypatch.setattr(translate, "_merge", lambda batches: joined.append(len(batches)) or merge(batches))
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=8).translate_folder(
        tmp_path / "in", tmp_path / "out", progress=False, workers=2)
    assert len(summary.translated) == 70
    # 2 workers × 4 batches ahead, and one more, drawn while no image had arrived: the first 9 images one by one,
    # joined into two batches (8, then the ninth and the 7 after it); before, each of the 7 batches after those too
    assert sum(count > 1 for count in joined) <= 2
    for index in range(70):
        image = np.asarray(Image.open(tmp_path / "in" / f"{index:02d}.png"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{index:02d}.png")), 255 - image)


@pytest.mark.parametrize("size", [(5, 3), (33, 47), (64, 64), (1, 9)])
def test_odd_sizes_are_padded_and_cropped_back(size):
    net = ResnetGenerator(3, 3, base_channels=4, n_blocks=1, norm="instance").eval()
    translator = Translator(net, generator_info(net, 3, 3))
    image = torch.rand(2, 3, *size) * 2 - 1
    assert translator.translate_tensor(image).shape == (2, 3, *size)
    assert torch.equal(Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_tensor(image), -image)


def test_one_channel_16_bit_round_trip(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    levels = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 53 + 11)
    Image.fromarray(levels).save(source / "deep.png")
    Image.fromarray((levels // 257).astype(np.uint8)).save(source / "shallow.png")
    sixteen = Translator(Invert(), GeneratorInfo(1, 1, 4, out_bits=16))
    sixteen.translate_folder(source, tmp_path / "out16", progress=False)
    array, bits = read_image_bits(tmp_path / "out16" / "deep.png")
    assert bits == 16 and array.shape == (30, 40, 1)
    assert np.array_equal(np.rint(array[:, :, 0] * 65535).astype(np.int64), 65535 - levels.astype(np.int64))
    array, bits = read_image_bits(tmp_path / "out16" / "shallow.png")
    assert bits == 8 and array.shape == (30, 40, 1)  # an 8-bit input stays 8-bit
    eight = Translator(Invert(), GeneratorInfo(1, 1, 4, out_bits=8))  # a model trained on 8-bit images
    eight.translate_folder(source, tmp_path / "out8", progress=False)
    assert read_image_bits(tmp_path / "out8" / "deep.png")[1] == 8
    assert Image.open(tmp_path / "out8" / "deep.png").mode == "L"
    # a 16-bit translation named for a format of 8 bits: OpenCV saturated its levels at 255 (a white image)
    for name in ("deep.bmp", "deep.webp", "deep.jpg"):
        sixteen.translate_folder(source / "deep.png", tmp_path / name, progress=False)
        array = np.asarray(Image.open(tmp_path / name).convert("L"), dtype=np.int64)
        lossy = 2 if name.endswith(".jpg") else 0  # JPEG at quality 95
        assert np.abs(array - np.rint((65535 - levels.astype(np.int64)) / 257)).max() <= lossy, name


def test_16_bit_and_float_grey_pil_images_are_read_at_their_depth():
    """Pillow's convert() clips 16-bit grey (modes I;16 and I, as Pillow opens 16-bit PNGs) to 255 and float
    grey (mode F) to 0: a PIL image of either was translated as a white or a black one."""
    levels = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 53 + 11
    sixteen = Translator(Invert(), GeneratorInfo(1, 1, 4, out_bits=16))
    for image in (Image.fromarray(levels), Image.fromarray(levels.astype(np.int32))):
        out = sixteen.translate(image)
        assert out.mode == "I;16" and np.array_equal(np.asarray(out), 65535 - levels), image.mode
    out = sixteen.translate(Image.fromarray(levels.astype(np.float32) / 65535))
    assert out.mode == "F" and np.allclose(np.asarray(out), 1 - levels / 65535, atol=1e-6)
    class InvertToColour(nn.Module):
        def forward(self, x):
            return -x.expand(-1, 3, -1, -1)

    colour = Translator(InvertToColour(), GeneratorInfo(1, 3, 4, out_bits=16))  # Pillow holds deep colour in 8 bits
    out = colour.translate(Image.fromarray(levels))
    assert out.mode == "RGB" and np.abs(np.asarray(out)[:, :, 0].astype(int) - (65535 - levels) / 257).max() <= 0.5


def test_a_model_trained_on_16_bit_grey_pairs_writes_16_bit_grey(tmp_path):
    for side, flip in (("a", False), ("b", True)):
        (tmp_path / side).mkdir()
        for index, image in enumerate(smooth_images(4)):
            levels = (image * 257).astype(np.uint16)
            Image.fromarray(65535 - levels if flip else levels).save(tmp_path / side / f"{index}.png")
    options = Pix2Pix.resolve(Pix2PixConfig(a=str(tmp_path / "a"), b=str(tmp_path / "b"), size=32, load_size=32,
                                            base_channels=4, d_base_channels=4))
    assert (options.channels_a, options.channels_b, options.bits_b) == (1, 1, 16)
    run = RunConfig("pix2pix", TrainConfig(steps=2, batch_size=2, device="cpu", num_workers=0), options)
    train(run, tmp_path / "run")
    result, output = invoke("translate", tmp_path / "run", tmp_path / "a", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, output
    array, bits = read_image_bits(tmp_path / "out" / "0.png")
    assert bits == 16 and array.shape == (32, 32, 1)


def test_output_inside_input_is_refused(photos, cyclegan_run):
    for output in (photos, photos / "sub" / "out"):
        result, _ = invoke("translate", cyclegan_run, photos, output)
        assert_one_line_error(result, "OUTPUT", "inside INPUT")
    assert not (photos / "sub" / "out").exists()


def test_existing_files_are_kept_unless_overwrite(photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"precious")
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4))
    summary = translator.translate_folder(photos, out, progress=False)
    assert (out / "a.png").read_bytes() == b"precious" and summary.kept == [out / "a.png"]
    assert len(summary.translated) == 2
    summary = translator.translate_folder(photos, out, overwrite=True, progress=False)
    assert Image.open(out / "a.png").size == (53, 37) and len(summary.translated) == 3
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind
    # a file, never a named pipe or a device (which the rename replaced whole, as --overwrite's import refuses)
    (out / "a.png").unlink()
    os.mkfifo(out / "a.png")
    summary = translator.translate_folder(photos, out, overwrite=True, progress=False)
    assert summary.failed == [(out / "a.png", "not a regular file (a pipe, a socket or a device); --overwrite "
                                              "replaces files only")] and len(summary.translated) == 2
    assert stat.S_ISFIFO(os.stat(out / "a.png").st_mode) and not [p for p in out.rglob(".*")]
    (out / "a.png").unlink()  # a link that leads nowhere is replaced, as a file is
    (out / "a.png").symlink_to(tmp_path / "nowhere.png")
    summary = translator.translate_folder(photos, out, overwrite=True, progress=False)
    assert not summary.failed and Image.open(out / "a.png").size == (53, 37) and not (out / "a.png").is_symlink()


def test_outputs_another_translation_writes_meanwhile_are_kept_and_counted_as_kept(photos, tmp_path, monkeypatch):
    """Two translations into one folder: each output the other one wrote first was named as a failure to write,
    one line per file (952 of them), and the command's status said it failed."""
    from img2img import translate  # noqa: PLC0415

    write = translate._write

    def racing(path, *args):  # the other translation gets there first for a.png
        if path.name == "a.png":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"the other one's")
        return write(path, *args)

    monkeypatch.setattr(translate, "_write", racing)
    out = tmp_path / "out"
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(photos, out, progress=False, workers=0)
    assert summary.kept == [out / "a.png"] and not summary.failed and summary.ok
    assert sorted(p.name for p in summary.translated) == ["b.png", "c.png"]
    assert (out / "a.png").read_bytes() == b"the other one's"
    assert "kept 1 existing output" in summary.line()


def test_unreadable_files_are_skipped_named_and_change_the_exit_code(photos, tmp_path, cyclegan_run):
    (photos / "broken.png").write_bytes(b"\x89PNG but not really")
    (photos / "sub" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result, output = invoke("translate", cyclegan_run, photos, out, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 3, output
    assert "Traceback" not in output
    lines = re.split(r"[\r\n]+", output)
    assert any(line.startswith("skipped") and "broken.png" in line for line in lines), output
    assert any(line.startswith("skipped") and "empty.jpg" in line for line in lines), output
    assert "translated 3 images" in output and "skipped 2 unreadable" in output
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png", "b.png", "c.png"]


def test_links_are_followed_loops_walked_once_and_broken_links_named(photos, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kept-elsewhere").symlink_to(photos, target_is_directory=True)  # a folder of links, as datasets are
    (photos / "sub" / "loop").symlink_to("..", target_is_directory=True)  # walked into for ever, were it followed
    (tree / "gone.png").symlink_to(tmp_path / "nowhere.png")
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(tree, tmp_path / "out", progress=False)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in summary.translated) == [
        "kept-elsewhere/a.png", "kept-elsewhere/sub/b.png", "kept-elsewhere/sub/deeper/c.png"]
    assert [(path.name, reason) for path, reason in summary.unreadable] == [
        ("gone.png", f"a broken link (to {tmp_path / 'nowhere.png'}, which does not exist)")]


def test_a_sub_folder_that_cannot_be_read_is_named_not_left_out_unsaid(photos, tmp_path, monkeypatch):
    """A sub-folder without read permission was skipped by the walk, its images gone from the data unsaid."""
    import errno  # noqa: PLC0415

    from img2img.data import images  # noqa: PLC0415

    scandir = os.scandir

    def locked(path):  # as a folder of another user's, mode 700, is (this test may run as root)
        if os.path.basename(path) in ("deeper", "lost+found"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(images.os, "scandir", locked)
    (photos / "lost+found").mkdir()  # a file system's own, at its root: left out like a hidden folder
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(photos, tmp_path / "out", progress=False)
    assert sorted(p.name for p in summary.translated) == ["a.png", "b.png"] and not summary.ok
    assert summary.unreadable == [(photos / "sub" / "deeper", "a folder that cannot be read (Permission denied)")]
    with pytest.raises(UserError, match=re.escape(f"--a: {photos / 'sub' / 'deeper'}: a folder that cannot be read "
                                                  f"(Permission denied); fix its permissions or move it out of")):
        images.list_images(photos, "--a")  # training data: refused, as a broken file is


def test_a_pipe_with_an_images_name_is_named_not_left_out_unsaid(photos, tmp_path):
    """A named pipe (or a socket, a device) called *.png was passed over without a word, its absence from the
    translations and from the summary unexplained; it is never opened (its reader would wait for a writer)."""
    from img2img.data import guard, images  # noqa: PLC0415

    os.mkfifo(photos / "sub" / "stream.png")
    os.mkfifo(photos / "notes")  # not an image's name: counted with the files that are not images
    summary = Translator(Invert(), GeneratorInfo(3, 3, 4)).translate_folder(photos, tmp_path / "out", progress=False)
    assert sorted(p.name for p in summary.translated) == ["a.png", "b.png", "c.png"] and not summary.ok
    assert summary.unreadable == [(photos / "sub" / "stream.png", "not a regular file (a pipe, a socket or a device)")]
    assert summary.ignored == 2  # notes.txt and notes
    files = [photos / name for name in images.list_images(photos, "--a")]
    with pytest.raises(UserError, match=re.escape(f"--a: {photos / 'sub' / 'stream.png'}: not a regular file (a "
                                                  "pipe, a socket or a device)")):
        guard.verify_images(files, "--a")  # training data: refused before step 1, as a broken file is


def test_a_pipe_given_as_the_image_is_refused_not_waited_on(tmp_path, cyclegan_run):
    """`img2img translate RUN pipe.png out/` (and `Translator.translate("pipe.png")`) opened the named pipe and
    waited for a writer, for ever."""
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    outcome = []

    def attempt():
        outcome.append(invoke("translate", cyclegan_run, pipe, tmp_path / "out", "--device", "cpu")[0])
        with pytest.raises(UserError, match=re.escape(f"{pipe}: not a regular file (a pipe, a socket or a device)")):
            Translator(Invert(), GeneratorInfo(3, 3, 4)).translate(pipe)
        outcome.append("refused")

    assert not waited_on(pipe, attempt, 60), "waited on the pipe for a writer"
    assert_one_line_error(outcome[0], f"INPUT: {pipe} is not a regular file (a pipe, a socket or a device)")
    assert outcome[1:] == ["refused"]


def test_an_input_link_into_output_is_refused(photos, tmp_path, cyclegan_run):
    out = tmp_path / "out"
    write_rgb(out / "earlier.png", 8, 8)  # a translation of an earlier run
    (photos / "previous").symlink_to(out, target_is_directory=True)
    result, _ = invoke("translate", cyclegan_run, photos, out, "--device", "cpu")
    assert_one_line_error(result, "INPUT", "leads into OUTPUT", "through a link")
    assert sorted(p.name for p in out.iterdir()) == ["earlier.png"]


def test_a_link_to_a_folder_that_holds_output_is_refused_before_output_holds_anything(photos, tmp_path,
                                                                                       cyclegan_run):
    """OUTPUT reached from INPUT through a link was refused only once it held images: the first run translated
    into it, and the same command again (as an interrupted run is told to) was refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (photos / "more").symlink_to(elsewhere, target_is_directory=True)
    for out in (elsewhere / "out", elsewhere / "out" / "deeper"):  # not there yet, and so not found by the walk
        result, _ = invoke("translate", cyclegan_run, photos, out, "--device", "cpu")
        assert_one_line_error(result, f"INPUT: {photos} leads into OUTPUT {out} through a link "
                                      f"(to {elsewhere.resolve()})")
    assert list(elsewhere.iterdir()) == []


def test_an_output_that_holds_input_is_refused_in_its_own_words(photos, tmp_path, cyclegan_run):
    """Translating photos/ into the folder that holds it was refused as if a link led there."""
    for out in (tmp_path, tmp_path.parent):
        result, _ = invoke("translate", cyclegan_run, photos, out, "--device", "cpu")
        assert_one_line_error(result, f"OUTPUT: {out} holds INPUT {photos}; choose a folder beside it")
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_a_second_name_of_the_input_folder_is_refused_as_output(photos, tmp_path, cyclegan_run, monkeypatch):
    """A bind mount, or a case-insensitive file system (macOS's ``Photos`` and ``photos``), names one folder twice
    with no link between the names: `translate RUN photos/ Photos/ --overwrite` replaced every image with its
    translation.  Here the file system's identities make ``alias`` the same folder as ``photos``, as a bind
    mount does (checked by hand with ``mount --bind``)."""
    from img2img import checkpoint  # noqa: PLC0415

    alias = tmp_path / "alias"
    alias.mkdir()
    identity = checkpoint._identity
    monkeypatch.setattr(checkpoint, "_identity", lambda path: identity(
        photos / Path(path).relative_to(alias) if Path(path).is_relative_to(alias) else path))
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    for out in (alias, alias / "out"):
        result, _ = invoke("translate", cyclegan_run, photos, out, "--overwrite", "--device", "cpu")
        assert_one_line_error(result, f"OUTPUT: {out} lies inside INPUT {photos}; choose a folder outside it")
    result, _ = invoke("translate", cyclegan_run, photos / "a.png", alias / "a.png", "--overwrite", "--device", "cpu")
    assert_one_line_error(result, f"OUTPUT: translating {photos / 'a.png'} would replace the input {alias / 'a.png'}")
    result, _ = invoke("translate", cyclegan_run, alias, photos.parent, "--device", "cpu")
    assert_one_line_error(result, f"OUTPUT: {photos.parent} holds INPUT {alias}; choose a folder beside it")
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before and list(alias.iterdir()) == []


def test_two_way_models_translate_both_directions_and_refuse_unknown_ones(photos, tmp_path, cyclegan_run):
    for direction in ("a2b", "b2a"):
        result, output = invoke("translate", cyclegan_run, photos, tmp_path / direction, "--direction", direction,
                                "--device", "cpu")
        assert result.exit_code == 0, output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a2b" / "a.png")),
                              np.asarray(Image.open(tmp_path / "b2a" / "a.png")))
    result, _ = invoke("translate", cyclegan_run, photos, tmp_path / "x", "--arch", "resnet_9blocks")
    assert_one_line_error(result, "--arch", "describes itself")


def test_tiles_agree_with_the_whole_image_away_from_tile_borders_and_leave_no_seam():
    torch.manual_seed(0)
    net = settle_batch_norm(ResnetGenerator(3, 3, base_channels=8, n_blocks=1, norm="batch"), 3)
    image = torch.rand(1, 3, 200, 256) * 2 - 1
    whole = Translator(net, generator_info(net, 3, 3)).translate_tensor(image)
    tiled = Translator(net, generator_info(net, 3, 3), tile=128, tile_overlap=96).translate_tensor(image)
    assert tiled.shape == whole.shape
    # the network sees ~23 pixels each way; tiles ignore the outer quarter (24 px) of each overlap
    assert torch.allclose(tiled, whole, atol=1e-5)
    small = Translator(net, generator_info(net, 3, 3), tile=64, tile_overlap=16).translate_tensor(image)
    difference = (small - whole).abs()
    assert difference.mean() < 0.01  # context is missing near tile edges, but blending hides it
    # no seam: the jump between neighbouring columns is never much larger than in the whole image
    jumps_tiled = (small[..., 1:] - small[..., :-1]).abs().amax(dim=(0, 1, 2))
    jumps_whole = (whole[..., 1:] - whole[..., :-1]).abs().amax(dim=(0, 1, 2))
    assert (jumps_tiled - jumps_whole).max() < 0.1


def test_tiling_happens_by_itself_when_an_image_would_not_fit():
    net = settle_batch_norm(ResnetGenerator(3, 3, base_channels=8, n_blocks=1, norm="batch"), 3)
    image = torch.rand(1, 3, 160, 160) * 2 - 1
    whole = Translator(net, generator_info(net, 3, 3)).translate_tensor(image)
    calls = []
    tight = Translator(net, generator_info(net, 3, 3), max_pixels=64 * 64)
    forward = tight._forward
    tight._forward = lambda batch: calls.append(batch.shape) or forward(batch)
    assert torch.allclose(tight.translate_tensor(image), whole, atol=0.05)
    assert calls and all(shape[-1] == 64 and shape[-2] == 64 for shape in calls)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 972000000 bytes")],
                         ids=["cuda", "cpu"])
def test_running_out_of_memory_retries_in_smaller_tiles(error):
    """Only CUDA's running out was retried in tiles; the CPU's (a ulimit, a failed allocation) stopped the whole
    folder with a traceback."""
    net = settle_batch_norm(ResnetGenerator(3, 3, base_channels=8, n_blocks=1, norm="batch"), 3)
    image = torch.rand(1, 3, 160, 160) * 2 - 1
    translator = Translator(net, generator_info(net, 3, 3))
    whole = translator.translate_tensor(image)
    forward, calls = translator._forward, []

    def short_of_memory(batch):
        calls.append(batch.shape[-1])
        if batch.shape[-1] > 64:
            raise error
        return forward(batch)

    translator._forward = short_of_memory
    assert torch.allclose(translator.translate_tensor(image), whole, atol=0.05)
    assert calls[0] == 160 and calls[1] == 80 and set(calls[2:]) == {40}
    translator._forward = lambda batch: 1 / 0  # any other error is no reason to tile
    with pytest.raises(ZeroDivisionError):
        translator.translate_tensor(image)


def test_out_of_memory_where_no_command_says_more_is_one_line(monkeypatch, cyclegan_run, tmp_path):
    """Running out of memory in a command that says nothing of its own (eval of a large held-out set, say) was a
    traceback from deep in a network."""
    from img2img.evaluation import evaluate  # noqa: PLC0415

    def short_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 786432 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(evaluate, "_evaluate_unpaired", short_of_memory)
    data = cyclegan_run.parent
    result, _ = invoke("eval", cyclegan_run, "--a", data / "a", "--b", data / "b", "--device", "cpu")
    assert_one_line_error(result, "out of CPU memory (tried to allocate 786432 bytes); use smaller images")


def test_tile_window_is_one_inside_and_at_image_borders():
    window = tile_window(64, 16, True, False, torch.device("cpu"))
    assert window[:4].eq(0).all() and window[16:].eq(1).all() and (window[4:12].diff() > 0).all()


def test_small_tiles_share_their_blending_weights(monkeypatch):
    """One weight per tile held the image's area several times over in small tiles (a 4096² image in 256-pixel
    tiles overlapping by half, 240 MiB): a GPU that had run out of memory had no room for them in its retries.
    Nine kinds at most."""
    from img2img import translate  # noqa: PLC0415

    made, window = [], translate.tile_window
    monkeypatch.setattr(translate, "tile_window", lambda *args: made.append(args) or window(*args))
    image = torch.rand(1, 3, 200, 200) * 2 - 1
    result = Translator(Invert(), GeneratorInfo(3, 3, 4), tile=16, tile_overlap=8).translate_tensor(image)
    assert len(made) <= 2 * 9  # two axes of each kind; 24 × 24 tiles here
    assert torch.allclose(result, -image, atol=1e-6)


@pytest.mark.parametrize("kind", ["resnet", "unet"])
def test_official_state_dicts_load_and_translate_as_the_official_test_does(kind, tmp_path):
    torch.manual_seed(1)
    if kind == "resnet":
        reference = OfficialResnetGenerator(3, 3, ngf=8, norm="instance", n_blocks=6).eval()
        arch, sizes = "resnet_6blocks", ((32, 48), (20, 36))
    else:
        reference = settle_batch_norm(OfficialUnetGenerator(1, 3, num_downs=7, ngf=4, norm="batch"), 1, size=128)
        arch, sizes = "unet_128", ((128, 128), (128, 256))
    weights = tmp_path / "latest_net_G.pth"
    torch.save(reference.state_dict(), weights)
    for index, (height, width) in enumerate(sizes):
        write_rgb(tmp_path / "in" / f"{index}.png", height, width, seed=index)
    result, output = invoke("translate", weights, tmp_path / "in", tmp_path / "out", "--arch", arch,
                            "--device", "cpu")
    assert result.exit_code == 0, output
    input_nc = 3 if kind == "resnet" else 1
    for index in range(len(sizes)):
        expected = official_test_output(reference, tmp_path / "in" / f"{index}.png", input_nc).astype(np.int32)
        ours = np.asarray(Image.open(tmp_path / "out" / f"{index}.png"), dtype=np.int32)
        assert ours.shape == expected.shape and np.abs(ours - expected).max() <= 1
    # import: the same translation from a self-describing checkpoint, no --arch needed
    result, output = invoke("import", weights, "--out", tmp_path / "imported.ckpt")
    assert result.exit_code == 0, output
    result, output = invoke("translate", tmp_path / "imported.ckpt", tmp_path / "in", tmp_path / "out2",
                            "--device", "cpu")
    assert result.exit_code == 0, output
    for index in range(len(sizes)):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{index}.png")),
                              np.asarray(Image.open(tmp_path / "out2" / f"{index}.png")))
    result, _ = invoke("train", "cyclegan", "--resume", tmp_path / "imported.ckpt")
    assert_one_line_error(result, "--resume", "imported generator weights only")


def test_official_weights_with_the_wrong_options_or_foreign_files_are_one_line_errors(tmp_path):
    weights = tmp_path / "latest_net_G_A.pth"
    torch.save(OfficialResnetGenerator(3, 3, ngf=8, n_blocks=6).state_dict(), weights)
    # --overwrite replaces a file, never a folder or a device (a FIFO here), which the rename would replace whole
    os.mkfifo(tmp_path / "pipe")
    for command in (["import", weights], ["export", weights]):
        result, _ = invoke(*command, "--out", tmp_path / "pipe", "--overwrite")
        assert_one_line_error(result, f"--out: {tmp_path / 'pipe'} is not a file (a folder or a device)")
    assert os.path.exists(tmp_path / "pipe") and not os.path.isfile(tmp_path / "pipe")
    # nor a file the command reads: `import G.pth --out G.pth --overwrite` replaced the weights with the checkpoint
    (tmp_path / "link.pth").symlink_to(weights)
    before = weights.read_bytes()
    for command, argument in ((["import", weights], "WEIGHTS"), (["export", weights], "CHECKPOINT")):
        for out, named in ((weights, argument), (tmp_path / "link.pth", f"{argument} {weights} under another name")):
            result, _ = invoke(*command, "--out", out, "--overwrite")
            assert_one_line_error(result, f"--out: {out} is {named}, which writing there would replace; choose "
                                          "another file")
    assert weights.read_bytes() == before
    write_rgb(tmp_path / "in" / "x.png", 16, 16)
    result, _ = invoke("translate", weights, tmp_path / "in", tmp_path / "out", "--arch", "resnet_9blocks")
    assert_one_line_error(result, "--arch resnet_9blocks", "resnet_6blocks")
    result, _ = invoke("translate", weights, tmp_path / "in", tmp_path / "out", "--norm", "batch")
    assert_one_line_error(result, "--norm batch", "instance")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    result, _ = invoke("translate", tmp_path / "other.pth", tmp_path / "in", tmp_path / "out")
    assert_one_line_error(result, "other.pth", "not those of an official")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    result, _ = invoke("translate", tmp_path / "junk.pth", tmp_path / "in", tmp_path / "out")
    assert_one_line_error(result, "junk.pth", "not a readable")
    state = OfficialResnetGenerator(3, 3, ngf=8, n_blocks=6).state_dict()  # torch's message was cut mid-shape
    torch.save({**state, "model.10.conv_block.1.weight": torch.zeros(8, 8, 3, 3)}, tmp_path / "narrow.pth")
    result, _ = invoke("translate", tmp_path / "narrow.pth", tmp_path / "in", tmp_path / "out")
    assert_one_line_error(result, "narrow.pth does not fit a resnet_6blocks generator (model.10.conv_block.1.weight "
                                  "is 8×8×3×3 in the file, 32×32×3×3 in the network)")
    state["model.1.weight"][0] = float("nan")  # a run that had diverged: black images, without a word
    torch.save(state, tmp_path / "diverged.pth")
    result, _ = invoke("import", tmp_path / "diverged.pth", "--out", tmp_path / "diverged.ckpt")
    assert_one_line_error(result, "diverged.pth does not fit a resnet_6blocks generator (model.1.weight is not "
                                  "finite (NaN or infinite): the run that wrote it had diverged)")
    assert not (tmp_path / "diverged.ckpt").exists()


def test_official_cyclegan_pair_imports_both_directions(tmp_path):
    g_a, g_b = (OfficialResnetGenerator(3, 3, ngf=8, n_blocks=6).eval() for _ in range(2))
    torch.save(g_a.state_dict(), tmp_path / "latest_net_G_A.pth")
    torch.save(g_b.state_dict(), tmp_path / "latest_net_G_B.pth")
    result, output = invoke("import", tmp_path / "latest_net_G_A.pth", tmp_path / "latest_net_G_B.pth",
                            "--out", tmp_path / "h2z.ckpt")
    assert result.exit_code == 0, output
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for direction, reference in (("a2b", g_a), ("b2a", g_b)):
            translated = img2img.load(tmp_path / "h2z.ckpt", direction, device="cpu").translate(image)
            assert torch.allclose(translated, reference(image), atol=1e-6)


def test_python_api_translates_tensors_arrays_pil_images_and_folders(cyclegan_run, photos, tmp_path):
    translator = img2img.load(cyclegan_run, device="cpu")
    image = torch.rand(3, 20, 28) * 2 - 1
    assert translator.translate(image).shape == (3, 20, 28)
    assert translator.translate(np.zeros((9, 13, 3), np.uint8)).shape == (9, 13, 3)
    assert translator.translate(Image.new("RGB", (30, 10))).size == (30, 10)
    assert translator.translate(photos / "a.png").dtype == np.uint8
    summary = translator.translate_folder(photos, tmp_path / "api", progress=False)
    assert len(summary.translated) == 3


def test_the_python_api_refuses_images_out_of_their_range_or_shape_in_one_line():
    """Floats of 0..255 levels, or in the other range of the two ([-1, 1] for arrays), would come back as a flat or
    noisy image said nothing of; shapes that are not images ended in an IndexError or a matmul error."""
    translator = Translator(Invert(), GeneratorInfo(3, 3, 4))
    refused = {
        "float images to translate (arrays, PIL images of mode F) hold values in [0, 1]; this one spans 0 to 255 "
        "(for levels 0..255: levels / 255": np.linspace(0, 255, 48, dtype=np.float32).reshape(4, 4, 3),
        "this one spans -1 to 1 (for levels 0..255: levels / 255; for floats in [-1, 1]: (x + 1) / 2)":
            np.linspace(-1, 1, 48).reshape(4, 4, 3),
        "this one holds values that are not finite": np.full((4, 4), np.nan, np.float32),
        "an array to translate is (H, W) or (H, W, C) with 1 to 4 channels and pixels; got shape (8,)": np.zeros(8),
        "got shape (4, 4, 5)": np.zeros((4, 4, 5), np.uint8),
        "got shape (0, 4, 3)": np.zeros((0, 4, 3), np.uint8),
        "a tensor to translate holds floats in [-1, 1]; got torch.uint8 (for levels 0..255: levels / 127.5 - 1)":
            torch.zeros(3, 4, 4, dtype=torch.uint8),
        "a tensor to translate holds floats in [-1, 1]; this one spans 0 to 255":
            torch.linspace(0, 255, 48).view(3, 4, 4),
        "a tensor to translate is (C, H, W) or (N, C, H, W) with pixels; got (4, 4)": torch.zeros(4, 4),
        "(arrays, PIL images of mode F) hold values in [0, 1]; this one spans 200 to 200":
            Image.fromarray(np.full((4, 4), 200, np.float32)),
        "cannot translate a value of type int: give a tensor, a PIL image, an array or a path": 5,
        "cannot translate a value of type NoneType": None,
    }
    for message, image in refused.items():
        with pytest.raises(UserError) as caught:
            translator.translate(image)
        assert message in str(caught.value) and "\n" not in str(caught.value)
    # what strays from its range by rounding alone is clipped, and grey with alpha is read as a file of it is
    rounded = translator.translate(np.full((4, 4, 3), 1.0004, np.float32))
    assert np.array_equal(rounded, translator.translate(np.ones((4, 4, 3), np.float32)))
    assert np.array_equal(translator.translate(torch.full((3, 4, 4), -1.0005)), torch.ones(3, 4, 4))
    grey_alpha = np.stack([np.full((4, 4), 40, np.uint8), np.full((4, 4), 255, np.uint8)], axis=2)
    assert np.array_equal(translator.translate(grey_alpha), np.full((4, 4, 3), 215, np.uint8))
    with pytest.raises(UserError, match="--batch-size: 0 is not a batch size"):
        Translator(Invert(), GeneratorInfo(3, 3, 4), batch_size=0)


def test_onnx_export_matches_pytorch(cyclegan_run, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    result, output = invoke("export", cyclegan_run, "--format", "onnx", "--out", tmp_path / "g.onnx",
                            "--direction", "b2a")
    assert result.exit_code == 0, output
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"))
    translator = img2img.load(cyclegan_run, "b2a", device="cpu")
    for shape in ((1, 3, 32, 32), (3, 3, 48, 24)):  # batch and sides are dynamic
        image = torch.rand(*shape) * 2 - 1
        (exported,) = session.run(None, {"image": image.numpy()})
        assert np.abs(exported - translator.translate(image).numpy()).max() < 1e-4
    result, _ = invoke("export", cyclegan_run, "--out", tmp_path / "g.onnx")
    assert_one_line_error(result, "--out", "exists")
    result, _ = invoke("export", cyclegan_run, "--out", "/proc/g.onnx")  # a folder where no file can be made
    assert_one_line_error(result, "--out: cannot write into /proc")  # found before the conversion
    assert ".tmp-" not in result.output and ".img2img-probe" not in result.output


def test_ctrl_c_during_the_export_waits_for_the_exporter_then_ends_the_command_in_one_line(cyclegan_run, tmp_path):
    """A KeyboardInterrupt raised inside torch's exporter can crash the process: two Ctrl-Cs at random moments of
    `img2img export` aborted it (`terminate called after throwing an instance of 'c10::Error' ... trying to set
    the current UNKNOWN_MODE, but one already exists`, and a page of C++ frames) or crashed it, 3 times in some
    75.  The stand-in exporter is as fragile: an exception raised inside it aborts the process."""
    pytest.importorskip("onnxscript")
    out = tmp_path / "g.onnx"
    script = ("import os, signal, time, torch\n"
              "def fragile(net, inputs, path, **options):\n"
              "    try:\n"
              "        for _ in range(2):\n"
              "            os.kill(os.getpid(), signal.SIGINT)\n"
              "            time.sleep(0.25)\n"
              "    except BaseException:\n"
              "        os.abort()\n"
              "    open(path, 'wb').write(b'a graph')\n"
              "torch.onnx.export = fragile\n")
    result = command_in_a_process(script, "export", cyclegan_run, "--out", out)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stderr.splitlines() == ["warning: SIGINT: stopping when the export ends",
                                          "interrupted (SIGINT) before the command finished"]
    assert list(tmp_path.iterdir()) == []  # neither the file asked for nor its temporary


def test_onnx_export_on_a_torch_whose_exporter_fails_on_the_networks_is_one_line(cyclegan_run, tmp_path,
                                                                               monkeypatch):
    """torch 2.6 and 2.7 run img2img, but their exporter fails on CUT's, StarGAN's and the noise models' networks
    (a page of the exporter's report, or a graph whose sides are not dynamic): refused before, saying what to do."""
    from torch.torch_version import TorchVersion  # noqa: PLC0415

    monkeypatch.setattr(torch, "__version__", TorchVersion("2.7.1+cu126"))
    result, _ = invoke("export", cyclegan_run, "--out", tmp_path / "g.onnx")
    assert_one_line_error(result, "--format onnx needs torch 2.8 or newer", "this is torch 2.7.1+cu126",
                          'pip install -U "img2img[export]"')
    assert not (tmp_path / "g.onnx").exists()


def test_evaluation_mode_is_deterministic_and_stochastic_keeps_dropout_noise():
    from img2img.nn.unet import UnetGenerator

    # six levels: one decoder block with dropout (num_downs - 5)
    net = settle_batch_norm(UnetGenerator(3, 3, num_downs=6, base_channels=4, dropout=True), 3, size=64)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    quiet = Translator(net, generator_info(net, 3, 3))
    assert torch.equal(quiet.translate_tensor(image), quiet.translate_tensor(image))
    noisy = Translator(net, generator_info(net, 3, 3), stochastic=True)
    assert not torch.equal(noisy.translate_tensor(image), noisy.translate_tensor(image))
    assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_cudnn_autotunes_a_shape_only_when_it_comes_back():
    """Autotuning a shape costs a fraction of a second on a GPU: a folder of many sizes must not pay it per image."""
    net = Invert()
    translator = Translator(net, generator_info(net, 3, 3))
    assert not translator.cudnn_benchmark  # the CPU has no cuDNN
    translator.cudnn_benchmark = True  # as on CUDA, where it is the default
    decisions = [translator._autotune(shape) for shape in [(8, 3, 64, 64), (8, 3, 64, 64), (8, 3, 48, 64),
                                                           (8, 3, 64, 64), (2, 3, 64, 64)]]
    assert decisions == [False, True, False, True, False]


def write_bomb(path, side=60000):
    """A PNG whose header claims side×side RGB pixels (a few bytes of data follow): a decompression bomb."""
    import struct  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_skipped_unread_and_the_rest_translated(photos, tmp_path, cyclegan_run):
    write_bomb(photos / "bomb.png")
    result, output = invoke("translate", cyclegan_run, photos, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 3, output
    assert "Traceback" not in output
    assert any(line.startswith("skipped") and "bomb.png" in line and "pixels" in line for line in output.splitlines())
    translated = {p.stem for p in (tmp_path / "out").rglob("*.png")}
    assert translated == {"a", "b", "c"}


def test_max_pixels_sets_the_limit_and_training_folders_name_a_bomb(photos, tmp_path, cyclegan_run):
    from img2img.data.images import set_pixel_limit  # noqa: PLC0415
    from PIL import Image as PILImage  # noqa: PLC0415

    default = PILImage.MAX_IMAGE_PIXELS
    try:
        result, output = invoke("translate", cyclegan_run, photos, tmp_path / "out", "--device", "cpu",
                                "--max-pixels", 100)
        assert result.exit_code == 3 and output.count("than the limit of 100") == 2, output  # a.png, b.jpg
        assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["c.png"]  # 5×3 pixels
    finally:
        set_pixel_limit(default)
    folder = tmp_path / "train"
    folder.mkdir()
    write_bomb(folder / "bomb.png")
    result, _ = invoke("train", "cyclegan", "--a", folder, "--b", folder, "--dry-run")
    assert_one_line_error(result, "bomb.png", "pixels")


def test_folder_translation_of_one_channel_images_prints_no_warnings(tmp_path):
    """Grey files for a grey-input model travel from the decoder untouched; torch must not warn (as it did once)
    that the array it was given is read-only.  A fresh process: torch gives that warning once per process."""
    from test_unpaired import cyclegan_trainer, write_unpaired  # noqa: PLC0415

    root = write_unpaired(tmp_path)
    for path in (root / "a").iterdir():
        Image.open(path).convert("L").save(path)
    cyclegan_trainer(root, tmp_path, steps=1).fit()
    result = subprocess.run([sys.executable, "-m", "img2img.cli", "translate", tmp_path / "run", root / "a",
                             tmp_path / "out", "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (root / "a").iterdir())
    assert "Warning" not in result.stderr, result.stderr


def test_one_image_goes_to_a_named_file_whose_extension_sets_the_format(photos, tmp_path, cyclegan_run):
    source = next(p for p in sorted(photos.rglob("*.png")))
    for name, kind in (("out.png", "PNG"), ("out.jpg", "JPEG")):
        result, output = invoke("translate", cyclegan_run, source, tmp_path / name)
        assert result.exit_code == 0, output
        with Image.open(tmp_path / name) as written, Image.open(source) as original:
            assert written.format == kind and written.size == original.size
    before = (tmp_path / "out.png").read_bytes()
    result, output = invoke("translate", cyclegan_run, source, tmp_path / "out.png", "--direction", "b2a")
    assert result.exit_code == 0 and "kept 1 existing" in output and (tmp_path / "out.png").read_bytes() == before
    result, _ = invoke("translate", cyclegan_run, source, tmp_path / "out.gif")
    assert_one_line_error(result, "OUTPUT", "cannot write .gif files")
    result, _ = invoke("translate", cyclegan_run, source, source)
    assert_one_line_error(result, "OUTPUT", "would replace the input")
    result, _ = invoke("translate", cyclegan_run, source, tmp_path / "both.png", "--to", "all")
    assert result.exit_code == 2 and "--to all writes a folder per target" in result.output
    assert not (tmp_path / "both.png").exists()
    (tmp_path / "folder.png").mkdir()  # an existing folder stays a folder, whatever its name
    result, output = invoke("translate", cyclegan_run, source, tmp_path / "folder.png")
    assert result.exit_code == 0 and (tmp_path / "folder.png" / source.name).is_file(), output


def _translating_generators(folder) -> dict[str, tuple[nn.Module, tuple]]:
    """Each image model's generator, as translation runs it, with inputs for it (their runs' folders in
    ``folder``)."""
    from img2img.models import MODELS  # noqa: PLC0415
    from test_models import tiny_size, tiny_trainer  # noqa: PLC0415

    nets = {}
    for name, net_name in (("cyclegan", "g_ab"), ("pix2pix", "g"), ("cut", "g"), ("discogan", "g_ab"),
                           ("stargan", "g")):
        trainer, _ = tiny_trainer(name, folder / name)
        net = trainer.model.nets[net_name].eval()
        side = tiny_size(MODELS[name])
        images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1
        inputs = (images, torch.eye(net.domains)[:2]) if name == "stargan" else (images,)
        nets[name] = net, inputs
    return nets


def test_the_last_full_resolution_layer_is_the_generators_last_step_before_tanh(tmp_path):
    """The last of full_resolution_layers is, in every generator, the layer whose output tanh makes the translated
    image; a network without a convolution has none, and translates unchanged with bf16 autocast asked for."""
    assert full_resolution_layers(Invert()) == []
    full_resolution_in_float32(Invert())  # nothing to widen
    for name, (net, inputs) in _translating_generators(tmp_path).items():
        seen = []
        handle = full_resolution_layers(net)[-1].register_forward_hook(lambda module, args, output: seen.append(output))
        with torch.no_grad():
            output = net(*inputs)
        handle.remove()
        assert torch.equal(torch.tanh(seen[-1]), output), name


def test_the_full_resolution_layers_are_those_from_the_last_upsampling_on(tmp_path):
    """full_resolution_layers: every convolution from the generator's last upsampling on, each at the output's
    full resolution, and the convolution that runs before them at a lower one; the output layer alone where it
    upsamples itself (U-Net, DiscoGAN)."""
    expected = {"cyclegan": 2, "pix2pix": 1, "cut": 2, "discogan": 1, "stargan": 2}
    for name, (net, inputs) in _translating_generators(tmp_path).items():
        layers = full_resolution_layers(net)
        assert len(layers) == expected[name], name
        convolutions = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        sides = {}
        hooks = [m.register_forward_hook(lambda module, args, output: sides.__setitem__(module, output.shape[-2:]))
                 for m in convolutions]
        with torch.no_grad():
            output = net(*inputs)
        for hook in hooks:
            hook.remove()
        assert all(sides[layer] == output.shape[-2:] for layer in layers), name
        before = convolutions[convolutions.index(layers[0]) - 1]
        assert sides[before][-1] < output.shape[-1], name
    assert full_resolution_layers(ResnetGenerator(3, 3, 8, 1, "instance"))[0].stride == (2, 2)


def test_under_bf16_autocast_the_full_resolution_layers_compute_in_float32(tmp_path):
    """The translator's full-resolution layers run in float32 under autocast: their outputs are float32 and equal
    the float32 layers' on the same input; the layers before them stay in bf16 (what this does to a trained
    generator's images: test_cuda's bf16 test)."""
    for name, (net, inputs) in _translating_generators(tmp_path).items():
        layers, seen = full_resolution_layers(net), {}
        with torch.no_grad():
            full_resolution_in_float32(net)
            for layer in [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]:
                layer.register_forward_hook(lambda module, args, output: seen.__setitem__(module, (args[0], output)))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                widened = net(*inputs)
        assert widened.dtype == torch.float32, name
        for layer, (layer_input, layer_output) in seen.items():
            if layer not in layers:
                assert layer_output.dtype == torch.bfloat16, name
                continue
            assert layer_output.dtype == torch.float32, name
            with torch.no_grad():
                assert torch.equal(layer_output, type(layer).forward(layer, layer_input.float())), name
        copy = copy_module(net)  # a copy's widened layers are its own
        copied = full_resolution_layers(copy)
        assert copy.forward is not net.forward and all(layer.forward.__self__ is layer for layer in copied)
