"""Writing `.npz` files whose bytes depend only on their arrays, so their SHA-256 can name their content.

`np.savez_compressed` stamps every member of the zip with the time of writing. The video cache and the clip sets
are identified by their files' SHA-256 (a training run records it, and a resumed run refuses another), so the
same recordings cached twice gave two identities and a documented command could never reproduce a recorded hash.
Here every member carries one fixed date (1980-01-01, the zip format's first), in the order given, written with
numpy's own `.npy` format; `np.load(..., allow_pickle=False)` reads the result like any `.npz`. The file is
written atomically (`atomic_file.replaced_atomically`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import replaced_atomically

__all__ = ["save_npz"]

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path | str, arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Write `arrays` (name -> array; no object arrays) to `path` exactly as named, deterministically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with replaced_atomically(path) as temporary, zipfile.ZipFile(temporary, "w", compression) as archive:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"{path}: array {name!r} holds Python objects, which an .npz must not pickle")
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_DATE)
            member.compress_type = compression
            member.external_attr = 0o644 << 16
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
