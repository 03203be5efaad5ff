"""Every kind of transfer on real pictures: parameters from an earlier bundle (`--init`), structure
only (`--no-pretrained`), a training recipe (`--config`), and what the model card says of each."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from realdata import animal_mnist, fashion_mnist, write_class_zip

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.nets.backbones import build_backbone
from tlgui.outputs.bundle import init_from_bundle, load_bundle, transfer_kind
from tlgui.training.inputs import build_classifier
from tlgui.training.pretrain import PretrainConfig, pretrain, read_images
from tlgui.training.train import train

SMALL = dict(image_size=32, batch_size=16, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread", "own_feature_cache")


@pytest.fixture(scope="module")
def clothes(tmp_path_factory):
    """Two disjoint samples of the ten Fashion-MNIST classes: the earlier run's data and the new data."""
    root = tmp_path_factory.mktemp("clothes")
    images, labels, names = fashion_mnist(40, seed=0)
    first, second = [], []
    for c in range(10):  # rows are grouped by class: half of each class to each sample
        rows = np.flatnonzero(labels == c)
        first += rows[:20].tolist()
        second += rows[20:].tolist()
    return (write_class_zip(root / "earlier.zip", images[first], labels[first], names),
            write_class_zip(root / "new.zip", images[second], labels[second], names))


@pytest.fixture(scope="module")
def earlier(clothes, tmp_path_factory):
    """An earlier model: MobileNetV2 (not the default backbone) at 32 px, frozen."""
    out = tmp_path_factory.mktemp("earlier")
    config = RunConfig(backbones=["mobilenet_v2"], freeze="all", epochs=10, lr=3e-3, patience=0, **SMALL)
    return train(config, read_dataset(clothes[0]), out)


def test_init_from_an_earlier_bundle_starts_from_its_accuracy(earlier, clothes, tmp_path, capsys):
    """`train NEW --init earlier/model.zip` alone: the earlier network (backbone, input size) and its
    head, so the first epoch on new data is already about as good as the earlier run ended."""
    code = main(["train", str(clothes[1]), "--init", str(earlier.bundle), "--freeze", "all", "--epochs", "1",
                 "--patience", "0", "--out", str(tmp_path / "init")])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert config["backbones"] == ["mobilenet_v2"] and config["image_size"] == 32
    fresh = train(RunConfig(backbones=["mobilenet_v2"], freeze="all", epochs=1, patience=0, **SMALL),
                  read_dataset(clothes[1]), tmp_path / "fresh")
    # a frozen head is fitted to convergence, so where it starts no longer shows in its first epoch:
    # the run from the earlier bundle ends as good as the earlier run and as a fresh one
    ended = json.loads((tmp_path / "init" / "results.json").read_text())["metrics"]["accuracy"]
    assert earlier.metrics["accuracy"] > 0.5  # chance is 0.1
    assert ended >= earlier.metrics["accuracy"] - 0.15 and ended >= fresh.metrics["accuracy"] - 0.05
    card = zipfile.ZipFile(tmp_path / "init" / "model.zip").read("README.md").decode()
    assert "Transfer: parameters: started from an earlier tlgui model (model.zip), feature extraction" in card


def test_init_with_other_classes_keeps_the_backbone_and_puts_on_a_new_head(clothes, tmp_path):
    images, labels, names = fashion_mnist(12, seed=3, classes=[0, 1, 7, 8])
    tuned = train(RunConfig(backbones=["efficientnet_lite0"], freeze="none", epochs=1, **SMALL),
                  read_dataset(write_class_zip(tmp_path / "four.zip", images, labels, names)), tmp_path / "tuned")
    other = ["bear", "cat", "cow"]
    model = build_classifier(RunConfig(backbones=["efficientnet_lite0"], freeze="all", **SMALL), len(other))
    head = model.head[1].weight.detach().clone()
    taken = init_from_bundle(model, tuned.bundle, other)
    assert taken["head"] is False and torch.equal(model.head[1].weight, head)
    tuned_state = load_bundle(tuned.bundle).model.state_dict()
    imagenet = build_backbone("efficientnet_lite0", image_size=32).state_dict()
    for name, tensor in model.backbones[0].state_dict().items():
        assert torch.equal(tensor, tuned_state[f"backbones.0.{name}"])
    assert any(not torch.equal(imagenet[k], tuned_state[f"backbones.0.{k}"]) for k in imagenet)  # fine-tuning moved it
    animals, a_labels, a_names = animal_mnist(10, classes=[0, 2, 3])
    result = train(RunConfig(backbones=["efficientnet_lite0"], freeze="all", init=str(tuned.bundle), epochs=1, **SMALL),
                   read_dataset(write_class_zip(tmp_path / "animals.zip", animals, a_labels, a_names)), tmp_path / "b")
    assert result.status == "finished" and load_bundle(result.bundle).classes == a_names


def test_no_pretraining_same_architecture_random_weights_trains(tmp_path):
    images, labels, names = fashion_mnist(20, seed=4, classes=[0, 1, 7, 8])
    data = read_dataset(write_class_zip(tmp_path / "four.zip", images, labels, names))
    # from scratch on a few pictures: no augmentation and one learning rate, so that it can fit them quickly
    result = train(RunConfig(backbones=["efficientnet_lite0"], pretrained=False, freeze="none", epochs=5, lr=3e-3,
                             backbone_lr_scale=1.0, augment=False, patience=0, **SMALL), data, tmp_path / "run")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    loaded = load_bundle(result.bundle)
    assert loaded.meta["config"]["pretrained"] is False
    assert loaded.meta["transfer"].startswith("structure only")
    imagenet = build_backbone("efficientnet_lite0", image_size=32).body.state_dict()
    mine = loaded.model.backbones[0].body.state_dict()
    assert mine.keys() == imagenet.keys()  # the same architecture ...
    first = next(k for k, v in imagenet.items() if v.dim() == 4)
    assert not torch.allclose(mine[first], imagenet[first], atol=1e-2)  # ... without the ImageNet weights


def test_no_pretraining_of_an_own_encoder_is_its_architecture_only(tmp_path):
    images, labels, names = fashion_mnist(8, seed=6)
    pictures = write_class_zip(tmp_path / "pictures.zip", images, labels, names)
    encoder = pretrain(PretrainConfig(epochs=1, image_size=32, batch_size=16), read_images(pictures), tmp_path / "enc")
    config = RunConfig(backbones=[str(encoder.bundle)], pretrained=False, freeze="none", epochs=1, **SMALL)
    model = build_classifier(config, 10)
    trained = encoder.model.encoder.state_dict()
    random = model.backbones[0].body.state_dict()
    assert random.keys() == trained.keys()
    assert not torch.equal(random["blocks.0.0.weight"], trained["blocks.0.0.weight"])
    assert transfer_kind(config).startswith("structure only")


def test_a_saved_recipe_reproduces_the_settings_on_another_dataset(tmp_path, capsys):
    images, labels, names = fashion_mnist(8, classes=[1, 8, 9])
    clothes = write_class_zip(tmp_path / "clothes.zip", images, labels, names)
    animals, a_labels, a_names = animal_mnist(8, classes=[0, 4, 9])
    zoo = write_class_zip(tmp_path / "animals.zip", animals, a_labels, a_names)
    first = ["train", str(clothes), "--out", str(tmp_path / "one"), "--backbone", "mobilenet_v2", "--freeze", "all",
             "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--optimizer", "sgd", "--label-smoothing", "0.1",
             "--image-size", "32", "--val-split", "0.25", "--seed", "3", "--patience", "0"]
    assert main(first) == 0
    assert main(["train", str(zoo), "--config", str(tmp_path / "one" / "config.json"), "--epochs", "1",
                 "--out", str(tmp_path / "two")]) == 0, capsys.readouterr().err
    one = json.loads((tmp_path / "one" / "config.json").read_text())
    two = json.loads((tmp_path / "two" / "config.json").read_text())
    assert one["optimizer"] == "sgd" and one["label_smoothing"] == 0.1 and one["seed"] == 3
    assert two == {**one, "epochs": 1}  # everything else as the recipe says
    assert load_bundle(tmp_path / "two").classes == a_names


@pytest.mark.parametrize("settings, words", [
    (dict(freeze="all"), "parameters: pretrained weights, feature extraction (backbone frozen)"),
    (dict(freeze="none"), "parameters: pretrained weights, full fine-tuning"),
    (dict(freeze="3"), "parameters: pretrained weights, partial fine-tuning (first 3 stages frozen)"),
    (dict(pretrained=False), "structure only: same architecture, randomly initialised (no pretraining)"),
    (dict(backbones=["runs/a/encoder.zip"], freeze="all"),
     "parameters: own encoder pretrained without labels, feature extraction"),
    (dict(backbones=["efficientnet_lite0", "runs/a/encoder.zip"], freeze="none"),
     "parameters: own encoder pretrained without labels fused with pretrained backbones, full fine-tuning"),
    (dict(backbones=["runs/a/encoder.zip"], pretrained=False), "structure only"),
    (dict(init="runs/b/model.zip"), "parameters: started from an earlier tlgui model (model.zip), feature extraction "
                                  "(backbone frozen) or LP-FT"),
])
def test_model_card_names_the_kind_of_transfer(settings, words):
    assert transfer_kind(RunConfig(**settings)).startswith(words)
