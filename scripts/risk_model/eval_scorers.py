#!/usr/bin/env python
"""Compare the lexical, guard-model (external) and combined scorers on the same held-out data.

Reproducible (deterministic splits and seeds; the classifier is the cached tiny-guard build):

    .venv/bin/python scripts/risk_model/eval_scorers.py   # starts its own classifier
    .venv/bin/python scripts/risk_model/eval_scorers.py --cls-url URL   # or uses one

Steps:

1. Data (``--workdir``, default ``build/eval_scorers``): trajectories the tiny guard classifier
   (``scripts/models/guard_classifier/build.py``) was NOT trained on, so its verdicts are not
   in-sample:
   * GPTFuzz ``evaluate`` split (human-labelled harmful/safe responses; its questions are disjoint
     from GPTFuzz ``train``, which the classifier saw), split fit/test BY QUESTION;
   * ``scripts/models/tiny_model/dialogues.py`` ``examples()`` drawn with fresh seeds
     (fit: seed 101,
     split "train"; test: seed 202, split "test"). Same generator as the classifier's training
     dialogues (seed 4321), so "unseen" means new draws of the same templates;
   * Bitext support replies of odd rows (the classifier saw those rows only as requests);
   * JailbreakBench responses, self-instruct and MT-/Vicuna-bench reference answers that fall in
     the classifier's own 15 % held-out split (same sha256 rule as build.py).
   Each source is split fit/test by CRC32 of a stable key, then subsampled (``--n-fit`` /
   ``--n-test`` per-source caps keep the script under ~15 min on 2 shared cores).
2. Fit three risk models with the real CLI: ``guard fit --scorer lexical|external|combined``
   (``--scorer-url`` the classifier, ``--scorer-every 8``).
3. Evaluate all three side by side with ``guard eval --model A --model B --model C --json`` twice:
   all benign rows as kind ``benign`` (operating point: 1 % FPR) and as kind ``alarming``
   (5 % FPR) -- the same rows, only the FPR target differs.
4. Added cost of the guard model at the SERVING schedule (``guard.scoring.verdicts``: first at 8
   tokens, every 16, sentence ends with a 4-token gap; verdicts assumed instant, so this is an
   upper bound: one-in-flight coalescing only lowers it): classifier calls per 100 generated
   tokens on the test responses; and ``/classify`` latency (median/p90) for 1 and 32 texts in the
   serving input format (prompt summary + response prefix).

Writes ``benchmarks/results/scorers.json`` and ``scorers.md``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "models" / "tiny_model"))

from guard.training.datasets import data_dir  # noqa: E402

#: the public data, located and verified (GUARD_DATA_DIR, shared/data beside the checkout, or
#: what `guard data fetch` downloaded)
DATA = data_dir()

import dialogues  # noqa: E402

from guard.scoring.http import ClassifyClient  # noqa: E402
from guard.scoring.verdicts import (  # noqa: E402
    VerdictPolicy,
    VerdictSchedule,
    last_user_message,
)
from guard.tracking.text import tokenize_approx  # noqa: E402

CLS_HOLDOUT = 0.15  # scripts/models/guard_classifier/build.py HOLDOUT
FIT_SHARE = 0.5
SCORER_EVERY = 8
SCORER_MAX_TOKENS = 96  # verdicts on the first 96 tokens (depth 32); the last one stays after
MODEL_NAME = "tiny-guard"


def log(msg: str) -> None:
    print(f"[eval_scorers] {msg}", file=sys.stderr, flush=True)


def _frac(key: str) -> float:
    return (zlib.crc32(key.encode()) % 10_000) / 10_000


def _cls_held(src: str, prompt: str, response: str | None) -> bool:
    """True if build.py put this item in the classifier's held-out 15 % (never trained on)."""
    h = hashlib.sha256(f"{src}|{prompt}|{response}".encode()).digest()
    return h[0] / 256 < CLS_HOLDOUT


def _traj(
    tid: str,
    source: str,
    prompt: Any,
    response: str,
    label: str,
    *,
    prefill: str = "",
    harm_start_char: int | None = None,
    **meta: Any,
) -> dict[str, Any]:
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return {
        "id": tid,
        "source": source,
        "prompt": prompt,
        "prefill": prefill,
        "response": response,
        "tokens": None,
        "label": label,
        "harm_start_char": harm_start_char,
        "meta": meta,
    }


def _csv(rel: str) -> list[dict[str, str]]:
    with (DATA / rel).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def build_data(n_fit: int, n_test: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(fit rows, test rows); per-source caps ``n_fit`` / ``n_test`` (deterministic samples)."""
    per_src: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}

    def add(row: dict[str, Any], to_fit: bool) -> None:
        f, t = per_src.setdefault(row["source"], ([], []))
        (f if to_fit else t).append(row)

    # GPTFuzz evaluate: never seen by the classifier; fit/test split by question
    qs = {r["index"]: r["text"] for r in _csv("gptfuzz/datasets/questions/question_list.csv")}
    for i, r in enumerate(_csv("gptfuzz/datasets/responses_labeled/evaluate.csv")):
        resp = r.get("Response") or ""
        if not resp.strip():
            continue
        harmful = r["label"].strip() == "1"
        row = _traj(
            f"gptfuzz-eval/{i}",
            "gptfuzz",
            qs.get(r["question"], ""),
            resp,
            "harmful" if harmful else "safe",
            kind="harmful" if harmful else "alarming",
            question=r["question"],
        )
        add(row, _frac(f"gptfuzz-q/{r['question']}") < FIT_SHARE)

    # dialogues: fresh draws (fit and test from different seeds and request splits)
    for seed, split, n, to_fit in (
        (101, "train", 3 * n_fit, True),
        (202, "test", 3 * n_test, False),
    ):
        for e in dialogues.examples(n, seed=seed, split=split):
            t = e.trajectory()
            t["source"] = "dialogues"
            t["meta"]["kind"] = (
                "harmful"
                if e.label == "harmful"
                else ("support" if e.kind == "benign" else "alarming")
            )
            t["meta"]["dialogue_kind"] = e.kind
            add(t, to_fit)

    # Bitext odd rows: the classifier saw these only as requests, never their replies
    for i, r in enumerate(_csv("bitext/Bitext_Sample_Customer_Support_Training_Dataset.csv")):
        if i % 2 == 0:
            continue
        resp = dialogues._fill_placeholders(r["response"])
        row = _traj(f"bitext/{i}", "bitext", r["instruction"], resp, "safe", kind="support")
        add(row, _frac(row["id"]) < FIT_SHARE)

    # JailbreakBench responses in the classifier's held-out split
    for path in sorted(glob.glob(str(DATA / "jailbreakbench/attack-artifacts/*/*/*.json"))):
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        for j, jb in enumerate(doc.get("jailbreaks", [])):
            resp = jb.get("response")
            if not resp or not jb.get("prompt"):
                continue
            if not _cls_held("jbb", str(jb.get("goal") or ""), str(resp)):
                continue
            broken = jb.get("jailbroken") in (True, "True", "true")
            rel = Path(path).relative_to(DATA).as_posix()
            row = _traj(
                f"jbb/{rel}/{j}",
                "jailbreakbench",
                jb["prompt"],
                resp,
                "harmful" if broken else "safe",
                kind="harmful" if broken else "alarming",
            )
            add(row, _frac(row["id"]) < FIT_SHARE)

    # general benign: self-instruct and MT-/Vicuna-bench answers held out by the classifier
    for line in (DATA / "self-instruct/seed_tasks.jsonl").read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        t = json.loads(line)
        inst = str(t.get("instruction", ""))
        outs = [str(x.get("output", "")) for x in t.get("instances", [])[:1]]
        if outs and outs[0].strip() and _cls_held("self_instruct", inst, outs[0]):
            row = _traj(
                f"self-instruct/{t['id']}", "general", inst, outs[0], "safe", kind="general"
            )
            add(row, _frac(row["id"]) < FIT_SHARE)
    for bench in ("mt_bench", "vicuna_bench"):
        base = DATA / "fastchat_mt_bench" / bench
        qmap = {}
        for line in (base / "question.jsonl").read_text(encoding="utf-8").splitlines():
            if line:
                q = json.loads(line)
                qmap[q["question_id"]] = q
        for line in (
            (base / "reference_answer/gpt-4.jsonl").read_text(encoding="utf-8").splitlines()
        ):
            if not line:
                continue
            a = json.loads(line)
            q = qmap.get(a["question_id"])
            turns = a["choices"][0]["turns"]
            if q and turns and _cls_held("mtbench", str(q["turns"][0]), str(turns[0])):
                row = _traj(
                    f"{bench}/{a['question_id']}",
                    "general",
                    q["turns"][0],
                    turns[0],
                    "safe",
                    kind="general",
                )
                add(row, _frac(row["id"]) < FIT_SHARE)

    fit_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    for src in sorted(per_src):
        # Responses shorter than SCORER_EVERY generated tokens get no verdict, and `guard eval`
        # crashes on them for a model with external scores (guard/training/evaluate.py trace():
        # `if verdicts:` is False for an empty dict, so the external signal is empty) -- left out.
        f, t = ([r for r in rows if _n_generated(r) >= SCORER_EVERY] for rows in per_src[src])
        rng = random.Random(f"eval_scorers:{src}")
        rng.shuffle(f)
        rng.shuffle(t)
        fit_rows.extend(f[:n_fit])
        test_rows.extend(t[:n_test])
    return fit_rows, test_rows


def _n_generated(row: dict[str, Any]) -> int:
    resp, pre = row["response"], row["prefill"]
    return len(tokenize_approx(resp[len(pre) :] if resp.startswith(pre) else resp))


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def _relabel(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["label"] != "harmful":
            r = {**r, "meta": {**r["meta"], "kind": kind}}
        out.append(r)
    return out


def _counts(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    c: dict[str, list[int]] = {}
    for r in rows:
        c.setdefault(r["source"], [0, 0])[r["label"] == "harmful"] += 1
    return {k: v for k, v in sorted(c.items())}


def _guard(*args: str, timeout: float = 1800) -> str:
    cmd = [sys.executable, "-m", "guard", *args]
    log("$ guard " + " ".join(args))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise SystemExit(f"guard {args[0]} failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return r.stdout


# ------------------------------------------------------------------------------ serving cost


def serving_calls(rows: list[dict[str, Any]], policy: VerdictPolicy) -> dict[str, Any]:
    """Verdict asks per 100 generated tokens with the serving schedule, token by token."""
    asks = toks = 0
    by_src: dict[str, list[int]] = {}
    for r in rows:
        cont = (
            r["response"][len(r["prefill"]) :]
            if r["response"].startswith(r["prefill"])
            else r["response"]
        )
        pieces = tokenize_approx(cont)
        s = VerdictSchedule(policy, last_user_message(r["prompt"]), r["prefill"])
        n = 0
        for p in pieces:
            if s.observe(p, 1) is not None:
                n += 1
                s.on_verdict(0.0)  # instant verdict: an upper bound on calls
        asks += n
        toks += len(pieces)
        b = by_src.setdefault(r["source"], [0, 0])
        b[0] += n
        b[1] += len(pieces)
    return {
        "calls_per_100_tokens": 100.0 * asks / max(toks, 1),
        "calls_per_stream_mean": asks / max(len(rows), 1),
        "tokens_per_stream_mean": toks / max(len(rows), 1),
        "by_source": {k: 100.0 * a / max(t, 1) for k, (a, t) in sorted(by_src.items())},
    }


def serving_texts(rows: list[dict[str, Any]], policy: VerdictPolicy, n: int) -> list[str]:
    """Texts as the proxy sends them (prompt summary + response prefix at the ask points)."""
    out: list[str] = []
    for r in rows:
        s = VerdictSchedule(policy, last_user_message(r["prompt"]), r["prefill"])
        for p in tokenize_approx(r["response"][len(r["prefill"]) :]):
            t = s.observe(p, 1)
            if t is not None:
                out.append(t)
                s.on_verdict(0.0)
    rng = random.Random("eval_scorers:latency")
    rng.shuffle(out)
    return out[:n]


def latency(url: str, texts: list[str], reps: int) -> dict[str, Any]:
    client = ClassifyClient(url, model=MODEL_NAME, timeout=30.0)
    res: dict[str, Any] = {}
    try:
        client.score_sync(texts[:2])  # warm
        for size in (1, 32):
            ms = []
            for i in range(reps):
                batch = [texts[(i * size + j) % len(texts)] for j in range(size)]
                t0 = time.perf_counter()
                client.score_sync(batch)
                ms.append(1000 * (time.perf_counter() - t0))
            ms.sort()
            res[f"{size}_text"] = {
                "median_ms": statistics.median(ms),
                "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
                "reps": reps,
                "mean_chars": statistics.mean(len(t) for t in texts[: reps * size]),
            }
    finally:
        client.close()
    return res


# ------------------------------------------------------------------------------ server


class CachingForwarder:
    """A local HTTP forwarder for ``POST /classify`` that answers texts it has seen from a cache.

    ``guard fit`` (external, combined) and ``guard eval`` (twice) run as separate processes and
    score the same prefixes; this makes the classifier score each distinct text once. Answers are
    exactly the classifier's (one row per input, same probs). Latency is measured against the
    classifier itself, never through this.
    """

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        import httpx

        self.upstream = upstream.rstrip("/")
        self.cache: dict[str, dict[str, Any]] = {}
        self.sent = 0
        self.hits = 0
        client = httpx.Client(timeout=120.0)
        lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                with lock:
                    todo = [t for t in dict.fromkeys(texts) if t not in outer.cache]
                    outer.hits += len(texts) - len(todo)
                if todo:
                    r = client.post(outer.upstream + self.path, json={**body, "input": todo})
                    if r.status_code != 200:
                        self.send_response(r.status_code)
                        self.end_headers()
                        self.wfile.write(r.content)
                        return
                    rows = sorted(r.json()["data"], key=lambda d: d["index"])
                    with lock:
                        outer.sent += len(todo)
                        for t, row in zip(todo, rows, strict=True):
                            outer.cache[t] = row
                data = [{**outer.cache[t], "index": i} for i, t in enumerate(texts)]
                out = json.dumps({"object": "list", "data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_classifier(port: int) -> dict[str, str]:
    env = dict(os.environ, GUARD_CLS_PORT=str(port))
    r = subprocess.run(
        [str(ROOT / "scripts/vllm/classifier_server.sh"), "start"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if r.returncode != 0:
        subprocess.run(
            [str(ROOT / "scripts/vllm/classifier_server.sh"), "stop"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        raise SystemExit(f"classifier_server.sh start failed:\n{r.stdout}\n{r.stderr}")
    return env


# ------------------------------------------------------------------------------ report


def _pick(res: dict[str, Any], kind: str) -> dict[str, Any]:
    for p in res["operating_points"]:
        if p["benign_kind"] == kind:
            return p
    raise KeyError(kind)


def summarise(names: list[str], e1: dict[str, Any], e5: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, r1, r5 in zip(names, e1["results"], e5["results"], strict=True):
        p1 = _pick(r1, "benign")
        p5 = _pick(r5, "alarming")
        for method in ("markov", "external", "reactive", "keyword"):
            if method not in p1["methods"]:
                continue
            if method != "markov" and name != "combined" and method != "external":
                continue  # reactive/keyword baselines: reported once (with the combined model)
            if method == "external" and name != "external":
                continue  # the bare verdict threshold is the same for every model
            m1, m5 = p1["methods"][method], p5["methods"][method]
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "recall_at_1pct_fpr": m1["recall"],
                    "fpr_at_1pct_point": m1["fpr"],
                    "recall_at_5pct_fpr": m5["recall"],
                    "halt_tokens_median_1pct": m1["halt_tokens_median"],
                    "halt_tokens_p90_1pct": m1["halt_tokens_p90"],
                    "tokens_after_onset_median_1pct": m1["tokens_after_onset_median"],
                    "recall_by_source_1pct": m1["recall_by_source"],
                    "ece": r1["calibration"]["ece"] if method == "markov" else None,
                    "ece_prior_corrected": r1["calibration"]["production_prior"].get(
                        "ece_corrected"
                    )
                    if method == "markov"
                    else None,
                }
            )
    return rows


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def write_md(path: Path, out: dict[str, Any]) -> None:
    L = []
    L.append("# Scorer comparison: lexical vs guard model (external) vs combined\n")
    L.append(
        f"Generated by `scripts/risk_model/eval_scorers.py` on {out['generated']} "
        f"({out['machine']}); total "
        f"{out['seconds_total']:.0f} s. Classifier: tiny-guard "
        f"(`scripts/models/guard_classifier/build.py`, {out['classifier']['model_dir']}). "
        "Risk models "
        f"fitted with `guard fit` (depth "
        f"{out['fit']['depth']}, external verdicts every {SCORER_EVERY} tokens up to "
        f"{SCORER_MAX_TOKENS}) on "
        f"{out['data']['n_fit']} trajectories, evaluated with `guard eval` on "
        f"{out['data']['n_test']} held-out trajectories. Neither set was used to train the "
        "classifier (see `data.description`).\n"
    )
    L.append(
        "| model | signal | recall @1% FPR | recall @5% FPR | halt token median / p90 (@1%) "
        "| tokens after onset, median (@1%) | ECE | ECE (prior-corrected) |"
    )
    L.append("|---|---|---|---|---|---|---|---|")
    for r in out["summary"]:
        L.append(
            f"| {r['model']} | {r['method']} | {_f(r['recall_at_1pct_fpr'])} | "
            f"{_f(r['recall_at_5pct_fpr'])} | {_f(r['halt_tokens_median_1pct'], 0)} / "
            f"{_f(r['halt_tokens_p90_1pct'], 0)} | {_f(r['tokens_after_onset_median_1pct'], 0)} | "
            f"{_f(r['ece'])} | {_f(r['ece_prior_corrected'])} |"
        )
    L.append("")
    L.append("Recall at 1 % FPR by source (markov chain of each model):\n")
    srcs = sorted({s for r in out["summary"] for s in r["recall_by_source_1pct"]})
    L.append("| model | signal | " + " | ".join(srcs) + " |")
    L.append("|---|---|" + "---|" * len(srcs))
    for r in out["summary"]:
        L.append(
            f"| {r['model']} | {r['method']} | "
            + " | ".join(_f(r["recall_by_source_1pct"].get(s)) for s in srcs)
            + " |"
        )
    c = out["cost"]
    L.append("\n## Added cost of the guard model per stream\n")
    L.append("| figure | value |")
    L.append("|---|---|")
    sc = c["serving_schedule"]
    L.append(
        f"| classifier calls per 100 generated tokens (first at 8, every 16, sentence ends) | "
        f"{sc['calls_per_100_tokens']:.1f} (mean {sc['calls_per_stream_mean']:.1f} calls for "
        f"{sc['tokens_per_stream_mean']:.0f} tokens per stream) |"
    )
    ko = c["k_only"]
    L.append(
        f"| same, every 16 tokens only (no sentence ends) | {ko['calls_per_100_tokens']:.1f} |"
    )
    for k, v in sc["by_source"].items():
        L.append(f"| calls per 100 tokens, {k} (serving schedule) | {v:.1f} |")
    for size in ("1_text", "32_text"):
        v = c["latency"][size]
        L.append(
            f"| `/classify` latency, {size.replace('_', ' ')}s (~{v['mean_chars']:.0f} chars each),"
            f" median / p90 | {v['median_ms']:.1f} / {v['p90_ms']:.1f} ms ({v['reps']} calls) |"
        )
    L.append(
        f"| `guard fit` wall time | lexical {out['fit']['seconds']['lexical']:.0f} s, external "
        f"{out['fit']['seconds']['external']:.0f} s (incl. scoring "
        f"{out['classifier']['distinct_texts']} distinct prefixes of fit + test), combined "
        f"{out['fit']['seconds']['combined']:.0f} s (verdicts from the script's cache) |"
    )
    L.append("")
    L.append(
        "Calls per stream are an upper bound (verdicts assumed instant; the proxy keeps at "
        "most one verdict in flight per stream, so slow verdicts merge triggers). The verdict "
        "is asked concurrently with the stream: the latency above is added to the STREAM only "
        "with `guard_model.hold_until_verdict > 0` (bounded), otherwise it is how late the "
        "verdict joins the state.\n"
    )
    L.append("## Data\n")
    L.append(out["data"]["description"] + "\n")
    L.append("| source | fit [safe, harmful] | test [safe, harmful] |")
    L.append("|---|---|---|")
    for s in sorted(set(out["data"]["fit_counts"]) | set(out["data"]["test_counts"])):
        L.append(
            f"| {s} | {out['data']['fit_counts'].get(s)} | {out['data']['test_counts'].get(s)} |"
        )
    L.append("")
    L.append("Reproduce: `" + out["command"] + "`\n")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


DESCRIPTION = (
    "Only data the tiny guard classifier was not trained on: GPTFuzz `evaluate` (human-labelled "
    "responses; fit/test split by question), fresh draws of "
    "`scripts/models/tiny_model/dialogues.py` "
    "(fit: seed 101 split train; test: seed 202 split test; same templates as the classifier's "
    "training dialogues, so this is the tiny model's home turf), Bitext replies of odd rows "
    "(support; the classifier saw only their requests), and JailbreakBench / self-instruct / "
    "MT-bench items in the classifier's 15 % held-out split. Fit/test split by CRC32 of a stable "
    "key, per-source caps. Recall @1 % / @5 % FPR: `guard eval` thresholds set on the maximum "
    "risk of ALL benign test trajectories (run twice, benign kind relabelled `benign` / "
    "`alarming`). Halt token: generated tokens (approximate tokenizer) seen when halting. ECE: "
    "`guard eval` calibration of h at depth min(T, D) on the test mix (harmful share as in the "
    "data), and corrected to the production prior."
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cls-url",
        default=os.environ.get("GUARD_CLS_URL"),
        help="running tiny-guard classifier (default: start one)",
    )
    ap.add_argument("--cls-port", type=int, default=0, help="port for a started classifier")
    ap.add_argument("--workdir", default=str(ROOT / "build" / "eval_scorers"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scorers"))
    ap.add_argument("--n-fit", type=int, default=160, help="fit trajectories per source (cap)")
    ap.add_argument("--n-test", type=int, default=160, help="test trajectories per source (cap)")
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--latency-reps", type=int, default=40)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    fit_rows, test_rows = build_data(args.n_fit, args.n_test)
    _write(work / "fit.jsonl", fit_rows)
    _write(work / "test_1pct.jsonl", _relabel(test_rows, "benign"))
    _write(work / "test_5pct.jsonl", _relabel(test_rows, "alarming"))
    log(f"fit {len(fit_rows)} {_counts(fit_rows)}; test {len(test_rows)} {_counts(test_rows)}")

    started_env = None
    url = args.cls_url
    if not url:
        port = args.cls_port or _free_port()
        started_env = start_classifier(port)
        url = f"http://127.0.0.1:{port}"
    try:
        model_dir = ""
        try:
            import httpx

            model_dir = httpx.get(url + "/v1/models", timeout=10).json()["data"][0].get("root", "")
        except Exception:
            pass
        fwd = CachingForwarder(url)
        models = {}
        fit_secs = {}
        for mode in ("lexical", "external", "combined"):
            path = work / f"{mode}.npz"
            extra = (
                []
                if mode == "lexical"
                else [
                    "--scorer-url",
                    fwd.url,
                    "--scorer-model",
                    MODEL_NAME,
                    "--scorer-every",
                    str(SCORER_EVERY),
                    "--scorer-max-tokens",
                    str(SCORER_MAX_TOKENS),
                ]
            )
            t0 = time.perf_counter()
            _guard(
                "fit",
                str(work / "fit.jsonl"),
                "-o",
                str(path),
                "--depth",
                str(args.depth),
                "--scorer",
                mode,
                *extra,
                "--report-json",
                str(work / f"{mode}.fit.json"),
            )
            fit_secs[mode] = time.perf_counter() - t0
            models[mode] = path
        evals = {}
        for tag in ("1pct", "5pct"):
            argv_eval = ["eval", str(work / f"test_{tag}.jsonl")]
            for p in models.values():
                argv_eval += ["--model", str(p)]
            argv_eval += ["--scorer-url", fwd.url, "--scorer-model", MODEL_NAME, "--json"]
            evals[tag] = json.loads(_guard(*argv_eval))
            (work / f"eval_{tag}.json").write_text(json.dumps(evals[tag], indent=2))
        fwd.close()
        log(f"classifier: {fwd.sent} distinct texts scored, {fwd.hits} answered from the cache")
        scored = {"distinct_texts": fwd.sent, "cache_hits": fwd.hits}
        names = list(models)
        policy = VerdictPolicy(score_request=False)  # as guard.scoring.wiring builds it
        k_only = VerdictPolicy(score_request=False, at_sentence_end=False)
        cost = {
            "serving_schedule": serving_calls(test_rows, policy),
            "k_only": serving_calls(test_rows, k_only),
            "latency": latency(url, serving_texts(test_rows, policy, 4000), args.latency_reps),
        }
    finally:
        if started_env is not None:
            subprocess.run(
                [str(ROOT / "scripts/vllm/classifier_server.sh"), "stop"],
                cwd=ROOT,
                env=started_env,
                capture_output=True,
                timeout=60,
                check=False,
            )

    out = {
        "schema": "guard.scorers-compare/1",
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), load "
        f"{os.getloadavg()[0]:.1f}",
        "command": "python scripts/risk_model/eval_scorers.py "
        + " ".join(
            "URL" if a.startswith("http") else a
            for a in (argv if argv is not None else sys.argv[1:])
        ),
        "classifier": {
            "model": MODEL_NAME,
            "model_dir": str(model_dir).replace(str(Path.home()), "~", 1),
            "scorer_every": SCORER_EVERY,
            "scorer_max_tokens": SCORER_MAX_TOKENS,
            **scored,
        },
        "fit": {"depth": args.depth, "seconds": fit_secs},
        "data": {
            "description": DESCRIPTION,
            "n_fit": len(fit_rows),
            "n_test": len(test_rows),
            "fit_counts": _counts(fit_rows),
            "test_counts": _counts(test_rows),
        },
        "summary": summarise(names, evals["1pct"], evals["5pct"]),
        "cost": cost,
        "eval_1pct": evals["1pct"],
        "eval_5pct": evals["5pct"],
        "seconds_total": time.perf_counter() - t_start,
    }
    outp = Path(args.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    write_md(outp.with_suffix(".md"), out)
    log(
        f"wrote {outp.with_suffix('.json')} and {outp.with_suffix('.md')} "
        f"({out['seconds_total']:.0f} s)"
    )
    print(outp.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
