"""SCRUB: the step schedule, the updates against a hand computation, and that the
optimiser moves the student while the teacher stays frozen."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import dmm.baselines as B
from dmm.baselines.scrub import _Scrub, distill_kl
from dmm.unlearning.finetune import fit
from tests.test_baselines_common import assert_model, ce, grad, indices, plain, sgd, tiny_problem


def test_distill_kl_is_t2_times_kl_teacher_to_student():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    ref = 4.0 ** 2 * F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1),
                              reduction="none").sum(-1)
    torch.testing.assert_close(distill_kl(s, t, 4.0), ref)
    assert distill_kl(t, t, 2.0).abs().max() < 1e-6


def test_schedule_runs_max_steps_only_in_the_first_msteps_epochs():
    problem = tiny_problem()
    m = B.SCRUB(epochs=4, msteps=2, batch_size=4, forget_batch_size=2)
    sched = m.schedule(problem)
    kinds = [(name, e) for name, _, _, e in sched.steps]
    # per epoch: forget pass first (2 steps: forget sets of 3 and 4, batch 2), then retain
    # (3 steps: retain sets of 9 and 8, batch 4)
    want = []
    for e in range(4):
        want += [("forget", e)] * (2 if e < 2 else 0) + [("retain", e)] * 3
    assert kinds == want


def test_updates_match_hand_computation_with_lr_decay():
    problem = tiny_problem()
    lr, T, alpha, gamma = 0.5, 2.0, 0.3, 0.9
    m = B.SCRUB(lr=lr, epochs=2, msteps=2, batch_size=16, forget_batch_size=16, temperature=T,
                alpha=alpha, gamma=gamma, lr_decay_epochs=[1], lr_decay_rate=0.1, momentum=0.0,
                weight_decay=0.0)
    r = m(problem)
    task = problem.task
    for k in range(2):
        teacher = plain(problem, k)
        student = copy.deepcopy(teacher)
        f_idx, r_idx = indices(problem.forget[k]), indices(problem.retain[k])

        def kl(idx, student=student, teacher=teacher):
            x = task.data.x_train[idx]
            with torch.no_grad():
                t = teacher(x)
            return distill_kl(student(x), t, T).mean()

        for epoch_lr in (lr, lr * 0.1):  # epoch 2 is after decay epoch 1
            sgd(student, grad(student, -kl(f_idx)), epoch_lr)  # max-step on F
            loss = gamma * ce(student, task, r_idx) + alpha * kl(r_idx)
            sgd(student, grad(student, loss), epoch_lr)  # min-step on R
        assert_model(r.ensemble, k, student, teacher)


def test_the_optimiser_updates_the_student_and_the_teacher_never_changes():
    problem = tiny_problem()
    m = B.SCRUB(lr=0.5, epochs=3, msteps=2, batch_size=4, forget_batch_size=2)
    student = copy.deepcopy(problem.originals)
    data = m.schedule(problem)
    module = _Scrub(student, problem.task, data, m)
    optimised = {id(p) for g in module.configure_optimizers().param_groups for p in g["params"]}
    assert optimised == {id(p) for p in student.parameters()}
    assert not optimised & {id(p) for p in module.teacher.parameters()}
    fit(module, data, "cpu")
    before = problem.originals.stacked_state()
    for name, v in module.teacher.stacked_state().items():
        assert torch.equal(v, before[name])  # bit-identical
    after = student.stacked_state()
    assert all((after[n] - before[n]).abs().max() > 1e-3 for n in before)
