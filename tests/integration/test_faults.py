"""Bad input and upstream faults: OpenAI-shaped errors before the stream, SSE error + [DONE]
after; never a traceback, a hang or a leaked upstream request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from guard.app import create_app
from guard.config import hash_key, load_settings
from tests.support.scripted import DONE, KeywordRiskModel, Script, chat_events
from tests.support.sse import BENIGN, CHAT, events_of


def ok_handler(path: str, req: dict[str, Any]) -> Script:
    return Script(b"".join(chat_events(BENIGN)) + DONE)


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert "type" in err and "code" in err
    assert "Traceback" not in r.text
    return err


async def test_invalid_json_is_400(harness) -> None:
    h = harness(ok_handler)
    r = await h.client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert assert_openai_error(r, 400)["code"] == "invalid_json"
    assert h.upstream.requests == []


async def test_invalid_utf8_is_400(harness) -> None:
    h = harness(ok_handler)
    r = await h.client.post(
        "/v1/chat/completions",
        content=b'{"a": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert "UTF-8" in assert_openai_error(r, 400)["message"]


async def test_deeply_nested_json_is_400(harness) -> None:
    h = harness(ok_handler)
    body = b'{"messages": ' + b"[" * 200 + b"]" * 200 + b"}"
    r = await h.client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert_openai_error(r, 400)


async def test_body_too_large_is_413(harness) -> None:
    h = harness(ok_handler, env={"GUARD_MAX_BODY_BYTES": "2048"})
    big = dict(CHAT, messages=[{"role": "user", "content": "x" * 5000}])
    r = await h.client.post("/v1/chat/completions", json=big)
    assert_openai_error(r, 413)


async def test_wrong_content_type_is_415(harness) -> None:
    h = harness(ok_handler)
    r = await h.client.post(
        "/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": "text/plain"}
    )
    assert_openai_error(r, 415)


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"n": 1000}, "n"),
        ({"n": 0}, "n"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"logprobs": True, "top_logprobs": 99}, "top_logprobs"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "continue_final_message": True}, None),
    ],
)
async def test_bad_parameters_are_400_before_upstream(harness, patch, param) -> None:
    h = harness(ok_handler)
    r = await h.client.post("/v1/chat/completions", json=dict(CHAT, **patch))
    err = assert_openai_error(r, 400)
    if param:
        assert param in (err["param"] or "") or param in err["message"]
    assert h.upstream.requests == []


async def test_upstream_error_status_and_body_pass_through(harness) -> None:
    body = b'{"error":{"message":"max_tokens too large","type":"BadRequestError","code":400}}'
    h = harness(lambda p, r: Script(body, status=400, content_type="application/json"))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 400 and r.content == body
    assert h.metric("guard_upstream_errors_total", {"kind": "status_4xx"}) == 1


def app_with(handler: Any) -> Any:
    """The app in front of an upstream that is just ``handler`` (to raise transport errors)."""
    return create_app(
        load_settings(env={"GUARD_UPSTREAM": "http://up.test"}),
        risk_model=KeywordRiskModel(),
        transport=httpx.MockTransport(handler),
        reload_poll_seconds=0,
    )


async def test_upstream_unreachable_is_502() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    app = app_with(refuse)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        assert assert_openai_error(r, 502)["code"] == "upstream_unreachable"
        ready = await c.get("/ready")
        assert ready.status_code == 503


async def test_upstream_timeout_is_504() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    app = app_with(slow)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        assert assert_openai_error(r, 504)["code"] == "upstream_timeout"


async def test_early_close_without_done_becomes_error_event(harness) -> None:
    h = harness(lambda p, r: Script(b"".join(chat_events(BENIGN[:3], finish=None))))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]"
    assert evs[-2]["error"]["code"] == "upstream_early_close"
    assert h.metric("guard_upstream_errors_total", {"kind": "early_close"}) == 1


async def test_malformed_event_becomes_error_event(harness) -> None:
    body = b"".join(chat_events(BENIGN[:2], finish=None)) + b"data: {broken\n\n" + DONE
    h = harness(lambda p, r: Script(body))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]" and "error" in evs[-2]
    assert h.upstream.open_streams == 0


async def test_upstream_error_event_is_relayed(harness) -> None:
    err = b'data: {"error":{"message":"boom","type":"InternalServerError","code":500}}\n\n'
    body = b"".join(chat_events(BENIGN[:2], finish=None)) + err + DONE
    h = harness(lambda p, r: Script(body))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert r.content == body


async def test_stall_mid_stream_times_out_cleanly(harness) -> None:
    body = b"".join(chat_events(BENIGN)) + DONE
    h = harness(lambda p, r: Script(body, stall_after=3), env={"GUARD_TOTAL_TIMEOUT": "0.5"})
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["code"] == "upstream_timeout"
    assert h.upstream.open_streams == 0  # the stalled upstream response was closed


async def test_unguarded_generation_routes_are_refused(harness) -> None:
    h = harness(ok_handler)
    r = await h.client.post("/v1/responses", json={"input": "hi"})
    assert_openai_error(r, 404)
    assert h.upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_guarded_route_with_the_wrong_method_is_405(harness, path: str) -> None:
    h = harness(ok_handler)
    r = await h.client.get(path)
    err = assert_openai_error(r, 405)
    assert err["code"] == "method_not_allowed" and "POST" in err["message"]
    assert h.upstream.requests == []


async def test_request_id_and_traceparent_pass_through(harness) -> None:
    h = harness(ok_handler)
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = await h.client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={
            "x-request-id": "req-42",
            "traceparent": tp,
            "connection": "keep-alive",
            "te": "trailers",
            "proxy-authorization": "secret",
        },
    )
    assert r.headers["x-request-id"] == "req-42" and r.headers["traceparent"] == tp
    sent = h.upstream.requests[0][2]
    assert sent["x-request-id"] == "req-42" and sent["traceparent"] == tp
    assert "te" not in sent and "proxy-authorization" not in sent
    r2 = await h.client.post("/v1/chat/completions", json=CHAT)
    assert len(r2.headers["x-request-id"]) == 32  # generated when absent


async def test_client_keys_and_upstream_key(harness, tmp_path) -> None:
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(
        "upstream: http://upstream.test\n"
        f"upstream_api_key: upstream-secret\n"
        f"api_keys:\n  - name: support-bot\n    sha256: {hash_key('client-key')}\n"
    )
    h = harness(ok_handler, config=str(cfg))
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    assert_openai_error(r, 401)
    r = await h.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer wrong"}
    )
    assert_openai_error(r, 401)
    r = await h.client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer client-key"}
    )
    assert r.status_code == 200
    # The client's key never goes upstream; the upstream key never comes back.
    assert h.upstream.requests[0][2]["authorization"] == "Bearer upstream-secret"
    assert "upstream-secret" not in r.text and "upstream-secret" not in str(r.headers)


async def test_rate_limit_per_key(harness, tmp_path) -> None:
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(
        "upstream: http://upstream.test\n"
        f"api_keys:\n  - name: k\n    sha256: {hash_key('kk')}\n"
        "    rate_limit_rps: 0.001\n    rate_limit_burst: 2\n"
    )
    h = harness(ok_handler, config=str(cfg))
    hdr = {"authorization": "Bearer kk"}
    codes = [
        (await h.client.post("/v1/chat/completions", json=CHAT, headers=hdr)).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]


async def test_admin_endpoints_need_the_admin_key(harness, tmp_path) -> None:
    h = harness(ok_handler)
    assert_openai_error(await h.client.post("/admin/reload"), 403)
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"upstream: http://upstream.test\nadmin_key_sha256: {hash_key('adm')}\n")
    h2 = harness(ok_handler, config=str(cfg))
    assert_openai_error(await h2.client.get("/admin/status"), 401)
    r = await h2.client.get("/admin/status", headers={"x-guard-admin-key": "adm"})
    assert r.status_code == 200 and r.json()["risk_model"]["version"]


async def test_models_and_health(harness) -> None:
    models = b'{"object":"list","data":[{"id":"tiny","object":"model"}]}'
    h = harness(lambda p, r: Script(models, content_type="application/json"))
    r = await h.client.get("/v1/models")
    assert r.status_code == 200 and r.content == models
    assert (await h.client.get("/health")).json() == {"status": "ok"}
    metrics = await h.client.get("/metrics")
    assert "guard_risk_model_loaded 1.0" in metrics.text


async def test_streams_are_never_compressed(harness) -> None:
    body = b"".join(chat_events(BENIGN)) + DONE
    h = harness(lambda p, r: Script(body))
    r = await h.client.post(
        "/v1/chat/completions", json=CHAT, headers={"accept-encoding": "gzip, br"}
    )
    assert "content-encoding" not in r.headers and r.content == body
    # ...and the guard asks the upstream for identity bytes, so it can relay them as they come.
    assert h.upstream.requests[0][2]["accept-encoding"] == "identity"


async def test_stale_pooled_connection_is_retried_once() -> None:
    calls = {"n": 0}
    body = b"".join(chat_events(BENIGN)) + DONE

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:  # the upstream closed the keep-alive connection as it was reused
            raise httpx.ReadError("connection closed")
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(body)
        )

    app = app_with(flaky)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.content == body and calls["n"] == 2
        calls["n"] = -10  # two failures in a row are a real outage: 502

        def always(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadError("down")

        app.state.services.upstream.clients[0]._transport = httpx.MockTransport(always)
        r2 = await c.post("/v1/chat/completions", json=CHAT)
        assert_openai_error(r2, 502)


async def test_internal_error_mid_stream_still_ends_the_stream(harness, monkeypatch) -> None:
    from guard.relay.relay import Relay

    body = b"".join(chat_events(BENIGN)) + DONE
    h = harness(lambda p, r: Script(body))
    calls = {"n": 0}
    real = Relay.on_event

    def broken(self: Relay, ev: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a bug in the guard")
        return real(self, ev)

    monkeypatch.setattr(Relay, "on_event", broken)
    r = await h.client.post("/v1/chat/completions", json=CHAT)
    evs = events_of(r.content)
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["type"] == "internal_error"
    assert "Traceback" not in r.text and h.upstream.open_streams == 0
    assert h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "error"}) == 1


async def test_a_burst_beyond_max_streams_gets_503_with_retry_after(harness) -> None:
    """The admission check and the slot it takes happen before the first await: every request
    of a simultaneous burst sees the ones before it (the check once read a counter that rose
    only once a stream ran, so a burst of 8 against a limit of 4 was admitted whole). The
    refusals come first: by the time the first admitted request reaches the upstream, the whole
    excess has been answered (an admitted request yields once at the gate, so the refusals do
    not queue behind its parsing and upstream call)."""
    import asyncio

    import anyio

    release = anyio.Event()

    async def hold(_i: int) -> None:
        await release.wait()

    def slow(path: str, req: dict[str, Any]) -> Script:
        return Script(b"".join(chat_events(BENIGN)) + DONE, before_read=hold)

    h = harness(slow, env={"GUARD_MAX_STREAMS": "4"})
    opened = anyio.Event()

    refused_at_first_open: list[float] = []

    async def answer_late() -> None:  # every request of the burst reaches the upstream first
        if not refused_at_first_open:
            refused_at_first_open.append(
                h.metric("guard_requests_total", {"endpoint": "chat", "outcome": "overloaded"})
            )
        await opened.wait()

    h.upstream.before_open = answer_late

    async def one() -> httpx.Response:
        return await h.client.post("/v1/chat/completions", json=dict(CHAT, stream=True))

    tasks = [asyncio.create_task(one()) for _ in range(8)]
    # the 4 excess requests are answered while the admitted ones are still held upstream
    for _ in range(100_000):  # yields to the event loop, bounded
        if len(h.upstream.requests) + sum(t.done() for t in tasks) >= 8:
            break
        await asyncio.sleep(0)
    assert len(h.upstream.requests) == 4  # only the admitted ones reached the upstream
    assert refused_at_first_open == [4]
    opened.set()
    for _ in range(100_000):
        if sum(t.done() for t in tasks) >= 4:
            break
        await asyncio.sleep(0)
    rejected = [t.result() for t in tasks if t.done()]
    assert len(rejected) == 4
    for r in rejected:
        assert assert_openai_error(r, 503)["type"]
        assert r.headers["retry-after"] == "1"
    release.set()
    done = await asyncio.gather(*tasks)
    assert sorted(r.status_code for r in done) == [200] * 4 + [503] * 4
    assert h.upstream.open_streams == 0
    # the slots came back: the next request is admitted
    r = await one()
    assert r.status_code == 200 and b"[DONE]" in r.content
