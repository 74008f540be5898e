"""Random Labels (RL; Golatkar et al. 2020, Graves et al. 2021; the RL step of SalUn).

Definition implemented: fine-tune on the union of the forget set, relabelled with
uniformly random *wrong* labels, and the retain set with its true labels, with CE and
minibatch SGD (one shuffled stream over F ∪ R, as in SalUn's reference code). A forget
example's label is redrawn every epoch (SalUn's code redraws it each epoch too, but over
all classes; we exclude the true class, as the issue specifies). Optimiser defaults
(SGD, momentum 0.9, weight decay 5e-4) follow SalUn's code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import FinetuneModule, examples, fit, salt, stream


def random_wrong_labels(y: torch.Tensor, forget: np.ndarray, keys: Sequence[int], epochs: int,
                        n_classes: int, name: str = "random-labels/labels") -> torch.Tensor:
    """Training labels per epoch and model, [epochs, K, n]: true labels, except that each
    model's forget examples get a label drawn uniformly from the other ``n_classes - 1``
    classes, independently per epoch (from ``default_rng([key, salt(name), epoch])``)."""
    forget = np.asarray(forget, dtype=bool)
    out = y.expand(epochs, len(keys), -1).clone()
    for e in range(epochs):
        for k, key in enumerate(keys):
            idx = np.flatnonzero(forget[k])
            rng = np.random.default_rng([key, salt(name), e])
            shift = torch.from_numpy(rng.integers(1, n_classes, size=len(idx)))
            out[e, k, idx] = (y[idx] + shift) % n_classes
    return out


class RandomLabelModule(FinetuneModule):
    """CE fine-tuning with per-epoch, per-model label tables ``labels`` [epochs, K, n]."""

    def __init__(self, ensemble: Ensemble, task: Task, labels: torch.Tensor, **opt: object):
        super().__init__(ensemble, task, **opt)
        self.register_buffer("labels", labels, persistent=False)

    def loss(self, batch: dict) -> torch.Tensor:
        table = self.labels[self.current_epoch]
        return self.ce(batch, labels=torch.gather(table, 1, batch["idx"]))


def random_label_run(problem: Problem, name: str, epochs: int, batch_size: int,
                     make: Callable[[torch.Tensor], RandomLabelModule]) -> float:
    """Run random-label fine-tuning over F ∪ R with the module ``make(labels)`` builds;
    returns the examples fed per model."""
    task, keys = problem.task, list(problem.keys)
    labels = random_wrong_labels(task.data.y_train, problem.forget, keys, epochs,
                                 task.data.n_classes, f"{name}/labels")
    data = stream(problem.trained, keys, epochs, batch_size, salt(f"{name}/data"))
    fit(make(labels), data, problem.device)
    return examples(data)


@dataclass
class RandomLabels(Finetune):
    """Fine-tuning on F with random wrong labels together with R (``epochs`` passes over
    F ∪ R; shared fine-tuning hyperparameters: :class:`Finetune`)."""

    name = "random-labels"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        def make(labels: torch.Tensor) -> RandomLabelModule:
            return RandomLabelModule(ensemble, problem.task, labels, **self.optimiser())

        return random_label_run(problem, self.name, self.epochs, self.batch_size, make)
