"""Fine-tune the tiny chat model on safety-recovery + benign data with TRL's SFTTrainer (CPU).

Run with the TRL virtualenv's python (scripts/alignment/trl_env.sh prints it):

    $(scripts/alignment/trl_env.sh) scripts/alignment/finetune.py \
        --base MODEL_DIR --data train.jsonl [--data more.jsonl] --out OUT_DIR \
        [--epochs 3] [--lr 1e-3] [--batch 16] [--max-steps N] [--seed 0]

Data: JSONL rows exactly as ``guard augment`` writes them -- ``{"messages": [...],
"chat_template_kwargs": {"prefix_chars": N}, "meta": {...}}`` -- read by ``datasets`` and fed to
``SFTTrainer`` as is (no conversion). Loss: ``assistant_only_loss=True`` with
``chat_template_path=train_chat_template.jinja`` (the model's template plus ``{% generation %}``
markers); the template leaves the first ``prefix_chars`` characters of the last assistant message
(the harmful prefix) out of the loss, so only the recovery and ``<|end|>`` are learned. Before
training every example is rendered with both templates and must give identical text (else the
script stops: the base model's template changed and the training twin must follow).

Output: OUT_DIR with the fine-tuned weights and the base model's tokenizer files, chat template
and generation config copied unchanged (vLLM serves it as is), plus ``finetune_info.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "train_chat_template.jinja"
KEEP_FROM_BASE = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
    "NOTICE.md",
)


def log(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="base model directory (save_pretrained layout)")
    ap.add_argument("--data", action="append", required=True, help="training JSONL (repeatable)")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("GUARD_TRAIN_THREADS", "1")))
    args = ap.parse_args()

    t0 = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tty = sys.stderr.isatty()
    import datasets
    import torch
    import transformers
    import trl
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    if not tty:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    base, out = Path(args.base), Path(args.out)
    tok = AutoTokenizer.from_pretrained(base)
    base_template = tok.chat_template
    train_template = TEMPLATE.read_text()

    ds = load_dataset("json", data_files=args.data, split="train")
    log(f"{len(ds)} examples from {', '.join(Path(d).name for d in args.data)}")

    # The training template must render every example exactly as the served template does.
    for i, row in enumerate(ds):
        kw = row.get("chat_template_kwargs") or {}
        a = tok.apply_chat_template(row["messages"], tokenize=False, chat_template=base_template)
        b = tok.apply_chat_template(
            row["messages"], tokenize=False, chat_template=train_template, **kw
        )
        if a != b:
            log(f"example {i}: the training template renders differently from the model's:")
            log(f"  model's:  {a[:300]!r}\n  training: {b[:300]!r}")
            return 2

    cfg = SFTConfig(
        output_dir=str(out) + ".trainer",
        assistant_only_loss=True,
        chat_template_path=str(TEMPLATE),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.01,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=not tty,
    )
    trainer = SFTTrainer(model=str(base), args=cfg, train_dataset=ds, processing_class=tok)

    # Show what is trained on one augmented example (the loss mask TRL built).
    sample: dict[str, Any] = {}
    td = trainer.train_dataset
    for j in range(len(td)):
        kw = ds[j].get("chat_template_kwargs") or {}
        if kw.get("prefix_chars"):
            ids, labels = td[j]["input_ids"], td[j]["labels"]
            sample = {
                "rendered": tok.decode(ids),
                "trained": tok.decode([t for t in labels if t != -100]),
            }
            log(f"loss mask of example {j}: trained on {sample['trained']!r}")
            break

    steps_hint = args.max_steps if args.max_steps > 0 else f"{args.epochs:g} epochs"
    log(f"training ({steps_hint}, lr {args.lr:g}, batch {args.batch}, {args.threads} threads)")
    t_train = time.time()
    res = trainer.train()
    train_s = time.time() - t_train
    hist = [h for h in trainer.state.log_history if "loss" in h]
    for h in hist[:: max(1, len(hist) // 8)]:
        log(f"  step {h.get('step')}: loss {h['loss']:.3f}")

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp, safe_serialization=True)
    for name in KEEP_FROM_BASE:  # the served tokenizer / template / generation config, unchanged
        if (base / name).exists():
            shutil.copy2(base / name, tmp / name)
    info = {
        "base": base.name,
        "data": [Path(d).name for d in args.data],
        "examples": len(ds),
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "steps": trainer.state.global_step,
        "learning_rate": args.lr,
        "batch": args.batch,
        "scheduler": "cosine, 5% warm-up",
        "loss": "assistant_only_loss with train_chat_template.jinja (prefix_chars masked)",
        "train_loss": round(float(res.training_loss), 4),
        "final_logged_loss": hist[-1]["loss"] if hist else None,
        "train_seconds": round(train_s, 1),
        "seconds": round(time.time() - t0, 1),
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "torch": torch.__version__,
        },
        "mask_sample": sample,
    }
    (tmp / "finetune_info.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(str(out) + ".trainer", ignore_errors=True)
    steps = trainer.state.global_step
    log(f"done in {time.time() - t0:.0f}s ({steps} steps, {train_s:.0f}s): {out}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
