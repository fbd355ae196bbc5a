"""The checkpoint file: one self-describing file per save, written atomically, loaded without running code.

A checkpoint is a ``torch.save``d dict of plain containers and tensors only,
so ``torch.load(weights_only=True)`` reads it and no pickled code ever runs::

    format, format_version   "img2img-checkpoint", 1
    config                   the resolved RunConfig as a dict (model name, loop and model options)
    step                     training steps completed
    networks                 {name: state_dict} for every network of the model
    optimizers, schedulers   {phase: state_dict}
    rng                      torch CPU/CUDA, Python and NumPy generator states
    model_state              the model's extra state (e.g. image pools)

Saving writes a temporary file in the same folder, fsyncs it and renames it
over the target, so a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2img.errors import NOT_A_FILE, UserError

FORMAT = "img2img-checkpoint"
FORMAT_VERSION = 1
LAST_NAME = "last.ckpt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


NO_FOLDER = "is a file, so no folder can be made there"  # said of a file in the way of an output's folders

NAME_MAX = 255  # bytes in a file's name, on the file systems in use (ext4, XFS, btrfs, APFS, NTFS's 255 characters)


def temporary_path(path: Path) -> Path:
    """Where a file is written before it is renamed to ``path``: beside it (a rename within a folder is atomic),
    hidden, and marked with the process.  A name too long for that mark (a 250-byte file name, which is legal)
    is replaced by a digest of it, so that the file it stands for can still be written."""
    name = f".{path.name}.tmp-{os.getpid()}"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]}.tmp-{os.getpid()}"
    return path.with_name(name)


def discard(temporary: Path) -> None:
    """Remove a temporary file if it is there.  A removal that fails (on a read-only file system, unlink fails
    even for a file that is not there; beneath a file, it raises too) is not the error to report: it replaced
    the error on its way, which names the file the user asked for, with one naming the temporary."""
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)


def check_writable(path: str | Path, option: str) -> None:
    """Refuse, in one line naming ``option``, a file or folder ``path`` that cannot be written (see
    :func:`unwritable`), before the work whose result it is to hold."""
    refusal = unwritable(path)
    if refusal is not None:
        raise UserError(f"{option}: cannot write into {refusal[0]} ({refusal[1]})")


def unwritable(path: str | Path) -> tuple[Path, str] | None:
    """The folder that keeps a file or folder ``path`` from being written, and why; None where it can be.

    A read-only file system or a folder of another user's was found out only by the write, after the work whose
    result it was to hold (a translation's first batch, an evaluation, a profile, an ONNX conversion).  The
    nearest folder that exists (``path`` itself if it is one, else the folder it is in, or would be made in) is
    tried with a file written and removed at once (asking the system, os.access, can be wrong on network and
    FUSE mounts).  A file where a folder goes is named too: the write, after the work, said "RUN/eval/step-N.json:
    File exists" of a file RUN/eval."""
    path = Path(path)
    folder = path if path.is_dir() else in_the_way(path)
    if not folder.is_dir():
        return folder, f"it {NO_FOLDER}"
    probe = folder / f".img2img-probe-{os.getpid()}"
    try:
        with open(probe, "xb"):
            pass
    except FileExistsError:  # not ours to remove
        return None
    except OSError as error:
        return folder, error.strerror or str(error)
    discard(probe)
    return None


def atomic_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` ``payload`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        discard(temporary)
        # torch's writer hides what stopped it (Ctrl-C, a full disk) behind a RuntimeError of its own
        interrupt = _first_in_chain(error, KeyboardInterrupt)
        if interrupt is not None and interrupt is not error:
            raise interrupt from None
        cause = _first_in_chain(error, OSError)
        if cause is not None:  # and an OSError of a writer names no file: name this one
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise
    _fsync_dir(path.parent)
    return path


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so that a file replaced is never left
    half-written, making the folders above it where missing; an error names ``path``, not its temporary.  A link
    to a file stays a link (the file it names is replaced), and what is not a file (``/dev/stdout``, a FIFO) is
    written in place: a rename would replace the device itself (as root, ``--json /dev/full`` once left a JSON
    file where /dev/full had been)."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        if path.exists() and not path.is_file():
            with open(path, "wb") as handle:
                handle.write(data)
            return
        temporary = temporary_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        finally:
            discard(temporary)
    except (FileExistsError, NotADirectoryError):  # the folders' mkdir: the file in a folder's place is named
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(in_the_way(target))) from None
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None


def in_the_way(path: Path) -> Path:
    """The nearest of ``path``'s folders that exists: where a folder of it cannot be made (``mkdir`` said "File
    exists" or "Not a directory"), the file in its place."""
    return next(folder for folder in Path(path).parents if os.path.lexists(folder))


def within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` (or the same file) or lies under it, by what the file system says each
    folder is (its device and inode) as well as by real paths: a bind mount, or a case-insensitive file system
    (macOS's ``Photos`` and ``photos``), names one folder two ways that no link joins, and translating a folder
    into such a second name of itself with --overwrite replaced its images with their translations.  Folders of
    ``path`` not made yet are passed over."""
    real, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real.is_relative_to(real_folder):
        return True
    target = _identity(real_folder)
    return target is not None and any(_identity(level) == target for level in (real, *real.parents))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:  # not there (yet), or not to be looked at
        return None
    return info.st_dev, info.st_ino


def refuse_replacing(out: Path, option: str, inputs: dict[str, str | Path | None]) -> None:
    """A one-line error where ``out`` is a file the command reads (``inputs``, by what each is called), which
    writing ``out`` would replace: --overwrite for one (``import G.pth --out G.pth --overwrite`` replaced the
    official weights with the checkpoint made of them), and a report at once (``eval RUN --json RUN/last.ckpt``
    replaced the checkpoint with the JSON)."""
    for what, path in inputs.items():
        if path is not None and os.path.lexists(out) and within(out, path):
            named = what if Path(out) == Path(path) else f"{what} {path} under another name"
            raise UserError(f"{option}: {out} is {named}, which writing there would replace; choose another file")


def check_replaceable(path: Path, option: str, overwrite: bool) -> None:
    """A one-line error unless ``path`` may be written whole: absent, or a file that ``overwrite`` allows
    replacing; never a folder or a device (``--out /dev/null --overwrite`` would, as root, put a file in the
    device's place, as a rename replaces whatever has the name)."""
    if path.exists() and not path.is_file():
        raise UserError(f"{option}: {path} is not a file (a folder or a device); name the file to write")
    if path.exists() and not overwrite:
        raise UserError(f"{option}: {path} exists; pass --overwrite to replace it")


def _first_in_chain(error: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """``error`` if it is a ``kind``, or the first ``kind`` it was raised while handling (a writer's cleanup
    failing in turn)."""
    while error is not None:
        if isinstance(error, kind):
            return error
        error = error.__context__
    return None


def atomic_link(target: Path, link: Path) -> None:
    """Make ``link`` name the same file as ``target`` (a hard link, else a copy), replacing it atomically."""
    temporary = temporary_path(link)
    discard(temporary)
    try:
        try:
            os.link(target, temporary)
        except OSError:  # no hard links on this file system: copy instead
            with open(target, "rb") as source, open(temporary, "wb") as handle:
                while chunk := source.read(1 << 20):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, link)
    except BaseException:
        discard(temporary)
        raise
    _fsync_dir(link.parent)


def resolve(path: str | Path, option: str = "checkpoint") -> Path:
    """The checkpoint file that ``path`` means: the file itself, or a run folder's ``last.ckpt``."""
    path = Path(path)
    if path.is_dir():
        last = path / LAST_NAME
        if not last.is_file():  # a run killed (or its disk filled) between its first step checkpoint and the link
            older = _newest_readable_beside(last)
            raise UserError(f"{option}: {path} holds no checkpoint (no {LAST_NAME})" if older is None else
                            f"{option}: {path} has no {LAST_NAME}; {older} is the run's newest checkpoint that "
                            "reads: give it instead")
        return last
    if not path.exists():
        raise UserError(f"{option}: {path} does not exist")
    if not path.is_file():  # a named pipe: torch.load would wait for a writer
        raise UserError(f"{option}: {path} is {NOT_A_FILE}")
    return path


def read(path: str | Path, option: str = "checkpoint") -> dict[str, Any]:
    """Load and check a checkpoint (file or run folder) on the CPU, without executing code from it."""
    file = resolve(path, option)
    return validate(load_file(file, option), file, option)


def load_file(file: Path, option: str = "checkpoint") -> Any:
    """Whatever ``torch.load(weights_only=True)`` reads from ``file``; a one-line error if it cannot, which names
    the run's newest checkpoint that does read when ``file`` is a run's (a disk that filled or failed under it
    then costs only the steps since)."""
    try:
        return _load(file)
    except Exception as error:  # noqa: BLE001 - a corrupt file raises many kinds of error
        older = _newest_readable_beside(file)
        raise UserError(f"{option}: {file} is not a readable checkpoint ({_load_failure(file, error)})"
                        + (f"; {older} is the run's newest checkpoint that reads: give it instead" if older else "")
                        ) from None


def _load(file: Path) -> Any:
    with warnings.catch_warnings():  # e.g. torch doubting a pickle protocol: the outcome is what matters
        warnings.simplefilter("ignore")
        return torch.load(file, map_location="cpu", weights_only=True)


def _newest_readable_beside(file: Path) -> Path | None:
    """The newest of the run's step checkpoints other than ``file`` (and its hard link) that reads, if any."""
    run = file.parent if file.name == LAST_NAME else file.parent.parent if file.parent.name == "checkpoints" else None
    if run is None:
        return None
    for candidate in sorted((run / "checkpoints").glob("step-*.ckpt"), reverse=True):
        try:
            if file.exists() and candidate.samefile(file):
                continue
            validate(_load(candidate), candidate)
        except Exception:  # noqa: BLE001 - unreadable too: the next older one
            continue
        return candidate
    return None


def _load_failure(file: Path, error: Exception) -> str:
    """Why ``torch.load`` could not read ``file``, in a few words.  Its weights-only refusal is long and advises
    loading with ``weights_only=False``, which would run the file's code: say what the file is instead."""
    text = str(error).strip()
    head = None
    with contextlib.suppress(OSError), open(file, "rb") as stream:
        head = stream.read(4)
    if head == b"":
        return "the file is empty"
    if head is not None and not head.startswith((b"PK\x03\x04", b"\x80")):
        return "not a file that torch.save wrote"  # which writes a zip archive (or, long ago, a pickle)
    if "Weights only load failed" not in text:
        line = text.splitlines()[0] if text else type(error).__name__
        return line if len(line) <= 160 else line.split(". ")[0][:160]  # a long one: its first sentence
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0].split(". ")[0] \
        if "WeightsUnpickler error:" in text else ""
    return f"it holds Python objects beyond tensors and plain data, which are never unpickled{': ' if detail else ''}" \
        f"{detail[:120]}"


def validate(payload: Any, file: Path, option: str = "checkpoint") -> dict[str, Any]:
    """``payload`` (loaded from ``file``) if it is an img2img checkpoint this version reads; else a UserError."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{option}: {file} is not an img2img checkpoint "
                        "(official CycleGAN/pix2pix weights: `img2img translate` reads them, `img2img import` "
                        "converts them)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{option}: {file} has checkpoint format version {payload.get('format_version')}, "
                        f"this img2img reads version {FORMAT_VERSION}")
    for key in ("config", "step", "networks"):
        if key not in payload:
            raise UserError(f"{option}: {file} is an incomplete img2img checkpoint (no {key!r})")
    payload["path"] = str(file)
    return payload


def unfit_weights(state: dict[str, Any], expected: dict[str, torch.Tensor]) -> str | None:
    """Why the weights ``state`` cannot serve a network whose own are ``expected``, in a few words
    (``load_state_dict``'s message lists every key and can run to pages), or None: a weight of another shape,
    one missing or one to spare, or one that is not finite (its run had diverged)."""
    def shape(value: torch.Tensor) -> str:
        return "×".join(map(str, value.shape)) or "a scalar"

    for key, value in expected.items():
        if key in state and getattr(state[key], "shape", None) != value.shape:
            found = shape(state[key]) if isinstance(state[key], torch.Tensor) else f"a {type(state[key]).__name__}"
            return f"{key} is {found} in the file, {shape(value)} in the network"
    for found, keys in (("lacks", [key for key in expected if key not in state]),
                        ("has no place for", [key for key in state if key not in expected])):
        if keys:
            return f"it {found} {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all()):
            return f"{key} is not finite (NaN or infinite): the run that wrote it had diverged"
    return None


def capture_rng() -> dict[str, Any]:
    """Every random generator the training loop may draw from, as tensors and plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
