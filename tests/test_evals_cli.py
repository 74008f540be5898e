"""`dmm eval`: report contents, inputs as fleets or arrays, and refusals (exit 2, one line,
nothing written)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dmm.cli import main
from dmm.evals import klom, margins
from dmm.fleet import train_fleet
from dmm.forget_sets import write_indices
from tests.conftest import TINY

N, FORGET = 4, np.array([3, 10, 42, 100, 511, 700])


@pytest.fixture(scope="module")
def fleets(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_fleets")
    kw = {"device": "cpu", "progress": False}
    paths = {
        "oracles": train_fleet(tiny, "oracle", N, root / "oracles", seed=1, forget=FORGET, **kw),
        "floor": train_fleet(tiny, "oracle", N, root / "floor", seed=2, forget=FORGET, **kw),
        "originals": train_fleet(tiny, "original", N, root / "originals", seed=3, **kw),
    }
    paths = {k: f.path for k, f in paths.items()}
    for name, key, value in (("other_task", "task", "digits"),
                             ("other_data", "fingerprint", "0123456789abcdef")):
        shutil.copytree(paths["originals"], root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        manifest[key] = value
        (root / name / "manifest.json").write_text(json.dumps(manifest))
        paths[name] = root / name
    logits = np.load(paths["originals"] / "logits.npy")
    labels = np.load(paths["originals"] / "labels.npy")
    np.save(root / "logits.npy", logits)
    np.save(root / "margins.npy", margins(logits, labels))
    np.save(root / "three.npy", logits[:3])  # one model fewer than the oracles
    np.save(root / "bad_shape.npy", logits[:, :100])
    write_indices(root / "forget.txt", FORGET)
    write_indices(root / "other_forget.txt", FORGET[:-1])
    paths.update({k: root / f"{k}.npy" for k in ("logits", "margins", "three", "bad_shape")})
    paths.update({"forget": root / "forget.txt", "other_forget": root / "other_forget.txt"})
    return paths


def run_eval(fleets, out, *extra, unlearned="originals"):
    main(["eval", "--oracles", str(fleets["oracles"]), "--unlearned", str(fleets[unlearned]),
          "--out", str(out), "--n_worst", "1", *extra])
    return json.loads((out / "report.json").read_text())


def test_report_names_references_and_directions(fleets, tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    report = run_eval(fleets, out, "--floor", str(fleets["floor"]), "--method", "do-nothing")
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["histograms.png", "klom.npy", "report.json",
                                                     "report.md"]
    k = report["metrics"]["klom"]
    nf = k["noise_floor"]
    assert (k["direction"], k["reference_models"], k["compared_models"]) == \
        ("KL(oracle || unlearned)", "oracle", "unlearned")
    assert (nf["direction"], nf["reference_models"], nf["compared_models"]) == \
        ("KL(oracle || oracle_2)", "oracle", "oracle_2")
    assert set(report["metrics"]) == {"klom", "klom_interval", "spread", "accuracy",
                                      "competition_score", "loss_attack", "ulira"}
    for name, metric in report["metrics"].items():
        if name != "ulira":  # no shadow fleet given
            assert metric["reference_models"] == "oracle", name
            assert metric["direction"], name
    sizes = {s: k["splits"][s]["n_points"] for s in ("forget", "retain", "validation")}
    n_train = tiny.data.n_train
    assert sizes == {"forget": 6, "retain": n_train - 6, "validation": tiny.data.n_val}
    assert report["forget_set"]["size"] == 6 and "manifest" in report["forget_set"]["source"]
    assert report["method"] == "do-nothing" and report["task"]["task"] == "tiny"
    assert set(k) >= {"mean_p95"} and all(
        set(k["splits"][s]) >= {"p95", "p99", "mean"} for s in sizes)
    acc = report["metrics"]["accuracy"]
    assert acc["oracle"]["forget"]["n_models"] == N and acc["unlearned"] is not None
    assert report["metrics"]["competition_score"]["score"] is not None
    lt = report["metrics"]["loss_attack"]
    assert lt["unlearned"]["n_models"] == N and 0 <= lt["oracle"]["auc_mean"] <= 1
    np.testing.assert_allclose(np.load(out / "klom.npy"), report_klom(fleets))


def report_klom(fleets):
    labels = np.load(fleets["oracles"] / "labels.npy")
    oracle = margins(np.load(fleets["oracles"] / "logits.npy"), labels)
    return klom(oracle, margins(np.load(fleets["originals"] / "logits.npy"), labels))


def test_arrays_of_logits_or_margins_give_the_same_klom(fleets, tmp_path):
    base = run_eval(fleets, tmp_path / "fleet")
    from_logits = run_eval(fleets, tmp_path / "logits", unlearned="logits")
    from_margins = run_eval(fleets, tmp_path / "margins", unlearned="margins")
    klom_of = lambda r: r["metrics"]["klom"]  # noqa: E731
    assert klom_of(from_logits) == klom_of(base) == klom_of(from_margins)
    assert from_logits["metrics"]["accuracy"] == base["metrics"]["accuracy"]
    assert from_margins["metrics"]["accuracy"]["unlearned"] is None
    assert from_margins["metrics"]["competition_score"]["score"] is None
    assert from_margins["metrics"]["loss_attack"] == base["metrics"]["loss_attack"]
    assert klom_of(base)["noise_floor"] is None and from_margins["method"] == "margins"


def test_models_option_and_overwrite(fleets, tmp_path):
    out = tmp_path / "eval"
    report = run_eval(fleets, out, "--models", "3", unlearned="three")
    assert report["metrics"]["klom"]["n_models_per_side"] == 3
    (out / "report.json").write_text("{}")
    report = run_eval(fleets, out, "--models", "3", "--overwrite", unlearned="three")
    assert report["metrics"]["klom"]["n_models_per_side"] == 3


@pytest.mark.parametrize("args, message", [
    (["--unlearned", "{three}"], "same number of models"),
    (["--unlearned", "{other_task}"], "made for task 'digits', not 'tiny'"),
    (["--unlearned", "{other_data}"], "another training set"),
    (["--unlearned", "{bad_shape}"], "has shape"),
    (["--unlearned", "{tmp}/missing.npy"], "does not exist"),
    (["--unlearned", "{forget}"], "a .npy or a .npz"),
    (["--oracles", "{originals}"], "records no forget set"),
    (["--oracles", "{originals}", "--forget", "{forget}"], "not trained on exactly"),
    (["--forget", "{other_forget}"], "no oracle for it"),
    (["--floor", "{originals}"], "noise-floor fleet"),
    (["--floor", "{oracles}"], "independent"),
    (["--models", "9"], "--models 9"),
    (["--oracles", "{logits}"], "oracle fleet directory"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(fleets, args, message, tmp_path,
                                                           capsys):
    out = tmp_path / "out" / "eval"
    names = {k: str(v) for k, v in fleets.items()}
    base = {"--oracles": names["oracles"], "--unlearned": names["originals"]}
    argv = [a.format(tmp=tmp_path, **names) for a in args]
    for flag, value in base.items():
        if flag not in argv:
            argv += [flag, value]
    with pytest.raises(SystemExit) as exc:
        main(["eval", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("dmm: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(fleets, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "precious").write_text("keep")
    with pytest.raises(SystemExit) as exc:
        run_eval(fleets, out)
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious"]


def test_u_lira_of_a_method_on_shadows(fleets, tiny, tmp_path, capsys):
    shadows = train_fleet(tiny, "datamodel", 12, tmp_path / "shadows", seed=4, save_weights=True,
                          device="cpu", progress=False)
    report = run_eval(fleets, tmp_path / "eval", "--method", "do-nothing", "--shadows",
                      str(shadows.path), "--ulira_targets", "4", "--ulira_forget", "2",
                      "--task", str(TINY))
    u = report["metrics"]["ulira"]
    assert 0 <= u["auc"] <= 1 and u["method"] == "do-nothing" and u["design"]["n_targets"] == 4
    assert "U-LiRA AUC" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--oracles", str(fleets["oracles"]), "--unlearned",
              str(fleets["originals"]), "--out", str(tmp_path / "e2"), "--shadows",
              str(shadows.path)])
    assert exc.value.code == 2 and "needs --method" in capsys.readouterr().err
