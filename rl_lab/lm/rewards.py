"""Reward functions for text: a callable `(texts) -> float32 array` with
`score_and_verdict(texts)`, the same scores and each text's POSITIVE verdict from one pass.

The classifier reward looks its POSITIVE label up by name: label order differs between
checkpoints, and an index taken on faith silently rewards the opposite sentiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from rl_lab.errors import UserError
from rl_lab.lm.assets import first_line, is_complete, quiet_transformers, reward_model_dir

POSITIVE_NAMES = ("POSITIVE", "POS")
TRAIN_COMMAND = "python -m rl_lab.run reward sentiment"


class Reward(Protocol):
    def __call__(self, texts: list[str]) -> np.ndarray: ...
    def score_and_verdict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


def positive_label_index(config, name: str = "the classifier") -> int:
    """The output column of the POSITIVE label, found by name in id2label (else label2id)."""
    # id2label is what transformers itself reports for each output column; label2id only
    # helps when a hand-written config filled in just that one.
    found = []
    for labels in (
        {int(i): str(label) for i, label in (config.id2label or {}).items()},
        {int(i): str(label) for label, i in (config.label2id or {}).items()},
    ):
        found = sorted(i for i, label in labels.items() if label.strip().upper() in POSITIVE_NAMES)
        if found:
            break
    if len(found) != 1:
        labels = {int(i): str(label) for i, label in (config.id2label or {}).items()}
        names = ", ".join(labels[i] for i in sorted(labels)) or "none"
        problem = "no POSITIVE label" if not found else "several POSITIVE labels"
        raise UserError(
            f"{name} has {problem} (labels: {names}); pass a sentiment classifier "
            "with one label named POSITIVE or POS"
        )
    return found[0]


# What a reward pays (see ClassifierReward; VADER pays its compound score or the verdict).
SCORES = ("logit", "log-prob", "verdict")


def paid_score(reward: str, score: str) -> str:
    """What the reward named `reward` pays when asked for `score`: a lexicon (VADER) has no
    logit or probability, so it pays its compound score unless asked for the verdict."""
    return "compound" if reward == "vader" and score != "verdict" else score


class ClassifierReward:
    """Reward = the raw POSITIVE logit of a sequence classifier (as in the classic experiment),
    or with score="log-prob" log P(POSITIVE): near 0 for any text already judged positive, so
    the policy is paid for turning negative text positive, not for ever more gushing text;
    with score="verdict" 1 for a text judged positive and 0 otherwise (what the POSITIVE
    fraction counts)."""

    def __init__(
        self,
        model_name_or_path: str,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        score: str = "logit",
    ):
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, not {score!r}")
        self.score = score
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = str(model_name_or_path)
        try:  # quietly, as every model load here: load reports and progress bars are noise
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(self.name)
                self.model = AutoModelForSequenceClassification.from_pretrained(self.name)
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot load reward model {self.name!r} ({first_line(error)}); pass a local "
                "classifier directory, 'vader', or 'default'"
            ) from None
        self.positive = positive_label_index(self.model.config, f"reward model {self.name!r}")
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Classifier logits, shape (len(texts), num_labels), float32."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                rows.append(self.model(**batch).logits.float().cpu().numpy())
        if not rows:
            return np.zeros((0, self.model.config.num_labels), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.score_and_verdict(texts)[0]

    def score_and_verdict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # One classifier pass for both: evaluation needs the scores and the verdicts.
        logits = self.logits(texts)
        positive = logits.argmax(axis=1) == self.positive
        if self.score == "verdict":
            return positive.astype(np.float32), positive
        if self.score == "log-prob":  # log-softmax over the labels, shifted for stability
            shifted = logits - logits.max(axis=1, keepdims=True)
            logits = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return logits[:, self.positive], positive


class VaderReward:
    """Reward = VADER's compound score in [-1, 1]; positive at >= 0.05 (VADER's own cut). With
    score="verdict" 1 for a positive text and 0 otherwise; a lexicon has no logit or
    probability, so the other scores pay the compound score."""

    def __init__(self, score: str = "logit"):
        self.score = paid_score("vader", score)
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise UserError(
                "vaderSentiment is not installed; run `python -m rl_lab.lm.setup`"
            ) from None
        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.score_and_verdict(texts)[0]

    def score_and_verdict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        compound = np.array(
            [self.analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float32
        )
        positive = compound >= 0.05
        return (positive.astype(np.float32) if self.score == "verdict" else compound), positive


def build_reward(name: str = "default", device: str = "cpu", score: str = "logit") -> Reward:
    """'default'/'model': our trained MiniLM; 'vader'; else a classifier dir or hub id.
    `score` is what the reward pays (SCORES; VADER: its compound score, or the verdict)."""
    if name in ("default", "model"):
        folder = reward_model_dir()
        if not is_complete(folder):
            raise UserError(
                f"no finished reward model in {folder}; train it with `{TRAIN_COMMAND}`"
            )
        return ClassifierReward(str(folder), device=device, score=score)
    if name == "vader":
        return VaderReward(score)
    path = Path(name).expanduser()
    return ClassifierReward(str(path) if path.is_dir() else name, device=device, score=score)


def build_judge(reward_name: str) -> tuple[str, Reward] | None:
    """(name, scorer) of a sentiment scorer that is not the training reward, so held-out text
    is also judged by something the policy could not learn to please: VADER (a word lexicon)
    when the reward is a classifier, the default reward model when it is VADER (if prepared).
    None when there is no such scorer here."""
    if reward_name == "vader":
        folder = reward_model_dir()
        return (
            ("reward model (MiniLM)", ClassifierReward(str(folder)))
            if is_complete(folder)
            else None
        )
    try:
        return "VADER", VaderReward()
    except UserError:
        return None
