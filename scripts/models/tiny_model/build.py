"""Build (and cache) the tiny, shallowly aligned chat model used by the real-vLLM e2e tests.

Run with the vLLM virtualenv's python (it has torch, transformers, tokenizers):

    $(scripts/vllm/vllm_env.sh) scripts/models/tiny_model/build.py  # prints the model dir last

Cache: ${GUARD_CACHE:-$HOME/.cache/guard}/models/tiny-chat-<hash of this file, dialogues.py and
the data recipe>. A complete cached build (marker file ``.complete``) is reused at once.

What it builds: byte-level BPE tokenizer (vocab 2048, trained with ``tokenizers``), a
``LlamaForCausalLM`` (hidden 128, 2 layers, 4 heads of 32, tied embeddings, ~0.8M params), trained
~2 minutes on 2 CPU threads on dialogues from ``dialogues.py``, saved with ``save_pretrained`` and a
chat template that vLLM's chat endpoint uses (including ``continue_final_message``).
The alignment is shallow by construction: see dialogues.py. ``build_info.json`` in the model dir
records the training loss, timings and a greedy sanity check of each behaviour.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import dialogues  # the sibling module (this file runs as a script: its directory is on the path)
import measure

HERE = Path(__file__).resolve().parent

# ---- hyper-parameters (part of the cache key through this file's hash) ------------------------
SEED = 1234
N_TRAIN = 12000
VOCAB = 2048
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 128, 2, 4, 4, 384
MAX_LEN = 192  # training sequence cap (tokens); serving uses max-model-len 512
BATCH = 32
STEPS = int(os.environ.get("GUARD_TINY_STEPS", "0")) or 700
LR, WARMUP = 3e-3, 40
# Training threads (not part of the cache key). Two on an idle 2-core machine; one when the machine
# is busy: two OpenMP threads then wait on each other at every barrier and the build runs ~4x
# slower than with one. GUARD_BUILD_THREADS overrides.
_CPUS = os.cpu_count() or 1
THREADS = int(os.environ.get("GUARD_BUILD_THREADS", "0")) or (
    1 if os.getloadavg()[0] > _CPUS - 0.5 else min(2, _CPUS)
)

SPECIALS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

# Roles are rendered as special tokens; after the last message an assistant header is added when
# add_generation_prompt is set. With continue_final_message, transformers cuts the rendering right
# after the final message's content, so the trailing <|end|> disappears and the model continues it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Python twin of CHAT_TEMPLATE (checked against apply_chat_template at build time)."""
    out = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return out + ("<|assistant|>\n" if add_generation_prompt else "")


def _code_fingerprint(path: Path) -> str:
    """The module's AST without docstrings: formatting-only edits (ruff format) keep the key."""
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
    return ast.dump(tree, include_attributes=False)


def cache_key() -> str:
    h = hashlib.sha256()
    for name in ("build.py", "dialogues.py"):
        h.update(_code_fingerprint(HERE / name).encode())
    h.update(json.dumps(dialogues.recipe(), sort_keys=True).encode())
    h.update(str(STEPS).encode())
    return h.hexdigest()[:10]


def log(msg: str) -> None:
    print(f"[tiny_model] {msg}", file=sys.stderr, flush=True)


def progress_bar(total: int) -> Any:
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
        TextColumn("[tiny_model] training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )


def main() -> int:
    cache = Path(os.environ.get("GUARD_CACHE", Path.home() / ".cache" / "guard"))
    out = cache / "models" / f"tiny-chat-{cache_key()}"
    if (out / ".complete").exists():
        log(f"cached: {out}")
        print(out)
        return 0

    t0 = time.time()
    import numpy as np
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)

    # ---- data ---------------------------------------------------------------------------------
    exs = list(dialogues.examples(N_TRAIN, seed=SEED, split="train"))
    texts = []
    for e in exs:
        prompt = render(e.prompt)
        texts.append((prompt, e.response, e.loss_start_char))
    log(f"building {out.name}: {len(exs)} training dialogues (first build: ~3-5 min on 2 cores)")

    # ---- tokenizer ----------------------------------------------------------------------------
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
    corpus = [p + r for p, r, _ in texts]
    tok.train_from_iterator(corpus, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    for e in exs[:20]:  # the python renderer must match the Jinja template
        assert hf_tok.apply_chat_template(
            e.prompt, tokenize=False, add_generation_prompt=True
        ) == render(e.prompt), "template mismatch"
    end_id = hf_tok.convert_tokens_to_ids("<|end|>")
    pad_id = hf_tok.convert_tokens_to_ids("<|pad|>")
    log(f"tokenizer: vocab {len(hf_tok)}")

    # ---- encode with loss mask ----------------------------------------------------------------
    seqs: list[tuple[list[int], list[int]]] = []
    for prompt, resp, loss_from in texts:
        full = prompt + resp
        enc = hf_tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        start = len(prompt) + loss_from
        labels = [t if s >= start else -100 for t, (s, _) in zip(ids, offs)]  # noqa: B905
        ids, labels = ids + [end_id], labels + [end_id]
        seqs.append((ids[:MAX_LEN], labels[:MAX_LEN]))
    lens = [len(s[0]) for s in seqs]
    log(f"tokens: mean {sum(lens) / len(lens):.0f}, max {max(lens)} per dialogue")

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
    )
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M params")

    # length-bucketed batches (deterministic order)
    rng = random.Random(SEED)
    order = sorted(range(len(seqs)), key=lambda i: (lens[i], i))
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]

    def make(batch_idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = max(lens[i] for i in batch_idx)
        x = torch.full((len(batch_idx), m), pad_id, dtype=torch.long)
        y = torch.full((len(batch_idx), m), -100, dtype=torch.long)
        a = torch.zeros((len(batch_idx), m), dtype=torch.long)
        for r, i in enumerate(batch_idx):
            ids, lab = seqs[i]
            x[r, : len(ids)] = torch.tensor(ids)
            y[r, : len(lab)] = torch.tensor(lab)
            a[r, : len(ids)] = 1
        return x, y, a

    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / WARMUP)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, STEPS) / STEPS)))
        ),
    )
    model.train()
    t_train = time.time()
    losses = []
    step = 0
    with progress_bar(STEPS) as bar:
        task = bar.add_task("train", total=STEPS, loss=float("nan"))
        while step < STEPS:
            rng.shuffle(batches)
            for b in batches:
                if step >= STEPS:
                    break
                x, y, a = make(b)
                loss = model(input_ids=x, attention_mask=a, labels=y).loss
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
    train_s = time.time() - t_train
    model.eval()

    # ---- how it reads and how shallow it is, on held-out requests (greedy, HF generate) -------
    log("measuring fluency and alignment on held-out requests")
    check = measure.evaluate(measure.hf_generator(model, hf_tok, render), dialogues, dialogues)
    sh = check["shallow"]
    log(
        f"benign: fluent {check['fluent_share']:.0%}, sentences as taught "
        f"{check['sentence_share']:.0%}, refused {check['benign_refusal_rate']:.0%} "
        f"of {check['benign_n']}; harmful: plain request {sh['refusal']['harmful']}/"
        f"{sh['refusal']['n']}, jailbreak {sh['jailbreak']['harmful']}/{sh['jailbreak']['n']}, "
        f"prefill {sh['prefill']['harmful']}/{sh['prefill']['n']}"
    )

    # ---- save (atomically) --------------------------------------------------------------------
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    hf_tok.save_pretrained(tmp)
    # transformers 5 writes the template to chat_template.jinja only; also put it (and a class name
    # older loaders know) into tokenizer_config.json so any tokenizer loader finds it.
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2) + "\n")
    GenerationConfig(eos_token_id=end_id, pad_token_id=pad_id, bos_token_id=end_id).save_pretrained(
        tmp
    )
    info = {
        "key": out.name,
        "params": n_params,
        "vocab": len(hf_tok),
        "steps": STEPS,
        "batch": BATCH,
        "train_seconds": round(train_s, 1),
        "build_seconds": round(time.time() - t0, 1),
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "recipe": dialogues.recipe(),
        "check": check,
        "torch": torch.__version__,
    }
    (tmp / "build_info.json").write_text(json.dumps(info, indent=1))
    (tmp / "NOTICE.md").write_text(
        (HERE / "NOTICE.md").read_text() if (HERE / "NOTICE.md").exists() else ""
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
