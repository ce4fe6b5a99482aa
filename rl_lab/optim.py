"""Optimizers for the small networks of the control side."""

from __future__ import annotations

import torch


class FlatAdam:
    """Adam (with gradient-norm clipping) over one flat buffer holding every parameter.

    The module's parameters and gradients become views into two flat tensors, so a step is
    a handful of tensor ops instead of several per parameter tensor: with small MLPs on a
    CPU, per-op overhead is most of an update, and this halves its cost. Same arithmetic as
    torch.optim.Adam (checked in tests/test_ppo.py).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        lr: float,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        params = [p for p in module.parameters() if p.requires_grad]
        self.flat = torch.cat([p.detach().flatten() for p in params])
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            size = p.numel()
            p.data = self.flat[offset : offset + size].view_as(p)
            # A defined .grad is accumulated into in place, so backward writes into self.grad.
            p.grad = self.grad[offset : offset + size].view_as(p)
            offset += size
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.lr, self.eps, self.betas, self.steps = lr, eps, betas, 0

    def zero_grad(self) -> None:
        self.grad.zero_()  # never None: the parameters' .grad views must stay in place

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale the gradient down to `max_norm` if it is longer; return the original norm."""
        norm = torch.linalg.vector_norm(self.grad)
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm

    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(self.grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.grad, self.grad, value=1.0 - beta2)
        bias1, bias2 = 1.0 - beta1**self.steps, 1.0 - beta2**self.steps
        denom = (self.exp_avg_sq / bias2).sqrt_().add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)

    def state_dict(self) -> dict:
        return {
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])


class TorchAdam:
    """torch.optim.Adam (foreach or fused kernels) behind FlatAdam's interface.

    For the ablation that decides whether FlatAdam earns its place (experiments/ablation.py,
    `--optimizer foreach|fused`). Its state_dict has FlatAdam's flat layout, so a checkpoint
    does not depend on which of the two wrote it.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        lr: float,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        kernels: str = "foreach",
    ):
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.adam = torch.optim.Adam(self.params, lr=lr, eps=eps, betas=betas, **{kernels: True})

    @property
    def lr(self) -> float:
        return self.adam.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.adam.param_groups[0]["lr"] = value

    def zero_grad(self) -> None:
        self.adam.zero_grad(set_to_none=True)

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)

    def step(self) -> None:
        self.adam.step()

    def state_dict(self) -> dict:
        states = [self.adam.state.get(p, {}) for p in self.params]

        def flat(key: str) -> torch.Tensor:
            return torch.cat(
                [
                    s[key].flatten() if key in s else p.new_zeros(p.numel())
                    for p, s in zip(self.params, states, strict=True)
                ]
            )

        steps = int(states[0]["step"]) if states and "step" in states[0] else 0
        return {"exp_avg": flat("exp_avg"), "exp_avg_sq": flat("exp_avg_sq"), "steps": steps}

    def load_state_dict(self, state: dict) -> None:
        offset = 0
        for p in self.params:
            size = p.numel()
            self.adam.state[p] = {
                "step": torch.tensor(float(state["steps"])),
                "exp_avg": state["exp_avg"][offset : offset + size].view_as(p).clone(),
                "exp_avg_sq": state["exp_avg_sq"][offset : offset + size].view_as(p).clone(),
            }
            offset += size


OPTIMIZERS = ("flat", "foreach", "fused")


def make_adam(module: torch.nn.Module, lr: float, eps: float, kind: str):
    """Adam for a control-side network: ours (`flat`) or torch's (`foreach`, `fused`)."""
    if kind == "flat":
        return FlatAdam(module, lr=lr, eps=eps)
    return TorchAdam(module, lr=lr, eps=eps, kernels=kind)
