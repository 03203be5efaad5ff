"""Hostile uploads do no harm: path tricks, links, zip bombs, pickles posing as weights, oversized files.

Each test asserts the refusal (one line) and what exists on disk afterwards.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile

import pytest
import torch
from PIL import Image
from realdata import fashion_mnist

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.data.sources import ZipSource
from tlgui.errors import TlguiError
from tlgui.outputs.bundle import load_bundle
from tlgui.training.train import train

SMALL = dict(backbones=["efficientnet_lite0"],
             freeze="all", image_size=32, batch_size=8, epochs=1, patience=0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def png(i: int = 0) -> bytes:
    images, _, _ = fashion_mnist(4, classes=[0, 1])
    buf = io.BytesIO()
    Image.fromarray(images[i % len(images)]).save(buf, format="PNG")
    return buf.getvalue()


def good_members() -> dict[str, bytes]:
    return {f"{c}/{i}.png": png(i + 4 * k) for k, c in enumerate(("shirt", "trousers")) for i in range(4)}


def write_zip(path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def patch_central(path, name: str, *, flags: int | None = None, method: int | None = None, size: int | None = None):
    """Rewrite one member's central-directory record, as a forged zip would have it."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        pos = z.start_dir
        for info in z.infolist():
            n, m, k = struct.unpack("<HHH", raw[pos + 28 : pos + 34])
            if info.filename == name:
                if flags is not None:
                    raw[pos + 8 : pos + 10] = struct.pack("<H", flags)
                if method is not None:
                    raw[pos + 10 : pos + 12] = struct.pack("<H", method)
                if size is not None:
                    raw[pos + 24 : pos + 28] = struct.pack("<I", size)
            pos += 46 + n + m + k
    path.write_bytes(bytes(raw))


def tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


# -- paths and links ---------------------------------------------------------------------------
def test_traversal_absolute_and_link_members_are_skipped_never_read(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(7))  # a real picture outside the dataset: reading it through a link would "work"
    path = tmp_path / "upload" / "evil.zip"
    path.parent.mkdir()
    members = good_members()
    members.update({"../escaped.png": png(1), "shirt/../../../escaped2.png": png(1), "/abs/shirt/x.png": png(2),
                    "C:/windows/shirt/y.png": png(3), "shirt\\..\\..\\z.png": png(3)})
    write_zip(path, members)
    with zipfile.ZipFile(path, "a") as z:
        link = zipfile.ZipInfo("shirt/link.png")
        link.external_attr = (0o120777 << 16)  # a symbolic link whose target is the secret
        z.writestr(link, str(secret))
    before = tree(tmp_path)
    ds = read_dataset(path)
    for i in range(len(ds)):
        ds.load_image(i)
    assert sorted(ds.inputs) == sorted(good_members())
    skipped = dict(ds.skipped)
    for name in ("../escaped.png", "shirt/../../../escaped2.png", "/abs/shirt/x.png", "C:/windows/shirt/y.png",
                 "shirt/../../z.png"):
        assert skipped[name] == "unsafe path (it points outside the dataset)", name
    assert skipped["shirt/link.png"] == "symbolic link (not followed)"
    assert not ZipSource(path).has("shirt/link.png")
    with pytest.raises(KeyError):
        ZipSource(path).read("shirt/link.png")
    assert tree(tmp_path) == before  # reading never extracts anything


def test_links_in_a_folder_are_not_followed(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(png(5))
    root = tmp_path / "data"
    for name, data in good_members().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "shirt" / "link.png").symlink_to(tmp_path / "outside" / "secret.png")
    (root / "stolen").symlink_to(tmp_path / "outside", target_is_directory=True)
    os.mkfifo(root / "trousers" / "pipe.png")  # reading it would block forever
    ds = read_dataset(root)
    assert len(ds) == 8
    assert dict(ds.skipped) == {"shirt/link.png": "symbolic link (not followed)", "stolen": "symbolic link (not followed)",
                                "trousers/pipe.png": "not a regular file"}


# -- zip bombs ---------------------------------------------------------------------------------
@pytest.fixture
def no_member_is_opened(monkeypatch):
    """Proof that a refusal came from the zip's directory: decompressing any member fails the test."""
    original = zipfile.ZipFile.open

    def refuse(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            raise AssertionError("a member was opened before the zip was checked")
        return original(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def test_zip_with_too_many_files_is_refused(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "many.zip", {**good_members(), **{f"shirt/n{i}.txt": b"x" for i in range(60)}})
    assert len(read_dataset(path)) == 8  # the default limit (100000) lets it through
    monkeypatch.setenv("TLGUI_MAX_FILES", "50")
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("member opened"))
    with pytest.raises(TlguiError, match=r"^many.zip holds 68 files, above the limit of 50: use a smaller one$"):
        read_dataset(path)


def test_zip_that_unpacks_too_large_is_refused(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "big.zip", {**good_members(), "shirt/padding.bin": os.urandom(3 * 1024**2)})
    assert len(read_dataset(path)) == 8
    monkeypatch.setenv("TLGUI_MAX_UNPACKED_MB", "2")
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("member opened"))
    with pytest.raises(TlguiError, match=r"^big.zip unpacks to 3 MB, above the 2 MB limit"):
        read_dataset(path)


def test_zip_bomb_member_is_refused_before_decompression(tmp_path, monkeypatch, no_member_is_opened):
    path = write_zip(tmp_path / "bomb.zip", {**good_members(), "shirt/bomb.png": bytes(64 * 1024**2)})
    assert zipfile.ZipFile(path).getinfo("shirt/bomb.png").compress_size < 100_000  # about 1000x
    with pytest.raises(TlguiError, match=r"^bomb.zip looks like a zip bomb \(shirt/bomb.png would expand [\d,]+x\): refused$"):
        read_dataset(path)
    monkeypatch.undo()  # members may be read again
    monkeypatch.setenv("TLGUI_MAX_ZIP_RATIO", "5000")  # a server may allow it; the file then fails as a picture
    assert dict(read_dataset(path).skipped)["shirt/bomb.png"] == "not an image (or a format this tool does not read)"


def test_lying_member_sizes_never_read_past_the_declared_size(tmp_path):
    path = write_zip(tmp_path / "liar.zip", {**good_members(), "shirt/liar.png": png(0) + bytes(8 * 1024**2)})
    patch_central(path, "shirt/liar.png", size=1000)  # claims 1000 bytes, inflates to 8 MB
    source = ZipSource(path)
    with pytest.raises(OSError, match="damaged zip member"):
        source.read("shirt/liar.png")  # the CRC of 1000 bytes fails: nothing beyond them was inflated
    assert dict(read_dataset(path).skipped)["shirt/liar.png"] == "unreadable file (OSError)"


def test_encrypted_and_unknown_compression_members_are_skipped(tmp_path):
    path = write_zip(tmp_path / "odd.zip", {**good_members(), "shirt/locked.png": png(1), "shirt/deflate64.png": png(2)})
    patch_central(path, "shirt/locked.png", flags=0x1)
    patch_central(path, "shirt/deflate64.png", method=9)
    skipped = dict(read_dataset(path).skipped)
    assert skipped["shirt/locked.png"] == "encrypted (zip it again without a password)"
    assert skipped["shirt/deflate64.png"] == "compressed with an unsupported method (zip it again with standard compression)"


def test_bad_limit_in_the_environment_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TLGUI_MAX_FILES", "lots")
    with pytest.raises(TlguiError, match=r"^TLGUI_MAX_FILES='lots' is not a number"):
        read_dataset(write_zip(tmp_path / "a.zip", good_members()))


def test_oversized_dataset_files_are_refused_before_reading(tmp_path, monkeypatch, capsys):
    zipped = write_zip(tmp_path / "photos.zip", good_members(), method=zipfile.ZIP_STORED)
    table = tmp_path / "reviews.csv"
    table.write_text("text,label\n" + "a fine film,pos\na poor film,neg\n" * 2000)
    assert zipped.stat().st_size > 3000 and table.stat().st_size > 3000
    monkeypatch.setenv("TLGUI_MAX_DATASET_MB", "0.002")  # 2 KB
    for path in (zipped, table):
        assert main(["inspect", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path.name} is " in err[0] and "above the 0.002 MB limit for a dataset" in err[0]
    monkeypatch.setenv("TLGUI_MAX_DATASET_MB", "1")
    assert len(read_dataset(zipped)) == 8 and len(read_dataset(table)) == 4000


# -- pickles posing as weights -------------------------------------------------------------------
class Payload:
    """Unpickling this creates a file: the proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = write_zip(out / "data.zip", good_members())
    victim = out / "victim.txt"
    victim.write_text("keep me")
    (out / "model.zip").symlink_to(victim)  # planted: the bundle must replace the link, not write through it
    train(RunConfig(**SMALL), read_dataset(path), out)
    return out / "model.zip", path


def _with_pickled_weights(bundle_path, target, marker):
    buf = io.BytesIO()
    torch.save({"head.1.weight": Payload(marker)}, buf)
    with zipfile.ZipFile(bundle_path) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, buf.getvalue() if info.filename == "model.safetensors" else src.read(info))
    return target


def test_pickle_in_place_of_weights_is_refused_and_never_run(bundle, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _with_pickled_weights(bundle[0], tmp_path / "model.zip", marker)
    with pytest.raises(TlguiError, match=r"^model.zip: the weights are not a valid safetensors file .*never unpickled"):
        load_bundle(evil)
    image = tmp_path / "x.png"
    image.write_bytes(png(0))
    assert main(["predict", str(evil), str(image)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["train", str(bundle[1]), "--out", str(tmp_path / "run"), "--init", str(evil), "--epochs", "1",
                 "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid safetensors file" in err[0]
    assert not marker.exists()
    assert not (tmp_path / "run" / "model.zip").exists()


def test_a_torch_checkpoint_is_not_a_bundle(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": Payload(marker)}, tmp_path / "model.zip")  # torch.save writes a zip, with a pickle inside
    with pytest.raises(TlguiError, match=r"^model.zip is not a tlgui model bundle"):
        load_bundle(tmp_path / "model.zip")
    assert not marker.exists()


def test_pickle_in_place_of_a_checkpoint_is_refused_on_resume(bundle, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model.head.1.weight": Payload(marker)}, run / "checkpoint.safetensors")
    with pytest.raises(TlguiError, match=r"^the checkpoint in .* is damaged: train again without --resume"):
        train(RunConfig(**SMALL), read_dataset(bundle[1]), run, resume=True)
    assert not marker.exists() and not (run / "model.zip").exists()


def test_bomb_posing_as_a_bundle_is_refused(tmp_path, no_member_is_opened):
    write_zip(tmp_path / "model.zip", {"tlgui.json": b"{}", "model.safetensors": bytes(64 * 1024**2)})
    with pytest.raises(TlguiError, match="looks like a zip bomb"):
        load_bundle(tmp_path / "model.zip")


def test_symlinked_bundle_target_is_not_overwritten(bundle):
    """model.zip is written by rename: a link planted in the run folder is replaced, not written through."""
    assert (bundle[0].parent / "victim.txt").read_text() == "keep me"
    assert not bundle[0].is_symlink() and load_bundle(bundle[0]).classes == ["shirt", "trousers"]
