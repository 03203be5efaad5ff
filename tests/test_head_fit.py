"""Converged frozen heads, LP-FT, `--freeze auto`, class weights, k folds and the LR finder, on
real Fashion-MNIST pictures and the real offline EfficientNet-Lite0 (at 32 px: quick)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from realdata import fashion_mnist, write_class_zip
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.linear_model import LogisticRegression

from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.nets.backbones import build_backbone
from tlgui.nets.model import Classifier
from tlgui.outputs.bundle import load_bundle
from tlgui.outputs.evaluate import evaluate
from tlgui.training import head_fit
from tlgui.training.lr_find import lr_find
from tlgui.training.train import train

SMALL = dict(backbones=["efficientnet_lite0"], image_size=32, batch_size=16, seed=0)
CLASSES = [0, 2, 4, 6]  # t-shirt, pullover, coat, shirt: alike, so the strength of regularisation matters

pytestmark = pytest.mark.usefixtures("own_feature_cache")


@pytest.fixture(scope="module")
def features():
    """EfficientNet-Lite0 features of 240 + 120 real pictures, as stored (`raw`) and standardised with the first
    part's statistics (`x`, what the head sees; the fit standardises `raw` itself)."""
    images, labels, _ = fashion_mnist(90, classes=CLASSES)
    backbone = build_backbone("efficientnet_lite0", image_size=32).eval()
    x = torch.from_numpy(np.repeat(images[:, None], 3, axis=1)).float() / 255
    with torch.inference_mode():
        f = torch.cat([backbone(x[i:i + 60]) for i in range(0, len(x), 60)])
    order = np.random.default_rng(0).permutation(len(f))
    f, y = f[order].clone(), torch.from_numpy(labels[order])
    model = Classifier([backbone], "concat", len(CLASSES))
    model.scale.fit([f[:240]])
    return model, f, model.scale([f])[0].detach(), y


def _objective(model, x, y, c) -> float:
    logits = model.head[-1](x)  # the linear layer alone: no dropout
    w = model.head[-1].weight
    return (torch.nn.functional.cross_entropy(logits, y, reduction="sum") * c + 0.5 * (w * w).sum()).item()


def test_frozen_head_reaches_scikit_learns_optimum(features):
    model, raw, x, y = features
    tr, ytr = x[:240], y[:240]
    model.head[-1].reset_parameters()
    loss, steps = head_fit.fit(model, [raw[:240]], ytr, 1.0)
    sk = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit(tr.numpy(), ytr.numpy())
    with torch.no_grad():
        ours = _objective(model, tr, ytr, 1.0)
        model.head[-1].weight.copy_(torch.from_numpy(sk.coef_).float())
        model.head[-1].bias.copy_(torch.from_numpy(sk.intercept_).float())
        theirs = _objective(model, tr, ytr, 1.0)
    assert steps < head_fit.MAX_ITER
    assert ours <= theirs * 1.001 + 1e-3, (ours, theirs)  # at scikit-learn's optimum, within 0.1%


def test_float16_features_fit_like_float32(features):
    """Big sets keep their features as float16, which the fit reads where they lie (float32 ones it
    turns to their principal axes first): both ways reach the same head."""
    model, raw, x, y = features
    found = []
    for stored in (raw[:240], raw[:240].half()):
        with torch.no_grad():
            model.head[-1].weight.zero_()
            model.head[-1].bias.zero_()
        head_fit.fit(model, [stored], y[:240], 0.1)
        with torch.no_grad():
            found.append((_objective(model, x[:240], y[:240], 0.1), model.head[-1](x[240:]).argmax(1)))
    assert found[1][0] == pytest.approx(found[0][0], rel=0.01)
    assert (found[0][1] == found[1][1]).float().mean() > 0.95


def test_strength_is_chosen_on_validation(features):
    model, raw, x, y = features
    tr, ytr, va, yva = x[:240], y[:240], x[240:], y[240:]
    w = head_fit.walk(model, [raw[:240]], ytr, [raw[240:]], yva)
    chosen = head_fit.best_index(w.val_accuracy, w.val_loss)
    sk = [float((LogisticRegression(C=c, max_iter=5000).fit(tr.numpy(), ytr.numpy()).predict(va.numpy())
                 == yva.numpy()).mean()) for c in w.cs]
    assert len(set(w.cs)) == len(w.cs) >= 3
    assert sk[chosen] >= max(sk) - 1.5 / len(yva)  # the C scikit-learn scores best, give or take one example
    assert w.val_accuracy[chosen] == max(w.val_accuracy)


def test_class_weights_turn_on_at_three_to_one():
    assert head_fit.class_weights(np.array([0] * 29 + [1] * 10), 2, "auto") is None
    w = head_fit.class_weights(np.array([0] * 30 + [1] * 10), 2, "auto")
    assert w is not None and w[1] == pytest.approx(3 * w[0])
    assert head_fit.class_weights(np.array([0] * 30 + [1] * 10), 2, "off") is None
    assert head_fit.class_weights(np.array([0] * 10 + [1] * 10), 2, "on").tolist() == [1.0, 1.0]


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """Shirts are rare (12 against 60 t-shirts) and look like t-shirts: a balanced held-out set."""
    root = tmp_path_factory.mktemp("imbalanced")
    images, labels, names = fashion_mnist(60, classes=[0, 6])
    keep = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:12]])
    test_images, test_labels, _ = fashion_mnist(50, split="test", classes=[0, 6])
    return (write_class_zip(root / "train.zip", images[keep], labels[keep], names),
            write_class_zip(root / "test.zip", test_images, test_labels, names))


def test_class_weights_raise_the_minority_recall(imbalanced, tmp_path):
    train_zip, test_zip = imbalanced
    recall = {}
    for mode in ("auto", "off"):
        result = train(RunConfig(freeze="all", class_weights=mode, **SMALL), read_dataset(train_zip), tmp_path / mode)
        m = evaluate(load_bundle(result.bundle), read_dataset(test_zip))
        recall[mode] = next(r["recall"] for r in m["per_class"] if r["class"] == "shirt")
        assert ("class_weights" in result.metrics) == (mode == "auto")
    assert recall["auto"] > recall["off"], recall


@pytest.fixture(scope="module")
def clothes(tmp_path_factory):
    images, labels, names = fashion_mnist(24, classes=[0, 1, 7, 8])
    return write_class_zip(tmp_path_factory.mktemp("clothes") / "clothes.zip", images, labels, names)


def test_frozen_run_is_a_converged_fit(clothes, tmp_path):
    result = train(RunConfig(freeze="all", **SMALL), read_dataset(clothes), tmp_path)
    m = result.metrics
    assert m["fit_steps"] > 0 and m["refit_on_all"] and m["c"] in head_fit.C_GRID
    assert all(h["fit"] for h in result.history) and m["accuracy"] > 0.8
    assert max(h["val_loss"] for h in result.history) < np.log(4)  # the live curve scores the fit as it goes
    assert load_bundle(result.bundle).model.scale.fitted  # the statistics travel in the bundle


def test_k_folds_report_k_scores(clothes, tmp_path):
    result = train(RunConfig(freeze="all", folds=3, **SMALL), read_dataset(clothes), tmp_path)
    m = result.metrics
    assert len(m["folds"]) == 3 and m["folds_mean"] == pytest.approx(np.mean(m["folds"]))
    assert m["folds_std"] >= 0 and m["count"] == 96  # out-of-fold: every labelled picture scored
    with pytest.raises(TlguiError, match="smallest class"):
        train(RunConfig(freeze="all", folds=30, **SMALL), read_dataset(clothes), tmp_path / "too-many")


def test_auto_records_which_recipe_won(clothes, tmp_path):
    result = train(RunConfig(freeze="auto", epochs=1, budget=3600, **SMALL), read_dataset(clothes), tmp_path / "a")
    recipe = result.metrics["recipe"]
    assert recipe["lpft_ran"] and recipe["chosen"] in ("probe", "lp-ft")
    assert recipe["margin"] == pytest.approx(recipe["lpft_val_accuracy"] - recipe["probe_val_accuracy"])
    with zipfile.ZipFile(result.bundle) as z:
        assert json.loads(z.read("tlgui.json"))["metrics"]["recipe"]["chosen"] == recipe["chosen"]
        assert "auto:" in z.read("README.md").decode()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]["recipe"] == recipe
    with pytest.raises(TlguiError, match="too small for even one linear probe"):
        train(RunConfig(freeze="auto", budget=0.001, **SMALL), read_dataset(clothes), tmp_path / "b")


def test_lp_ft_starts_from_the_probe(clothes, tmp_path):
    notes = []
    result = train(RunConfig(freeze="none", epochs=1, **SMALL), read_dataset(clothes), tmp_path,
                   [lambda e: notes.append(e) if e["event"] == "note" else None])
    assert result.metrics["probe"]["fit_steps"] > 0 and "LP-FT" in notes[0]["message"]
    assert result.history[0]["val_accuracy"] > 0.6  # one epoch from a fitted head, not from a random one


def test_lr_find_suggests_a_finite_rate(clothes):
    found = lr_find(RunConfig(freeze="all", **SMALL), read_dataset(clothes), steps=30)
    assert np.isfinite(found["suggested"]) and found["lrs"][0] <= found["suggested"] <= found["lrs"][-1]
    assert found["frozen"] and len(found["losses"]) == len(found["lrs"]) >= 5


def test_an_older_bundle_without_statistics_still_loads(clothes, tmp_path):
    result = train(RunConfig(freeze="all", **SMALL), read_dataset(clothes), tmp_path)
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(result.bundle) as z, zipfile.ZipFile(old, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename == "model.safetensors":
                data = save_safetensors({k: v for k, v in load_safetensors(data).items() if not k.startswith("scale.")})
            out.writestr(info, data)
    loaded = load_bundle(old)
    assert not loaded.model.scale.fitted and loaded.predict([np.zeros((32, 32, 3), np.uint8)])[0]["label"]


def test_lr_find_command_and_bad_recipe_input(clothes, tmp_path, capsys):
    from tlgui.cli import main

    assert main(["lr-find", str(clothes), "--freeze", "all", "--image-size", "32", "--steps", "20"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("suggested lr: ")
    bad = {"--budget must be a positive number": ["--freeze", "auto", "--budget", "soon"],
           "--budget must be a positive": ["--freeze", "auto", "--budget", "-5"],
           "cannot use glove_bilstm": ["--freeze", "auto", "--backbone", "glove_bilstm"],
           "smallest class": ["--folds", "40"],
           "--folds must be": ["--folds", "1"],
           "--class-weights": ["--class-weights", "sometimes"]}
    for words, flags in bad.items():
        try:
            code = main(["train", str(clothes), "--out", str(tmp_path / "bad"), "--image-size", "32", *flags])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and words in err, (flags, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
