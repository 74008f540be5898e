"""K models of one architecture that train and predict together.

Models without buffers are vectorised with ``torch.func``: each parameter is stored
stacked, ``[K, ...]``, and the forward pass is one ``vmap`` of ``functional_call``. Models
with buffers (BatchNorm running statistics) fall back to a loop over the same API.
Either way every parameter tensor separates per model, so any element-wise optimiser
(SGD with momentum and weight decay, Adam) on ``ensemble.parameters()`` with the *sum*
of the per-model losses trains the K models exactly as K separate optimisers would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def _set_tensor(module: nn.Module, name: str, value: nn.Parameter) -> None:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    setattr(module, leaf, value)


class Ensemble(nn.Module):
    """An ensemble of K same-architecture models; ``forward`` maps [K, B, ...] to [K, B, C]."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one model")
        self.vectorised = all(next(m.buffers(), None) is None for m in models)
        self.k = len(models)
        if self.vectorised:
            params, _ = stack_module_state(list(models))
            self.stacked = copy.deepcopy(models[0])
            for name, value in params.items():
                _set_tensor(self.stacked, name, nn.Parameter(value.detach().clone()))
            # A parameter-free skeleton to call functionally (kept out of the module tree).
            self._skeleton = [copy.deepcopy(models[0]).to("meta")]
        else:
            self.models = nn.ModuleList(models)

    def __len__(self) -> int:
        return self.k

    def _functional(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._skeleton[0], params, (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-model inputs: x [K, B, ...] -> logits [K, B, C]."""
        if self.vectorised:
            params = dict(self.stacked.named_parameters())
            return vmap(self._functional)(params, x)
        return torch.stack([m(xk) for m, xk in zip(self.models, x, strict=True)])

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """The same inputs for all models: x [B, ...] -> logits [K, B, C]."""
        if self.vectorised:
            params = dict(self.stacked.named_parameters())
            return vmap(self._functional, in_dims=(0, None))(params, x)
        return torch.stack([m(x) for m in self.models])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """Logits of every model on every point of ``x`` in eval mode: [K, P, C] on the CPU."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [self.forward_shared(x[i : i + batch_size].to(device)).cpu()
               for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(out, dim=1)

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """Weights (and buffers) of all models, each tensor stacked [K, ...], on the CPU."""
        if self.vectorised:
            return {k: v.detach().cpu().clone() for k, v in self.stacked.state_dict().items()}
        states = [m.state_dict() for m in self.models]
        return {k: torch.stack([s[k].detach().cpu() for s in states]) for k in states[0]}

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        """The weights of model ``k`` as an ordinary state dict."""
        return {name: v[k].clone() for name, v in self.stacked_state().items()}

    @classmethod
    def from_stacked(
        cls, build: Callable[[], nn.Module], state: dict[str, torch.Tensor]
    ) -> Ensemble:
        """Rebuild an ensemble from :meth:`stacked_state` output; ``build`` makes one model."""
        k = len(next(iter(state.values())))
        models = []
        for i in range(k):
            m = build()
            m.load_state_dict({name: v[i] for name, v in state.items()})
            models.append(m)
        return cls(models)

    def select(self, indices: Sequence[int], build: Callable[[], nn.Module]) -> Ensemble:
        """A new ensemble holding copies of the models at ``indices``."""
        state = self.stacked_state()
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return Ensemble.from_stacked(build, {k: v[idx] for k, v in state.items()})
