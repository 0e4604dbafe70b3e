"""Fuzzing: every endpoint from the OpenAPI schema (Schemathesis), and property-based bodies.

Against a scripted upstream that always answers well, any 5xx is the guard's own fault: bad
client input must get a 4xx, never a crash, a traceback or a hang.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.app import create_app
from guard.config import load_settings
from tests.support.scripted import DONE, KeywordRiskModel, Script, ScriptedUpstream, chat_events


def _handler(path: str, req: Any) -> Script:
    if path in ("/v1/chat/completions", "/v1/completions"):
        return Script(b"".join(chat_events(["ok", " HARM"])) + DONE)
    if path == "/v1/models":
        return Script(b'{"object":"list","data":[]}', content_type="application/json")
    return Script(b'{"count": 3}', content_type="application/json")


def make_app() -> Any:
    up = ScriptedUpstream(_handler, record=False)
    return create_app(
        load_settings(env={"GUARD_UPSTREAM": "http://up.test"}),
        risk_model=KeywordRiskModel(),
        transport=up.transport(),
        reload_poll_seconds=0,
    )


APP = make_app()  # for the property tests (never started/stopped by a lifespan)
schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors_from_schema(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert "error" in response.json()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "messages": json_values | st.just([{"role": "user", "content": "x"}]),
        "prompt": json_values,
        "stream": json_values,
        "n": json_values,
        "max_tokens": json_values,
        "logprobs": json_values,
        "top_logprobs": json_values,
        "stream_options": json_values,
        "continue_final_message": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(body=fields, route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
async def test_property_bodies_never_5xx(body: dict[str, Any], route: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://g") as c:
        r = await c.post(
            route, content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert r.status_code < 500, (body, r.status_code, r.text)
    if r.status_code == 200:
        assert r.text.endswith("data: [DONE]\n\n") or r.json()["choices"] is not None
    else:
        assert r.json()["error"]["message"]


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=300))
async def test_arbitrary_bytes_never_5xx(raw: bytes) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://g") as c:
        r = await c.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert r.status_code < 500 and "error" in r.json()
