"""Finding label errors: real Fashion-MNIST pictures and movie reviews with labels flipped on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import realdata

from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.training.audit import audit

ROOT = Path(__file__).resolve().parents[1]
FLIP_SHARE = 0.05


def flip_labels(labels: np.ndarray, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """5% of the labels moved to another class at random: (new labels, flipped indices)."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(FLIP_SHARE * len(labels))), replace=False)
    out = labels.copy()
    out[flipped] = (out[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    return out, flipped


@pytest.fixture(scope="module")
def flipped_fashion(tmp_path_factory):
    """400 Fashion-MNIST pictures of all 10 classes in class folders, 20 of them in the wrong folder."""
    images, labels, names = realdata.fashion_mnist(40, seed=3)
    labels, flipped = flip_labels(labels, len(names))
    root = realdata.write_class_zip(tmp_path_factory.mktemp("audit") / "fashion-flipped.zip", images, labels, names)
    return root, {f"{names[labels[i]]}/{i}.png" for i in flipped}


def test_cli_audit_finds_flipped_labels(flipped_fashion, tmp_path):
    """At least half of the flipped pictures are among the first 2x-flipped the audit lists."""
    data, wrong = flipped_fashion
    env = {**os.environ, "TLGUI_CACHE_DIR": str(tmp_path / "features")}
    p = subprocess.run([sys.executable, "-m", "tlgui", "audit", str(data), "--backbone", "efficientnet_lite0",
                        "--image-size", "64", "--json"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    issues = json.loads(p.stdout)
    assert issues and {"path", "given", "suggested", "score"} <= issues[0].keys()
    scores = [it["score"] for it in issues]
    assert scores == sorted(scores, reverse=True)  # most suspicious first
    assert all(it["given"] != it["suggested"] for it in issues)
    top = {it["path"] for it in issues[: 2 * len(wrong)]}
    assert len(top & wrong) >= len(wrong) / 2, (len(top & wrong), len(wrong))
    assert any(it["path"] in wrong for it in issues[:5])
    table = subprocess.run([sys.executable, "-m", "tlgui", "audit", str(data), "--image-size", "64"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert table.returncode == 0 and "likely label error" in table.stdout  # features from the cache this time


def test_text_audit_names_table_rows(tmp_path, one_thread, own_feature_cache):
    frame = realdata.movie_reviews(30, seed=2, max_chars=300)
    names = sorted(set(frame["label"]))
    labels = np.array([names.index(x) for x in frame["label"]])
    labels, flipped = flip_labels(labels, 2, seed=1)
    frame["label"] = [names[y] for y in labels]
    path = realdata.write_text_table(tmp_path / "reviews.csv", frame)
    ds = read_dataset(path)
    issues = audit(RunConfig(backbones=["minilm_l6"]), ds)
    assert issues, "no issue found among flipped reviews"
    rows = {int(i) + 2 for i in flipped}  # the header is row 1
    assert all(isinstance(it["path"], int) and it["text"] == frame["text"][it["path"] - 2] for it in issues)
    assert rows & {it["path"] for it in issues[: 2 * len(rows)]}


def test_audit_refuses_too_few_examples(tmp_path, one_thread, own_feature_cache):
    images, labels, names = realdata.fashion_mnist(3, classes=[1, 8])
    keep = np.r_[0:4]  # three trousers, one bag
    ds = read_dataset(realdata.write_class_folders(tmp_path / "few", images[keep], labels[keep], names))
    with pytest.raises(TlguiError, match="at least 2 examples"):
        audit(RunConfig(image_size=32), ds)


def test_cli_audit_bad_input_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tlgui", "audit", str(tmp_path / "missing.zip")], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not found" in p.stderr
