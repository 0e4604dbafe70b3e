#!/usr/bin/env python3
"""Bounded soak test: many concurrent guarded streams for a fixed time, on 127.0.0.1 only.

Starts the scripted fast upstream (loadtests/fake_vllm.py) and `guard serve` in front of it, then
keeps ``--concurrency`` streams in flight for ``--duration`` seconds, mixed benign and harmful
(``--harmful-share``). Checks every stream: it must end with ``data: [DONE]``, every event must
parse, a benign stream's text must equal the upstream's canned reply exactly (nothing lost or
garbled), a harmful one must end in ``finish_reason: "content_filter"`` without the harmful tail.
Samples the guard's resident memory, open file descriptors and sockets; growth is measured from
the end of warm-up (first 10%) to the end. Records each stream's time to first content and its
per-chunk time (first to last content, divided by the chunks between), summarised per time
window (p50/p99), so a slow drift shows. Exits non-zero if any check fails. Prints and optionally
writes a JSON summary (``--json``) and a picture over time (``--plot``).

    python loadtests/soak.py --duration 3600 --concurrency 500 --tokens-per-second 4 \
        --json benchmarks/results/soak-3600s.json --plot docs/img/soak-3600s.png
    python loadtests/soak.py --duration 600 --concurrency 200      # the 10-minute soak
    python loadtests/soak.py --duration 20 --concurrency 50         # the short CI version
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
import fake_vllm  # noqa: E402

from guard.demo import wait_healthy  # noqa: E402

SUPPORT = fake_vllm.SUPPORT_TEXT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process."""
    fds = socks = 0
    d = f"/proc/{pid}/fd"
    for name in os.listdir(d):
        fds += 1
        try:
            if os.readlink(f"{d}/{name}").startswith("socket:"):
                socks += 1
        except OSError:
            pass  # closed between listdir and readlink
    return fds, socks


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


class Stats:
    def __init__(self, window_s: float) -> None:
        self.ok = 0
        self.halted = 0
        self.errors: list[str] = []
        self.tokens = 0
        self.t0 = time.monotonic()
        self.window_s = window_s
        # per time window (by the stream's start): TTFT and per-chunk time samples, in ms
        self.ttft: dict[int, list[float]] = {}
        self.chunk: dict[int, list[float]] = {}

    def timing(self, started: float, first: float | None, last: float | None, n: int) -> None:
        w = int((started - self.t0) // self.window_s)
        if first is not None:
            self.ttft.setdefault(w, []).append((first - started) * 1000)
            if last is not None and n > 1:
                self.chunk.setdefault(w, []).append((last - first) * 1000 / (n - 1))


async def one_stream(client: httpx.AsyncClient, url: str, harmful: bool, st: Stats) -> None:
    word = "harmful" if harmful else "ordinary"
    body = {
        "model": "tiny",
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"An {word} question about my order."}],
    }
    try:
        started = time.monotonic()
        first = last = None
        n_content = 0
        parts: list[bytes] = []
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            async for piece in r.aiter_raw():
                parts.append(piece)
                # content deltas in this read (the role chunk's content is empty)
                k = piece.count(b'"content":"') - piece.count(b'"content":""')
                if k > 0:
                    now = time.monotonic()
                    if first is None:
                        first = now
                    last = now
                    n_content += k
        raw = b"".join(parts)
        if r.status_code == 200:
            st.timing(started, first, last, n_content)
        if r.status_code != 200:
            st.errors.append(f"status {r.status_code}: {raw[:200]!r}")
            return
        if not raw.endswith(b"data: [DONE]\n\n"):
            st.errors.append("stream did not end with [DONE]")
            return
        text, finish = "", None
        for block in raw.split(b"\n\n"):
            if not block or block == b"data: [DONE]":
                continue
            obj = json.loads(block[6:])
            if "error" in obj:
                st.errors.append(f"error event: {obj['error']}")
                return
            for c in obj["choices"]:
                text += c["delta"].get("content") or ""
                finish = c["finish_reason"] or finish
                st.tokens += 1
        if harmful:
            if finish != "content_filter":
                st.errors.append(f"harmful stream not halted: {text[:80]!r}")
                return
            st.halted += 1
        elif text != SUPPORT[: len(text)] or finish not in ("stop", "length") or not text:
            st.errors.append(f"benign stream garbled or halted: finish={finish} {text[:80]!r}")
            return
        st.ok += 1
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        st.errors.append(
            f"{type(exc).__name__}: {exc!r} harmful={harmful} t={time.monotonic():.1f}"
        )


Sample = tuple[float, int, int, int]  # (seconds since start, RSS KiB, open fds, sockets)


async def drive(
    url: str,
    duration: float,
    concurrency: int,
    share: float,
    pid: int,
    samples: list[Sample],
    window_s: float,
) -> Stats:
    st = Stats(window_s)
    rng = random.Random(1)
    end = time.monotonic() + duration
    # One httpx pool per 32 workers: a single pool with hundreds of connections spends its time
    # managing them (at 500 streams the load generator, not the guard, set the time to first
    # token: the guard had a handful of streams in flight while the clients waited)
    n_pools = max(1, -(-concurrency // 32))
    per_pool = -(-concurrency // n_pools)
    limits = httpx.Limits(max_connections=per_pool + 8, max_keepalive_connections=per_pool)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(timeout=60, limits=limits))
            for _ in range(n_pools)
        ]

        async def worker(k: int) -> None:
            client = clients[k % n_pools]
            while time.monotonic() < end:
                await one_stream(client, url, rng.random() < share, st)

        async def sampler() -> None:
            t0 = time.monotonic()
            while time.monotonic() < end:
                samples.append((time.monotonic() - t0, rss_kib(pid), *open_fds(pid)))
                await asyncio.sleep(max(0.5, duration / 120))

        await asyncio.gather(sampler(), *(worker(k) for k in range(concurrency)))
    return st


def added_ttft_quantiles(metrics: str) -> dict[str, float | None]:
    """p50 / p99 of ``guard_added_ttft_seconds`` (ms; the upper edge of the bucket the quantile
    falls in, as Prometheus' histogram_quantile bounds it)."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("guard_added_ttft_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit()[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {"count": total}
    for name, q in (("p50_le_ms", 0.5), ("p99_le_ms", 0.99)):
        edge = next((le for le, c in buckets if total and c >= q * total), None)
        out[name] = None if edge is None or edge == float("inf") else edge * 1000
    return out


def windows(st: Stats, samples: list[Sample]) -> list[dict[str, object]]:
    """Per time window: streams started, TTFT and per-chunk p50/p99 (ms), the last sample."""
    out = []
    for w in sorted(set(st.ttft) | set(st.chunk)):
        t_end = (w + 1) * st.window_s
        last = [s for s in samples if s[0] <= t_end] or samples[:1]
        out.append(
            {
                "t_s": round(w * st.window_s, 1),
                "streams": len(st.ttft.get(w, [])),
                "ttft_p50_ms": pct(st.ttft.get(w, []), 0.5),
                "ttft_p99_ms": pct(st.ttft.get(w, []), 0.99),
                "chunk_p50_ms": pct(st.chunk.get(w, []), 0.5),
                "chunk_p99_ms": pct(st.chunk.get(w, []), 0.99),
                "rss_kib": last[-1][1],
                "fds": last[-1][2],
                "sockets": last[-1][3],
            }
        )
    return out


def plot(summary: dict[str, object], samples: list[Sample], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = summary["windows"]
    assert isinstance(ws, list)
    t = [w["t_s"] / 60 for w in ws]
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax[0].plot(t, [w["ttft_p50_ms"] for w in ws], label="p50")
    ax[0].plot(t, [w["ttft_p99_ms"] for w in ws], label="p99")
    ax[0].set_ylabel("time to first\ncontent (ms)")
    ax[1].plot(t, [w["chunk_p50_ms"] for w in ws], label="p50")
    ax[1].plot(t, [w["chunk_p99_ms"] for w in ws], label="p99")
    ax[1].set_ylabel("time per chunk\n(ms)")
    st = [s[0] / 60 for s in samples]
    ax[2].plot(st, [s[1] / 1024 for s in samples], color="tab:green", label="RSS (MiB)")
    ax[2].set_ylabel("guard RSS (MiB)")
    ax[2].set_ylim(0, max(s[1] for s in samples) / 1024 * 1.2)
    twin = ax[2].twinx()
    twin.plot(st, [s[2] for s in samples], color="tab:red", label="open fds")
    twin.plot(st, [s[3] for s in samples], color="tab:purple", label="sockets", linestyle="--")
    twin.set_ylabel("open fds / sockets")
    twin.set_ylim(0, max(s[2] for s in samples) * 1.3)
    for a in ax[:2]:
        a.legend(loc="upper right")
        a.set_ylim(bottom=0)
    lines = ax[2].get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax[2].legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    ax[2].set_xlabel("minutes")
    fig.suptitle(
        f"soak: {summary['concurrency']} concurrent streams"
        f" ({summary['tokens_per_second'] or 'unpaced'} tokens/s each)"
        f" for {summary['duration_s']} s, "
        f"{summary['streams_ok']:,} streams, {summary['errors']} errors"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--harmful-share", type=float, default=0.3)
    ap.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth (0.05=5%%)")
    ap.add_argument(
        "--tokens-per-second",
        type=float,
        default=0.0,
        help="pace the scripted upstream per stream (0: as fast as it can, a saturating load)",
    )
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--plot", help="write a PNG of latency, memory and descriptors over time")
    ap.add_argument(
        "--window", type=float, default=None, help="seconds per latency window (duration/60)"
    )
    args = ap.parse_args()
    window_s = args.window or max(1.0, args.duration / 60)
    up_port, g_port = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "loadtests" / "fake_vllm.py"),
            "--port",
            str(up_port),
            "--log-level",
            "warning",
            "--tokens-per-second",
            str(args.tokens_per_second),
        ],
        stderr=subprocess.DEVNULL,
    )
    guard = None
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}", up, 30)
        # The fake's harmful text scores high with the shipped model; a soak is about the
        # machinery, so the threshold is set where every harmful stream is halted.
        guard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "guard",
                "serve",
                "--upstream",
                f"http://127.0.0.1:{up_port}",
                "--port",
                str(g_port),
                "--max-streams",
                str(args.concurrency + 64),
                "--threshold",
                os.environ.get("SOAK_THRESHOLD", "0.3"),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{g_port}"
        wait_healthy(url, guard, 30)
        samples: list[Sample] = []
        t0 = time.monotonic()
        st = asyncio.run(
            drive(
                url,
                args.duration,
                args.concurrency,
                args.harmful_share,
                guard.pid,
                samples,
                window_s,
            )
        )
        elapsed = time.monotonic() - t0
        warm_s = [s for s in samples if s[0] >= 0.1 * args.duration] or samples[:1]
        warm = [s[1] for s in warm_s]
        growth = (samples[-1][1] - warm[0]) / warm[0]
        # descriptors: in use while streams run (clients + upstream pool); flat = the end of the
        # run holds no more than the end of warm-up (a small allowance for pool churn), and
        # once the clients are gone, nothing of theirs is left open
        fd_warm, sock_warm = warm_s[0][2], warm_s[0][3]
        fd_end, sock_end = samples[-1][2], samples[-1][3]
        fd_max = max(s[2] for s in warm_s)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        active = [ln for ln in metrics.splitlines() if ln.startswith("guard_active_streams ")]
        fd_idle, sock_idle = open_fds(guard.pid)
        all_ttft = [x for v in st.ttft.values() for x in v]
        all_chunk = [x for v in st.chunk.values() for x in v]
        fds_flat = fd_end <= fd_warm * 1.1 + 16 and fd_idle <= fd_warm
        # the guard's own share of the time to first token (its histogram: from the first
        # upstream content to the client), beside the client-seen figure above
        added = added_ttft_quantiles(metrics)
        summary = {
            "duration_s": round(elapsed, 1),
            "concurrency": args.concurrency,
            "tokens_per_second": args.tokens_per_second,
            "streams_ok": st.ok,
            "halted": st.halted,
            "errors": len(st.errors),
            "first_errors": st.errors[:5],
            "streams_per_s": round(st.ok / elapsed, 1),
            "chunks_per_s": round(st.tokens / elapsed, 1),
            "rss_kib_after_warmup": warm[0],
            "rss_kib_end": samples[-1][1],
            "rss_growth": round(growth, 4),
            "fds_after_warmup": fd_warm,
            "fds_max_after_warmup": fd_max,
            "fds_end": fd_end,
            "fds_idle_after": fd_idle,
            "sockets_after_warmup": sock_warm,
            "sockets_end": sock_end,
            "sockets_idle_after": sock_idle,
            "fds_flat": fds_flat,
            "guard_added_ttft_ms": added,
            "ttft_p50_ms": pct(all_ttft, 0.5),
            "ttft_p99_ms": pct(all_ttft, 0.99),
            "chunk_p50_ms": pct(all_chunk, 0.5),
            "chunk_p99_ms": pct(all_chunk, 0.99),
            "active_streams_after": active,
            "window_s": window_s,
        }
        print(json.dumps(summary, indent=2))
        summary["windows"] = windows(st, samples)
        summary["samples"] = samples
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1))
        if args.plot:
            plot(summary, samples, args.plot)
        failed = bool(st.errors) or growth > args.max_growth or st.ok == 0
        failed = failed or active != ["guard_active_streams 0.0"] or not fds_flat
        return 1 if failed else 0
    finally:
        for p in (guard, up):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    raise SystemExit(main())
