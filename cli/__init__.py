"""The ``img2img`` command line: a thin click front end over the img2img library.

This folder is installed as the package ``img2img.cli`` (see pyproject.toml),
so ``python -m img2img.cli`` and the ``img2img`` console script both run it.
It parses and validates options and calls the library; it holds no logic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import warnings
from typing import NoReturn


def _standard_streams_open() -> None:
    """Standard input, output or error closed when the command starts (``2>&-``, a daemon's or a cron job's
    closed descriptors) become /dev/null.  Python leaves ``sys.stderr`` None then, which the progress bar wrote
    to (an AttributeError, said nowhere, and exit status 1), and the first file opened would take the free
    descriptor 2, where torch's native code writes its warnings: into a checkpoint, say."""
    for number, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(number)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, once those below are open
        if null != number:
            os.dup2(null, number)
            os.close(null)
        setattr(sys, name, open(number, "r" if number == 0 else "w", closefd=False))  # noqa: SIM115


class _Console(io.RawIOBase):
    """Standard output or error under the command's text stream, which a stream that can no longer be written
    (a full disk or a quota under a job's output file, a file-size limit, a terminal gone after ``disown``) does
    not stop: the command goes on without it, and says so once, where it still can (the other stream, a run's
    train.log), and ends with exit status 1 and a line saying so once its work is done, as what it printed is
    incomplete.  A write that failed there raised in the middle of whatever printed (a progress bar's refresh),
    and stopped a training run between checkpoints with an error that blamed the run folder.  A reader that went
    away (a broken pipe) still ends the command, as a shell's pipeline ends its writers: training when its step
    ends, with a checkpoint (:meth:`StopRequests.reader_gone`)."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self.fd, self.name, self.lost = fd, name, False
        self.failure: str | None = None  # what could not be written, and why
        _CONSOLES.append(self)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data) -> int:
        if self.lost:
            return len(data)
        view = memoryview(data)
        try:
            while view:  # whole: a text stream straight over this one (stderr's) drops what a short write leaves
                view = view[os.write(self.fd, view):]
        except BrokenPipeError:
            from img2img.interrupt import StopRequests  # noqa: PLC0415 - (a write before the imports below)

            if StopRequests.reader_gone():  # training stops when its step ends, with a checkpoint
                self.lost = True
                return len(data)
            raise
        except BlockingIOError:
            raise
        except OSError as error:
            self.lost = True
            where = ""
            with contextlib.suppress(OSError):  # the file, where /proc says it
                where = f" ({os.readlink(f'/proc/self/fd/{self.fd}')})"
            self.failure = f"{self.name}{where} could not be written ({error.strerror or error})"
            _say_lost(self)
        return len(data)


_CONSOLES: list[_Console] = []


def _say_lost(stream: _Console) -> None:
    """Say once, wherever else the log goes, that ``stream`` can no longer be written: to every handler of the
    img2img log but one that writes to ``stream`` itself (whose writer is in the middle of the write that failed)."""
    logger = logging.getLogger("img2img")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, "%s: the command goes on without it",
                               (stream.failure,), None)
    for handler in logger.handlers:
        if getattr(getattr(getattr(handler, "stream", None), "buffer", None), "raw", None) is not stream:
            handler.handle(record)


def _console_goes_on() -> None:
    """Puts a :class:`_Console` under ``sys.stdout`` and ``sys.stderr`` (the process's own, not a test's)."""
    for number, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if type(stream) is not io.TextIOWrapper or stream.fileno() != number:
                continue
            stream.flush()
            console = _Console(number, f"standard {'output' if number == 1 else 'error'}")
            buffered = isinstance(stream.buffer, io.BufferedIOBase)  # (stderr, redirected, is not)
            setattr(sys, name, io.TextIOWrapper(
                io.BufferedWriter(console) if buffered else console, encoding=stream.encoding, errors=stream.errors,
                line_buffering=stream.line_buffering, write_through=stream.write_through))


_standard_streams_open()
_console_goes_on()
try:  # torch's import dies in a deleted folder ("Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so")
    os.getcwd()
except FileNotFoundError:
    sys.stderr.write("Error: the current folder no longer exists (it was deleted); cd to one that does\n")
    sys.exit(1)


def _interrupted_while_starting(number: int, frame: object) -> None:
    """Ctrl-C (or SIGTERM, SIGHUP) while the command starts up, importing torch and the rest for some seconds,
    ends it as it ends later: with 128 + the signal and one line, not a traceback of the import machinery.  It
    ends the process at once, as nothing has been done yet: an exception raised here (SystemExit) could land
    where Python drops it, in a weak reference's callback, and the command went on; and the line is written
    unbuffered, as a print could meet stderr's writer in the middle of a write."""
    with contextlib.suppress(OSError):  # (no stderr to write to: the exit status says it)
        os.write(2, b"interrupted while starting; nothing was done\n")
    os._exit(128 + number)


_STARTING = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
try:  # SIG_IGN stays (nohup, a background job): only the default actions are replaced
    _previous = {n: signal.getsignal(n) for n in _STARTING}
    for _number, _handler in _previous.items():
        if _handler in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(_number, _interrupted_while_starting)
except ValueError:  # imported outside the main thread: signals are not ours to set
    _previous = {}


def _cannot_start(error: BaseException) -> NoReturn:
    """torch, or another library, could not be loaded: say why in one line, and where the process may map less
    memory than importing them takes (``ulimit -v``, a job scheduler's ``h_vmem``: torch's import failed to map
    its libraries at 2 GiB, and ran out of memory at 4), say so."""
    reason = "out of memory" if isinstance(error, MemoryError) else (str(error) or type(error).__name__)
    limit = ""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource  # noqa: PLC0415

        mappable = resource.getrlimit(resource.RLIMIT_AS)[0]
        if mappable != resource.RLIM_INFINITY:
            limit = f"; this process may map at most {mappable / 2**30:.1f} GiB (ulimit -v), which may be too little"
    sys.stderr.write(f"Error: img2img cannot start: {reason}{limit}\n")
    sys.exit(1)


try:
    import click  # noqa: E402
    import torch  # noqa: E402

    from img2img.errors import UserError, exhausted, out_of_memory, out_of_memory_message  # noqa: E402
    from img2img.interrupt import StopRequests, terminate_as_interrupt  # noqa: E402
    from img2img.resources import available_cpus  # noqa: E402

    from .bench import bench  # noqa: E402
    from .demo import demo  # noqa: E402
    from .evaluate import evaluate  # noqa: E402
    from .options import OUTPUTS, printable  # noqa: E402
    from .sample import sample  # noqa: E402
    from .train import train  # noqa: E402
    from .translate import export, import_weights, translate  # noqa: E402
except (ImportError, MemoryError) as _error:  # a library that cannot be loaded (or no memory to load it)
    _cannot_start(_error)

for _number, _handler in _previous.items():  # started: the handlers as they were
    if _handler is not None:
        signal.signal(_number, _handler)


class _Group(click.Group):
    """Turns the library's :class:`UserError` into click's one-line error and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            with terminate_as_interrupt():  # SIGTERM and SIGHUP end any command as Ctrl-C does, in one line
                result = super().invoke(ctx)
            lost = [console.failure for console in _CONSOLES if console.failure]
            if lost:  # its work is done, and what it printed is incomplete
                raise UserError(f"{'; '.join(lost)}: what the command printed there is incomplete, though its work "
                                "is done")
            return result
        except UserError as error:
            raise click.ClickException(printable(str(error))) from None
        except OSError as error:  # a file cannot be written or read: say which, in one line
            # open files, processes or threads: no file's fault
            if (limit := exhausted(error, self._takes_workers(ctx))) is not None:
                raise click.ClickException(limit) from None
            if isinstance(error, BrokenPipeError) and error.filename is None and _stdout_closed():
                # `img2img ... | head`: the reader of what the command prints went away, as a shell's pipeline
                # ends its writers (128 + SIGPIPE); the command's outputs are not at fault, as "OUT: Broken pipe" said
                raise click.exceptions.Exit(128 + getattr(signal, "SIGPIPE", 13)) from None
            # with no file of its own (a full disk under a library's writer), the error is where the command writes
            where = error.filename or ", ".join(dict.fromkeys(ctx.meta.get(OUTPUTS, [])))
            raise click.ClickException(printable(f"{where}: {error.strerror or error}" if where else
                                                 str(error.strerror or error))) from None
        except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
            # torch's loader's report of open files, or no thread
            if (limit := exhausted(error, self._takes_workers(ctx))) is not None:
                raise click.ClickException(limit) from None
            if not out_of_memory(error):
                raise
            # where no command said more (what to make smaller, what was kept): in one line all the same
            raise click.ClickException(f"{out_of_memory_message(error)}; use smaller images, batches or sets "
                                       "of them") from None
        except KeyboardInterrupt as error:  # 128 + the signal, as shells do
            for number in StopRequests.SIGNALS:  # stopping already: one more Ctrl-C is no traceback
                signal.signal(number, signal.SIG_IGN)
            number = getattr(error, "signal_number", signal.SIGINT)
            if not getattr(error, "said", False):  # training and translation say what they kept; the rest here
                click.echo(f"interrupted ({signal.Signals(number).name}) before the command finished", err=True)
            raise click.exceptions.Exit(128 + number) from None

    def _takes_workers(self, ctx: click.Context) -> bool:
        """Whether the command has loading workers (``--workers``: train's targets, translate, bench)."""
        def takes_workers(command: click.Command | None) -> bool:
            if isinstance(command, click.Group):
                return any(takes_workers(sub) for sub in command.commands.values())
            return command is not None and any("--workers" in param.opts for param in command.params)

        return takes_workers(self.commands.get(ctx.invoked_subcommand or ""))


def _stdout_closed() -> bool:
    """Whether standard output is a pipe that no one reads any more (poll says so: POLLERR on its writing end);
    if so, it is pointed at /dev/null, so that the interpreter's last flush of it raises nothing more."""
    try:
        import select  # noqa: PLC0415

        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):
            return False
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's stream), or no poll (Windows)
        return False
    return True


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = printable(super().format(record))  # a line each (a file's name may hold a newline)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def _no_cuda_runtime(record: logging.LogRecord) -> bool:
    """False for torch's "No CUDA runtime is found, using CUDA_HOME=..." (torch.compile on a machine with a CUDA
    toolkit but no GPU, or a torch without CUDA, logged it in the middle of a CPU run, which says its device
    itself)."""
    return not record.getMessage().startswith("No CUDA runtime is found")


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("img2img")
    if not any(getattr(h, "_img2img_console", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(_ConsoleFormatter("%(message)s"))
        handler._img2img_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log every detail.")
@click.version_option(package_name="img2img")
def main(verbose: bool) -> None:
    """img2img: image-to-image translation with GANs (pix2pix, CycleGAN, DiscoGAN, CUT, FastCUT, StarGAN) and
    noise-to-image GANs (the MNIST baseline GAN, DCGAN, WGAN, cGAN, AC-GAN, GMMN).

    Every model trains, samples or translates, evaluates, benchmarks and exports through the commands below;
    `img2img COMMAND --help` for each."""
    _setup_logging(verbose)
    # torch.compile traces each backward pass with autograd's anomaly mode on, which reports any error crossing one
    # (Ctrl-C, a compiler fault that --compile auto retakes eagerly) with the traceback of its forward call: the
    # command says what happened, in one line
    warnings.filterwarnings("ignore", r"Error detected in \S+\. Traceback of forward call", UserWarning)
    toolkit = logging.getLogger("torch.utils.cpp_extension")
    if _no_cuda_runtime not in toolkit.filters:
        toolkit.addFilter(_no_cuda_runtime)
    cpus = available_cpus()  # a container's CPU quota: torch counts the host's cores, and more threads only wait
    if "OMP_NUM_THREADS" not in os.environ and cpus < torch.get_num_threads():
        torch.set_num_threads(cpus)


main.add_command(train)
main.add_command(sample)
main.add_command(demo)
main.add_command(translate)
main.add_command(import_weights)
main.add_command(export)
main.add_command(evaluate)
main.add_command(bench)

__all__ = ["main"]
