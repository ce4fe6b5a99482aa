"""A causal language model with a scalar value head on its last hidden state (LM PPO's critic).

The head starts at zero: the first value estimates are 0 and the first value-loss gradient
cannot reach the trunk through a zero weight, so the pretrained model is left alone until the
head has learned something. The module takes positions from the attention mask, so a
left-padded prompt sees the same positions as it would unpadded.
"""

from __future__ import annotations

import torch
from torch import nn


class CausalLMWithValueHead(nn.Module):
    """`forward(input_ids, attention_mask) -> (logits [B, L, V], values [B, L])`."""

    def __init__(self, pretrained: nn.Module, hidden_size: int, detach_value: bool = False):
        super().__init__()
        self.pretrained = pretrained
        # detach_value: the value loss trains the head alone, never the blocks the policy uses.
        self.detach_value = detach_value
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids that start at 0 on each row's first real token (left padding)."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        inputs_embeds: torch.Tensor | None = None,
        hidden_at: int | None = None,
    ):
        """`inputs_embeds` replaces the token embeddings (PPO feeds a cached block output there,
        see rl_lab.lm.blocks); `hidden_at=i` also returns the hidden state entering block i."""
        tokens = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {}
        out = self.pretrained(
            input_ids=None if tokens else input_ids,
            attention_mask=attention_mask,
            position_ids=self.positions(attention_mask),
            output_hidden_states=True,
            use_cache=False,
            **tokens,
        )
        hidden = out.hidden_states[-1]
        if self.detach_value:
            hidden = hidden.detach()
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        if hidden_at is None:
            return out.logits, values
        return out.logits, values, out.hidden_states[hidden_at]


def hidden_size(config) -> int:
    """The width of a transformers config's last hidden state (hidden_size, n_embd, d_model)."""
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the hidden size of a {type(config).__name__}")
