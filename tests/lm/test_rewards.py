"""Rewards look the POSITIVE label up by name; VADER; the reward-model trainer end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from rl_lab.errors import UserError  # noqa: E402
from rl_lab.lm import rewards  # noqa: E402
from rl_lab.lm.assets import minilm_path  # noqa: E402

TEXTS = ["What a wonderful, moving film.", "Dull, long and badly acted.", "It is a movie."]


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return transformers.AutoTokenizer.from_pretrained(minilm_path())
    except UserError as error:
        pytest.skip(str(error))


def tiny_classifier(tmp_path, tokenizer, id2label: dict[int, str]):
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, folder


def test_positive_label_is_found_by_name_not_index(tmp_path, tokenizer):
    # Reversed order on purpose: taking column 1 as "positive" would be the classic bug.
    model, folder = tiny_classifier(tmp_path, tokenizer, {0: "POSITIVE", 1: "NEGATIVE"})
    reward = rewards.ClassifierReward(str(folder), batch_size=2)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    scores = reward(TEXTS)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, logits[:, 0], rtol=1e-5, atol=1e-5)
    same_scores, positive = reward.score_and_verdict(TEXTS)
    np.testing.assert_array_equal(same_scores, scores)
    np.testing.assert_array_equal(positive, logits.argmax(1) == 0)
    assert reward([]).shape == (0,)


def test_log_prob_score_is_log_softmax_of_the_positive_column(tmp_path, tokenizer):
    model, folder = tiny_classifier(
        tmp_path, tokenizer, {0: "NEGATIVE", 1: "Neutral", 2: "POSITIVE"}
    )
    reward = rewards.build_reward(str(folder), score="log-prob")
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    expected = torch.log_softmax(logits, dim=1)[:, 2].numpy()
    scores = reward(TEXTS)
    assert scores.dtype == np.float32 and (scores < 0).all()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    # What counts as positive does not depend on what the reward pays.
    logit_reward = rewards.build_reward(str(folder))
    log_probs, positive = reward.score_and_verdict(TEXTS)
    np.testing.assert_array_equal(log_probs, scores)
    np.testing.assert_array_equal(positive, logit_reward.score_and_verdict(TEXTS)[1])
    assert reward([]).shape == (0,)
    with pytest.raises(ValueError, match="score must be one of"):
        rewards.ClassifierReward(str(folder), score="prob")


def test_verdict_score_pays_one_for_positive_text_only(tmp_path, tokenizer):
    _, folder = tiny_classifier(tmp_path, tokenizer, {0: "NEGATIVE", 1: "POSITIVE"})
    logits = rewards.build_reward(str(folder)).logits(TEXTS)
    scores, positive = rewards.build_reward(str(folder), score="verdict").score_and_verdict(TEXTS)
    np.testing.assert_array_equal(positive, logits[:, 1] > logits[:, 0])
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, positive.astype(np.float32))


@pytest.mark.parametrize(
    "labels, column", [({0: "neg", 1: "pos"}, 1), ({0: "Negative", 1: "Neutral", 2: "Positive"}, 2)]
)
def test_label_names_are_case_insensitive(tmp_path, tokenizer, labels, column):
    _, folder = tiny_classifier(tmp_path, tokenizer, labels)
    assert rewards.ClassifierReward(str(folder)).positive == column


def test_id2label_wins_over_a_stale_label2id():
    from types import SimpleNamespace

    config = SimpleNamespace(
        id2label={0: "POSITIVE", 1: "NEGATIVE"}, label2id={"LABEL_0": 0, "POSITIVE": 1}
    )
    assert rewards.positive_label_index(config) == 0
    assert rewards.positive_label_index(SimpleNamespace(id2label={}, label2id={"pos": 1})) == 1


def test_classifier_without_positive_label_is_a_user_error(tmp_path, tokenizer):
    _, folder = tiny_classifier(tmp_path, tokenizer, {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(UserError, match=r"no POSITIVE label \(labels: LABEL_0, LABEL_1\)"):
        rewards.ClassifierReward(str(folder))


def test_long_texts_are_truncated(tmp_path, tokenizer):
    _, folder = tiny_classifier(tmp_path, tokenizer, {0: "NEGATIVE", 1: "POSITIVE"})
    assert rewards.ClassifierReward(str(folder))(["great " * 2000]).shape == (1,)


def test_vader_reward_on_obvious_sentences():
    pytest.importorskip("vaderSentiment")
    reward = rewards.build_reward("vader")
    scores = reward(TEXTS)
    assert scores.dtype == np.float32
    assert scores[0] > 0.5 and scores[1] < -0.3 and abs(scores[2]) < 0.05
    same_scores, positive = reward.score_and_verdict(TEXTS)
    np.testing.assert_array_equal(same_scores, scores)
    np.testing.assert_array_equal(positive, [True, False, False])
    verdicts, same_positive = rewards.build_reward("vader", score="verdict").score_and_verdict(
        TEXTS
    )
    assert verdicts.dtype == np.float32
    np.testing.assert_array_equal(verdicts, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(same_positive, positive)
    # A lexicon has no logit or probability: those scores pay the compound score.
    np.testing.assert_array_equal(rewards.build_reward("vader", score="log-prob")(TEXTS), scores)


def test_default_reward_needs_training(monkeypatch, tmp_path):
    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="python -m rl_lab.run reward sentiment"):
        rewards.build_reward("default")


def test_unloadable_reward_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load reward model"):
        rewards.build_reward(str(tmp_path))


@pytest.mark.parametrize("bf16", ["on", "off"])
def test_reward_model_training_end_to_end(monkeypatch, tmp_path, bf16):
    """A few steps only: the saved model loads in a pipeline and as the default reward; under
    bf16 autocast the saved weights stay fp32."""
    from rl_lab.lm.reward_model import RewardModelConfig, train_reward_model

    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path))
    cfg = RewardModelConfig(steps=2, batch_size=4, max_length=32, eval_examples=8, bf16=bf16)
    out = tmp_path / "reward-minilm-sentiment"
    card = train_reward_model(cfg, out, log=lambda line: None)
    assert card["steps"] == 2 and card["train_examples"] == 8 and card["config"]["seed"] == 0
    assert card["bf16"] is (bf16 == "on") and 0.0 <= card["accuracy"] <= 1.0
    saved = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert {p.dtype for p in saved.parameters()} == {torch.float32}
    assert {"seconds", "cpu_seconds", "load_average", "held_out", "train_data"} <= set(card)
    assert json.loads((out / "card.json").read_text())["accuracy"] == card["accuracy"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [out.name]

    classify = transformers.pipeline("text-classification", model=str(out), device="cpu")
    assert classify("A great film.")[0]["label"] in {"POSITIVE", "NEGATIVE"}
    assert rewards.build_reward("default")(["A great film."]).shape == (1,)


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=0),
        dict(lr=0.0),
        dict(lr=float("nan")),
        dict(max_length=4),
        dict(eval_max_length=1000),
        dict(eval_examples=5000),
        dict(device="tpu"),
        dict(bf16="yes"),
    ],
)
def test_reward_model_config_rejects_bad_values(bad):
    from rl_lab.lm.reward_model import RewardModelConfig

    with pytest.raises(ValueError):
        RewardModelConfig(**bad)


def test_windows_cover_a_review_evenly():
    from rl_lab.lm.reward_model import covering_windows

    assert covering_windows(list(range(10)), 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert covering_windows(list(range(8)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert covering_windows([1, 2], 4) == [[1, 2]] and covering_windows([], 4) == [[]]


def test_windowed_review_logits_average_the_windows(tmp_path, tokenizer):
    """Each review's logits are the mean of its windows' logits, in row order; a review that
    fits one window reads the same either way."""
    from rl_lab.lm.reward_model import covering_windows, pad_pieces, review_logits

    model, _ = tiny_classifier(tmp_path, tokenizer, {0: "NEGATIVE", 1: "POSITIVE"})
    rows = tokenizer(
        ["A fine film. " * 9, "Bad.", "It drags on and on, " * 5], add_special_tokens=False
    )["input_ids"]

    def logits_of(**inputs):
        return model(**inputs).logits

    windowed = review_logits(logits_of, tokenizer, rows, 10, batch_size=2, windows=True)
    with torch.no_grad():
        expected = [
            model(**pad_pieces(tokenizer, covering_windows(ids, 8))).logits.mean(0).numpy()
            for ids in rows
        ]
    np.testing.assert_allclose(windowed, np.stack(expected), rtol=1e-5, atol=1e-5)
    short = review_logits(logits_of, tokenizer, rows[1:2], 10, batch_size=2)
    np.testing.assert_allclose(windowed[1:2], short, rtol=1e-5, atol=1e-5)
