"""The ``guard`` command line: serve, demo, fit, eval, depth, augment, data, hash-key."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from guard import __version__
from guard.errors import GuardError

_SETTINGS_ENV = "GUARD__SERVE_SETTINGS"  # internal: hands settings to uvicorn worker processes


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the guard in front of an OpenAI-compatible upstream")
    p.add_argument("--upstream", help="upstream base URL, e.g. http://127.0.0.1:8000 (required)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument(
        "--config",
        default=os.environ.get("GUARD_CONFIG") or None,
        help="YAML config file (policies, keys, decision log, ...); env GUARD_CONFIG",
    )
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    p.add_argument("--mode", choices=["enforce", "shadow", "off"])
    p.add_argument("--depth", type=int, help="checking depth D in generated tokens")
    p.add_argument("--threshold", type=float, help="halt when hitting probability >= this")
    p.add_argument("--action", choices=["halt", "resample", "alternate"])
    p.add_argument("--hold-back", type=int, dest="hold_back", help="tokens held back (W)")
    p.add_argument("--risk-model", dest="risk_model", help="risk model file (default: shipped)")
    p.add_argument("--decision-log", dest="decision_log", help="decision log JSONL path")
    p.add_argument("--connect-timeout", type=float, dest="connect_timeout")
    p.add_argument("--read-timeout", type=float, dest="read_timeout")
    p.add_argument("--total-timeout", type=float, dest="total_timeout")
    p.add_argument("--max-body-bytes", type=int, dest="max_body_bytes")
    p.add_argument("--max-streams", type=int, dest="max_streams")
    p.add_argument(
        "--upstream-api-key",
        dest="upstream_api_key",
        help="key sent to the upstream (prefer GUARD_UPSTREAM_API_KEY)",
    )
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)


_OVERRIDES: dict[str, tuple[str, ...]] = {
    "upstream": ("upstream",),
    "host": ("host",),
    "port": ("port",),
    "workers": ("workers",),
    "mode": ("policy", "mode"),
    "depth": ("policy", "depth"),
    "threshold": ("policy", "threshold"),
    "action": ("policy", "action"),
    "hold_back": ("policy", "hold_back"),
    "risk_model": ("risk_model",),
    "decision_log": ("decision_log", "path"),
    "connect_timeout": ("connect_timeout",),
    "read_timeout": ("read_timeout",),
    "total_timeout": ("total_timeout",),
    "max_body_bytes": ("max_body_bytes",),
    "max_streams": ("max_streams",),
    "upstream_api_key": ("upstream_api_key",),
    "log_level": ("log_level",),
}


def _overrides(args: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    return {
        path: getattr(args, name)
        for name, path in _OVERRIDES.items()
        if getattr(args, name, None) is not None
    }


def serve_settings(args: argparse.Namespace) -> Any:
    from guard.config import load_settings

    return load_settings(args.config, overrides=_overrides(args))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = serve_settings(args)
    # Load the risk model once here so a bad file fails before we bind the port.
    from guard.risk import load_risk_model

    load_risk_model(settings.risk_model)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    payload = settings.model_dump(mode="json")
    if settings.upstream_api_key is not None:
        payload["upstream_api_key"] = settings.upstream_api_key.get_secret_value()
    overrides = [[list(k), v] for k, v in _overrides(args).items()]
    os.environ[_SETTINGS_ENV] = json.dumps(
        {"settings": payload, "config": args.config, "overrides": overrides}
    )
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="guard-metrics-")
    print(
        f"guard {__version__}: listening on http://{settings.host}:{settings.port}, "
        f"upstream {settings.upstream}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        "guard.cli:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
        server_header=False,
        timeout_keep_alive=int(settings.keep_alive_timeout),
    )
    return 0


def app_factory() -> Any:
    """Called by uvicorn in each worker process."""
    from guard.app import create_app
    from guard.config import Settings

    raw = os.environ.get(_SETTINGS_ENV)
    if not raw:
        raise SystemExit("guard.cli:app_factory is started by `guard serve`")
    data = json.loads(raw)
    settings = Settings.model_validate(data["settings"])
    overrides = {tuple(k): v for k, v in data.get("overrides") or []}
    return create_app(settings, config_path=data.get("config"), config_overrides=overrides)


def _hash_key(args: argparse.Namespace) -> int:
    from guard.config import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
    print(hash_key(key))
    return 0


def _add_data(sub: Any) -> None:
    p = sub.add_parser(
        "data",
        help="public corpora for rebuilding the shipped risk model: where, verify, fetch",
        description="Lookup order: $GUARD_DATA_DIR; shared/data beside the repository checkout; "
        "the fetch directory ($GUARD_CACHE/data, default ~/.cache/guard/data).",
    )
    dsub = p.add_subparsers(dest="data_command", required=True)
    w = dsub.add_parser("where", help="print the directory in use (exit 1 if none is complete)")
    v = dsub.add_parser("verify", help="check sizes and SHA-256 of every file against the manifest")
    f = dsub.add_parser("fetch", help="download missing files from their pinned public sources")
    for q in (w, v, f):
        q.add_argument(
            "--source",
            action="append",
            default=[],
            help="only this source (repeatable), e.g. --source gptfuzz; default: all",
        )
    v.add_argument("--dir", type=str, help="check this directory (default: the one in use)")
    f.add_argument("--dest", type=str, help="target directory (default: ~/.cache/guard/data)")
    p.set_defaults(func=_data)


def _data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from guard.training import datasets

    m = datasets.load_manifest()
    if args.data_command == "where":
        print(datasets.data_dir(args.source, manifest=m))
        return 0
    if args.data_command == "verify":
        root = Path(args.dir) if args.dir else datasets.data_dir(args.source, manifest=m)
        files = m.select(args.source)
        problems = datasets.check(root, files)
        for pr in problems:
            print(f"{root / pr.path}: {pr.what} {pr.detail}".rstrip(), file=sys.stderr)
        if problems:
            print(
                f"guard data: {len(problems)} of {len(files)} files bad in {root}", file=sys.stderr
            )
            return 1
        print(f"{root}: {len(files)} files verified", file=sys.stderr)
        return 0
    dest = Path(args.dest) if args.dest else None
    from guard.progress import ProgressBars

    with ProgressBars("bytes", transient=True) as progress:
        res = datasets.fetch(dest, args.source, manifest=m, progress=progress)
    print(
        f"guard data: {len(res.fetched)} fetched, {len(res.present)} already present and "
        f"verified, in {res.dest}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guard",
        description="Inference-time safety guard for LLM serving (OpenAI-compatible proxy).",
    )
    parser.add_argument("--version", action="version", version=f"guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    hk = sub.add_parser("hash-key", help="print the SHA-256 form of an API key for the config")
    hk.add_argument("key", nargs="?", help="the key (read from stdin when omitted)")
    hk.set_defaults(func=_hash_key)
    _add_data(sub)
    try:
        from guard.demo import register as register_demo

        register_demo(sub)
    except ImportError:
        pass
    try:
        from guard.training.commands import register
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        return int(code or 0)
    except GuardError as exc:
        print(f"guard: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
