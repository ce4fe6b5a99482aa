"""GRPO and RLOO (TRL's trainers) through our CLI on a tiny model: run directory, metrics,
saved model, learning on a toy reward, frozen blocks, eval, and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from rl_lab.lm import rewards  # noqa: E402
from rl_lab.run import main  # noqa: E402
from tests.lm.tiny import PROMPTS, save_tiny_policy  # noqa: E402


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("tiny-policy"))


def args(algo, policy_dir, run_dir, *extra):
    return [
        algo,
        "sentiment",
        "--policy",
        str(policy_dir),
        "--reward",
        "vader",
        "--num-envs",
        "8",
        "--num-generations",
        "4",
        "--eval-episodes",
        "8",
        "--max-new-tokens",
        "6",
        "--threads",
        "0",
        "--run-dir",
        str(run_dir),
        "--no-dashboard",
        *extra,
    ]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class CountE:
    """Toy reward: how often "e" appears in the completion."""

    def __call__(self, texts):
        return np.array([text.count("e") for text in texts], np.float32)

    def score_and_verdict(self, texts):
        scores = self(texts)
        return scores, scores > 1


@pytest.fixture
def count_e(monkeypatch):
    """Rewards that vary on the tiny model's gibberish (VADER scores it all 0: no gradient)."""
    monkeypatch.setattr(rewards, "build_reward", lambda name, device="cpu", score="logit": CountE())


def tensors(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_cli_run_writes_a_run_directory_like_ppo(algo, policy_dir, tmp_path, capsys, count_e):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    status = main(args(algo, policy_dir, run_dir, "--total-steps", "2", "--trainable-layers", "1"))
    assert status == 0, capsys.readouterr().err
    report = json.loads((run_dir / "eval.json").read_text())
    for key in ("mean_reward", "positive_fraction", "kl", "perplexity", "distinct_1", "distinct_2"):
        assert key in report["before"] and key in report["after"]
    assert report["before"]["kl"] == 0.0
    assert report["iterations"] == 2 and report["completions"] == 16
    summary = (run_dir / "summary.md").read_text()
    assert f"2 {algo.upper()} steps" in summary and "checkpoints/" in summary
    logged = rows(run_dir)
    assert sum("charts/episodic_return" in row for row in logged) == 16
    steps = [row for row in logged if "charts/mean_reward" in row]
    assert {row["step"] for row in steps} == {8, 16}
    assert all("charts/kl" in row and "time/sps" in row for row in steps)
    # TRL saves at the end too (the interval is 10,000 steps), with our counters beside it.
    assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert (run_dir / "checkpoints" / "checkpoint-2" / "rl_lab_run.json").is_file()

    # TRL trained the top block and the final norm only (--trainable-layers 1).
    start = tensors(AutoModelForCausalLM.from_pretrained(policy_dir))
    tuned = tensors(AutoModelForCausalLM.from_pretrained(run_dir / "model"))
    assert start.keys() == tuned.keys()
    for name in start:
        changed = not torch.equal(start[name], tuned[name])
        assert changed == (".layers.1." in name or name == "model.norm.weight"), name

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "4"]) == 0
    reeval = json.loads((run_dir / "reeval.json").read_text())
    assert reeval["prompts"] == 4 and reeval["kl"] != 0.0  # tuned weights vs the start


def test_grpo_resumes_from_its_latest_complete_checkpoint(policy_dir, tmp_path, capsys, count_e):
    from rl_lab.lm.trl_trainers import RUN_STATE

    run_dir, kept = tmp_path / "run", tmp_path / "checkpoint-2"
    extra = ["--total-steps", "2", "--checkpoint-interval", "2", "--trainable-layers", "1"]
    assert main(args("grpo", policy_dir, run_dir, *extra)) == 0, capsys.readouterr().err
    shutil.copytree(run_dir / "checkpoints" / "checkpoint-2", kept)
    before = (run_dir / "eval_before.json").read_text()
    # Extended by a step: TRL saves again at the end, and the finished run keeps only that
    # newest checkpoint (each holds the whole model and optimizer).
    assert main(["--resume", str(run_dir), "--total-steps", "3", "--no-dashboard"]) == 0
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-3"]

    # As if killed while TRL wrote step 3's checkpoint (step 2's still there, as TRL keeps two
    # while training): without our marker step 3's is not used.
    shutil.copytree(kept, run_dir / "checkpoints" / "checkpoint-2")
    (run_dir / "checkpoints" / "checkpoint-3" / RUN_STATE).unlink()
    counters = json.loads((run_dir / "checkpoints" / "checkpoint-2" / RUN_STATE).read_text())
    assert counters["updates"] == 2 and counters["env_steps"] == 16
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--total-steps", "4", "--no-dashboard"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["iterations"] == 4 and report["completions"] == 32
    assert (run_dir / "eval_before.json").read_text() == before  # the start is not re-evaluated
    logged = rows(run_dir)
    # Rows after the checkpoint (step 3's) were dropped and redone: each step once, in order.
    assert [row["step"] for row in logged if "charts/mean_reward" in row] == [8, 16, 24, 32]
    assert sum("charts/episodic_return" in row for row in logged) == 32
    assert "checkpoints/" in (run_dir / "summary.md").read_text()
    assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-4"]

    assert main(["--resume", str(run_dir), "--num-generations", "2", "--no-dashboard"]) == 2
    assert "only --total-steps may change" in capsys.readouterr().err


def test_grpo_raises_a_toy_reward(policy_dir, tmp_path, capsys, count_e):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    run_dir = tmp_path / "run"
    extra = ["--prompts", str(prompts), "--num-envs", "32", "--max-new-tokens", "8"]
    extra += ["--lr", "1e-2", "--beta", "0", "--total-steps", "20", "--trainable-layers", "0"]
    assert main(args("grpo", policy_dir, run_dir, *extra)) == 0, capsys.readouterr().err
    means = [row["charts/mean_reward"] for row in rows(run_dir) if "charts/mean_reward" in row]
    assert len(means) == 20
    assert np.mean(means[-3:]) > np.mean(means[:3]) + 0.5, means
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["after"]["mean_reward"] > report["before"]["mean_reward"]


@pytest.mark.parametrize("case", ["group", "empty prompts", "context", "too few prompts"])
def test_bad_input_is_one_line_and_exit_2(case, policy_dir, tmp_path, capsys):
    extra = ["--total-steps", "1"]
    if case == "group":
        extra += ["--num-generations", "3"]  # 8 completions per step are not groups of 3
    elif case == "empty prompts":
        (tmp_path / "prompts.txt").write_text("\n  \n")
        extra += ["--prompts", str(tmp_path / "prompts.txt")]
    elif case == "context":
        extra += ["--max-new-tokens", "100"]  # the tiny policy's context is 64 tokens
    else:
        (tmp_path / "prompts.txt").write_text("just one prompt\n")
        extra += ["--prompts", str(tmp_path / "prompts.txt")]  # a step needs 2
    run_dir = tmp_path / "run"
    assert main(args("rloo", policy_dir, run_dir, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not run_dir.exists()


def test_list_and_help_show_grpo_and_rloo(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "grpo" in out and "rloo" in out
    for algo, flag in (("grpo", "--loss-type"), ("rloo", "--normalize-advantages")):
        with pytest.raises(SystemExit) as exit_info:
            main([algo, "sentiment", "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for name in (flag, "--num-generations", "--beta", "--trainable-layers", "--total-steps"):
            assert name in out
