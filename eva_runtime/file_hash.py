"""The SHA-256 of a file, the one hash every verified artifact (bundles, checkpoints, model directories, caches,
recordings) is checked against. Standard library only, so any layer may import it."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of the file's bytes, read in blocks (a model file need not fit in memory twice)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
