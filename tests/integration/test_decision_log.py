"""The decision log: trajectory-format JSONL, content only when configured, PII redacted,
owner-only files, every record flushed on close; labelled records feed `guard fit`'s reader."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from guard.observability.decision_log import DecisionLog, redact
from guard.training.trajectories import parse_trajectory
from tests.support.scripted import DONE, Script, chat_events
from tests.support.sse import BENIGN, CHAT, HARMFUL

PII_CHAT = dict(
    CHAT,
    messages=[{"role": "user", "content": "I am jane.doe@example.com, card 4111 1111 1111 1111"}],
)


def handler(path: str, req: dict[str, Any]) -> Script:
    toks = HARMFUL if "card" in json.dumps(req) else BENIGN
    return Script(b"".join(chat_events(toks)) + DONE)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_no_content_by_default(harness, tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    h = harness(handler, env={"GUARD_DECISION_LOG": str(log)})
    await h.client.post("/v1/chat/completions", json=PII_CHAT)
    h.app.state.services.decision_log.close()
    (rec,) = read(log)
    assert rec["prompt"] is None and rec["response"] is None and rec["tokens"] is None
    assert "jane" not in log.read_text() and "4111" not in log.read_text()
    assert rec["meta"]["censored"] is True and rec["meta"]["decision"]["action"] == "halt"
    assert rec["meta"]["decision"]["halt_token"] == 4
    assert [t for t, _ in rec["meta"]["decision"]["trace"]] == [1, 2, 3, 4]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


async def test_content_when_configured_is_redacted(harness, tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    h = harness(
        handler,
        env={
            "GUARD_DECISION_LOG": str(log),
            "GUARD_MODE": "shadow",
            "GUARD_DECISION_LOG_CONTENT": "true",
        },
    )
    await h.client.post("/v1/chat/completions", json=PII_CHAT)
    await h.client.post("/v1/chat/completions", json=CHAT)
    h.app.state.services.decision_log.close()
    shadow, benign = read(log)
    assert (
        "[EMAIL]" in shadow["prompt"][0]["content"] and "[CARD]" in shadow["prompt"][0]["content"]
    )
    assert shadow["response"] == "".join(HARMFUL) and shadow["tokens"] == HARMFUL
    assert shadow["meta"]["decision"]["action"] == "shadow_halt"
    assert shadow["meta"]["censored"] is False  # shadow never cuts a stream
    assert benign["meta"]["decision"]["action"] == "pass"
    # Once labelled, guard's own logs are valid trajectories for `guard fit`.
    for rec, label in ((shadow, "harmful"), (benign, "safe")):
        rec["label"] = label
        t = parse_trajectory(rec, str(log), 1)
        assert t.label == label and t.tokens is not None


def test_redact() -> None:
    out = redact("mail a.b@c.io or call +1 (555) 010-0199, card 5500-0000-0000-0004")
    assert out == "mail [EMAIL] or call [PHONE], card [CARD]"


def test_close_flushes_everything_and_rotation(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl", max_bytes=2048, backups=2)
    for i in range(500):
        log.submit({"id": str(i), "pad": "x" * 40})
    log.close()
    files = sorted(tmp_path.glob("d.jsonl*"))
    assert [f.name for f in files] == ["d.jsonl", "d.jsonl.1", "d.jsonl.2"]
    ids = [json.loads(line)["id"] for f in files for line in f.read_text().splitlines()]
    assert "499" in ids  # the newest record made it to disk
    assert len(ids) < 500  # the oldest rotated out (2 backups kept)
    assert all(f.stat().st_size <= 2048 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    dropped = []
    log = DecisionLog(tmp_path / "d.jsonl", queue_size=1, on_drop=lambda: dropped.append(1))
    for i in range(2000):
        log.submit({"id": i})
    log.close()
    written = len((tmp_path / "d.jsonl").read_text().splitlines())
    assert written + len(dropped) == 2000 and written >= 1


def test_a_torn_tail_left_by_a_killed_writer_is_cut_before_appending(
    tmp_path: Path, caplog: Any
) -> None:
    """A guard SIGKILLed mid-write leaves a cut-off record at the end; the next guard on the same
    file removes only that fragment (saying so), so its first record is not glued to it."""
    log = tmp_path / "d.jsonl"
    whole = [json.dumps({"id": f"r{i}", "pad": "x" * 300}) for i in range(3)]
    big = json.dumps({"id": "big", "pad": "y" * (3 << 20)})  # a record larger than one block
    log.write_text("\n".join([*whole, big]) + "\n" + '{"id": "torn", "pa')
    with caplog.at_level("WARNING", logger="guard.decision_log"):
        d = DecisionLog(log)
    d.submit({"id": "after"})
    d.close()
    ids = [r["id"] for r in read(log)]
    assert ids == ["r0", "r1", "r2", "big", "after"]
    assert "cut off mid-write (18 bytes)" in caplog.text
    # a whole file is never touched, and a file of one torn fragment becomes empty
    caplog.clear()
    d = DecisionLog(log)
    d.close()
    assert [r["id"] for r in read(log)] == ids and "cut off" not in caplog.text
    only = tmp_path / "only.jsonl"
    only.write_text('{"id": "to')
    DecisionLog(only).close()
    assert only.read_text() == ""


def test_a_record_is_never_split_between_two_writes(tmp_path: Path, monkeypatch) -> None:
    """Every system call writes whole records: with several workers appending to one file
    (``O_APPEND``), a record split between two writes could be interleaved with another
    worker's. Batches far larger than any buffer, records larger than the rotation size."""
    import guard.observability.decision_log as dl

    writes: list[bytes] = []
    real = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(dl.os, "write", spy)
    log = DecisionLog(tmp_path / "d.jsonl", max_bytes=200_000, backups=50)
    big = "x" * 5000
    for i in range(600):  # queued faster than written: large batches
        log.submit({"id": i, "response": big if i % 3 else "short"})
    log.close()
    assert writes and all(w.endswith(b"\n") for w in writes)
    assert sum(w.count(b"\n") for w in writes) == 600


def test_two_writers_on_one_file_rotate_once_and_lose_nothing(tmp_path: Path) -> None:
    """Two workers' logs on the same path (as with ``--workers 2``), rotating under load: every
    record exactly once, whole, no file much over ``max_bytes``, one rotation per filling."""
    import threading

    path = tmp_path / "d.jsonl"
    logs = [DecisionLog(path, max_bytes=20_000, backups=1000) for _ in range(2)]
    go = threading.Event()

    def writer(k: int) -> None:
        go.wait()
        for i in range(3000):
            logs[k].submit({"id": f"{k}-{i}", "pad": "y" * (50 + i % 200)})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    files = sorted(tmp_path.glob("d.jsonl*"))
    ids = []
    for f in files:
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f
        ids += [json.loads(line)["id"] for line in data.splitlines()]
        assert f.stat().st_size <= 20_000, (f, f.stat().st_size)
    assert len(ids) == len(set(ids)) == 6000
    # 6000 records of ~190 bytes fill 20 kB about 57 times: not twice that (double rotation)
    total = sum(f.stat().st_size for f in files)
    assert len(files) <= total // 20_000 + 3, (len(files), total)
