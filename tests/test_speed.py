"""Speed machinery: the frozen-feature disk cache, the time estimate, and the CPU settings.

Real pretrained EfficientNet-Lite0 weights and real Fashion-MNIST pictures, at 32 px to stay quick.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.realdata import fashion_mnist, write_class_folders
from tlgui.config import RunConfig
from tlgui.data.batches import cpu_threads
from tlgui.data.datasets import read_dataset
from tlgui.nets.backbones import FeatureExtractor, build_backbone
from tlgui.training import estimate as estimate_mod
from tlgui.training import timing
from tlgui.training.estimate import estimate_run
from tlgui.training.featcache import SHARD_ROWS, FeatureCache, backbone_key
from tlgui.training.train import train

SIZE = 32


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TLGUI_CACHE_DIR", str(root))
    monkeypatch.setenv("TLGUI_CACHE_MB", "64")
    return root


def _dataset(root: Path, n_per_class: int = 6, seed: int = 0):
    images, labels, names = fashion_mnist(n_per_class, seed=seed, classes=[0, 1, 7])
    return read_dataset(write_class_folders(root, images, labels, names))


class _BackboneCalls:
    """Counts the inputs that go through any backbone's forward pass (a global forward hook)."""

    def __init__(self):
        self.inputs = 0

    def __enter__(self):
        def hook(module, args, output):
            if isinstance(module, FeatureExtractor):
                self.inputs += len(args[0])

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _config(**kw) -> RunConfig:
    return RunConfig(**{"backbones": ["efficientnet_lite0"], "freeze": "all", "image_size": SIZE, "epochs": 2,
                        "batch_size": 8, "patience": 0, **kw})


# -- the cache in a run ----------------------------------------------------------------------
def test_second_run_reads_the_cache_and_skips_the_backbone(tmp_path, cache_dir):
    ds = _dataset(tmp_path / "data")
    cold = estimate_run(_config(), ds)
    events: list[dict] = []
    threads: list[int] = []
    before = torch.get_num_threads()

    def listen(e):
        events.append(e)
        if e["event"] in ("batch", "epoch"):  # a frozen head's fit reports its points as epochs
            threads.append(torch.get_num_threads())

    with _BackboneCalls() as first:
        r1 = train(_config(), ds, tmp_path / "run1")
    with _BackboneCalls() as second:
        r2 = train(_config(), ds, tmp_path / "run2", [listen])
    assert first.inputs == len(ds)  # every picture once; the estimate's probe is not part of the run
    assert second.inputs == 0
    assert [e["what"] for e in events if e["event"] == "preparing"] == ["cached features"]
    # the stored features are the computed ones, bit for bit: the same seed gives the same run
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    assert r1.metrics["accuracy"] == r2.metrics["accuracy"]
    warm = next(e for e in events if e["event"] == "started")["estimate"]
    assert cold["cached"] == 0 and cold["features"] > 0 and cold["decode"] > 0
    assert warm["cached"] == len(ds) and warm["features"] == 0 and warm["decode"] == 0
    # the head trains on stored features in one CPU thread; the count comes back afterwards
    assert threads and set(threads) == {1} and torch.get_num_threads() == before


def test_changed_and_added_pictures_are_the_only_ones_computed(tmp_path, cache_dir):
    images, labels, names = fashion_mnist(6, classes=[0, 1, 7])
    first = np.array([i for i in range(len(labels)) if (labels[: i + 1] == labels[i]).sum() <= 5])
    ds = read_dataset(write_class_folders(tmp_path / "a", images[first], labels[first], names))
    train(_config(epochs=1), ds, tmp_path / "run1")
    changed = images.copy()
    changed[0] = 255 - changed[0]  # one picture edited, three added
    more = read_dataset(write_class_folders(tmp_path / "b", changed, labels, names))
    new = sum(d not in set(ds.digests) for d in more.digests)
    assert new == 4
    with _BackboneCalls() as calls:
        train(_config(epochs=1), more, tmp_path / "run2")
    assert calls.inputs == new


def test_augmented_runs_store_nothing_and_zero_megabytes_turn_the_cache_off(tmp_path, cache_dir, monkeypatch):
    ds = _dataset(tmp_path / "data", n_per_class=3)
    train(_config(epochs=1, augment=True), ds, tmp_path / "run")  # augmented pictures differ each epoch
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.safetensors"))
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")
    assert FeatureCache.from_env() is None
    FeatureCache(cache_dir, max_bytes=0).store("k", ["a"], _feats(1))
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.safetensors"))


# -- keys ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    return build_backbone("efficientnet_lite0", pretrained=True, image_size=SIZE)


def test_key_follows_backbone_size_weights_and_precision(lite0):
    base = backbone_key(lite0, SIZE, "cpu:torch.float32")
    assert base == backbone_key(lite0, SIZE, "cpu:torch.float32")
    assert base != backbone_key(lite0, 48, "cpu:torch.float32")  # decoded at another size
    assert base != backbone_key(lite0, SIZE, "cuda:torch.bfloat16")
    assert base != backbone_key(build_backbone("efficientnet_lite0", True, image_size=48), SIZE, "cpu:torch.float32")
    assert base != backbone_key(build_backbone("efficientnet_lite1", True, image_size=SIZE), SIZE, "cpu:torch.float32")
    torch.manual_seed(0)
    random_a = build_backbone("efficientnet_lite0", pretrained=False, image_size=SIZE)
    torch.manual_seed(0)
    random_b = build_backbone("efficientnet_lite0", pretrained=False, image_size=SIZE)
    key_a = backbone_key(random_a, SIZE, "cpu:torch.float32")
    assert key_a != base  # same name, other weights
    assert key_a == backbone_key(random_b, SIZE, "cpu:torch.float32")  # the same weights share features
    with torch.no_grad():
        next(random_b.parameters()).view(-1)[0] += 1e-3
    assert backbone_key(random_b, SIZE, "cpu:torch.float32") != key_a


# -- the store itself ----------------------------------------------------------------------
def _feats(n: int, seed: int = 0, dim: int = 16) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_store_and_load_by_digest(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=1 << 30)
    digests = [f"d{i}" for i in range(SHARD_ROWS + 10)]  # two shards
    feats = _feats(len(digests))
    cache.store("k", digests, feats)
    got = cache.load("k", digests[5:9] + ["absent"])
    assert sorted(got) == digests[5:9]
    assert torch.equal(torch.stack([got[d] for d in digests[5:9]]), feats[5:9])
    assert cache.load("other-key", digests) == {}
    assert cache.present("k", ["d0", "absent", f"d{SHARD_ROWS + 1}"]) == {"d0", f"d{SHARD_ROWS + 1}"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_shard_is_ignored_and_written_again(tmp_path, damage):
    cache = FeatureCache(tmp_path, max_bytes=1 << 30)
    digests, feats = ["a", "b", "c"], _feats(3)
    cache.store("k", digests, feats)
    (shard,) = list(tmp_path.glob("k/*.safetensors"))
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) - 7])  # a writer that died mid-file (without the rename)
    elif damage == "flip":
        shard.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])  # one bad byte in the numbers
    else:
        shard.write_bytes(b"not a safetensors file at all")
    assert cache.load("k", digests) == {}
    assert not shard.exists()  # dropped, so it cannot mislead the next reader
    cache.store("k", digests, feats)
    got = cache.load("k", digests)
    assert torch.equal(torch.stack([got[d] for d in digests]), feats)


def test_eviction_keeps_the_bound_and_the_recently_used(tmp_path):
    one = FeatureCache(tmp_path / "probe", max_bytes=1 << 30)
    one.store("k", ["x"], _feats(1, dim=256))
    shard_size = one.size_bytes()
    cache = FeatureCache(tmp_path / "c", max_bytes=int(shard_size * 3.5))
    for i in range(3):
        cache.store(f"k{i}", [f"x{i}"], _feats(1, seed=i, dim=256))
        for p in (tmp_path / "c" / f"k{i}").glob("*.safetensors"):
            os.utime(p, (1000 + i, 1000 + i))  # a clear order: k0 oldest
    assert cache.load("k0", ["x0"])  # a hit makes k0 the most recent
    cache.store("k3", ["x3"], _feats(1, seed=3, dim=256))
    cache.store("k4", ["x4"], _feats(1, seed=4, dim=256))
    assert cache.size_bytes() <= cache.max_bytes
    assert cache.load("k1", ["x1"]) == {} and cache.load("k2", ["x2"]) == {}  # least recently used went
    assert cache.load("k0", ["x0"]) and cache.load("k4", ["x4"])
    foreign = tmp_path / "c" / "mine" / "weights.safetensors"  # a user's file in a shared folder stays
    foreign.parent.mkdir()
    foreign.write_bytes(b"x" * 10_000)
    FeatureCache(tmp_path / "c", max_bytes=1).evict()
    assert foreign.exists() and cache.size_bytes() == 0


def test_concurrent_writers_and_an_evicting_reader_all_succeed(tmp_path):
    digests, feats = [f"d{i}" for i in range(40)], _feats(40)
    root, errors = tmp_path / "shared", []
    start = threading.Barrier(4)

    def writer():
        try:
            start.wait()
            for _ in range(15):
                FeatureCache(root, max_bytes=1 << 30).store("k", digests, feats)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    def reader():
        try:
            start.wait()
            tight = FeatureCache(root, max_bytes=1)  # evicts everything it finds, while others write
            for _ in range(15):
                got = tight.load("k", digests)
                for d, row in got.items():  # whatever is read is whole and right
                    assert torch.equal(row, feats[digests.index(d)])
                tight.evict()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    FeatureCache(root, max_bytes=1 << 30).store("k", digests, feats)
    got = FeatureCache(root, max_bytes=1 << 30).load("k", digests)
    assert torch.equal(torch.stack([got[d] for d in digests]), feats)
    assert not list(root.glob("k/*.tmp"))  # no temporary file left behind


# -- the estimate --------------------------------------------------------------------------
def test_estimate_structure_and_scaling(tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")
    small = _dataset(tmp_path / "s", n_per_class=4)
    big = _dataset(tmp_path / "b", n_per_class=8)
    cfg = _config()
    e_small, e_big = estimate_run(cfg, small), estimate_run(cfg, big)
    for e in (e_small, e_big):
        assert {"setup", "decode", "features", "prepare", "epoch", "epochs", "finish", "total", "text"} <= e.keys()
        assert all(e[k] >= 0 for k in ("setup", "decode", "features", "epoch", "finish"))
        parts = e["setup"] + e["prepare"] + e["epochs"] * e["epoch"] + e["finish"]
        assert e["total"] == pytest.approx(parts)
        assert e["features"] > 0 and e["text"].endswith(("s", "min"))
    # the per-picture costs are measured once, so twice the pictures cost twice the time
    assert e_big["features"] == pytest.approx(2 * e_small["features"], rel=1e-6)
    assert e_big["epochs"] * e_big["epoch"] > e_small["epochs"] * e_small["epoch"]
    longer = estimate_run(_config(epochs=6), small)
    assert longer["epoch"] == e_small["epoch"] and longer["epochs"] == 6


def test_estimate_of_a_fine_tune_counts_training_steps_and_leaves_random_streams_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_CACHE_MB", "0")
    ds = _dataset(tmp_path / "s", n_per_class=3)
    frozen = estimate_run(_config(), ds)
    short = estimate_run(_config(freeze="none"), ds)  # too short to be worth timing a training step
    assert short["features"] == 0 and short["epoch"] > frozen["epoch"]
    monkeypatch.setattr(estimate_mod, "SHORT_RUN", 0)
    timing.forget()
    torch.manual_seed(5)
    timed = estimate_run(_config(freeze="none"), ds)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # a run is the same whether or not it was estimated first
    assert timed["epoch"] > frozen["epoch"] and timed["features"] == 0
    assert any(k[0] == "train" for k in timing.PROBES if isinstance(k, tuple))


def test_cli_prints_the_estimate_from_the_first_batches(tmp_path, cache_dir, capsys):
    """A frozen run times nothing before it starts: its first batches tell the time it will take."""
    from tlgui.cli import main

    images, labels, names = fashion_mnist(30, classes=[0, 1])
    data = write_class_folders(tmp_path / "data", images, labels, names)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--freeze", "all", "--image-size", str(SIZE),
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "estimated time: " in out
    assert out.index("estimated time: ") < out.index("done: ")


def test_cpu_threads_restores_the_count():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_format_seconds():
    from tlgui.events import format_seconds

    assert [format_seconds(s) for s in (0.2, 42.4, 119.6, 185, 7790)] == ["1 s", "42 s", "2 min 00 s", "3 min 05 s",
                                                                        "2 h 10 min"]
