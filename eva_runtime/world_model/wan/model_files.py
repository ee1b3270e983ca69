"""Hashes of a saved model directory (a diffusers pipeline or a LoRA adapter): written at save, verified at load.

`eva_hashes.json` lists the SHA-256 of every file under the directory except itself; loading refuses a directory
whose files differ (a corrupted or swapped checkpoint), or that has weight files the list does not name.
"""

from __future__ import annotations

import json
from pathlib import Path

from eva_runtime.file_hash import file_sha256

__all__ = ["HASH_FILE", "ModelFilesError", "verify_hashes", "write_hashes"]

HASH_FILE = "eva_hashes.json"


class ModelFilesError(ValueError):
    pass


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != HASH_FILE)


def write_hashes(directory: Path | str) -> dict[str, str]:
    directory = Path(directory)
    hashes = {p.relative_to(directory).as_posix(): file_sha256(p) for p in _files(directory)}
    (directory / HASH_FILE).write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    return hashes


def verify_hashes(directory: Path | str) -> dict[str, str]:
    """Check every file against `eva_hashes.json`; returns the verified hashes."""
    directory = Path(directory)
    listing = directory / HASH_FILE
    if not listing.is_file():
        raise ModelFilesError(f"{directory}: no {HASH_FILE}; refusing to load unverified weights")
    try:
        expected = json.loads(listing.read_text())
    except json.JSONDecodeError as error:
        raise ModelFilesError(f"{listing}: not JSON ({error})") from None
    present = {p.relative_to(directory).as_posix(): p for p in _files(directory)}
    unlisted = sorted(set(present) - set(expected))
    if unlisted:
        raise ModelFilesError(f"{directory}: files not in {HASH_FILE}: {unlisted}")
    for name, digest in expected.items():
        if name not in present:
            raise ModelFilesError(f"{directory}: {name} is listed in {HASH_FILE} but missing")
        actual = file_sha256(present[name])
        if actual != digest:
            raise ModelFilesError(f"{directory / name}: sha256 {actual} != expected {digest}")
    return dict(expected)
