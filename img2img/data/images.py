"""Reading image files: any format Pillow reads, 8- or 16-bit, grey, RGB or RGBA, and finding them in folders.

Files are read as the levels they store (uint8 or uint16 ``(H, W, C)``,
:func:`read_image_levels`), upright as their EXIF orientation says; elsewhere images travel as float32 arrays in
[0, 1] (:func:`to_unit`) until they become tensors in [-1, 1].  Files are decoded by Pillow, which fails
cleanly on corrupt data, except PNGs, TIFFs and PPMs of 16 bits per channel in colour, which Pillow reduces
to 8: OpenCV decodes those.

No decoder runs on a file whose header claims more pixels than the limit
(:func:`set_pixel_limit`; Pillow's ``MAX_IMAGE_PIXELS`` by default, about 89
million): a decompression bomb is named in one line instead of exhausting
memory or crashing a decoder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from img2img.errors import NOT_A_FILE, UserError

log = logging.getLogger(__name__)

# the files read as images (the others in a data folder, its notes and captions, are left out): the common
# formats, and more that Pillow reads, under other names (JPEG's .jfif) or where it was built to (AVIF)
_IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".tga")
_IMAGE_NAMES_IF_READ = (".jpe", ".jfif", ".pnm", ".apng", ".dib", ".avif", ".qoi")
# what encode_image writes (OpenCV): 16 bits survive in PNG, TIFF and netpbm files only (_SIXTEEN_BITS)
WRITABLE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                                 ".ppm", ".pgm", ".pnm"})
_SIXTEEN_BITS = frozenset({".png", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"})
# names OpenCV's encoders know by another
_ENCODED_AS = {".jpeg": ".jpg", ".jpe": ".jpg", ".jfif": ".jpg", ".dib": ".bmp"}


@dataclass(frozen=True)
class ImageInfo:
    """An image file's size (upright) and the channels and bits it stores."""

    width: int
    height: int
    channels: int
    bits: int


def _pillow_channels(image: Image.Image) -> tuple[int, int]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return 1, 16
    if mode in ("1", "L", "F"):
        return 1, 8
    if mode == "LA":
        return 1, 8  # grey with alpha: the alpha is dropped
    if mode in ("RGBA", "RGBa"):
        return 4, 8
    if mode == "P":
        return (4 if "transparency" in image.info else 3), 8
    return 3, 8


def _wide_levels(path: Path) -> str:
    """What the file is, if it is a PNG, TIFF or PPM of 16 bits per channel that Pillow decodes to 8 bits:
    ``colour`` (RGB or RGBA) or ``grey+alpha`` (a PNG's; Pillow makes it 8-bit RGBA), else "".  A PNG's IHDR
    chunk says so (colour types 2 and 6, and 4), a TIFF's BitsPerSample tag (read with the header, nothing
    decoded), a PPM's largest value, 65535 (dcraw -4 writes such PPMs).  (16-bit grey is read by Pillow.)"""
    with open(path, "rb") as handle:
        header = handle.read(512)
    if len(header) >= 26 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
        return {2: "colour", 6: "colour", 4: "grey+alpha"}.get(header[25], "") if header[24] == 16 else ""
    if header[:2] == b"P6":  # P6 width height maxval, between whitespace and comments
        fields = re.sub(rb"#[^\n]*", b" ", header[2:]).split()
        # (other depths: Pillow scales them to 8 bits)
        return "colour" if len(fields) > 3 and fields[2] == b"65535" else ""
    if header[:4] not in (b"II*\x00", b"MM\x00*"):
        return ""
    with _open_checked(path) as image:
        bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one per sample
        wide = image.mode in ("RGB", "RGBA") and 16 in (bits if isinstance(bits, tuple) else (bits,))
        return "colour" if wide else ""


def set_pixel_limit(pixels: int | None) -> int | None:
    """The most pixels an image may claim before any decoder runs (None or 0: no limit); returns the previous
    limit.  The limit is Pillow's (``Image.MAX_IMAGE_PIXELS``), so decoding worker processes started afterwards
    share it."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels or None
    return previous


@contextlib.contextmanager
def pixel_limit(pixels: int | None):
    """:func:`set_pixel_limit` for the block's life (``None``: leave the limit as it is)."""
    previous = set_pixel_limit(pixels) if pixels is not None else None
    try:
        yield
    finally:
        if pixels is not None:
            set_pixel_limit(previous)


def _check_pixels(path: Path, width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise UserError(f"{path}: {width}×{height} pixels, more than the limit of {limit:,} (a decompression "
                        "bomb?); --max-pixels raises it for genuinely huge images")


def _open_checked(path: Path) -> Image.Image:
    """The image's header through Pillow (nothing is decoded yet), refused above the pixel limit."""
    with warnings.catch_warnings():  # between 1× and 2× the limit Pillow only warns: the check below refuses
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        _ignore_damaged_metadata()
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:  # above 2× the limit Pillow refuses by itself
            raise UserError(f"{path}: more pixels than the limit of {Image.MAX_IMAGE_PIXELS:,} (a decompression "
                            f"bomb? {_reason(error)}); --max-pixels raises it for genuinely huge images") from None
    try:
        _check_pixels(path, *image.size)
    except UserError:
        image.close()
        raise
    return image


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


@contextlib.contextmanager
def _opencv_quiet():
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _read_opencv(path: Path, grey: bool = False) -> tuple[np.ndarray, int]:
    """A 16-bit colour PNG, TIFF or PPM through OpenCV's decoder, which keeps the 16 bits (Pillow reduces them
    to 8) and reports a corrupt file as a failure (torchvision's decode_png dies on most libpng errors, a bad CRC or a
    broken IDAT, taking the process with it: it is never used); the header is read by Pillow first, and held to
    the pixel limit.  Upright as the file's EXIF orientation says: OpenCV turns some formats itself and not others
    (TIFF, not PNG, in OpenCV 5), so the turn of a turned file is the one that agrees with Pillow's upright 8 bits,
    which are the top 8 of the 16.  ``grey``: a 16-bit grey+alpha PNG, which OpenCV reads as BGRA; it is grey,
    its alpha dropped, as an 8-bit one's is."""
    with _open_checked(path) as header:
        orientation = _orientation(header)
    with open(path, "rb") as handle:
        data = handle.read()
    with _opencv_quiet():  # a corrupt file is named by img2img, in one line, not described by OpenCV's log
        levels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.ndim != 3 or levels.shape[2] not in (3, 4) or levels.dtype != np.uint16:
        raise ValueError("OpenCV cannot decode it in 16 bits")
    levels = levels[:, :, ::-1] if levels.shape[2] == 3 else levels[:, :, [2, 1, 0, 3]]  # BGR(A) → RGB(A)
    if orientation != 1:
        eight = _read_pillow(path)[0]
        turn = _LEVEL_TURNS.get(orientation, lambda a: a)
        levels = next((turned for turned in (levels, turn(levels))
                       if turned.shape == eight.shape and np.array_equal(turned >> 8, eight)), None)
        if levels is None:
            raise ValueError("OpenCV and Pillow read it differently")
    if grey:
        if levels.shape[2] != 4 or not (np.array_equal(levels[:, :, 0], levels[:, :, 1])
                                        and np.array_equal(levels[:, :, 0], levels[:, :, 2])):
            raise ValueError("OpenCV did not read it as grey")
        levels = levels[:, :, :1]
    return np.ascontiguousarray(levels), 16


def _tiff_tags(data: bytes) -> dict[int, int]:
    """The single-valued SHORT and LONG tags of a classic TIFF's first image (its first IFD, which may lie after
    the pixels, as OpenCV writes it): width (256), height (257), orientation (274), ..."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = np.frombuffer(data, dtype=f"{order}u4", count=1, offset=4)
    (count,) = np.frombuffer(data, dtype=f"{order}u2", count=1, offset=int(offset))
    tags = {}
    for start in range(int(offset) + 2, int(offset) + 2 + 12 * int(count), 12):
        tag, kind = (int(v) for v in np.frombuffer(data, dtype=f"{order}u2", count=2, offset=start))
        (number,) = np.frombuffer(data, dtype=f"{order}u4", count=1, offset=start + 4)
        if number == 1 and kind in (3, 4):  # SHORT, LONG
            (tags[tag],) = np.frombuffer(data, dtype=f"{order}u{2 if kind == 3 else 4}", count=1, offset=start + 8)
    return {tag: int(value) for tag, value in tags.items()}


def _read_float_tiff(path: Path) -> tuple[np.ndarray, int] | None:
    """A TIFF of 32- or 64-bit floats in colour (a raw converter's or a renderer's linear output), which Pillow
    cannot open, through OpenCV: floats in [0, 1] (clipped), RGB (an alpha channel is dropped), upright as its
    orientation tag says, and counted as 8 bits, as Pillow's grey float images (which Pillow opens) are.  None
    where the file is not a TIFF of floats that OpenCV decodes.  Its size is read from its first IFD and held to
    the pixel limit before it is decoded."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    try:
        tags = _tiff_tags(data)
    except ValueError:  # an IFD past the file's end
        return None
    if not tags.get(256) or not tags.get(257):
        return None
    _check_pixels(path, tags[256], tags[257])
    with _opencv_quiet():
        levels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if levels is None or levels.dtype not in (np.float32, np.float64):
        return None
    levels = levels[:, :, None] if levels.ndim == 2 else levels[:, :, 2::-1]  # BGR → RGB
    # OpenCV's TIFF decoder turns the image as tagged itself (4.10 and 5.0, whatever the flags say); a quarter
    # turn that it did not make is made here
    orientation, width, height = tags.get(274, 1), tags[256], tags[257]
    if orientation in _LEVEL_TURNS and orientation >= 5 and width != height and levels.shape[:2] == (height, width):
        levels = _LEVEL_TURNS[orientation](levels)
    return np.ascontiguousarray(np.clip(levels.astype(np.float32), 0.0, 1.0)), 8


def _ignore_damaged_metadata() -> None:
    """(Within ``warnings.catch_warnings``.)  Pillow's warnings about a damaged EXIF block, which it reads on
    opening a JPEG, and which costs nothing but the block: they name no file, and the pixels decode."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation tag (1, as stored, when it has none): cameras and phones store a photo as
    the sensor read it and tag how to turn it, and image viewers show it turned."""
    with warnings.catch_warnings():  # a damaged EXIF block costs its orientation only, without a word
        _ignore_damaged_metadata()
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        except Exception:  # noqa: BLE001 - whatever the EXIF parser raises, the pixels are still there
            orientation = 1
    return orientation if isinstance(orientation, int) else 1


def _upright(image: Image.Image) -> Image.Image:
    """The image turned (or mirrored) as its EXIF orientation tag says (as ImageOps.exif_transpose, which also
    rewrites the EXIF block, and can fail on a damaged one: only the pixels are wanted here)."""
    turn = _TURNS.get(_orientation(image))
    return image if turn is None else image.transpose(turn)


_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}
# the same turns of ``(H, W, C)`` levels
_LEVEL_TURNS = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
                7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def _read_pillow(path: Path) -> tuple[np.ndarray, int]:
    with _open_checked(path) as opened:
        opened.load()
        image = _upright(opened)
        channels, bits = _pillow_channels(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            levels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
        elif image.mode == "F":
            levels = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        else:
            target = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
            levels = np.asarray(image.convert(target), dtype=np.uint8)
    return (levels[:, :, None] if levels.ndim == 2 else levels), bits


def special_mode(mode: int) -> bool:
    """Whether a file's mode (``os.stat``) is a named pipe's, a socket's or a device's."""
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def read_image_levels(path: str | Path) -> tuple[np.ndarray, int]:
    """An image file as it stores its values: ``(H, W, C)`` uint8 or uint16 levels (float32 in [0, 1] for
    floating-point files), C in {1, 3, 4}, and the bits per channel the file stores (8 or 16)."""
    path = Path(path)
    try:
        if special_mode(path.stat().st_mode):  # never opened: a pipe's reader waits for a writer, for ever
            raise UserError(f"{path}: {NOT_A_FILE}")
        try:
            wide = _wide_levels(path)  # 16-bit RGB, RGBA or grey+alpha, which Pillow would cut to 8 bits
            if wide:
                try:
                    return _read_opencv(path, grey=wide == "grey+alpha")
                except ValueError:  # OpenCV cannot read it: Pillow reads it (in 8 bits) or says why
                    pass
            return _read_pillow(path)
        except UnidentifiedImageError:
            floats = _read_float_tiff(path)  # a colour TIFF of floats, which Pillow does not open
            if floats is None:
                raise
            return floats
    except (UnidentifiedImageError, OSError, RuntimeError, SyntaxError, ValueError) as error:
        if isinstance(error, FileNotFoundError) and path.is_symlink():  # listed by visible_files
            raise UserError(f"{path}: a broken link (to {os.readlink(path)}, which does not exist)") from None
        raise UserError(f"{path}: not a readable image ({_reason(error)})") from None


def to_unit(levels: np.ndarray) -> np.ndarray:
    """Levels (uint8, uint16, or floats already in [0, 1]) → float32 in [0, 1]."""
    if levels.dtype == np.uint8:
        return levels.astype(np.float32) / 255.0
    if levels.dtype == np.uint16:
        return levels.astype(np.float32) / 65535.0
    return levels.astype(np.float32, copy=False)


def read_image_bits(path: str | Path) -> tuple[np.ndarray, int]:
    """:func:`read_image` and the bits per channel the file stores (8 or 16)."""
    levels, bits = read_image_levels(path)
    return to_unit(levels), bits


def read_image(path: str | Path) -> np.ndarray:
    """An image file as float32 ``(H, W, C)`` in [0, 1], C in {1, 3, 4}, 8- and 16-bit files alike."""
    return read_image_bits(path)[0]


def quantize(array: np.ndarray, bits: int = 8) -> np.ndarray:
    """``(H, W, C)`` floats in [0, 1] → uint8 (``bits=8``) or uint16 (16), rounded to the nearest level."""
    top = 255 if bits == 8 else 65535
    return np.clip(np.rint(array * top), 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """A uint8/uint16 ``(H, W, C)`` image (C in {1, 3, 4}, RGB order) as the bytes of a ``suffix`` file.

    OpenCV writes 8- and 16-bit PNG and TIFF in grey, RGB and RGBA, and netpbm files in grey (PGM) or RGB
    (PPM); 16-bit levels go to 8 bits (rounded) in the other formats; JPEG (quality 95) drops alpha.
    """
    suffix = suffix.lower()
    suffix = _ENCODED_AS.get(suffix, suffix)
    if array.dtype != np.uint8 and suffix not in _SIXTEEN_BITS:  # (OpenCV would saturate 16-bit levels at 255)
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    if suffix == ".jpg":
        array = array[:, :, :3]
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    else:
        params = []
    if array.shape[2] == 3:
        array = array[:, :, ::-1]  # OpenCV stores BGR
    elif array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    if not holds(suffix, array.shape[2]):
        raise ValueError(f"a {suffix} file cannot hold {CHANNEL_NAMES.get(array.shape[2], 'these')} images")
    try:
        with _opencv_quiet():  # its failure is said in one line, here, not in OpenCV's log
            ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(array), params)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"cannot encode a {array.dtype} image as {suffix}")
    return buffer.tobytes()


def can_write(suffix: str) -> bool:
    """Whether :func:`encode_image` can write files of this extension."""
    suffix = suffix.lower()
    return suffix in WRITABLE_EXTENSIONS and cv2.haveImageWriter(f"x{_ENCODED_AS.get(suffix, suffix)}")


CHANNEL_NAMES = {1: "grey", 3: "colour", 4: "colour and alpha"}
# the channel counts the netpbm files that OpenCV writes hold (PBM holds one bit, and is not written): the others
# hold any (JPEG drops alpha)
_NETPBM_CHANNELS = {".pgm": (1,), ".ppm": (3,), ".pnm": (1, 3)}


def holds(suffix: str, channels: int) -> bool:
    """Whether a file of this extension holds images of ``channels`` channels as written (PGM grey, PPM colour,
    PNM either, none of them alpha)."""
    return channels in _NETPBM_CHANNELS.get(suffix.lower(), (channels,))


def same_format(suffix: str, channels: int) -> str:
    """``--format same``: the extension for a translation of ``channels`` channels of an input of ``suffix``: its
    own where it is written and holds them, a grey or colour sibling for netpbm files (PGM, PPM), else PNG."""
    if can_write(suffix) and holds(suffix, channels):
        return suffix
    if suffix.lower() in (".pbm", *_NETPBM_CHANNELS) and channels in (1, 3):
        return ".pgm" if channels == 1 else ".ppm"
    return ".png"


def convert_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``(..., H, W, C)`` to ``channels`` (1 grey, 3 RGB, 4 RGBA): luminance, repetition, opaque alpha.
    Luminance needs floats; the other conversions keep integer levels as they are."""
    have = array.shape[-1]
    if have == channels:
        return array
    if channels == 1:
        rgb = array[..., :3]
        if have == 1:
            return array[..., :1]
        return (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]  # ITU-R 601, as Pillow
    if channels == 3:
        return np.repeat(array, 3, axis=-1) if have == 1 else array[..., :3]
    if channels == 4:  # opaque: 1.0 for floats, the top level for integer levels
        rgb = np.repeat(array, 3, axis=-1) if have == 1 else array[..., :3]
        opaque = np.iinfo(rgb.dtype).max if np.issubdtype(rgb.dtype, np.integer) else 1.0
        return np.concatenate([rgb, np.full_like(rgb[..., :1], opaque)], axis=-1)
    raise ValueError(f"channels must be 1, 3 or 4, got {channels}")


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` in [0, 1] → ``(C, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).mul(2).sub(1)


def visible_files(folder: Path, unreadable: list[tuple[Path, str]] | None = None,
                  folders: list[Path] | None = None) -> list[Path]:
    """Every file under ``folder`` (recursively), sorted, leaving out hidden files and folders (names starting
    with a dot, such as ``.ipynb_checkpoints`` or macOS's ``._`` files; a hidden folder's images became a class).

    Links are followed, as ``find -L`` and torchvision's ``ImageFolder`` do: a dataset is often a folder of links
    to folders kept elsewhere.  A link back to a folder it lies in (a loop) is not walked again, and a link that
    leads nowhere is listed like a file, so that reading it names it instead of its going missing unsaid.  A
    sub-folder that cannot be listed (no permission) goes into ``unreadable`` with the reason, for the caller to
    name.  So is what is not a file (a named pipe): :func:`read_image_levels` names it, without opening it.
    ``folders``, when given, gets every folder walked, ``folder`` first: where the links led."""
    found: list[Path] = []

    def walk(path: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError as error:
            if unreadable is not None:
                unreadable.append((path, f"a folder that cannot be read ({error.strerror or error})"))
            return
        if folders is not None:
            folders.append(path)
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "lost+found":  # the file system's own (root's, mode 700)
                continue
            try:
                if entry.is_dir():  # follows links
                    info = entry.stat()
                    key = (info.st_dev, info.st_ino)
                    if key not in ancestors:
                        walk(Path(entry.path), ancestors | {key})
                    continue
            except OSError:
                pass
            # a file, a broken link, or a named pipe, a socket or a device, which reading names (and never opens)
            found.append(Path(entry.path))

    with contextlib.suppress(OSError):
        root = folder.stat()
        walk(folder, frozenset({(root.st_dev, root.st_ino)}))
    return sorted(found)


def folder_record(folder: str | Path) -> dict[str, Any]:
    """What a data folder holds, to tell at ``--resume`` whether it changed: how many images, and a digest of
    their relative paths and sizes (not their contents: reading every byte again would cost what decoding
    does; not their times, which a copy to another disk changes)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    count = 0
    for path in visible_files(folder) if folder.is_dir() else []:
        if is_image_name(path):
            try:
                size = path.stat().st_size
            except OSError:  # a broken link
                size = -1
            digest.update(f"{path.relative_to(folder).as_posix()}\t{size}\n".encode("utf-8", "surrogateescape"))
            count += 1
    return {"images": count, "digest": digest.hexdigest()}


def is_image_name(path: Path) -> bool:
    """Whether the file's extension is one of the image formats read here."""
    return path.suffix.lower() in image_extensions()


@functools.cache
def image_extensions() -> frozenset[str]:
    """The extensions of the files read as images (the Pillow build's plugins decide some of them)."""
    registered = Image.registered_extensions()  # (imports every plugin of Pillow's, once)
    return frozenset(_IMAGE_NAMES) | {name for name in _IMAGE_NAMES_IF_READ if registered.get(name) in Image.OPEN}


def list_images(folder: str | Path, option: str) -> list[Path]:
    """Image files under ``folder`` (recursively), as sorted paths relative to it; errors name the option."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{option}: {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{option}: {folder} is not a folder")
    unreadable: list[tuple[Path, str]] = []
    files = [p.relative_to(folder) for p in visible_files(folder, unreadable) if is_image_name(p)]
    if unreadable:  # its images would be left out of the data unsaid
        path, reason = unreadable[0]
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        where = "" if path == folder else f" or move it out of {folder}"
        raise UserError(f"{option}: {path}: {reason}{more}; fix its permissions{where}")
    if not files:
        raise NoImages(f"{option}: {folder} holds no images ({', '.join(sorted(image_extensions()))})")
    return files


class NoImages(UserError):
    """A folder holds no image files (:func:`list_images`)."""


_SAID_WITHOUT_IMAGES: set[Path] = set()  # each said once: a command lists its folders more than once


def say_sub_folders_without_images(root: Path, names: list[str], option: str, role: str,
                                   kept: tuple[str, ...]) -> None:
    """Warn (once a process) that the sub-folders ``names`` of ``root`` hold no images, so that none of them is a
    ``role`` (a class, a domain): a folder a copy left empty is not dropped from a model's classes unsaid."""
    new = [name for name in names if root / name not in _SAID_WITHOUT_IMAGES]
    if new:
        _SAID_WITHOUT_IMAGES.update(root / name for name in new)
        plural = {"class": "classes"}.get(role, f"{role}s")
        log.warning("%s: %s %s no images, so %s (the %s: %s)", option, ", ".join(str(root / n) for n in new),
                    *(("holds", f"it is not a {role}") if len(new) == 1 else ("hold", f"they are not {plural}")),
                    plural, ", ".join(kept))
