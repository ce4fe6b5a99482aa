"""Two PPO updates on one fixed global batch, in however many processes launch this module.

`python -m tests.lm.equivalence OUT` (one process) and `accelerate launch --num_processes 2 ...
-m tests.lm.equivalence OUT` must leave the same parameters in OUT (tests/lm/test_multiprocess.py):
each process takes every world-th row of the batch, so any statistic left un-reduced or any row
dropped or doubled by the sharding shows up as a difference.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from rl_lab.buffers import Transition
from rl_lab.lm import distributed, ppo
from tests.lm.tiny import PROMPTS, tiny_llama, tiny_tokenizer


def global_batch(tokenizer, length: int = 6):
    """Prompt + completion token ids for every prompt, EOS at varied places, and scores."""
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    completions = torch.randint(
        len(tokenizer) - 1, (len(PROMPTS), length), generator=torch.Generator().manual_seed(1)
    )
    for row in range(0, len(PROMPTS), 3):  # some completions end early: unequal token counts
        completions[row, 1 + row % (length - 1)] = tokenizer.eos_token_id
    ids = torch.cat([encoded["input_ids"], completions], dim=1)
    scores = np.linspace(-2.0, 3.0, len(PROMPTS)).astype(np.float32)
    return ids, encoded["attention_mask"], scores


def main(out: str) -> None:
    tokenizer = tiny_tokenizer()
    config = ppo.Config(
        max_new_tokens=6,
        mini_batch_size=8,
        grad_accum=2,
        ppo_epochs=2,
        lr=1e-3,
        whiten_rewards=True,
        kl_horizon=16,  # the adaptive KL coefficient moves visibly between the two updates
        threads=1,
    )
    agent = ppo.make_agent(config, tiny_llama(tokenizer), tokenizer, seed=0)
    ids, attention, scores = global_batch(tokenizer)
    rows = distributed.shard(list(range(len(PROMPTS))))
    metrics = []
    for _ in range(2):
        agent.rollout = agent.rollout_from_tokens(
            [PROMPTS[i] for i in rows], ids[rows], attention[rows]
        )
        agent.observe(Transition(None, None, scores[rows], None, None, None))
        metrics.append(agent.update())
    if distributed.is_main():
        state = {name: p.detach().clone() for name, p in agent.policy.named_parameters()}
        state["kl_coef"] = torch.tensor(agent.kl.coef, dtype=torch.float64)
        state["kl"] = torch.tensor([m["charts/kl"] for m in metrics], dtype=torch.float64)
        torch.save(state, out)
    distributed.close()


if __name__ == "__main__":
    main(sys.argv[1])
    distributed.exit_process(0)
