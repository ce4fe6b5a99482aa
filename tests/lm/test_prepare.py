"""Asset preparation: the cache lock, preparations killed half-way, and a first run's preparation
from a tiny asset set (a tiny GGUF, a tiny BERT base, a handful of reviews)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rl_lab.lm import assets

ROOT = Path(__file__).resolve().parents[2]


def start_preparation(target: Path, count: Path, tmp_path: Path, hold: bool = False):
    """A separate process that prepares target with a build counting its calls. It touches
    `started` once it holds the lock and, with `hold`, builds until another process waits;
    while waiting for the lock it touches `waiting`."""
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from rl_lab.lm import assets

        flags = Path({str(tmp_path)!r})

        def build(tmp):
            (flags / "started").write_text("x")
            with open({str(count)!r}, "a") as f:
                f.write("built\\n")
            (tmp / "weights.bin").write_text("w")
            deadline = time.monotonic() + 120
            while {hold} and not (flags / "waiting").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return {{"what": "test"}}

        def on_wait():
            print("waiting", flush=True)
            (flags / "waiting").write_text("x")

        built = assets.prepare_dir(Path({str(target)!r}), build, on_wait=on_wait)
        print("built" if built else "reused", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_two_preparations_at_once_build_once(tmp_path):
    target, count = tmp_path / "cache" / "asset", tmp_path / "count"
    first = start_preparation(target, count, tmp_path, hold=True)
    wait_for(tmp_path / "started")  # the first holds the lock, and builds until the second waits
    second = start_preparation(target, count, tmp_path)
    outputs = [
        first.communicate(timeout=180)[0].split(),
        second.communicate(timeout=180)[0].split(),
    ]
    assert first.returncode == second.returncode == 0
    assert outputs == [["built"], ["waiting", "reused"]]
    assert count.read_text() == "built\n"
    assert assets.is_complete(target) and (target / "weights.bin").read_text() == "w"
    assert assets.read_card(target)["what"] == "test"
    assert sorted(p.name for p in target.parent.iterdir()) == [".asset.lock", "asset"]


def test_a_preparation_killed_half_way_is_redone(tmp_path):
    target, count = tmp_path / "cache" / "asset", tmp_path / "count"
    process = start_preparation(target, count, tmp_path, hold=True)  # nobody waits: it holds on
    wait_for(tmp_path / "started")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not target.exists()  # the half-built dir never took the final name
    assert any(p.name.startswith(".asset.tmp-") for p in target.parent.iterdir())

    # The dead holder's lock is gone with it: this one builds at once, and sweeps the leftovers.
    built = assets.prepare_dir(target, lambda tmp: (tmp / "weights.bin").write_text("new") and {})
    assert built and (target / "weights.bin").read_text() == "new"
    assert not any(".tmp-" in p.name for p in target.parent.iterdir())


def test_a_dir_without_completion_marker_is_rebuilt_and_a_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "asset"
    target.mkdir()
    (target / "half.bin").write_text("half")  # e.g. copied by hand, or from an old version
    assert not assets.is_complete(target)

    def failing(tmp):
        (tmp / "weights.bin").write_text("w")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        assets.prepare_dir(target, failing)
    assert (target / "half.bin").exists()  # the old dir is untouched until a build completes
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())

    assert assets.prepare_dir(target, lambda tmp: {"n": (tmp / "w").write_text("w")})
    assert assets.is_complete(target) and not (target / "half.bin").exists()
    assert not assets.prepare_dir(target, failing)  # complete: reused, not rebuilt


# ---------------------------------------------------------------- a first run's preparation


REVIEWS = [
    ("a great film , i loved the acting and the story", "POSITIVE"),
    ("wonderful , moving and funny , the best film this year", "POSITIVE"),
    ("a fine cast and a great director , i loved it", "POSITIVE"),
    ("good fun , the music was great", "POSITIVE"),
    ("awful , boring and too long , i hated it", "NEGATIVE"),
    ("the worst film i have seen , bad acting", "NEGATIVE"),
    ("terrible plot , the ending is bad", "NEGATIVE"),
    ("boring , i left after an hour , awful", "NEGATIVE"),
]


def save_tiny_bert(path: Path) -> Path:
    """A tiny BERT encoder and WordPiece tokenizer, in the layout of the MiniLM package's dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for text, _ in REVIEWS for w in text.split()})
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)
    )
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_first_run_prepares_a_tiny_asset_set(tmp_path, monkeypatch, capsys):
    from rl_lab.lm import reward_model, rewards, setup
    from rl_lab.lm.progress import PrepProgress
    from tests.lm.test_assets import tiny_llama, write_gguf

    gguf_path = tmp_path / "tiny.gguf"
    write_gguf(tiny_llama(True), gguf_path)
    base = save_tiny_bert(tmp_path / "minilm")
    split = {"train": REVIEWS[:3] + REVIEWS[4:7], "eval": [REVIEWS[3], REVIEWS[7]]}
    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: gguf_path)
    monkeypatch.setattr(reward_model, "minilm_path", lambda: base)
    monkeypatch.setattr(
        reward_model, "load_reviews", lambda name: tuple(map(list, zip(*split[name])))
    )
    monkeypatch.setattr(
        reward_model,
        "RewardModelConfig",
        functools.partial(reward_model.RewardModelConfig, steps=4, batch_size=4, max_length=16),
    )

    setup.prepare("smollm2", "default", reviews=True, progress=PrepProgress(live=False))
    out = capsys.readouterr().out
    assert "prepared   convert SmolLM2 GGUF" in out and "prepared   train the reward model" in out

    card = json.loads((assets.reward_model_dir() / reward_model.CARD_FILE).read_text())
    assert card == {
        k: v for k, v in assets.read_card(assets.reward_model_dir()).items() if k in card
    }
    assert card["train_examples"] == 6 and card["steps"] == 4 and 0 <= card["accuracy"] <= 1
    assert "2 IMDB reviews of the fixed held-out split" in card["held_out"]
    model, _ = assets.load_policy("smollm2")
    assert model.config.num_hidden_layers == 2
    reward = rewards.build_reward("default")
    assert reward(["a great film", "awful"]).shape == (2,)

    # Everything is there now: a second run's preparation is a few file checks, silent.
    setup.prepare("smollm2", "default", reviews=True, progress=PrepProgress(live=False))
    assert capsys.readouterr().out == ""
