"""Fleet training speed: a vectorised fleet against the same models trained one after another.

Trains ``--models`` digits models as one fleet, then the first ``--sequential`` of them
(same keys: same init, data order) one at a time with the Lightning module and with a
plain PyTorch loop, and prints seconds per model, validation accuracies and the ratios.
The last line is the speed-up per model of the fleet over sequential Lightning training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from dmm.recipe import lr_factor, make_optimizer, model_key
from dmm.tasks import Task, load_task
from dmm.training import BatchStream, train_ensemble


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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", type=int, default=256)
    ap.add_argument("--sequential", type=int, default=16,
                    help="how many of the fleet's models to also train one after another")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    task = load_task("digits")
    keys = [model_key(args.seed, j) for j in range(args.models)]

    t0 = time.perf_counter()
    fleet = train_ensemble(task, keys, device="cpu")
    fleet_s = (time.perf_counter() - t0) / args.models
    fleet_acc = val_accuracy(fleet.predict(task.data.x_val), task)

    seq = keys[: args.sequential]
    t0 = time.perf_counter()
    light = [train_ensemble(task, [k], device="cpu") for k in seq]
    light_s = (time.perf_counter() - t0) / len(seq)
    light_acc = np.array([val_accuracy(m.predict(task.data.x_val)[0], task) for m in light])

    t0 = time.perf_counter()
    plain = [plain_loop(task, k) for k in seq]
    plain_s = (time.perf_counter() - t0) / len(seq)
    with torch.no_grad():
        plain_acc = np.array([val_accuracy(m(task.data.x_val), task) for m in plain])

    n = len(seq)
    print(f"fleet of {args.models}: {fleet_s * 1000:8.1f} ms/model  "
          f"val acc {fleet_acc.mean():.4f} (first {n}: {fleet_acc[:n].mean():.4f})")
    print(f"sequential Lightning ({n}): {light_s * 1000:8.1f} ms/model  "
          f"val acc {light_acc.mean():.4f}")
    print(f"sequential plain PyTorch ({n}): {plain_s * 1000:8.1f} ms/model  "
          f"val acc {plain_acc.mean():.4f}")
    print(f"accuracy gap fleet - sequential Lightning (same {n} models): "
          f"{(fleet_acc[:n].mean() - light_acc.mean()) * 100:+.2f} points")
    print(f"speed-up per model vs plain PyTorch loop: {plain_s / fleet_s:.1f}x")
    print(f"speed-up per model vs sequential Lightning: {light_s / fleet_s:.1f}x")


if __name__ == "__main__":
    main()
