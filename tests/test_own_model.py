"""Your own model and data in a task YAML, by import path (class_path + init_args): built
with the task's input shape and classes, checked on its inputs, validated data, and a
one-line error (exit 2 from the CLI) for each way it can be wrong."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from dmm.config import CONFIG_DIR
from dmm.errors import DmmError
from dmm.tasks import load_task

USER_MODULE = '''
import math

import numpy as np
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, in_shape, n_classes, width=8):
        super().__init__()
        self.in_shape, self.width = in_shape, width
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width),
                                 nn.ReLU(), nn.Linear(width, n_classes))

    def forward(self, x):
        return self.net(x)


class NormNet(SmallNet):
    def __init__(self, in_shape, n_classes):
        super().__init__(in_shape, n_classes)
        self.net.insert(2, nn.BatchNorm1d(self.width))


class Fixed(nn.Module):  # declares neither in_shape nor n_classes
    def __init__(self, d=6, c=3):
        super().__init__()
        self.lin = nn.Linear(d, c)

    def forward(self, x):
        return self.lin(x)


class NotAModule:
    pass


def three_numbers():
    return 3


class ItemNet(SmallNet):  # .item() cannot run under vmap
    def forward(self, x):
        return self.net(x) * x.sum().item()


def load(n_train=40, n_val=10, d=6, classes=3, seed=0, as_mapping=False, torch_out=False,
         drop=None, nan=False, labels_offset=0, float_labels=False, short_y=False,
         other_width=False, flat_x=False):
    rng = np.random.default_rng(seed)
    x_train = rng.normal(size=(n_train, d)).astype(np.float32)
    y_train = np.arange(n_train) % classes + labels_offset
    x_val = rng.normal(size=(n_val, d + other_width)).astype(np.float32)
    y_val = np.arange(n_val) % classes
    if nan:
        x_train[3, 2] = np.nan
    if float_labels:
        y_train = y_train.astype(np.float32)
    if short_y:
        y_val = y_val[:-1]
    if flat_x:
        x_train = x_train[:, 0]
    out = dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    if torch_out:
        out = {k: torch.as_tensor(v) for k, v in out.items()}
    if drop:
        del out[drop]
    return out if as_mapping or drop else tuple(out.values())


def explode():
    raise RuntimeError("disk on fire")
'''


@pytest.fixture()
def user(tmp_path, monkeypatch):
    """A user's module ``usernets`` on sys.path, and a writer of task YAMLs using it."""
    (tmp_path / "usernets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def task_yaml(model: str = "{class_path: usernets.SmallNet, init_args: {width: 5}}",
                  data: str = "{class_path: usernets.load}", name: str = "mine") -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(f"""\
            data: {data}
            model: {model}
            recipe: {{epochs: 2, batch_size: 16, lr: 0.1, schedule: constant}}
            """))
        return str(path)

    return task_yaml


def test_class_path_model_and_data(user):
    task = load_task(user())
    assert task.name == "mine" and task.data.in_shape == (6,) and task.data.n_classes == 3
    assert (task.data.n_train, task.data.n_val) == (40, 10)
    model = task.build_model(0)
    assert type(model).__name__ == "SmallNet" and model.in_shape == (6,) and model.width == 5
    assert model(task.data.x_val).shape == (10, 3)
    assert torch.equal(task.build_model(0).net[1].weight, model.net[1].weight)
    assert task.identity()["model"] == {"class_path": "usernets.SmallNet",
                                        "init_args": {"width": 5}}
    # A loader may return a mapping of tensors; a constructor need not take in_shape.
    same = load_task(user("{class_path: usernets.Fixed}",
                          "{class_path: usernets.load, init_args: {as_mapping: true, "
                          "torch_out: true}}", "other"))
    assert same.fingerprint == task.fingerprint
    assert same.build_model(0)(same.data.x_val).shape == (10, 3)


def test_shipped_architecture_by_class_path_is_the_same_model(user, tiny):
    """``arch: mlp`` is the short form of the class dmm.tasks.models.MLP."""
    long = load_task(user("{class_path: dmm.tasks.models.MLP, init_args: {hidden: [16]}}",
                          "{source: digits}"))
    a, b = long.build_model(3), tiny.build_model(3)
    assert type(a) is type(b) and a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert tiny.identity()["model"] == {"arch": "mlp", "hidden": [16], "width": 16}
    assert long.identity()["model"] == tiny.identity()["model"]  # one model, two spellings
    # The shipped tasks name their architectures by class_path; artifacts record the same
    # identity as always, so existing checkpoints and fleet caches still load.
    assert "class_path: dmm.tasks.models.MLP" in (CONFIG_DIR / "tasks/digits.yaml").read_text()
    assert load_task("digits").identity()["model"] == {"arch": "mlp", "hidden": [128],
                                                       "width": 16}
    assert load_task("digits_cnn").identity()["model"] == {"arch": "cnn", "hidden": [128],
                                                           "width": 16}
    other = load_task(user("{class_path: dmm.tasks.models.ResNet9, init_args: {scale: 0.5}}",
                           "{source: digits}", "r"))
    assert other.identity()["model"] == {"class_path": "dmm.tasks.models.ResNet9",
                                         "init_args": {"scale": 0.5}}


def test_a_model_with_buffers_trains_through_the_loop(user, tmp_path):
    from dmm.ensemble import Ensemble
    from dmm.fleet import train_fleet

    task = load_task(user("{class_path: usernets.NormNet}"))
    assert not Ensemble([task.build_model(0)]).vectorised
    assert Ensemble([load_task(user()).build_model(0)]).vectorised
    fleet = train_fleet(task, "original", 2, tmp_path / "fleet", device="cpu", progress=False)
    assert fleet.logits.shape == (2, 50, 3) and np.isfinite(fleet.logits).all()


@pytest.mark.parametrize("model, message", [
    ("{class_path: nosuchpkg.nets.Net}", "cannot import nosuchpkg.nets: ModuleNotFoundError"),
    ("{class_path: usernets.Missing}", "module usernets has no 'Missing'"),
    ("{class_path: SmallNet}", "must be an import path"),
    ("{class_path: usernets.NotAModule}", "'usernets.NotAModule' is not an nn.Module"),
    ("{class_path: usernets.three_numbers}", "returned a int, not an nn.Module"),
    ("{class_path: usernets.SmallNet, init_args: {depth: 3}}",
     "failed: TypeError: SmallNet.__init__() got an unexpected keyword argument 'depth'"),
    ("{class_path: usernets.SmallNet, init_args: {n_classes: 3}}",
     "init_args must not set n_classes"),
    ("{class_path: usernets.Fixed, init_args: {c: 4}}", "outputs [2, 4] for a batch"),
    ("{class_path: usernets.Fixed, init_args: {d: 5}}", "fails on a batch of the task's inputs"),
    ("{class_path: usernets.ItemNet}", "does not run under torch.func.vmap"),
    ("{class_path: usernets.SmallNet, arch: mlp}",
     "model: with a class_path, give only class_path and init_args (not arch)"),
    ("{arch: mlp, init_args: {width: 3}}", "init_args need a class_path"),
])
def test_model_errors(user, model, message):
    with pytest.raises(DmmError) as e:
        load_task(user(model))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("init_args, message", [
    ("{drop: y_val}", "lacks y_val"),
    ("{nan: true}", "x_train holds NaN or infinite values"),
    ("{labels_offset: -1}", "labels must be integers 0..C-1, y_train has -1"),
    ("{float_labels: true}", "y_train must hold integer labels"),
    ("{short_y: true}", "y_val must hold one label per input (10)"),
    ("{other_width: true}", "train and validation inputs have different shapes"),
    ("{flat_x: true}", "x_train must be a non-empty [N, ...] array"),
    ("{n_val: 0}", "x_val must be a non-empty"),
    ("{bogus: 1}", "failed: TypeError"),
])
def test_data_errors(user, init_args, message):
    with pytest.raises(DmmError) as e:
        load_task(user(data=f"{{class_path: usernets.load, init_args: {init_args}}}"))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("data, message", [
    ("{class_path: usernets.explode}", "failed: RuntimeError: disk on fire"),
    ("{class_path: usernets.three_numbers}", "must hold x_train, y_train, x_val, y_val"),
    ("{class_path: usernets.SmallNet.nope}", "cannot import usernets.SmallNet"),
    ("{class_path: usernets.load, source: digits}", "give only class_path and init_args"),
    ("{source: digits, init_args: {seed: 1}}", "init_args need a class_path"),
])
def test_loader_errors(user, data, message):
    with pytest.raises(DmmError) as e:
        load_task(user(data=data))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_loader_takes_no_data_path(user, tmp_path):
    with pytest.raises(DmmError, match="takes no --data"):
        load_task(user(), tmp_path / "x.npz")


def test_cli_refuses_a_bad_class_path_with_one_line(user, tmp_path, capsys):
    from dmm.cli import main

    task = user("{class_path: usernets.Fixed, init_args: {c: 4}}")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", task, "--out", str(tmp_path / "out" / "m.ckpt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("dmm: error: model ")
    assert "not [2, 3]" in err[0] and not (tmp_path / "out").exists()


def test_unlearn_asks_for_the_yaml_of_a_checkpoint_of_your_own_task(user, tmp_path, capsys):
    from dmm.checkpoint import save_checkpoint
    from dmm.cli import main

    task = load_task(user())
    save_checkpoint(tmp_path / "m.ckpt", task, task.build_model(0).state_dict())
    (tmp_path / "f.txt").write_text("1\n")
    argv = ["unlearn", "--checkpoint", str(tmp_path / "m.ckpt"), "--forget",
            str(tmp_path / "f.txt"), "--method", "gd", "--out", str(tmp_path / "out.ckpt")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and not (tmp_path / "out.ckpt").exists()
    assert "is of task 'mine', not a shipped one: give its task YAML with --task" in err[0]
    main(argv + ["--task", user(), "--set", "epochs=1", "--device", "cpu"])
    assert (tmp_path / "out.ckpt").is_file() and (tmp_path / "out.json").is_file()
