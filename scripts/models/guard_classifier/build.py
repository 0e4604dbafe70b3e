"""Build (and cache) the tiny guard classifier served by vLLM's ``/classify`` for the scorer tests.

Run with the vLLM virtualenv's python (it has torch, transformers, tokenizers):

    $(scripts/vllm/vllm_env.sh) scripts/models/guard_classifier/build.py  # prints the model dir

Cache: ${GUARD_CACHE:-$HOME/.cache/guard}/models/tiny-guard-cls-<hash of this file, dialogues.py
and the data recipe>. A complete cached build (marker file ``.complete``) is reused at once.

What it builds: a ``LlamaForSequenceClassification`` with 2 labels (0 ``safe``, 1 ``unsafe``), the
same tokenizer recipe as the tiny chat model (byte-level BPE, vocab 2048, the same special tokens,
trained here with ``tokenizers`` so the build does not depend on the chat model's cache), hidden
128, 2 layers (~0.7M params), trained ~1-2 minutes on 2 CPU threads.

Input format (also written to ``guard_scorer.json`` in the model dir, and the default of
``guard.scoring.verdicts``):

* response verdict: ``<|user|>\\n{prompt summary}<|end|>\\n<|assistant|>\\n{response so far}``
  -> P(the response is / will turn out harmful). The prompt part is optional (empty allowed).
* request verdict:  ``<|user|>\\n{last user message}<|end|>\\n`` -> P(the request is harmful).

Training data: the public files vendored in ``scripts/models/data`` (gzips of the unchanged files;
sources, commits and licences in its NOTICE.md; a missing file is an error):
harmful responses = JailbreakBench responses with ``jailbroken`` true, GPTFuzz train label 1,
AdvBench targets ("Sure, here is ..."), the unsafe continuations of ``tiny_model/dialogues.py``;
safe responses = JailbreakBench/GPTFuzz refusals, dialogues refusals and support replies, Bitext
replies, self-instruct and FastChat reference answers. Responses are also used as PREFIXES of their
first 8/16/32/64 tokens with the whole response's label (the guard asks about partial responses:
"will this turn out harmful"). Requests: AdvBench/JailbreakBench goals and GPTFuzz questions
(harmful) against Bitext, self-instruct and FastChat questions (benign).

Held-out evaluation: 15% of items (all prefixes of an item stay on the same side), plus the GPTFuzz
``evaluate`` split (questions disjoint from train), each sampled down to ``EVAL_MAX`` examples.
Accuracy at 0.5 and ROC AUC (requests, full responses, each prefix length) are printed and recorded
in ``build_info.json``. Deterministic: a rebuild gives byte-identical weights.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DATA = HERE.parent / "data"  # scripts/models/data (vendored)
DIALOGUES = HERE.parent / "tiny_model" / "dialogues.py"


def _load_dialogues() -> ModuleType:
    """The tiny chat model's dialogue generator (a sibling folder's module, imported by path)."""
    spec = importlib.util.spec_from_file_location("dialogues", DIALOGUES)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dialogues"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


dialogues = _load_dialogues()

# ---- hyper-parameters (part of the cache key through this file's hash) ------------------------
SEED = 4321
VOCAB = 2048
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 128, 2, 4, 4, 384
MAX_LEN = 128  # training sequence cap (tokens); serving uses max-model-len 512
PROMPT_CAP = 48  # tokens of prompt summary kept in a response example
PREFIXES = (8, 16, 32, 64)
BATCH = 32
STEPS = int(os.environ.get("GUARD_CLS_STEPS", "0")) or 420
LR, WARMUP = 2e-3, 30
# Training threads (not part of the cache key). Two on an idle 2-core machine; one when the machine
# is busy: two OpenMP threads then wait on each other at every barrier and the build runs ~4x
# slower than with one. GUARD_BUILD_THREADS overrides.
_CPUS = os.cpu_count() or 1
THREADS = int(os.environ.get("GUARD_BUILD_THREADS", "0")) or (
    1 if os.getloadavg()[0] > _CPUS - 0.5 else min(2, _CPUS)
)
HOLDOUT = 0.15
N_DIALOGUES = 3000
EVAL_MAX = 2000  # held-out examples evaluated per set (deterministic sample)

SPECIALS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
LABELS = {0: "safe", 1: "unsafe"}
RESPONSE_TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}"
REQUEST_TEMPLATE = "<|user|>\n{prompt}<|end|>\n"

FILES = {
    "jailbreakbench": "jailbreakbench/attack-artifacts",
    "gptfuzz_train": "gptfuzz/datasets/responses_labeled/train.csv",
    "gptfuzz_eval": "gptfuzz/datasets/responses_labeled/evaluate.csv",
    "gptfuzz_questions": "gptfuzz/datasets/questions/question_list.csv",
    "advbench": "advbench/harmful_behaviors.csv",
    "bitext": "bitext/Bitext_Sample_Customer_Support_Training_Dataset.csv",
    "self_instruct": "self-instruct/seed_tasks.jsonl",
    "mt_bench": "fastchat_mt_bench",
}


def log(msg: str) -> None:
    print(f"[guard_classifier] {msg}", file=sys.stderr, flush=True)


def progress_bar() -> Any:
    """A rich progress bar on stderr (steps, loss, elapsed, ETA); disabled when stderr is not a
    terminal, where ``log`` lines every 100 steps say the same."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
        TextColumn("[guard_classifier] training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def _vendored(rel: str) -> Path:
    p = DATA / (rel + ".gz")
    if not p.is_file():
        raise SystemExit(
            f"[guard_classifier] {p} is missing: the classifier's data is vendored in the "
            "repository (scripts/models/data); restore it: git checkout -- scripts/models/data"
        )
    return p


def _read(rel: str) -> str:
    with gzip.open(_vendored(rel), "rt", encoding="utf-8", newline="") as f:
        return f.read()


def _jbb_files() -> list[str]:
    """The JailbreakBench files (<method>/<box>/<model>.json) that are vendored."""
    base = DATA / FILES["jailbreakbench"]
    found = sorted(p.relative_to(DATA).as_posix()[: -len(".gz")] for p in base.glob("*/*/*.gz"))
    if not found:
        raise SystemExit(f"[guard_classifier] no JailbreakBench artifacts under {base}")
    return found


def recipe() -> dict[str, object]:
    digests: dict[str, str] = {}
    for p in sorted(DATA.rglob("*.gz")):
        digests[p.relative_to(DATA).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"files": digests, "dialogues": dialogues.recipe(), "steps": STEPS}


def cache_key() -> str:
    h = hashlib.sha256()
    h.update((HERE / "build.py").read_bytes())
    h.update(DIALOGUES.read_bytes())
    h.update(json.dumps(recipe(), sort_keys=True).encode())
    return h.hexdigest()[:10]


# ---- data -------------------------------------------------------------------------------------
# An item: (source, prompt, response or None for a request item, label 0/1)
Item = tuple[str, str, "str | None", int]


def _csv(rel: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read(rel))))


def _jsonl(rel: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _read(rel).splitlines() if line]


def _ascii_share(s: str) -> float:
    return sum(c.isascii() for c in s) / max(1, len(s))


def load_items() -> tuple[list[Item], list[Item]]:
    """(items for train/held-out split, GPTFuzz evaluate items: extra held-out set)."""
    items: list[Item] = []
    extra: list[Item] = []

    # JailbreakBench: responses labelled jailbroken (harmful) or not (mostly refusals)
    for rel in _jbb_files():
        d = json.loads(_read(rel))
        for j in d.get("jailbreaks", []):
            resp = j.get("response")
            if not resp:
                continue
            lab = 1 if j.get("jailbroken") in (True, "True", "true") else 0
            items.append(("jbb", str(j.get("goal") or ""), str(resp), lab))
            if lab:
                items.append(("jbb_goal", str(j.get("goal") or ""), None, 1))

    # GPTFuzz: human-labelled responses; questions by id
    qs = {r["index"]: r["text"] for r in _csv(FILES["gptfuzz_questions"]) if "index" in r}
    for rel, out in ((FILES["gptfuzz_train"], items), (FILES["gptfuzz_eval"], extra)):
        for r in _csv(rel):
            resp = r.get("Response") or ""
            if not resp.strip() or _ascii_share(resp) < 0.8:
                continue
            q = qs.get(r.get("question", ""), "")
            out.append(("gptfuzz", q, resp, int(r.get("label") or 0)))
    for q in sorted(set(qs.values())):
        items.append(("gptfuzz_q", q, None, 1))

    # AdvBench: harmful goals (requests) and affirmative targets (response openers)
    for r in _csv(FILES["advbench"]):
        items.append(("advbench", r["goal"], r["target"], 1))
        items.append(("advbench_goal", r["goal"], None, 1))

    # the tiny chat model's dialogues: unsafe continuations, refusals, support replies
    for e in dialogues.examples(N_DIALOGUES, seed=SEED, split="all"):
        user = next((m["content"] for m in reversed(e.prompt) if m["role"] == "user"), "")
        items.append((f"dlg_{e.kind}", user, e.response, 1 if e.label == "harmful" else 0))

    # benign: Bitext replies + requests
    bit = _csv(FILES["bitext"])
    for i, r in enumerate(bit):
        resp = dialogues._fill_placeholders(r["response"])
        if i % 2 == 0:
            items.append(("bitext", r["instruction"], resp, 0))
        else:
            items.append(("bitext_q", r["instruction"], None, 0))

    # benign general: self-instruct answers, FastChat questions and reference answers
    for t in _jsonl(FILES["self_instruct"]):
        inst = str(t.get("instruction", ""))
        for inst_obj in t.get("instances", [])[:1]:
            out_text = str(inst_obj.get("output", ""))
            if out_text.strip():
                items.append(("self_instruct", inst, out_text, 0))
        items.append(("self_instruct_q", inst, None, 0))
    for bench in ("mt_bench", "vicuna_bench"):
        base = f"{FILES['mt_bench']}/{bench}"
        questions = {q["question_id"]: q for q in _jsonl(f"{base}/question.jsonl")}
        for q in questions.values():
            items.append(("mtbench_q", str(q["turns"][0]), None, 0))
        for a in _jsonl(f"{base}/reference_answer/gpt-4.jsonl"):
            q = questions.get(a["question_id"])
            turns = a["choices"][0]["turns"]
            if q and turns:
                items.append(("mtbench", str(q["turns"][0]), str(turns[0]), 0))
    return items, extra


def main() -> int:
    cache = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
    out = cache / "models" / f"tiny-guard-cls-{cache_key()}"
    if (out / ".complete").exists():
        log(f"cached: {out}")
        print(out)
        return 0

    t0 = time.time()
    import numpy as np
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)

    log(f"building {out.name} (first build: ~2-4 min on 2 cores)")
    items, extra = load_items()
    by_src: dict[str, list[int]] = {}
    for s, _, _, lab in items:
        by_src.setdefault(s, [0, 0])[lab] += 1
    log(f"{len(items)} items (+{len(extra)} GPTFuzz evaluate); per source [safe, unsafe]: {by_src}")

    # deterministic split by item content
    def held(it: Item) -> bool:
        h = hashlib.sha256(f"{it[0]}|{it[1]}|{it[2]}".encode()).digest()
        return h[0] / 256 < HOLDOUT

    train_items = [it for it in items if not held(it)]
    test_items = [it for it in items if held(it)]

    # ---- tokenizer (same recipe as scripts/models/tiny_model/build.py) ---------------
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([p + "\n" + (r or "") for _, p, r, _ in train_items], trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    end_id = hf_tok.convert_tokens_to_ids("<|end|>")
    pad_id = hf_tok.convert_tokens_to_ids("<|pad|>")

    def enc(s: str) -> list[int]:
        return list(hf_tok(s, add_special_tokens=False)["input_ids"])

    head_cache: dict[str, list[int]] = {}

    def examples_of(it: Item, with_prefixes: bool) -> list[tuple[list[int], int, str]]:
        """Token ids of the rendered example(s): full (tail-truncated) and prefixes."""
        src, prompt, resp, lab = it
        if resp is None:
            ids = enc(REQUEST_TEMPLATE.format(prompt=prompt))
            return [(ids[-MAX_LEN:], lab, "request")]
        # half of the response examples carry no prompt summary (both occur at serve time)
        no_prompt = hashlib.md5(f"{src}|{resp}".encode()).digest()[0] % 2 == 0
        p = "" if no_prompt else prompt
        if p not in head_cache:
            u = enc(p)[:PROMPT_CAP]
            head_cache[p] = enc("<|user|>\n") + u + enc("<|end|>\n<|assistant|>\n")
        head = head_cache[p]
        body = enc(resp)
        room = MAX_LEN - len(head)
        out = [(head + body[-room:], lab, "full")]
        if with_prefixes:
            for n in PREFIXES:
                if n < len(body):
                    out.append((head + body[:n], lab, f"prefix{n}"))
        return out

    train = [x for it in train_items for x in examples_of(it, True)]
    test = [x for it in test_items for x in examples_of(it, True)]
    test_extra = [x for it in extra for x in examples_of(it, True)]
    n_pos = sum(lab for _, lab, _ in train)
    log(
        f"tokenizer vocab {len(hf_tok)}; {len(train)} training examples ({n_pos} unsafe), "
        f"{len(test)} held-out, {len(test_extra)} GPTFuzz-evaluate"
    )

    # ---- model --------------------------------------------------------------------------------
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=end_id,
        eos_token_id=end_id,
        pad_token_id=pad_id,
        rope_theta=10000.0,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        num_labels=2,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
        architectures=["LlamaForSequenceClassification"],
    )
    model = LlamaForSequenceClassification(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M params")

    def make(batch: list[tuple[list[int], int, str]]) -> tuple[torch.Tensor, ...]:
        m = max(len(ids) for ids, _, _ in batch)
        x = torch.full((len(batch), m), pad_id, dtype=torch.long)
        a = torch.zeros((len(batch), m), dtype=torch.long)
        for r, (ids, _, _) in enumerate(batch):
            x[r, : len(ids)] = torch.tensor(ids)
            a[r, : len(ids)] = 1
        y = torch.tensor([lab for _, lab, _ in batch], dtype=torch.long)
        return x, a, y

    # class weights: balance safe/unsafe
    w_pos = len(train) / (2 * max(1, n_pos))
    w_neg = len(train) / (2 * max(1, len(train) - n_pos))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([w_neg, w_pos], dtype=torch.float))

    rng = random.Random(SEED)
    order = list(range(len(train)))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / WARMUP)
            * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS)))
        ),
    )
    model.train()
    t_train = time.time()
    losses: list[float] = []
    step = 0
    with progress_bar() as bar:
        task = bar.add_task("train", total=STEPS, loss=float("nan"))
        while step < STEPS:
            rng.shuffle(order)
            # length-sorted chunks of 50 batches keep padding low while staying shuffled
            for c in range(0, len(order), BATCH * 50):
                chunk = sorted(order[c : c + BATCH * 50], key=lambda i: len(train[i][0]))
                batches = [chunk[i : i + BATCH] for i in range(0, len(chunk), BATCH)]
                rng.shuffle(batches)
                for b in batches:
                    if step >= STEPS:
                        break
                    x, a, y = make([train[i] for i in b])
                    logits = model(input_ids=x, attention_mask=a).logits
                    loss = loss_fn(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    losses.append(loss.item())
                    step += 1
                    avg = sum(losses[-50:]) / len(losses[-50:])
                    bar.update(task, advance=1, loss=avg)
                    if bar.disable and (step % 100 == 0 or step == STEPS):
                        log(f"step {step}/{STEPS} loss {avg:.3f} ({time.time() - t_train:.0f}s)")
                if step >= STEPS:
                    break
    train_s = time.time() - t_train
    model.eval()

    # ---- held-out evaluation ------------------------------------------------------------------
    def predict(exs: list[tuple[list[int], int, str]]) -> np.ndarray:
        idx = sorted(range(len(exs)), key=lambda i: len(exs[i][0]))
        p = np.zeros(len(exs))
        with torch.no_grad():
            for s in range(0, len(idx), 128):
                b = idx[s : s + 128]
                x, a, _ = make([exs[i] for i in b])
                pr = torch.softmax(model(input_ids=x, attention_mask=a).logits.float(), -1)[:, 1]
                p[b] = pr.numpy()
        return p

    def auc(y: np.ndarray, p: np.ndarray) -> float | None:
        pos, neg = p[y == 1], p[y == 0]
        if len(pos) == 0 or len(neg) == 0:
            return None
        order_ = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
        ranks = np.empty(len(order_))
        ranks[order_] = np.arange(1, len(order_) + 1)
        return float(
            (ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
        )

    def report(name: str, exs: list[tuple[list[int], int, str]]) -> dict[str, object]:
        if not exs:
            return {}
        if len(exs) > EVAL_MAX:
            exs = random.Random(SEED).sample(exs, EVAL_MAX)
        p = predict(exs)
        y = np.array([lab for _, lab, _ in exs])
        res: dict[str, object] = {}
        for kind in ("all", "request", "full", "prefix8", "prefix16", "prefix32", "prefix64"):
            sel = np.array([kind == "all" or k == kind for _, _, k in exs])
            if sel.sum() == 0:
                continue
            a_ = auc(y[sel], p[sel])
            res[kind] = {
                "n": int(sel.sum()),
                "unsafe": int(y[sel].sum()),
                "accuracy": round(float(((p[sel] > 0.5) == (y[sel] == 1)).mean()), 4),
                "auc": None if a_ is None else round(a_, 4),
            }
            log(f"held-out {name:13s} {kind:8s}: {res[kind]}")
        return res

    evaluation = {
        "holdout": report("15%-split", test),
        "gptfuzz_eval": report("gptfuzz-eval", test_extra),
    }
    full = evaluation["holdout"].get("full", {})
    print(
        f"held-out (15% split, full responses): accuracy {full.get('accuracy')}, "
        f"AUC {full.get('auc')}",
        file=sys.stderr,
    )

    # ---- save (atomically) --------------------------------------------------------------------
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    hf_tok.save_pretrained(tmp)
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2) + "\n")
    scorer_cfg = {
        "kind": "classify",
        "unsafe_index": 1,
        "labels": LABELS,
        "response_template": RESPONSE_TEMPLATE,
        "request_template": REQUEST_TEMPLATE,
        "max_model_len": 512,
        "trained_max_len": MAX_LEN,
    }
    (tmp / "guard_scorer.json").write_text(json.dumps(scorer_cfg, indent=1) + "\n")
    info = {
        "key": out.name,
        "params": n_params,
        "vocab": len(hf_tok),
        "steps": STEPS,
        "batch": BATCH,
        "train_examples": len(train),
        "train_seconds": round(train_s, 1),
        "build_seconds": round(time.time() - t0, 1),
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "per_source": by_src,
        "evaluation": evaluation,
        "recipe": recipe(),
        "torch": torch.__version__,
    }
    (tmp / "build_info.json").write_text(json.dumps(info, indent=1))
    (tmp / "NOTICE.md").write_text(
        "Trained on: JailbreakBench artifacts (MIT), GPTFuzz (MIT), AdvBench (MIT), Bitext "
        "customer-support sample (CDLA-Sharing-1.0), self-instruct seed tasks (Apache-2.0), "
        "FastChat MT-bench/Vicuna-bench (Apache-2.0), and dialogues generated by "
        "scripts/models/tiny_model/dialogues.py. Sources, commits and licences: "
        "scripts/models/data/NOTICE.md in the guard repository. The Bitext part is under "
        "CDLA-Sharing-1.0: models trained on it are shared under the same terms.\n"
    )
    (tmp / ".complete").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"built in {time.time() - t0:.0f}s (training {train_s:.0f}s): {out}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
