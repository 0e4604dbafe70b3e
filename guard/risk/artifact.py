"""Risk-model artifact: one ``.npz`` of plain numeric arrays plus embedded JSON metadata.

Loading never executes code (``allow_pickle=False``; metadata is JSON stored as a uint8 array).
The checksum is SHA-256 over the canonical metadata (without ``checksum``/``version``) and every
array's name, dtype, shape and bytes; a mismatch means the file was modified.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guard.errors import RiskModelError

FORMAT_VERSION = 1
META_KEY = "meta_json"
REQUIRED_ARRAYS = ("counts", "resp_w", "req_w", "edges", "req_edges", "ext_edges")


def _canonical_meta(meta: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in meta.items() if k not in ("checksum", "version")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_checksum(arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(_canonical_meta(meta))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_artifact(
    path: str | Path, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the artifact; returns the metadata with ``checksum`` and ``version`` filled in."""
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise RiskModelError(f"cannot save risk model: missing arrays {missing}")
    full = dict(meta)
    full["format_version"] = FORMAT_VERSION
    checksum = compute_checksum(arrays, full)
    full["checksum"] = checksum
    full["version"] = checksum[:12]
    meta_bytes = json.dumps(full, sort_keys=True, allow_nan=False).encode()
    payload = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **payload)  # type: ignore[arg-type]
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(p)
    return full


def load_artifact(path: str | Path) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """Read and verify an artifact; raises ``RiskModelError`` with a clear message."""
    p = Path(path)
    if not p.is_file():
        raise RiskModelError(f"risk model not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise RiskModelError(f"risk model {p} is corrupt or not a guard model: {exc}") from exc
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise RiskModelError(f"risk model {p} has no metadata: not a guard risk model")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RiskModelError(f"risk model {p} has corrupt metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise RiskModelError(f"risk model {p} has corrupt metadata (not an object)")
    fv = meta.get("format_version")
    if fv != FORMAT_VERSION:
        raise RiskModelError(
            f"risk model {p} has unknown format_version {fv!r}; this guard reads {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise RiskModelError(f"risk model {p} is incomplete: missing arrays {missing}")
    for name, a in arrays.items():
        if a.dtype.kind not in "fiu":
            raise RiskModelError(f"risk model {p}: array {name!r} has non-numeric dtype {a.dtype}")
    stored = meta.get("checksum")
    actual = compute_checksum(arrays, meta)
    if stored != actual:
        raise RiskModelError(
            f"risk model {p} failed its checksum (stored {str(stored)[:12]}, computed "
            f"{actual[:12]}): the file was modified or damaged"
        )
    return arrays, meta
