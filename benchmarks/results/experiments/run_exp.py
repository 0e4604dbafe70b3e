"""One-off pump experiment (results: pump-variants-64streams.json). Run from the repository root:

    EXP_VENV=/path/to/venv-with-uvloop-httptools/bin/python python benchmarks/results/experiments/run_exp.py
"""
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_proxy as B

logdir = Path(tempfile.mkdtemp(prefix="guard-exp-"))
VENV = os.environ.get("EXP_VENV", sys.executable)  # a python with uvloop + httptools
servers = []
def start(name, cmd, env=None):
    p = B.free_port()
    cmd = [c.replace("{PORT}", str(p)) for c in cmd]
    s = B.Server(name, cmd, p, "/health", logdir, env); servers.append(s); s.start(); return s
try:
    fp = B.free_port()
    fake = B.Server("fake", [B.PY, str(ROOT / "loadtests" / "fake_vllm.py"), "--port", str(fp)], fp, "/health", logdir)
    servers.append(fake); fake.start()
    up = fake.url
    g = lambda py, mode="enforce": [py, "-m", "guard.cli", "serve", "--upstream", up, "--port", "{PORT}", "--mode", mode, "--hold-back", "0", "--log-level", "warning"]
    gb = lambda py: [py, str(HERE / "batched_guard.py"), "serve", "--upstream", up, "--port", "{PORT}", "--mode", "enforce", "--hold-back", "0", "--log-level", "warning"]
    variants = {
        "bare": start("bare", [B.PY, str(ROOT / "benchmarks" / "bare_relay.py"), "--upstream", up, "--port", "{PORT}"]),
        "bare_uvloop_httptools": start("bare_uv", [VENV, str(ROOT / "benchmarks" / "bare_relay.py"), "--upstream", up, "--port", "{PORT}"]),
        "guard_enforce": start("ge", g(B.PY)),
        "guard_enforce_drain": start("ged", gb(B.PY), {"EXP_DRAIN": "1"}),
        "guard_enforce_batched": start("geb", gb(B.PY), {"EXP_BATCH": "1"}),
        "guard_enforce_no_failafter": start("gen", gb(B.PY), {"EXP_NO_FAILAFTER": "1"}),
        "guard_enforce_all3": start("gea", gb(B.PY), {"EXP_BATCH": "1", "EXP_NO_FAILAFTER": "1", "EXP_DRAIN": "1"}),
        "guard_enforce_all3_uvloop_httptools": start("geau", gb(VENV), {"EXP_BATCH": "1", "EXP_NO_FAILAFTER": "1", "EXP_DRAIN": "1"}),
    }
    for v, s in variants.items():
        B.run_loadgen("throughput", s.url, "tiny", 60, conc=16, count=32, max_tokens=128)
    res = {v: [] for v in variants}
    for r in range(3):
        for v, s in variants.items():
            res[v].append(B.throughput_level(s, s.url, fake.pid, "tiny", 64, 64, 128))
            print(r, v, round(res[v][-1]["tokens_per_s"]), round(res[v][-1]["cpu_us_per_token"], 1), file=sys.stderr, flush=True)
    out = {v: {"tokens_per_s": B.med([x["tokens_per_s"] for x in xs]), "cpu_us_per_token": B.med([x["cpu_us_per_token"] for x in xs]), "runs": xs} for v, xs in res.items()}
    print(json.dumps(out, indent=1))
finally:
    for s in reversed(servers): s.stop()
