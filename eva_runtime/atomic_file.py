"""Replacing a file in one step, the one way every checkpoint, bundle manifest, recording, cache and held command
is written: a reader (a resumed run, a loader, a restarted node) finds the old file or the new one whole, never a
torn one, and a writer that fails leaves the old file as it was and no temporary file behind. Standard library
only, so any layer may import it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replaced_atomically", "write_text_atomically"]

# The mode a plain open() gives a new file: 0666 less the process's umask (read once; umask has no getter).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def replaced_atomically(path: Path | str, *, sync: bool = True, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; when the block ends without an error, the
    temporary file takes ``path``'s name in one rename. On an error it is removed and the error goes on.

    ``sync`` flushes the file (and then the directory entry) to the device first, so a power cut cannot leave the
    new name on data that never reached the disk; a file rewritten many times a second whose loss on a power cut
    costs nothing (a held command, which a process kill, not a power cut, must survive) passes ``sync=False``.
    ``suffix`` ends the temporary name, for writers that choose a format by the name (``.onnx``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, in the same directory (a rename within one filesystem is atomic) and unique per writer.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        # Some writers create private files (safetensors' writes 0600); a checkpoint or model another user of the
        # machine (a robot's service account) cannot read is a failure waiting for deployment day.
        os.chmod(temporary, _FILE_MODE)
        if sync:
            _flush(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        _flush(path.parent)


def write_text_atomically(path: Path | str, text: str, *, sync: bool = True) -> None:
    """``path.write_text(text)`` (UTF-8) through :func:`replaced_atomically`."""
    with replaced_atomically(path, sync=sync) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _flush(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
