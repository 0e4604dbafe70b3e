"""Policy and model reloads are validated and atomic: a bad file keeps the old one serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.config import hash_key
from guard.errors import ConfigError
from tests.support.scripted import DONE, Script, chat_events


def write(cfg: Path, threshold: float) -> None:
    cfg.write_text(
        f"upstream: http://upstream.test\nadmin_key_sha256: {hash_key('adm')}\n"
        f"policy:\n  threshold: {threshold}\n  depth: 12\n"
    )


async def test_policy_reload_then_bad_file_keeps_old(harness, tmp_path: Path) -> None:
    cfg = tmp_path / "guard.yaml"
    write(cfg, 0.5)
    h = harness(
        lambda p, r: Script(b"".join(chat_events(["hi"])) + DONE),
        config=str(cfg),
        config_path=str(cfg),
    )
    holder = h.app.state.services.models
    assert holder.current.book.default.threshold == 0.5
    write(cfg, 0.8)
    r = await h.client.post("/admin/reload", headers={"x-guard-admin-key": "adm"})
    assert r.status_code == 200 and r.json()["threshold"] == 0.8
    assert holder.current.book.default.threshold == 0.8
    # An invalid policy: refused with the reason, the old policy keeps serving.
    cfg.write_text("upstream: http://upstream.test\npolicy:\n  threshold: 7\n")
    bad = await h.client.post("/admin/reload", headers={"x-guard-admin-key": "adm"})
    assert bad.status_code == 422 and "threshold" in bad.json()["error"]["message"]
    assert holder.current.book.default.threshold == 0.8
    assert holder.last_error is not None
    assert h.metric("guard_risk_model_reloads_total", {"outcome": "error"}) == 1
    # The file watcher path does the same without raising.
    cfg.write_text("upstream: [broken yaml\n")
    assert holder.poll() is False and holder.current.book.default.threshold == 0.8
    with pytest.raises(ConfigError):
        holder.reload()


async def test_api_keys_rotate_on_reload_and_unchanged_buckets_survive(
    harness, tmp_path: Path
) -> None:
    cfg = tmp_path / "guard.yaml"

    def keys(*entries: str) -> None:
        body = "".join(
            f"  - name: {n}\n    sha256: {hash_key(n + '-secret')}\n"
            "    rate_limit_rps: 0.001\n    rate_limit_burst: 2\n"
            for n in entries
        )
        cfg.write_text(
            f"upstream: http://upstream.test\nadmin_key_sha256: {hash_key('adm')}\n"
            f"api_keys:\n{body}"
        )

    keys("old", "kept")
    h = harness(
        lambda p, r: Script(b"".join(chat_events(["hi"])) + DONE),
        config=str(cfg),
        config_path=str(cfg),
    )
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def status(key: str) -> int:
        r = await h.client.post(
            "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {key}-secret"}
        )
        return r.status_code

    assert await status("old") == 200
    assert await status("kept") == 200  # 1 of its burst of 2 used
    assert await status("new") == 401
    keys("kept", "new")  # rotate: "old" revoked, "new" issued
    r = await h.client.post("/admin/reload", headers={"x-guard-admin-key": "adm"})
    assert r.status_code == 200
    assert await status("old") == 401
    assert await status("new") == 200
    # "kept" did not get a fresh burst from the reload: its second request passes, the third not.
    assert [await status("kept"), await status("kept")] == [200, 429]
