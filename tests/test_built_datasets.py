"""Datasets built in the page, on disk: names refused, pictures checked, copies that leave originals alone."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import realdata

from tlgui.data.augment_preview import augmented_pictures
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.ui import built


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels (a pixel bomb), with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def pictures():
    images, labels, names = realdata.fashion_mnist(3, classes=[1, 8], seed=2)
    return [(f"{names[y]}-{i}.png", realdata.encode_image(im)) for i, (im, y) in enumerate(zip(images, labels))]


def test_class_names_with_slashes_dots_or_nothing_are_refused(tmp_path):
    folder = built.create(tmp_path, "owner-a", "pets")
    for bad, why in (("a/b", "cannot contain"), ("..", "cannot contain"), ("x\\y", "cannot contain"),
                     ("", "type a name"), ("   ", "type a name"), (".hidden", "cannot name a class"),
                     ("train", "cannot name a class")):
        with pytest.raises(TlguiError, match=why):
            built.add_class(folder, bad)
    assert built.add_class(folder, " cat ") == "cat"
    with pytest.raises(TlguiError, match="already a class 'cat'"):
        built.add_class(folder, "Cat")
    assert [p.name for p in folder.iterdir()] == ["cat"]  # nothing else was made


def test_pictures_are_checked_deduplicated_and_kept_per_owner(tmp_path, pictures):
    folder = built.create(tmp_path, "owner-a", "pets")
    assert folder.is_relative_to(built.owner_root(tmp_path, "owner-a"))
    assert built.is_mine(tmp_path, "owner-a", folder) and not built.is_mine(tmp_path, "owner-b", folder)
    built.add_class(folder, "trouser")
    files = pictures[:3] + [("notes.txt", b"not a picture"), ("bomb.png", png_claiming(30000, 30000))]
    added, skipped = built.add_pictures(folder, "trouser", files + pictures[:1])  # the first picture twice
    assert added == 3
    assert dict(skipped) == {"notes.txt": "not an image (or a format this tool does not read)",
                             "bomb.png": "too large (900 megapixels; the limit is 64 megapixels)"}
    assert built.classes(folder) == {"trouser": 3}
    with pytest.raises(TlguiError, match="pick the class"):
        built.add_pictures(folder, "../elsewhere", pictures)
    with pytest.raises(TlguiError, match="at least two classes"):
        built.check_ready(folder)
    built.add_class(folder, "bag")
    with pytest.raises(TlguiError, match="'bag' has no pictures yet"):
        built.check_ready(folder)
    built.add_pictures(folder, "bag", pictures[3:])
    built.check_ready(folder)
    ds = read_dataset(folder)
    assert ds.classes == ["bag", "trouser"] and len(ds) == 6 and not ds.skipped


def test_copy_with_changes_leaves_the_original_and_zips_back(tmp_path):
    images, labels, names = realdata.fashion_mnist(4, classes=[1, 8], seed=3)
    original = realdata.write_class_zip(tmp_path / "orig.zip", images, labels, names)
    before = original.read_bytes()
    ds = read_dataset(original)
    folder = built.create(tmp_path / "runs", "owner-a", f"{ds.name}-corrected")
    first_bag = int(np.flatnonzero(ds.labels == 0)[0])
    n = built.copy_dataset(ds, folder, {first_bag: "trouser", 1: None})
    assert n == 7 and built.classes(folder) == {"bag": 2, "trouser": 5}
    assert original.read_bytes() == before
    copy = read_dataset(built.write_zip(folder))
    assert copy.classes == ["bag", "trouser"] and len(copy) == 7 and copy.name == "orig-corrected"


def test_augmented_preview_is_the_trainers_crops_and_flips(tmp_path):
    images, labels, names = realdata.fashion_mnist(4, classes=[1, 8], seed=3)
    ds = read_dataset(realdata.write_class_folders(tmp_path / "d", images, labels, names))
    shown = augmented_pictures(ds, 64, count=6, seed=1)
    assert len(shown) == 6 and {label for _, label in shown} == set(names)
    assert all(img.size == (64, 64) for img, _ in shown)
    again = augmented_pictures(ds, 64, count=6, seed=1)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(shown, again))
    other = augmented_pictures(ds, 64, count=6, seed=2)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(shown, other))


def test_corrected_texts_are_a_new_table(tmp_path):
    frame = realdata.movie_reviews(4, seed=1, max_chars=200)
    original = realdata.write_text_table(tmp_path / "reviews.csv", frame)
    ds = read_dataset(original)
    before = original.read_bytes()
    table, n = built.copy_as_new(tmp_path / "runs", "owner-a", ds, "reviews-corrected",
                                 {0: None, 1: ds.classes[1 - ds.labels[1]]})
    assert n == 7 and table.name == "reviews-corrected.csv" and original.read_bytes() == before
    fixed = read_dataset(table)
    assert fixed.inputs == ds.inputs[1:] and fixed.classes[fixed.labels[0]] != ds.classes[ds.labels[1]]
    built.check_ready(table)  # a table is checked when it is read, not here
