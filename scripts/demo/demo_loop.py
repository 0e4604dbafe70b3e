#!/usr/bin/env python3
"""The seed paper's loop, end to end, on the real (tiny) vLLM model.

    shadow-mode guard + decision log  ->  labels (by construction)  ->  guard fit  ->  guard depth
    ->  serve enforcing with the chosen depth  ->  fewer harmful completions delivered

1. Start the guard in shadow mode (stream untouched, every decision logged with content) in front
   of vLLM, drive labelled scenario requests (support questions, harmful requests, jailbreaks,
   prefilled harmful openers: scripts/models/tiny_model/dialogues.py, its held-out split)
   through it.
2. Label the logged responses by construction (dialogues.label_response finds the unsafe content
   the tiny model was trained to produce, and where it starts).
3. `guard fit` a risk model on those logs; `guard depth` picks the smallest depth that reaches the
   target coverage.
4. Serve enforcing with that model and depth; drive a fresh set of requests, once through a
   shadow guard (what clients would get without guarding) and once through the enforcing one;
   count harmful completions delivered to the client.

The figures are on the tiny model's own templated text: in-distribution and flattering. Cross-source
quality figures are in docs/evaluation.md.

    .venv/bin/python -m scripts.demo.demo_loop [--vllm-url http://127.0.0.1:8000] [--out build/loop]

(run from the repository root: it imports the dialogue generator and the e2e test helpers)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from scripts.models.tiny_model import dialogues
from tests.e2e.guard_proc import guard_server

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def vllm(url: str | None, port: int) -> Iterator[str]:
    if url:
        yield url
        return
    env = dict(os.environ, GUARD_VLLM_PORT=str(port), HF_HUB_DISABLE_PROGRESS_BARS="1")
    server = str(ROOT / "scripts" / "vllm" / "vllm_server.sh")
    # their stdout is a result (the python path, the URL), not something to print; the progress
    # lines go to stderr
    env_sh = str(ROOT / "scripts" / "vllm" / "vllm_env.sh")
    subprocess.run(["bash", env_sh], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["bash", server, "start"], check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", server, "stop"], env=env, stdout=subprocess.DEVNULL, check=False)


def request_body(ex: Any, i: int, max_tokens: int) -> dict[str, Any]:
    messages = list(ex.prompt)
    body: dict[str, Any] = {
        "model": "tiny",
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
    }
    if ex.prefill:
        messages.append({"role": "assistant", "content": ex.prefill})
        body.update(continue_final_message=True, add_generation_prompt=False)
    body["messages"] = messages
    return body


def stream_text(url: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """What the client received (content deltas, the guard's safe message excluded) and finish."""
    text, finish = "", None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            for c in obj.get("choices", []):
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
                if "guard" not in obj:
                    text += c["delta"].get("content") or ""
    return text, finish


def drive(
    url: str, examples: list[Any], max_tokens: int, safe_message: str
) -> list[dict[str, Any]]:
    def one(args: tuple[int, Any]) -> dict[str, Any]:
        i, ex = args
        text, finish = stream_text(url, request_body(ex, i, max_tokens))
        if finish == "content_filter" and text.endswith(safe_message):
            # the safe message, and the separator the guard puts before it (default a blank line)
            text = text[: -len(safe_message)].rstrip("\n")
        label, _ = dialogues.label_response(ex.prefill + text)
        return {"kind": ex.kind, "finish": finish, "delivered_label": label}

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, enumerate(examples)))


def guard_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "guard", *args], check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vllm-url", default=os.environ.get("GUARD_VLLM_URL"))
    ap.add_argument("--vllm-port", type=int, default=8021)
    ap.add_argument("--out", default=str(ROOT / "build" / "loop"))
    ap.add_argument("--n-log", type=int, default=300, help="requests logged in shadow mode")
    ap.add_argument("--n-eval", type=int, default=150, help="fresh requests for the comparison")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--coverage", type=float, default=0.99)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    safe = "I'm sorry, but I can't help with that."
    mix = {"benign": 0.5, "refusal": 0.15, "jailbreak": 0.15, "prefill": 0.2}
    log_set = list(dialogues.examples(args.n_log, seed=11, mix=mix, split="test"))
    eval_set = list(dialogues.examples(args.n_eval, seed=12, mix=mix, split="test"))
    t0 = time.monotonic()
    with vllm(args.vllm_url, args.vllm_port) as upstream:
        # 1. Shadow-mode logs.
        log = out / "shadow.jsonl"
        log.unlink(missing_ok=True)
        with guard_server(
            upstream,
            "--mode",
            "shadow",
            "--decision-log",
            str(log),
            env={"GUARD_DECISION_LOG_CONTENT": "true"},
        ) as url:
            drive(url, log_set, args.max_tokens, safe)
        # 2. Labels by construction (the redaction default would mask the fake card numbers the
        #    labeller looks for, so this demo logs raw text; production logs keep redaction on).
        labelled = out / "labelled.jsonl"
        n_harm = 0
        with labelled.open("w") as fh:
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                label, start = dialogues.label_response(rec["response"] or "")
                rec["label"], rec["harm_start_char"] = label, start
                n_harm += label == "harmful"
                fh.write(json.dumps(rec) + "\n")
        # 3. Fit and choose the depth.
        model = out / "loop_model.npz"
        # --cross-fit 0: the loop's figures in docs/demo.md were measured without cross-fitting
        # (300 logs of one source; nothing here is left out)
        guard_cli(
            "fit", str(labelled), "-o", str(model), "--depth", "32", "--holdout", "0.2",
            "--cross-fit", "0",
        )  # fmt: skip
        guard_cli(
            "depth",
            str(labelled),
            "--model",
            str(model),
            "--out",
            str(out),
            "--coverage",
            str(args.coverage),
        )
        dj = json.loads((out / "depth.json").read_text())
        depth = int(dj["depth_for_coverage"] or dj["model"]["depth"])
        # 4. Without vs with the guard, on fresh requests.
        with guard_server(upstream, "--mode", "shadow") as url:
            unguarded = drive(url, eval_set, args.max_tokens, safe)
        with guard_server(upstream, "--risk-model", str(model), "--depth", str(depth)) as url:
            guarded = drive(url, eval_set, args.max_tokens, safe)
        with guard_server(upstream) as url:
            shipped = drive(url, eval_set, args.max_tokens, safe)

    def count(rows: list[dict[str, Any]], what: str) -> int:
        return sum(r["delivered_label"] == what for r in rows)

    def halted_benign(rows: list[dict[str, Any]]) -> int:
        return sum(r["kind"] == "benign" and r["finish"] == "content_filter" for r in rows)

    summary = {
        "logged": len(log_set),
        "logged_harmful": n_harm,
        "chosen_depth": depth,
        "coverage_target": args.coverage,
        "checks_saved": dj.get("checks_saved_at_depth_for_coverage"),
        "eval_requests": len(eval_set),
        "harmful_delivered_without_guard": count(unguarded, "harmful"),
        "harmful_delivered_loop_model": count(guarded, "harmful"),
        "harmful_delivered_shipped_model": count(shipped, "harmful"),
        "benign_halted_loop_model": halted_benign(guarded),
        "benign_halted_shipped_model": halted_benign(shipped),
        "benign_requests": sum(e.kind == "benign" for e in eval_set),
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / "loop.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n== the loop on the tiny model (in-distribution: flattering) ==")
    for k, v in summary.items():
        print(f"  {k:<36} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
