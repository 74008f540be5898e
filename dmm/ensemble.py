"""K models of one architecture that train and predict together.

Models without buffers are vectorised with ``torch.func``: each parameter is stored
stacked, ``[K, ...]``, and the forward pass is one ``vmap`` of ``functional_call``. Plain
feed-forward nets (a ``Sequential`` of ``Conv2d``, ``ReLU``, ``MaxPool2d``, ``Flatten`` and
``Linear``: the MLP and CNN of the digits tasks) skip ``vmap``: each Linear layer is one
batched matrix product on the stacked weights, each convolution one grouped convolution
over the K models' channels (channels-last), the same arithmetic without vmap's per-call
overhead and layout copies. Models with buffers (BatchNorm running statistics) fall back
to a loop over the same API.
Either way every parameter tensor separates per model, so any element-wise optimiser
(SGD with momentum and weight decay, Adam) on ``ensemble.parameters()`` with the *sum*
of the per-model losses trains the K models exactly as K separate optimisers would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def _set_tensor(module: nn.Module, name: str, value: nn.Parameter) -> None:
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    setattr(module, leaf, value)


class StackedLinear(torch.autograd.Function):
    """K linear layers at once: x [K, B, in], w [K, out, in], b [K, out] or None ->
    [K, B, out]. The backward writes each gradient in its tensor's own layout (no
    transposed copies) and skips the input gradient when the input needs none."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None  # noqa: ANN001
                ) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor  # noqa: ANN001
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


LAYERS = {nn.Linear: "linear", nn.ReLU: "relu", nn.Flatten: "flatten", nn.Conv2d: "conv",
          nn.MaxPool2d: "maxpool"}


def plain_layers(model: nn.Module) -> tuple[list[tuple[str, str]], bool] | None:
    """The layers of a plain feed-forward net as ``(kind, child name)``: a ``Sequential``
    (or a subclass that keeps its ``forward``, with no hooks) of ``Conv2d`` (zero padding,
    no groups), ``ReLU`` and ``MaxPool2d`` on images, then ``Flatten`` and
    ``Linear``/``ReLU``; and whether its input must already be flat (a Linear before any
    Flatten: only [B, F] inputs take the plain path). ``None`` for any other model."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
           or m._backward_pre_hooks for m in model.modules()):
        return None
    layers: list[tuple[str, str]] = []
    spatial, flat, flat_input = None, False, False  # spatial: still [C, H, W] per model
    for name, child in model.named_children():
        kind = LAYERS.get(type(child))
        if kind == "conv" and (child.groups != 1 or child.padding_mode != "zeros"
                               or isinstance(child.padding, str)):
            kind = None
        if kind == "maxpool" and child.return_indices:
            kind = None
        if kind == "flatten" and (child.start_dim, child.end_dim) != (1, -1):
            kind = None
        if kind in ("conv", "maxpool"):
            spatial = True if spatial is None else spatial
            kind = kind if spatial else None
        elif kind == "flatten":
            spatial, flat = False, True
        elif kind == "linear":
            if spatial:  # images reach a Linear without a Flatten: not a plain net
                kind = None
            elif not flat:
                flat_input = True
            spatial = False
        if kind is None:
            return None
        layers.append((kind, name))
    return layers, flat_input


class Ensemble(nn.Module):
    """An ensemble of K same-architecture models; ``forward`` maps [K, B, ...] to [K, B, C]."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one model")
        self.vectorised = all(next(m.buffers(), None) is None for m in models)
        self.k = len(models)
        self._plain, self._flat_input = None, False
        if self.vectorised:
            params, _ = stack_module_state(list(models))
            self.stacked = copy.deepcopy(models[0])
            for name, value in params.items():
                _set_tensor(self.stacked, name, nn.Parameter(value.detach().clone()))
            # A parameter-free skeleton to call functionally (kept out of the module tree).
            self._skeleton = [copy.deepcopy(models[0]).to("meta")]
            plain = plain_layers(models[0])
            if plain is not None:
                self._plain, self._flat_input = plain
        else:
            self.models = nn.ModuleList(models)

    def __len__(self) -> int:
        return self.k

    def _vectorised(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits [K, B, C] of a vectorised ensemble: per-model x [K, B, ...], or one
        [B, ...] for all models when ``shared``."""
        params = dict(self.stacked.named_parameters())
        if self._plain is not None and (not self._flat_input or x.dim() == 3 - shared):
            return self._plain_forward(params, x, shared)
        if shared:
            return vmap(self._functional, in_dims=(0, None))(params, x)
        return vmap(self._functional)(params, x)

    def _functional(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._skeleton[0], params, (x,))

    def _plain_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                       shared: bool) -> torch.Tensor:
        """The plain-net path. Images live as [B, k * C, H, W] in channels-last layout, so
        that each convolution is one grouped convolution (group j: model j) and pooling and
        ReLU act on all models at once; features live as [k, B, F] for the Linear layers."""
        assert self._plain is not None
        k = len(next(iter(params.values())))
        layout = "shared" if shared else "models"  # or "images": [B, k * C, H, W]
        fresh = False  # whether x is an output of ours that no backward needs (in-place ok)
        for kind, name in self._plain:
            module = getattr(self._skeleton[0], name)
            w, b = params.get(f"{name}.weight"), params.get(f"{name}.bias")
            if kind in ("conv", "maxpool") and layout == "models":
                # [k, B, C, H, W] -> [B, k * C, H, W], channels-last
                _, n, c, h, wd = x.shape
                x = x.permute(1, 3, 4, 0, 2).reshape(n, h, wd, k * c).permute(0, 3, 1, 2)
                layout = "images"
            if kind == "conv":
                if layout == "shared":  # one ordinary convolution with k * C_out filters
                    x = F.conv2d(x.contiguous(memory_format=torch.channels_last),
                                 w.flatten(0, 1), None if b is None else b.flatten(),
                                 module.stride, module.padding, module.dilation)
                else:
                    x = F.conv2d(x, w.flatten(0, 1), None if b is None else b.flatten(),
                                 module.stride, module.padding, module.dilation, groups=k)
                layout, fresh = "images", True
            elif kind == "maxpool":
                x = F.max_pool2d(x, module.kernel_size, module.stride, module.padding,
                                 module.dilation, module.ceil_mode)
                fresh = True
            elif kind == "relu":
                x = torch.relu_(x) if fresh else torch.relu(x)
                fresh = False
            elif kind == "flatten":
                if layout == "images":  # [B, k * C, H, W] -> [k, B, C * H * W]
                    n, kc, h, wd = x.shape
                    x = x.reshape(n, k, kc // k, h, wd).transpose(0, 1).reshape(k, n, -1)
                    layout = "models"
                else:
                    x = x.flatten(1 if layout == "shared" else 2)
                fresh = False
            else:  # linear
                if layout == "shared":  # one [B, in] x [in, k * out] product for all models
                    x = (x @ w.flatten(0, 1).T).view(len(x), k, -1).transpose(0, 1)
                    x = x if b is None else x + b[:, None]
                else:
                    x = StackedLinear.apply(x, w, b)
                layout, fresh = "models", True
        if layout == "shared":  # no parametrised layer at all
            x = x.expand(k, *x.shape)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-model inputs: x [K, B, ...] -> logits [K, B, C]."""
        if self.vectorised:
            return self._vectorised(x, shared=False)
        return torch.stack([m(xk) for m, xk in zip(self.models, x, strict=True)])

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """The same inputs for all models: x [B, ...] -> logits [K, B, C]."""
        if self.vectorised:
            return self._vectorised(x, shared=True)
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
