from __future__ import annotations

from pathlib import Path

import pytest

from guard.config import hash_key, load_settings
from guard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_example_config_is_valid() -> None:
    s = load_settings(ROOT / "deploy" / "guard.example.yaml", env={})
    assert s.upstream == "http://vllm:8000"
    assert s.policies[0].match.api_key == "internal-tools"


def test_precedence_flags_over_env_over_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text("upstream: http://a:1\nport: 1000\npolicy: {depth: 4, hold_back: 1}\n")
    s = load_settings(
        cfg, env={"GUARD_PORT": "2000", "GUARD_DEPTH": "8"}, overrides={("policy", "depth"): 12}
    )
    assert s.port == 2000 and s.policy.depth == 12 and s.policy.hold_back == 1


def test_upstream_is_required() -> None:
    with pytest.raises(ConfigError, match="no upstream"):
        load_settings(env={})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GUARD_ACTION": "explode"}, "policy.action"),
        ({"GUARD_THRESHOLD": "1.5"}, "policy.threshold"),
        ({"GUARD_THRESHOLD": "-0.1"}, "policy.threshold"),
        ({"GUARD_DEPTH": "0"}, "policy.depth"),
        ({"GUARD_ACTION": "alternate"}, "alternate"),
        ({"GUARD_UPSTREAM": "ftp://x"}, "upstream"),
        ({"GUARD_PORT": "99999"}, "port"),
        ({"GUARD_HOLD_BACK": "-1"}, "hold_back"),
    ],
)
def test_bad_settings_fail_at_start_with_the_key_named(env: dict[str, str], needle: str) -> None:
    base = {"GUARD_UPSTREAM": "http://x:1"}
    base.update(env)
    with pytest.raises(ConfigError) as info:
        load_settings(env=base)
    assert needle in info.value.message


def test_bad_yaml_and_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("upstream: http://x:1\npolicy: {thresold: 0.5}\n")
    with pytest.raises(ConfigError, match="thresold"):
        load_settings(unknown, env={})
    rule = tmp_path / "rule.yaml"
    rule.write_text(
        "upstream: http://x:1\npolicies:\n  - match: {api_key: nobody}\n"
        "    policy: {mode: shadow}\n"
    )
    with pytest.raises(ConfigError, match="no api key named"):
        load_settings(rule, env={})
    badrule = tmp_path / "badrule.yaml"
    badrule.write_text(
        "upstream: http://x:1\npolicies:\n  - match: {model: m}\n    policy: {threshold: 7}\n"
    )
    with pytest.raises(ConfigError, match=r"policies\[0\]"):
        load_settings(badrule, env={})


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_upstream_key_is_secret() -> None:
    s = load_settings(env={"GUARD_UPSTREAM": "http://x:1", "GUARD_UPSTREAM_API_KEY": "sekret"})
    assert "sekret" not in repr(s) and "sekret" not in str(s.model_dump())


def test_the_example_configs_keys_match_their_stated_example_keys() -> None:
    """deploy/guard.example.yaml says which key each hash is of: a user trying it gets in."""
    import re

    from guard.config import hash_key

    text = (ROOT / "deploy" / "guard.example.yaml").read_text()
    pairs = re.findall(r'sha256 of "([^"]+)".*?\n.*?sha256: ([0-9a-f]{64})', text, re.S)
    assert len(pairs) >= 2
    for key, digest in pairs:
        assert hash_key(key) == digest, key
