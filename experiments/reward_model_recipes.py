"""Try reward-model recipes without touching the held-out reviews, and score a trained model
on the held-out reviews in other ways.

    python experiments/reward_model_recipes.py train [KEY=VALUE ...]
    python experiments/reward_model_recipes.py score MODEL_DIR [LENGTH ...]

`train` fine-tunes MiniLM as `rl_lab.lm.reward_model` does (unless given, the earlier fp32
recipe: steps=160 batch=32 lr=1.5e-4 length=64 pooling=cls; the shipped one is steps=240
batch=64 bf16=1) and scores it on `val` reviews held back from the *training* split (never
trained on, never the held-out split), so recipes can be chosen without tuning on the reviews
the README reports. `pooling=mean` puts the classifier on the
mean of the token states (how all-MiniLM-L6-v2 was trained) instead of BERT's [CLS] head.
`bf16=1` runs training and validation under bfloat16 autocast (what the shipped model does where
the CPU has bf16 instructions), `freeze=N` also freezes MiniLM's lowest N encoder layers.
`cut=headtail` trains on each review's first and last tokens (as the held-out reviews are cut)
instead of a random window, `cut=mix` on either one, by a coin flip per review.
`score` reads a saved classifier (e.g. the cache's reward-minilm-sentiment) and prints its
held-out accuracy for each LENGTH: 256 or more is one head+tail cut of that many tokens, less is
the mean logits over windows of that length covering the review (what the card reports at 64),
both under bf16 autocast where the CPU has bf16 instructions, as the card's.
Each result is printed as one JSON line and appended to
experiments/results/reward_model_recipes.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rl_lab.lm.assets import minilm_path
from rl_lab.lm.prompts import load_reviews
from rl_lab.lm.reward_model import cut_piece, cut_reviews, pad_pieces, review_logits, use_bf16

RESULTS = Path(__file__).resolve().parent / "results" / "reward_model_recipes.jsonl"
DEFAULTS = {"steps": 160, "batch": 32, "lr": 1.5e-4, "length": 64, "pooling": "cls", "val": 1000,
            "val_length": 512, "warmup": 0.1, "seed": 0, "bf16": 0, "freeze": 0,
            "cut": "window"}  # fmt: skip


class MeanPooled(torch.nn.Module):
    """MiniLM with a linear classifier on the mean of its token states."""

    def __init__(self, base):
        from transformers import AutoModel

        super().__init__()
        self.base_model = AutoModel.from_pretrained(base, add_pooling_layer=False)
        self.dropout, self.out = torch.nn.Dropout(0.1), torch.nn.Linear(384, 2)

    def forward(self, input_ids, attention_mask, **_):
        states = self.base_model(input_ids=input_ids, attention_mask=attention_mask)
        mask = attention_mask.unsqueeze(-1).float()
        mean = (states.last_hidden_state * mask).sum(1) / mask.sum(1)
        return self.out(self.dropout(mean))


def cut_training_texts(tokenizer, rows, length, cut, rng):
    """The training texts of one batch: `window` a random window of each review (shipped),
    `headtail` its first and last tokens (how the held-out reviews are cut), `mix` either one
    per review, by a coin flip."""
    if cut == "window":
        return cut_reviews(tokenizer, rows, length, rng)
    if cut == "headtail":
        return cut_reviews(tokenizer, rows, length)
    if cut != "mix":
        raise SystemExit(f"cut must be window, headtail or mix, got {cut!r}")
    keep = length - 2
    # The coin is flipped only for reviews longer than `keep` (the recorded runs drew so).
    pieces = [
        cut_piece(ids, keep, rng if len(ids) > keep and rng.random() < 0.5 else None)
        for ids in rows
    ]
    return pad_pieces(tokenizer, pieces)


def train(settings: dict) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    s = {**DEFAULTS, **settings}
    torch.manual_seed(s["seed"])
    rng = np.random.default_rng(s["seed"])
    base = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts, labels = load_reviews("train")
    positive = np.array([label == "POSITIVE" for label in labels])
    order = rng.permutation(len(texts))  # the shipped recipe's pool is order[:steps x batch]
    pool, held_back = order[: s["steps"] * s["batch"]], order[-s["val"] :]
    if s["pooling"] == "mean":
        model = MeanPooled(base)
        logits_of = model
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        logits_of = lambda **inputs: model(**inputs).logits  # noqa: E731
    model.base_model.embeddings.requires_grad_(False)
    for layer in model.base_model.encoder.layer[: s["freeze"]]:  # the lowest `freeze` layers
        layer.requires_grad_(False)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(s["bf16"]))

    started = time.perf_counter()
    ids = dict(zip(pool.tolist(), tokenizer([texts[i] for i in pool], add_special_tokens=False)[
        "input_ids"], strict=True))  # fmt: skip
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=s["lr"], weight_decay=0.01
    )
    steps, warmup = s["steps"], max(1, round(s["warmup"] * s["steps"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min((k + 1) / warmup, (steps - k) / max(1, steps - warmup))
    )
    model.train()
    shuffled, cursor = rng.permutation(pool), 0
    for _ in range(steps):
        if cursor + s["batch"] > len(shuffled):
            shuffled, cursor = rng.permutation(pool), 0
        batch = shuffled[cursor : cursor + s["batch"]]
        cursor += s["batch"]
        inputs = cut_training_texts(tokenizer, [ids[i] for i in batch], s["length"], s["cut"], rng)
        target = torch.tensor(positive[batch], dtype=torch.long)
        with bf16:
            loss = torch.nn.functional.cross_entropy(logits_of(**inputs).float(), target)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - started

    model.eval()
    started = time.perf_counter()
    rows = tokenizer([texts[i] for i in held_back], add_special_tokens=False)["input_ids"]
    with bf16:
        predicted = review_logits(logits_of, tokenizer, rows, s["val_length"], 64).argmax(-1) == 1
    accuracy = float(np.mean(predicted == positive[held_back]))
    return {"train": s, "validation_accuracy": accuracy, "train_seconds": round(train_seconds, 1),
            "val_seconds": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads()}  # fmt: skip


def score(model_dir: str, lengths: list[int]) -> list[dict]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    texts, labels = load_reviews("eval")
    positive = np.array([label == "POSITIVE" for label in labels])
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]

    bf16 = torch.autocast("cpu", torch.bfloat16, enabled=use_bf16("auto", "cpu"))  # as the card
    results = []
    for length in lengths:
        started = time.perf_counter()
        # 256 or more: one head+tail cut; less: the mean logits over windows covering the review
        with bf16:
            per_review = review_logits(lambda **inputs: model(**inputs).logits, tokenizer, rows,
                                       length, 64, windows=length < 256)  # fmt: skip
        correct = (per_review[:, 1] > per_review[:, 0]) == positive
        # 1,000 reviews leave about +-0.02 of sampling noise: a percentile bootstrap says how much
        resampled = np.random.default_rng(0).choice(correct, (2000, len(correct))).mean(1)
        results.append({"score": model_dir, "length": length, "held_out_accuracy": float(correct.mean()),
                        "ci95": [round(float(q), 3) for q in np.percentile(resampled, [2.5, 97.5])],
                        "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
    return results


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "score"):
        sys.exit(__doc__)
    if sys.argv[1] == "train":
        settings = {}
        for item in sys.argv[2:]:
            key, _, value = item.partition("=")
            if key not in DEFAULTS:
                sys.exit(f"unknown setting {key!r}; known: {', '.join(DEFAULTS)}")
            settings[key] = type(DEFAULTS[key])(value)
        results = [train(settings)]
    else:
        results = score(sys.argv[2], [int(x) for x in sys.argv[3:]] or [512])
    with RESULTS.open("a") as file:
        for result in results:
            print(json.dumps(result), flush=True)
            file.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
