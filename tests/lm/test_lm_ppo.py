"""LM PPO on tiny models built from configs here: KL, masks, value head, updates, learning, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from envs.text import TextEnv  # noqa: E402
from policies.value_head import CausalLMWithValueHead  # noqa: E402
from rl_lab.buffers import Transition  # noqa: E402
from rl_lab.lm import ppo  # noqa: E402
from rl_lab.run import main  # noqa: E402
from tests.lm.tiny import (  # noqa: E402
    PROMPTS,
    save_tiny_classifier,
    save_tiny_policy,
    tiny_llama,
    tiny_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def make(tokenizer, **overrides) -> ppo.LMPPOAgent:
    values = dict(max_new_tokens=8, mini_batch_size=4, ppo_epochs=1, lr=1e-2, threads=0)
    config = ppo.Config(**{**values, **overrides})
    return ppo.make_agent(config, tiny_llama(tokenizer), tokenizer, seed=0)


def rollout_with_scores(agent, prompts, scores):
    agent.act(np.array(prompts, dtype=object))
    agent.observe(Transition(None, None, np.asarray(scores, np.float32), None, None, None))


def test_value_head_shapes_and_zero_init(tokenizer):
    model = CausalLMWithValueHead(tiny_llama(tokenizer), 32)
    assert torch.count_nonzero(model.value_head.weight) == 0
    assert torch.count_nonzero(model.value_head.bias) == 0
    encoded = tokenizer(PROMPTS[:3], return_tensors="pt", padding=True)
    logits, values = model(encoded["input_ids"], encoded["attention_mask"])
    batch, length = encoded["input_ids"].shape
    assert logits.shape == (batch, length, len(tokenizer))
    assert values.shape == (batch, length)
    assert torch.count_nonzero(values) == 0


@pytest.mark.parametrize("detach", [False, True])
def test_detached_value_head_trains_the_head_alone(tokenizer, detach):
    model = CausalLMWithValueHead(tiny_llama(tokenizer), 32, detach_value=detach)
    torch.nn.init.normal_(model.value_head.weight)  # a zero head passes no gradient either way
    encoded = tokenizer(PROMPTS[:3], return_tensors="pt", padding=True)
    _, values = model(encoded["input_ids"], encoded["attention_mask"])
    values.square().mean().backward()
    assert model.value_head.weight.grad.abs().sum() > 0
    trunk = [p.grad for p in model.pretrained.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in trunk)
    assert reached != detach


def test_value_lr_gives_the_value_head_its_own_rate(tokenizer):
    assert len(make(tokenizer).optimizer.param_groups) == 1  # old checkpoints still load
    agent = make(tokenizer, lr=1e-4, value_lr=3e-3)
    body, head = agent.optimizer.param_groups
    assert (body["lr"], head["lr"]) == (1e-4, 3e-3)
    assert {id(p) for p in head["params"]} == {id(p) for p in agent.policy.value_head.parameters()}
    assert len(body["params"]) + len(head["params"]) == len(agent.trainable)


def test_left_padding_does_not_change_a_prompts_logits(tokenizer):
    model = CausalLMWithValueHead(tiny_llama(tokenizer), 32)
    alone = tokenizer(["This movie"], return_tensors="pt")
    padded = tokenizer(["This movie", "My friend said it was"], return_tensors="pt", padding=True)
    logits_alone, _ = model(alone["input_ids"], alone["attention_mask"])
    logits_padded, _ = model(padded["input_ids"], padded["attention_mask"])
    assert torch.allclose(logits_alone[0, -1], logits_padded[0, -1], atol=1e-5)


def test_response_mask_keeps_tokens_through_the_first_eos():
    eos = 0
    response = torch.tensor([[5, 6, 0, 7, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).float()
    assert torch.equal(ppo.response_mask(response, eos), expected)


def test_kl_is_exactly_zero_at_step_zero(tokenizer):
    agent = make(tokenizer)
    rollout = agent.generate(PROMPTS)
    reference = agent.reference_logprobs(rollout)
    assert torch.equal(rollout["logprobs"], reference)
    agent.rollout = rollout
    agent.rollout["scores"] = torch.zeros(len(PROMPTS))
    assert agent.update()["charts/kl"] == 0.0


def test_post_eos_and_padding_tokens_do_not_reach_the_update(tokenizer):
    """Two rollouts that differ only after each completion's EOS give identical updates."""
    agent = make(tokenizer)
    rollout = agent.generate(PROMPTS)
    twin = copy.deepcopy(agent)  # after sampling: both shuffle minibatches alike
    eos = tokenizer.eos_token_id
    p = rollout["prompt_len"]
    ids = rollout["input_ids"].clone()
    ids[:, p + 2] = eos  # every completion ends at its third token ...
    garbage = ids.clone()
    noise = torch.randint(1, len(tokenizer), garbage[:, p + 3 :].shape)
    garbage[:, p + 3 :] = noise  # ... then noise
    prompt_attention = rollout["attention_mask"][:, :p]
    clean = agent.rollout_from_tokens(PROMPTS, ids, prompt_attention)
    noisy = twin.rollout_from_tokens(PROMPTS, garbage, prompt_attention)
    assert torch.equal(clean["mask"], noisy["mask"]) and clean["mask"][:, 3:].sum() == 0
    noisy["values"][:, 3:] = 1e3  # values and log-probs past EOS must not matter either
    noisy["logprobs"][:, 3:] = -1e3
    scores = torch.linspace(-1, 1, len(PROMPTS))
    metrics = []
    for a, r in ((agent, clean), (twin, noisy)):
        a.rollout = {**r, "scores": scores}
        metrics.append(a.update())
    for key in ("charts/kl", "losses/policy_loss", "losses/value_loss", "losses/entropy"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-5, abs=1e-7), key
    for (name, a), b in zip(agent.policy.named_parameters(), twin.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_every_trainable_parameter_changes_after_one_update(tokenizer):
    agent = make(tokenizer, ppo_epochs=1, mini_batch_size=8)
    before = {name: p.detach().clone() for name, p in agent.policy.named_parameters()}
    rollout_with_scores(agent, PROMPTS, np.linspace(-1, 1, len(PROMPTS)))
    assert agent.ready()
    agent.update()
    assert not agent.ready()
    for name, p in agent.policy.named_parameters():
        assert p.requires_grad
        assert not torch.equal(before[name], p.detach()), f"{name} did not change"


def test_trainable_layers_freezes_everything_below_the_top_blocks(tokenizer):
    agent = make(tokenizer, trainable_layers=1)
    trainable = {name for name, p in agent.policy.named_parameters() if p.requires_grad}
    assert any(".layers.1." in name for name in trainable)
    assert not any(".layers.0." in name or "embed" in name for name in trainable)
    assert {"value_head.weight", "value_head.bias"} <= trainable
    assert any(name.endswith("model.norm.weight") for name in trainable)


def test_cached_frozen_blocks_give_the_same_rollout_reference_and_update(tokenizer):
    """With --trainable-layers the frozen blocks run once per rollout; nothing else changes."""
    cached, full = make(tokenizer, trainable_layers=1), make(tokenizer, trainable_layers=1)
    assert cached.prefix is not None and cached.prefix["policy"].split == 1
    full.prefix = None  # every pass through the whole model
    for agent in (cached, full):
        rollout_with_scores(agent, PROMPTS, np.linspace(-1, 1, len(PROMPTS)))
    a, b = cached.rollout, full.rollout
    assert "hidden" in a and "hidden" not in b
    assert torch.equal(a["input_ids"], b["input_ids"])
    torch.testing.assert_close(a["logprobs"], b["logprobs"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        cached.reference_logprobs(a), full.reference_logprobs(b), atol=1e-5, rtol=1e-5
    )
    cached.update(), full.update()
    for (name, p), q in zip(cached.policy.named_parameters(), full.policy.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)
    assert dict(cached.policy.named_modules()).keys() == dict(full.policy.named_modules()).keys()


def test_lora_trains_only_adapters_and_the_value_head(tokenizer):
    pytest.importorskip("peft")
    agent = make(tokenizer, lora_r=4)
    rollout = agent.generate(PROMPTS)
    assert torch.equal(rollout["logprobs"], agent.reference_logprobs(rollout))
    before = {name: p.detach().clone() for name, p in agent.policy.named_parameters()}
    agent.rollout = {**rollout, "scores": torch.linspace(-1, 1, len(PROMPTS))}
    agent.update()
    for name, p in agent.policy.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == p.requires_grad, name
        assert p.requires_grad == ("lora_" in name or name.startswith("value_head")), name


def test_adaptive_kl_controller_moves_toward_the_target():
    controller = ppo.KLController(0.2, target=6.0, horizon=100)
    controller.update(12.0, 10)  # KL too high: the penalty grows (error clipped at +20%)
    assert controller.coef == pytest.approx(0.2 * 1.02)
    fixed = ppo.KLController(0.2, target=0.0, horizon=100)
    fixed.update(100.0, 10)
    assert fixed.coef == 0.2


def test_kl_target_as_a_ceiling_never_lowers_the_coefficient_below_its_floor():
    ceiling = ppo.KLController(0.2, target=6.0, horizon=10, floor=0.2)
    ceiling.update(1.0, 10)  # KL well under the target: would fall to 0.16, held at the floor
    assert ceiling.coef == 0.2
    ceiling.update(12.0, 10)  # above it: the penalty grows as without a floor
    assert ceiling.coef == pytest.approx(0.24)
    ceiling.update(1.0, 10)  # and falls back, to the floor at most
    assert ceiling.coef == pytest.approx(0.2)


def test_a_floor_above_the_initial_kl_coefficient_is_refused():
    with pytest.raises(ValueError, match="--min-kl-coef 0.3 exceeds --init-kl-coef 0.2"):
        ppo.Config(init_kl_coef=0.2, min_kl_coef=0.3)


def test_kl_in_the_loss_adds_the_coefficient_times_the_k3_estimate():
    from rl_lab import functional as fn
    from rl_lab.ppo_update import PPOSettings, ppo_loss

    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logprobs, ref = -torch.rand(2, 3) * mask, -torch.rand(2, 3) * mask
    batch = {
        "old_logprobs": logprobs, "old_values": torch.zeros(2, 3), "advantages": torch.randn(2, 3),
        "returns": torch.randn(2, 3), "mask": mask, "ref_logprobs": ref,
    }  # fmt: skip
    values, entropy = torch.zeros(2, 3), torch.tensor(1.0)
    plain = PPOSettings(epochs=1, clip=0.2, clip_value=0.0, vf_coef=0.1)
    with_kl = PPOSettings(epochs=1, clip=0.2, clip_value=0.0, vf_coef=0.1, kl_coef=0.5)
    base, _ = ppo_loss(plain, batch, logprobs, values, entropy)
    total, _ = ppo_loss(with_kl, batch, logprobs, values, entropy)
    k3 = fn.kl_estimate(logprobs, ref, "k3")
    assert total == pytest.approx(float(base + 0.5 * (k3 * mask).sum() / mask.sum()), rel=1e-6)
    assert total > base  # k3 >= 0, and the two differ


def test_kl_in_the_loss_pulls_a_drifted_policy_back_to_the_reference(tokenizer):
    """--kl-penalty loss: with no score to chase, the loss's KL term moves the policy back
    toward the frozen reference (without it, the same updates leave most of the drift)."""
    agent = make(tokenizer, kl_penalty="loss", init_kl_coef=0.0, lr=3e-2, mini_batch_size=8)

    def kl_now() -> float:
        rollout = agent.generate(PROMPTS)
        return float(
            ((rollout["logprobs"] - agent.reference_logprobs(rollout)) * rollout["mask"]).sum()
        )

    for _ in range(3):  # drift: free updates on arbitrary scores
        rollout_with_scores(agent, PROMPTS, np.linspace(-1, 1, len(PROMPTS)))
        agent.update()
    drifted = kl_now()
    agent.kl.coef = 5.0
    for _ in range(3):
        rollout_with_scores(agent, PROMPTS, np.zeros(len(PROMPTS)))
        agent.update()
    assert drifted > 0.5 and kl_now() < 0.5 * drifted, (drifted, kl_now())


def test_mean_reward_rises_on_a_toy_reward(tokenizer):
    """Reward = how often the chosen token ("e") appears in the completion."""

    def count_reward(texts):
        return np.array([text.count("e") for text in texts], np.float32)

    agent = make(tokenizer, lr=3e-3, ppo_epochs=4, mini_batch_size=8, init_kl_coef=0.0)
    env = TextEnv(PROMPTS, count_reward, num_envs=32)
    obs, _ = env.reset(seed=0)
    means = []
    for _ in range(12):
        completions = agent.act(obs)
        obs, rewards, *_ = env.step(completions)
        agent.observe(Transition(None, None, rewards, None, None, None))
        means.append(agent.update()["charts/mean_reward"])
    print(means)
    assert np.mean(means[-3:]) > np.mean(means[:3]) + 0.5, means


def test_agent_state_round_trips(tokenizer):
    agent = make(tokenizer)
    rollout_with_scores(agent, PROMPTS, np.ones(len(PROMPTS)))
    agent.update()
    state = agent.state_dict()
    other = make(tokenizer)
    other.load_state_dict(state)
    for a, b in zip(agent.policy.parameters(), other.policy.parameters()):
        assert torch.equal(a, b)
    assert other.kl.coef == agent.kl.coef and other.iterations == 1
    assert torch.equal(other.generator.get_state(), agent.generator.get_state())


def test_an_independent_judge_is_reported_beside_the_reward(tokenizer, monkeypatch, tmp_path):
    """The held-out evaluation scores the same texts with a second scorer: judged by the
    reward itself, its numbers must equal the reward's. build_judge picks VADER for a
    classifier reward, and nothing for VADER while no reward model is prepared."""
    from rl_lab.lm.evaluation import evaluate_lm
    from rl_lab.lm.rewards import VaderReward, build_judge

    agent, vader = make(tokenizer), VaderReward()
    result = evaluate_lm(agent, vader, PROMPTS, seed=0, judge=vader)
    m = result.metrics
    assert m["judge_positive_fraction"] == m["positive_fraction"]
    assert m["judge_score"] == pytest.approx(m["mean_reward"])
    assert "judge_score" not in evaluate_lm(agent, vader, PROMPTS, seed=0).metrics
    monkeypatch.setenv("RL_LAB_CACHE", str(tmp_path))
    assert build_judge("vader") is None
    assert build_judge("some/classifier")[0] == "VADER"


def test_evaluation_scores_each_completion_once_per_scorer(tokenizer):
    """Scores and POSITIVE verdicts come from one pass (score_and_verdict), not two."""
    from rl_lab.lm.evaluation import evaluate_lm
    from rl_lab.lm.rewards import VaderReward

    class CountingVader(VaderReward):
        """Counts the texts its lexicon scores, however the reward reaches it."""

        def __init__(self):
            super().__init__()
            self.scored, lexicon = 0, self.analyzer.polarity_scores

            def counted(text):
                self.scored += 1
                return lexicon(text)

            self.analyzer.polarity_scores = counted

    reward, judge = CountingVader(), CountingVader()
    evaluate_lm(make(tokenizer), reward, PROMPTS, seed=0, judge=judge)
    assert reward.scored == judge.scored == len(PROMPTS)


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("tiny-policy"))


SMALL = [
    "--reward",
    "vader",
    "--num-envs",
    "8",
    "--mini-batch-size",
    "4",
    "--eval-episodes",
    "8",
    "--max-new-tokens",
    "6",
    "--threads",
    "0",
    "--no-dashboard",
]


def test_cli_smoke_writes_before_and_after_and_resumes(policy_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = main(
        [
            "ppo",
            "sentiment",
            "--policy",
            str(policy_dir),
            "--total-steps",
            "2",
            "--run-dir",
            str(run_dir),
            *SMALL,
        ]
    )
    assert status == 0, capsys.readouterr().err
    report = json.loads((run_dir / "eval.json").read_text())
    for key in ("mean_reward", "positive_fraction", "kl", "perplexity", "distinct_1", "distinct_2"):
        assert key in report["before"] and key in report["after"]
    assert report["before"]["kl"] == 0.0
    assert report["iterations"] == 2
    assert (run_dir / "model" / "config.json").is_file()
    assert "| prompt | before | after |" in (run_dir / "summary.md").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("charts/kl" in row and "losses/clip_fraction" in row for row in rows)

    assert main(["--resume", str(run_dir), "--total-steps", "3", "--no-dashboard"]) == 0
    assert json.loads((run_dir / "eval.json").read_text())["iterations"] == 3
    assert main(["eval", str(run_dir), "--episodes", "4"]) == 0
    assert json.loads((run_dir / "reeval.json").read_text())["prompts"] == 4


def test_several_completions_per_prompt_train_through_the_cli(policy_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["ppo", "sentiment", "--policy", str(policy_dir), "--total-steps", "1"]
    status = main([*args, "--run-dir", str(run_dir), *SMALL, "--completions-per-prompt", "4"])
    assert status == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo_config"]["completions_per_prompt"] == 4
    # 8 completions per iteration cannot come in groups of 3: one line, nothing written.
    bad = tmp_path / "bad"
    assert main([*args, "--run-dir", str(bad), *SMALL, "--completions-per-prompt", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--completions-per-prompt 3" in err
    assert len(err.splitlines()) == 1 and not bad.exists()


def test_a_classifier_reward_pays_log_prob_when_asked(policy_dir, tmp_path, capsys):
    """--reward-score log-prob reaches the classifier. Its output layer is zeroed, so every
    logit is 0 (what 'logit' would pay) and every log P(POSITIVE) is log(1/2)."""
    from transformers import AutoModelForSequenceClassification

    classifier = save_tiny_classifier(tmp_path / "classifier")
    model = AutoModelForSequenceClassification.from_pretrained(classifier)
    torch.nn.init.zeros_(model.score.weight)
    model.save_pretrained(classifier)
    args = ["ppo", "sentiment", "--policy", str(policy_dir), "--total-steps", "1"]
    args += [*SMALL, "--reward", str(classifier), "--reward-score", "log-prob"]
    run_dir = tmp_path / "run"
    assert main([*args, "--run-dir", str(run_dir)]) == 0, capsys.readouterr().err
    report = json.loads((run_dir / "eval.json").read_text())
    for when in ("before", "after"):
        assert report[when]["mean_reward"] == pytest.approx(np.log(0.5), abs=1e-5)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [row["charts/mean_reward"] for row in rows if "charts/mean_reward" in row]
    assert trained and trained == pytest.approx([np.log(0.5)] * len(trained), abs=1e-5)


@pytest.mark.parametrize("case", ["empty prompts", "context", "not causal"])
def test_bad_input_is_one_line_and_exit_2(case, policy_dir, tmp_path, capsys, monkeypatch):
    args = [
        "ppo",
        "sentiment",
        "--policy",
        str(policy_dir),
        "--total-steps",
        "1",
        "--run-dir",
        str(tmp_path / "run"),
        *SMALL,
    ]
    if case == "empty prompts":
        empty = tmp_path / "prompts.txt"
        empty.write_text("\n  \n")
        args += ["--prompts", str(empty)]
    elif case == "context":
        args += ["--max-new-tokens", "100"]  # the tiny policy's context is 64 tokens
    else:
        from transformers import BertConfig, BertForSequenceClassification

        encoder = tmp_path / "encoder"
        BertForSequenceClassification(
            BertConfig(
                vocab_size=50,
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
            )
        ).save_pretrained(encoder)
        args[3] = str(encoder)
    capsys.readouterr()  # drop save_pretrained's progress bar
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_group_centring_subtracts_the_mean_of_the_other_completions():
    scores = torch.tensor([1.0, 2.0, 6.0, -1.0, -1.0, 5.0])
    centred = ppo.centre_on_group(scores, 3)
    expected = [1 - 4, 2 - 3.5, 6 - 1.5, -1 - 2, -1 - 2, 5 + 1]
    assert centred.tolist() == pytest.approx(expected)
    # A prompt whose completions all score alike teaches nothing, whatever the score.
    assert ppo.centre_on_group(torch.full((4,), 7.0), 4).abs().max() == 0


def test_running_scores_match_the_statistics_of_all_batches():
    batches = [np.array([1.0, 2.0, 4.0]), np.array([-3.0, 0.5]), np.array([10.0, 11.0, 9.0, 2.0])]
    stats = ppo.RunningScores()
    for batch in batches:
        stats.update(torch.tensor(batch), lambda t: t)
    every = np.concatenate(batches)
    assert stats.count == len(every)
    assert stats.mean == pytest.approx(every.mean()) and stats.std == pytest.approx(every.std())


def test_normalized_scores_make_the_update_independent_of_the_reward_scale(tokenizer):
    """Scores on another scale and offset (VADER vs a classifier's logits) train alike."""
    params = []
    for scale, offset in ((1.0, 0.0), (8.0, -3.0)):
        agent = make(tokenizer)
        scores = np.linspace(-1.0, 1.0, len(PROMPTS)) * scale + offset
        rollout_with_scores(agent, PROMPTS, scores)
        agent.update()
        params.append([p.detach().clone() for p in agent.policy.parameters()])
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-5)


def test_gradient_accumulation_gives_the_update_of_whole_minibatches(tokenizer):
    """Micro-batches weighted by their tokens add up to the minibatch's own loss."""
    params = []
    for grad_accum in (1, 2):
        agent = make(tokenizer, grad_accum=grad_accum)
        rollout_with_scores(agent, PROMPTS, np.linspace(-1.0, 1.0, len(PROMPTS)))
        assert agent.update()["charts/gradient_steps"] == len(PROMPTS) // 4
        params.append([p.detach().clone() for p in agent.policy.parameters()])
    # Summing in another order moves fp32 results by ~1e-6 after Adam steps of 1e-2 (seen on an
    # AVX512/AMX machine); a micro-batch weighted wrongly turns the update by about the lr.
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-5)
