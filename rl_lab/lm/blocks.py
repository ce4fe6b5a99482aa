"""The transformer blocks of a causal LM: train only the top ones, and skip the frozen rest.

With `--trainable-layers N` the lower blocks never change, and neither do the embeddings: the
hidden state that enters the first trainable block is a fixed function of the tokens, the same
for the policy and for the frozen reference (a copy of the starting model). PPO computes it once
per rollout and then runs only the top blocks for the reference pass and for every minibatch of
every epoch, instead of the whole model each time (FrozenPrefix).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rl_lab.errors import UserError


def transformer_blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, block list): the longest ModuleList in the model."""
    found = max(
        (
            (parent, name, child)
            for parent in model.modules()
            for name, child in parent.named_children()
            if isinstance(child, nn.ModuleList)
        ),
        key=lambda entry: len(entry[2]),
        default=None,
    )
    if found is None:
        raise UserError(
            "--trainable-layers needs a model with a list of transformer blocks; "
            "use --trainable-layers 0 or --lora-r"
        )
    return found


def freeze_lower_layers(model: nn.Module, top: int) -> None:
    """Train only the top `top` blocks of `model.pretrained`, what follows them, and the value
    head. A model with fewer blocks trains all of them, so a preset's count fits any policy."""
    pretrained = model.pretrained
    _, _, blocks = transformer_blocks(pretrained)
    pretrained.requires_grad_(False)
    for block in list(blocks)[-top:]:
        block.requires_grad_(True)
    # The final norm sits after the blocks; embeddings (and the LM head tied to them) stay put.
    embeddings = {
        id(p) for m in pretrained.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    block_params = {id(p) for p in blocks.parameters()}
    output = pretrained.get_output_embeddings()
    out_params = {id(p) for p in output.parameters()} if output is not None else set()
    for p in pretrained.parameters():
        if id(p) not in embeddings | block_params | out_params:
            p.requires_grad_(True)


class FrozenPrefix:
    """Runs a model's top `top` blocks from a cached hidden state instead of from tokens.

    `split` is the index of the first block that runs; `hidden_states[split]` of a full
    forward pass (output_hidden_states=True) is the state that enters it. Inside `upper_only`
    the model's block list holds just the top blocks, so that passing that state as
    `inputs_embeds` continues the pass where the frozen blocks left it.
    """

    def __init__(self, pretrained: nn.Module, top: int):
        self.parent, self.name, self.blocks = transformer_blocks(pretrained)
        self.split = max(len(self.blocks) - top, 0)
        self.upper = nn.ModuleList(list(self.blocks)[self.split :])

    @contextlib.contextmanager
    def upper_only(self):
        setattr(self.parent, self.name, self.upper)
        try:
            yield
        finally:
            setattr(self.parent, self.name, self.blocks)


@torch.no_grad()
def prefix_matches(pretrained: nn.Module, prefix: FrozenPrefix, vocab_size: int) -> bool:
    """Whether the cached path gives the full pass's logits on a small left-padded batch.

    Not every architecture takes a block's output as `inputs_embeds` unchanged (GPT-2 adds
    position embeddings to it, for one); where this fails, PPO runs the whole model instead.
    """
    ids = torch.arange(12).reshape(2, 6) % vocab_size
    attention = torch.ones_like(ids)
    attention[1, :2] = 0  # a left-padded row
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    device = next(pretrained.parameters()).device
    ids, attention, positions = ids.to(device), attention.to(device), positions.to(device)
    common = dict(attention_mask=attention, position_ids=positions, use_cache=False)
    full = pretrained(input_ids=ids, output_hidden_states=True, **common)
    with prefix.upper_only():
        upper = pretrained(inputs_embeds=full.hidden_states[prefix.split], **common)
    keep = attention.bool()
    return bool(torch.allclose(full.logits[keep], upper.logits[keep], atol=1e-4, rtol=1e-4))
