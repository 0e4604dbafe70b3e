#!/usr/bin/env python3
"""Overload, measured: offer ``--factor`` × ``--max-streams`` simultaneous streams, 127.0.0.1 only.

Starts the scripted upstream (loadtests/fake_vllm.py, paced at ``--tokens-per-second`` per stream
so streams overlap as real generations do) and ``guard serve --max-streams N`` in front of it.
Per round, in one process and the same order every round:

1. **unloaded**: N streams at once (exactly what the guard admits): per-stream throughput;
2. **overloaded**: factor × N streams offered at once: how many are admitted (must be N, or fewer
   if some finish before the burst ends), how fast the excess gets its answer (503
   ``overloaded_error`` / ``too_many_streams`` with ``Retry-After``; p50 / p99 of the time to the
   status line), the admitted
   streams' throughput as a ratio of the unloaded one, anything else that failed;
3. the guard's resident memory after the burst, against before.

    python loadtests/overload.py [--max-streams 32] [--factor 2] [--rounds 5] [--json OUT]

Exits non-zero if an admitted stream fails, an excess request gets anything but the documented
503, or a round admits more than ``--max-streams``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
from soak import free_port, rss_kib  # noqa: E402

from guard.demo import wait_healthy  # noqa: E402

BODY = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "Where is my order?"}],
    "stream": True,
    "max_tokens": 64,
}


def _request_bytes(port: int) -> bytes:
    body = json.dumps(BODY).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def one(
    port: int, request: bytes, go: asyncio.Event, connected: list[int], n: int
) -> dict[str, Any]:
    """One raw HTTP/1.1 request on a connection opened before the burst: every request of the
    burst is written at the same moment (``go``), so the time to the status line is the guard's,
    not a client library's queue (one asyncio client cannot start 64 requests at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connected.append(1)
    if len(connected) == n:
        go.set()
    await go.wait()
    t0 = time.perf_counter()
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    status_s = time.perf_counter() - t0
    status = int(status_line.split()[1])
    rest = await reader.read()  # Connection: close: everything until the guard closes
    total = time.perf_counter() - t0
    writer.close()
    if status != 200:
        head, _, body = rest.partition(b"\r\n\r\n")
        retry = next(
            (ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\r\n")
             if ln.lower().startswith(b"retry-after:")),
            None,
        )  # fmt: skip
        start = body.find(b"{")
        err = json.loads(body[start : body.rfind(b"}") + 1]) if start >= 0 else {}
        code = (err.get("error") or {}).get("code")
        return {"status": status, "status_s": status_s, "retry_after": retry, "code": code}
    return {
        "status": 200,
        "status_s": status_s,
        "chunks": rest.count(b"data: {"),
        "done": b"data: [DONE]" in rest,
        "total_s": total,
    }


async def burst(port: int, n: int) -> list[dict[str, Any]]:
    go, connected, request = asyncio.Event(), [], _request_bytes(port)
    return list(await asyncio.gather(*(one(port, request, go, connected, n) for _ in range(n))))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-streams", type=int, default=32)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens-per-second", type=float, default=200.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    n = args.max_streams
    offered = int(n * args.factor)
    up_port, g_port = free_port(), free_port()
    fake = subprocess.Popen(
        [sys.executable, str(ROOT / "loadtests" / "fake_vllm.py"), "--port", str(up_port),
         "--tokens-per-second", str(args.tokens_per_second)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    guard = subprocess.Popen(
        [sys.executable, "-m", "guard", "serve", "--upstream", f"http://127.0.0.1:{up_port}",
         "--port", str(g_port), "--max-streams", str(n), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{g_port}"
    failures: list[str] = []
    rounds = []
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}", fake, 20)
        wait_healthy(url, guard, 30)
        asyncio.run(burst(g_port, 4))  # warm-up
        rss0 = rss_kib(guard.pid)
        for i in range(args.rounds):
            base = asyncio.run(burst(g_port, n))
            over = asyncio.run(burst(g_port, offered))
            ok_base = [r for r in base if r["status"] == 200]
            admitted = [r for r in over if r["status"] == 200]
            refused = [r for r in over if r["status"] != 200]
            for r in base + admitted:
                if not r.get("done"):
                    failures.append(f"round {i}: an admitted stream did not end with [DONE]")
            for r in refused:
                if (
                    r["status"] != 503
                    or r["code"] != "too_many_streams"
                    or r["retry_after"] is None
                ):
                    failures.append(f"round {i}: excess answered {r}")
            if len(admitted) > n:
                failures.append(f"round {i}: {len(admitted)} admitted > max_streams {n}")
            if len(ok_base) != n:
                failures.append(f"round {i}: unloaded burst of {n}: {len(ok_base)} admitted")
            tput_base = statistics.median(r["chunks"] / r["total_s"] for r in ok_base)
            tput_over = statistics.median(r["chunks"] / r["total_s"] for r in admitted)
            rej = [r["status_s"] * 1000 for r in refused]
            adm = [r["status_s"] * 1000 for r in admitted]
            rounds.append(
                {
                    "admitted": len(admitted),
                    "refused": len(refused),
                    "refused_p50_ms": pct(rej, 0.5),
                    "refused_p99_ms": pct(rej, 0.99),
                    "admitted_status_p50_ms": pct(adm, 0.5),
                    "throughput_ratio": tput_over / tput_base,
                }
            )
            print(
                f"round {i + 1}: offered {offered}, admitted {len(admitted)}, 503 {len(refused)} "
                f"(p50 {rounds[-1]['refused_p50_ms']:.1f} ms, p99 "
                f"{rounds[-1]['refused_p99_ms']:.1f} ms); admitted throughput "
                f"{rounds[-1]['throughput_ratio']:.2f}x unloaded",
                file=sys.stderr,
            )
        rss1 = rss_kib(guard.pid)
    finally:
        guard.terminate()
        fake.terminate()
        guard.wait(20)
        fake.wait(20)
    summary = {
        "benchmark": "overload",
        "command": "python loadtests/overload.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "max_streams": n,
        "offered": offered,
        "rounds": rounds,
        "median_admitted": statistics.median(r["admitted"] for r in rounds),
        "median_refused_p50_ms": statistics.median(r["refused_p50_ms"] for r in rounds),
        "median_refused_p99_ms": statistics.median(r["refused_p99_ms"] for r in rounds),
        "median_throughput_ratio": statistics.median(r["throughput_ratio"] for r in rounds),
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "failures": failures[:20],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
