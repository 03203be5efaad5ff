"""Properties of dataset reading over random file trees, zips and tables (hypothesis).

Whatever the input: reading returns a dataset or raises TlguiError, nothing else; every file
(or non-blank table row) is either used or skipped with a reason; what a table says is read
back exactly.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import unicodedata
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from realdata import fashion_mnist

from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(fmt: str, i: int) -> bytes:
    images, _, _ = fashion_mnist(2, classes=[0, 1])
    buf = io.BytesIO()
    Image.fromarray(images[i]).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _encoded("PNG", 0), _encoded("JPEG", 3)
CONTENTS = st.sampled_from([PNG, JPEG, PNG[: len(PNG) // 2], JPEG[:100], b"", b"hello", b"\x89PNG\r\n\x1a\n", b"GIF89a"])
EXTS = st.sampled_from([".png", ".jpg", ".JPEG", ".gif", ".txt", "", ".DS_Store", ".tif"])
WORDS = st.sampled_from(["cat", "Cat", "dog", "hot dog", "café", "cafe\u0301", "日本", "train", "val", "test",
                         "__MACOSX", ".hidden", "data", "x" * 30, " pad ", "a.b"])


def _component(draw_words, draw_text):
    return st.one_of(draw_words, draw_text)


FS_TEXT = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12)
FS_COMPONENT = st.one_of(WORDS, FS_TEXT).filter(lambda c: c not in (".", "..") and len(c.encode()) < 60)
ZIP_COMPONENT = st.one_of(WORDS, FS_TEXT, st.sampled_from(["..", ".", "", "C:", "a\\..\\..", "~"]))


@st.composite
def file_tree(draw, component):
    files = draw(st.lists(st.tuples(st.lists(component, min_size=0, max_size=3), component, EXTS, CONTENTS),
                          min_size=1, max_size=14))
    return [("/".join([*folders, stem + ext]), data) for folders, stem, ext, data in files if stem + ext]


def _check(ds, considered: int) -> None:
    r = ds.report()
    assert r["used"] + r["skipped"] == considered
    assert all(reason for _, reason in ds.skipped)
    assert len(ds.inputs) == len(ds.labels) == len(ds.digests) == len(ds.splits)
    assert ds.classes and set(ds.labels.tolist()) <= set(range(len(ds.classes)))


def _no_tables(name: str) -> bool:
    return not name.lower().endswith((".csv", ".tsv"))


@SETTINGS
@given(file_tree(ZIP_COMPONENT), st.booleans())
def test_zip_of_anything_is_read_or_refused_and_every_member_is_counted(tree, absolute):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "upload.zip")
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
            warnings.simplefilter("ignore")  # duplicate names are part of the test
            for name, data in tree:
                z.writestr(("/" if absolute else "") + name, data)
        members = [i for i in zipfile.ZipFile(path).infolist() if not i.is_dir()]
        try:
            ds = read_dataset(path)
        except TlguiError as e:
            assert "\n" not in str(e)
            return
        if all(_no_tables(i.filename) for i in members):
            _check(ds, len(members))


@SETTINGS
@given(file_tree(FS_COMPONENT))
def test_folder_of_anything_is_read_or_refused_and_every_file_is_counted(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "data")
        root.mkdir()
        written = 0
        for name, data in tree:
            target = root / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    continue
                target.write_bytes(data)
                written += 1
            except (FileExistsError, NotADirectoryError, IsADirectoryError, OSError):
                continue  # a file where a folder must go: not part of the tree
        on_disk = sum(len(fs) for _, _, fs in os.walk(root))
        assert on_disk == written
        try:
            ds = read_dataset(root)
        except TlguiError:
            return
        if all(_no_tables(n) for n, _ in tree):
            _check(ds, written)


# -- tables -----------------------------------------------------------------------------------------
CELL = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
# Latin-1 as people write it: no C1 control characters (where Windows-1252 puts its quotes and dashes)
LATIN_CELL = st.text(alphabet=st.characters(max_codepoint=255, blacklist_characters="\x00",
                                            blacklist_categories=("Cc",)), max_size=40)
LABEL = st.sampled_from(["pos", "neg", " pos ", "1", "10", "2", "", "négatif", "ne\u0301gatif"])


@st.composite
def table(draw):
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    cell = LATIN_CELL if encoding == "latin-1" else CELL
    header = ["text", "label"] + draw(st.lists(st.sampled_from(["source", "id", "note"]), max_size=1))
    label = LABEL.filter(lambda y: encoding != "latin-1" or y.encode("latin-1", "ignore").decode("latin-1") == y)
    rows = draw(st.lists(st.tuples(cell, label, st.integers(-1, 2)), max_size=25))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    blank_every = draw(st.integers(0, 4))
    return encoding, sep, header, [(t, y, extra) for t, y, extra in rows], blank_every


def _write(encoding, sep, header, rows, blank_every) -> tuple[bytes, list[list[str]]]:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, delimiter=sep)
    writer.writerow(header)
    written = []
    for k, (text, label, extra) in enumerate(rows):
        fields = [text, label] + ["x"] * (len(header) - 2 + extra) if extra >= 0 else [text]
        writer.writerow(fields)
        written.append(fields)
        if blank_every and k % blank_every == 0:
            buf.write("\r\n")
    return buf.getvalue().encode(encoding), written


@SETTINGS
@given(table())
def test_tables_read_back_exactly_and_every_row_is_counted(spec):
    encoding, sep, header, rows, blank_every = spec
    data, written = _write(encoding, sep, header, rows, blank_every)
    if encoding == "latin-1" and not data.isascii():
        try:
            data.decode("utf-8")
            assume(False)  # "Ã©" in Latin-1 is "é" in UTF-8: these bytes mean both, UTF-8 wins
        except UnicodeDecodeError:
            pass
    nonblank = [f for f in written if any(x.strip() for x in f)]
    expected = [f for f in nonblank if len(f) >= 2 and f[0].strip() and f[1].strip()
                and not any(x.strip() for x in f[len(header):])]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "table.csv")
        path.write_bytes(data)
        try:
            ds = read_dataset(path)
        except TlguiError as e:
            assert not expected and "no usable rows" in str(e)
            return
    assert ds.inputs == [f[0].strip() for f in expected]
    assert [ds.classes[y] for y in ds.labels] == [unicodedata.normalize("NFC", f[1].strip()) for f in expected]
    _check(ds, len(nonblank))


@SETTINGS
@given(st.binary(max_size=400), st.sampled_from(["t.csv", "t.tsv"]))
def test_any_bytes_as_a_table_read_or_refused(data, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        path.write_bytes(data)
        try:
            read_dataset(path)
        except TlguiError as e:
            assert "\n" not in str(e)


@SETTINGS
@given(st.lists(st.tuples(ZIP_COMPONENT, st.sampled_from(["", "images/"]), CONTENTS), max_size=6),
       st.lists(st.tuples(st.text(max_size=20), st.text(max_size=8)), max_size=8))
def test_image_tables_in_zips_read_or_refused(images, rows):
    """A zip with a labels.csv pointing anywhere, at anything."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.zip")
        names = [folder + name + ".png" for name, folder, _ in images]
        body = io.StringIO(newline="")
        w = csv.writer(body)
        w.writerow(["image", "label"])
        w.writerows([*rows, *[(n, "a" if k % 2 else "b") for k, n in enumerate(names)]])
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
            warnings.simplefilter("ignore")
            z.writestr("labels.csv", body.getvalue())
            for n, (_, _, data) in zip(names, images):
                z.writestr(n, data)
        try:
            ds = read_dataset(path)
        except TlguiError:
            return
        assert ds.task == "image" and np.all(ds.labels < len(ds.classes))
