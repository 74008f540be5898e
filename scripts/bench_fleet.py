"""Fleet training speed: a vectorised fleet against the same models trained one after another,
and against the rate of plain batched matrix products of the fleet's own layer shapes.

Trains ``--models`` models of ``--task`` as one fleet, then the first ``--sequential`` of
them (same keys: same init, data order) one at a time with the Lightning module and with a
plain PyTorch loop, and prints seconds per model, validation accuracies and the ratios.

It also times, in the same run, ``torch.bmm`` on the products that training one step of K
models needs, layer by layer: the forward product [K, m, k] x [K, k, n], the weight
gradient [K, k, m] x [K, m, n] and the input gradient [K, m, n] x [K, n, k] (none for the
first layer, whose input needs no gradient); a Linear layer has m = batch, a convolution
m = batch x output pixels and k = input channels x kernel size (its im2col product). The
fleet's arithmetic rate is those FLOPs (2 m k n per product, per model and step) over its
whole training time, set-up included. The last line is that rate as a fraction of the
plain-bmm rate (total FLOPs over the summed bmm times; the faster of two measurements,
before and after the fleet).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dmm.recipe import lr_factor, make_optimizer, model_key
from dmm.tasks import Task, load_task
from dmm.training import BatchStream, train_ensemble


@dataclass(frozen=True)
class Product:
    """One matrix product of a training step, per model: [m, k] x [k, n]."""

    layer: str
    kind: str  # forward, weight-grad or input-grad
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def layer_products(task: Task, batch: int) -> list[Product]:
    """The matrix products of one training step of one model, from its layers' shapes."""
    model = task.build_model(0)
    shapes: list[tuple[str, int, int, int]] = []

    def hook(name: str):  # noqa: ANN202
        def record(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(mod, nn.Linear):
                shapes.append((name, out[..., 0].numel(), mod.in_features, mod.out_features))
            else:  # Conv2d as its im2col product
                kh, kw = mod.kernel_size
                k = mod.in_channels // mod.groups * kh * kw
                shapes.append((name, out[:, 0].numel(), k, mod.out_channels // mod.groups))
        return record

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear | nn.Conv2d):
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise ValueError("grouped convolutions are not counted")
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        model(task.data.x_train[:batch])
    products = []
    for i, (name, m, k, n) in enumerate(shapes):
        products += [Product(name, "forward", m, k, n), Product(name, "weight-grad", k, m, n)]
        if i > 0:
            products.append(Product(name, "input-grad", m, n, k))
    return products


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bmm_seconds(products: list[Product], k_models: int, device: str, reps: int = 20) -> float:
    """Summed median time of ``torch.bmm`` on each product for ``k_models`` models, in the
    layouts of a training step (the backward products read transposed operands)."""
    total = 0.0
    for p in products:
        if p.kind == "forward":  # x [K, m, k] @ W^T [K, k, n]
            a = torch.randn(k_models, p.m, p.k, device=device)
            b = torch.randn(k_models, p.n, p.k, device=device).transpose(1, 2)
        elif p.kind == "weight-grad":  # x^T [K, k, m] @ g [K, m, n]
            a = torch.randn(k_models, p.k, p.m, device=device).transpose(1, 2)
            b = torch.randn(k_models, p.k, p.n, device=device)
        else:  # g [K, m, n] @ W [K, n, k]
            a = torch.randn(k_models, p.m, p.k, device=device)
            b = torch.randn(k_models, p.k, p.n, device=device)
        out = torch.empty(k_models, p.m, p.n, device=device)
        times = []
        for r in range(reps + 2):
            sync(device)
            t0 = time.perf_counter()
            torch.bmm(a, b, out=out)
            sync(device)
            if r >= 2:
                times.append(time.perf_counter() - t0)
        total += float(np.median(times))
        del a, b, out
    return total


def plain_loop(task: Task, key: int) -> torch.nn.Module:
    """One model, one optimiser, a textbook PyTorch loop over the model's own batch stream."""
    r = task.recipe
    model = task.build_model(key)
    stream = BatchStream(np.ones((1, task.data.n_train), dtype=np.int64), [key], r.epochs,
                         r.batch_size, steps_per_epoch=r.steps_per_epoch(task.data.n_train))
    opt = make_optimizer(model.parameters(), r.optimizer, r.lr, r.momentum, r.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(r, stream.steps_per_epoch))
    x, y = task.data.x_train, task.data.y_train
    for t in range(len(stream)):
        idx = stream[t]["idx"][0]
        loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=r.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


def val_accuracy(logits: torch.Tensor, task: Task) -> np.ndarray:
    return (logits.argmax(-1) == task.data.y_val).float().mean(-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits", help="digits (MLP) or digits_cnn (CNN)")
    ap.add_argument("--models", type=int, default=256)
    ap.add_argument("--sequential", type=int, default=16,
                    help="how many of the fleet's models to also train one after another")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    task = load_task(args.task)
    r, dev = task.recipe, args.device
    keys = [model_key(args.seed, j) for j in range(args.models)]
    products = layer_products(task, r.batch_size)
    step_flops = sum(p.flops for p in products)  # per model and step
    steps = r.epochs * r.steps_per_epoch(task.data.n_train)

    bmm_before = bmm_seconds(products, args.models, dev)
    sync(dev)
    t0 = time.perf_counter()
    fleet = train_ensemble(task, keys, device=dev)
    sync(dev)
    fleet_total = time.perf_counter() - t0
    fleet_s = fleet_total / args.models
    bmm_after = bmm_seconds(products, args.models, dev)
    fleet_logits = fleet.predict(task.data.x_val)
    fleet_acc = val_accuracy(fleet_logits, task)

    seq = keys[: args.sequential]
    t0 = time.perf_counter()
    light = [train_ensemble(task, [k], device=dev) for k in seq]
    light_s = (time.perf_counter() - t0) / len(seq)
    light_logits = torch.cat([m.predict(task.data.x_val) for m in light])
    light_acc = val_accuracy(light_logits, task)

    t0 = time.perf_counter()
    plain = [plain_loop(task, k) for k in seq] if dev == "cpu" else []
    plain_s = (time.perf_counter() - t0) / max(len(plain), 1)
    with torch.no_grad():
        plain_acc = np.array([val_accuracy(m(task.data.x_val), task) for m in plain])

    n = len(seq)
    fleet_rate = step_flops * steps * args.models / fleet_total
    bmm_rate = step_flops * args.models / min(bmm_before, bmm_after)
    print(f"task {args.task}, {args.models} models, {steps} steps of batch {r.batch_size}, "
          f"{step_flops * steps / 1e9:.3f} GFLOP of matrix products to train one model")
    for p in products:
        print(f"  {p.layer:>3s} {p.kind:11s} [{p.m}, {p.k}] x [{p.k}, {p.n}]")
    print(f"fleet of {args.models}: {fleet_s * 1000:8.1f} ms/model  "
          f"val acc {fleet_acc.mean():.4f} (first {n}: {fleet_acc[:n].mean():.4f})")
    print(f"sequential Lightning ({n}): {light_s * 1000:8.1f} ms/model  "
          f"val acc {light_acc.mean():.4f}")
    if plain:
        print(f"sequential plain PyTorch ({n}): {plain_s * 1000:8.1f} ms/model  "
              f"val acc {plain_acc.mean():.4f}")
    print(f"accuracy gap fleet - sequential Lightning (same {n} models): "
          f"{(fleet_acc[:n].mean() - light_acc.mean()) * 100:+.2f} points; max |logit "
          f"difference| {(fleet_logits[:n] - light_logits).abs().max():.2e}")
    if plain:
        print(f"speed-up per model vs plain PyTorch loop: {plain_s / fleet_s:.1f}x")
    print(f"speed-up per model vs sequential Lightning: {light_s / fleet_s:.1f}x")
    work = step_flops * args.models / 1e9
    print(f"plain bmm on the fleet's layer shapes: {work / bmm_before:.1f} GFLOP/s before the "
          f"fleet, {work / bmm_after:.1f} after")
    print(f"fleet arithmetic rate {fleet_rate / 1e9:.1f} GFLOP/s = "
          f"{fleet_rate / bmm_rate:.2f} of the plain-bmm rate ({bmm_rate / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
