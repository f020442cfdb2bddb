"""Write beside the target, then rename over it: readers never see a half-written file.

:func:`temporary_sibling` makes the hidden temporary (``.NAME.partial-XXXXXXXX.EXT``, which
input discovery skips); :func:`replacing` writes through one and renames it into place;
:func:`replacing_folder` does the same for a whole folder; :func:`interrupts_deferred` holds
Ctrl-C back while several renames must happen together.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

_ATTEMPTS = 16


def temporary_sibling(path: Path) -> Path:
    """Create an empty hidden file next to ``path`` (exclusively, with the umask's permissions)
    and return its path. OSError if the folder is not writable."""
    for _ in range(_ATTEMPTS):
        candidate = path.parent / f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"{path.parent}: no free temporary name after {_ATTEMPTS} attempts")


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; errors are ignored (used while cleaning up)."""
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; a clean exit renames it over ``path``
    (atomic within a file system), an exception deletes it and leaves ``path`` as it was."""
    temp = temporary_sibling(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        remove_quietly(temp)


@contextmanager
def replacing_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty hidden staging folder beside ``folder`` to fill; a clean exit puts it in
    place of ``folder`` (an existing one is moved aside first and put back if the rename
    fails), an exception deletes it. ``folder`` is always absent, the old one or the new one."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield staging
        _swap_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is moved aside first."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    retired.rmdir()
    os.rename(folder, retired)
    try:
        os.rename(staging, folder)
    except OSError:
        os.rename(retired, folder)  # put the old one back
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the duration of a few renames, then deliver it.

    Only possible in the main thread; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, FrameType | None]] = []
    previous = signal.getsignal(signal.SIGINT)

    def remember(signum: int, frame: FrameType | None) -> None:
        received.append((signum, frame))

    try:
        signal.signal(signal.SIGINT, remember)
    except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
