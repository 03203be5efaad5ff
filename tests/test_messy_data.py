"""Messy datasets are read, or refused with one clear line; never a crash.

The corpus is generated from real Fashion-MNIST pictures, saved in every mode and shape that
people's folders hold: broken files, odd colour modes, EXIF rotation, hidden system files,
awkward folder names, and tables in the encodings and dialects spreadsheets write.
"""

from __future__ import annotations

import io
import struct
import time
import unicodedata
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image
from realdata import fashion_mnist, movie_reviews

from tlgui.cli import main
from tlgui.config import RunConfig
from tlgui.data.datasets import read_dataset
from tlgui.errors import TlguiError
from tlgui.training.train import train

SMALL = dict(backbones=["efficientnet_lite0"],
             freeze="all", image_size=32, batch_size=8, epochs=1, patience=0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png_header(width: int = 20_000, height: int = 20_000) -> bytes:
    """A few dozen bytes whose header claims `width` x `height` pixels: a decompression bomb's shape."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def png16_rgb(gray: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), from a real 8-bit picture."""
    h, w = gray.shape
    rgb16 = np.repeat(gray[..., None].astype(">u2") * 257, 3, axis=2)
    raw = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def pictures():
    """Real pictures: 8 t-shirts then 8 trousers, as RGB images with some colour."""
    images, _, _ = fashion_mnist(8, classes=[0, 1])
    return [Image.fromarray(np.stack([a, a // 2, 255 - a], axis=2)) for a in images]


def every_mode(pictures) -> dict[str, bytes]:
    """One file per colour mode or encoding a folder of pictures may hold (all readable)."""
    p = pictures
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    wide = p[5].resize((40, 20))
    return {
        "rgb.png": _save(p[0], "PNG"),
        "grey.png": _save(p[1].convert("L"), "PNG"),
        "grey16.png": _save(Image.fromarray(np.asarray(p[2].convert("L"), dtype=np.uint16) * 257), "PNG"),
        "rgb16.png": png16_rgb(np.asarray(p[3].convert("L"))),
        "cmyk.jpg": _save(p[4].convert("CMYK"), "JPEG"),
        "rotated.jpg": _save(wide, "JPEG", exif=exif.tobytes()),
        "palette.png": _save(p[6].convert("P"), "PNG"),
        "palette-alpha.png": _save(p[7].convert("P"), "PNG", transparency=0),
        "rgba.png": _save(p[0].convert("RGBA"), "PNG"),
        "grey-alpha.png": _save(p[1].convert("LA"), "PNG"),
        "bw.bmp": _save(p[2].convert("1"), "BMP"),
        "photo.webp": _save(p[3], "WEBP"),
        "scan.tif": _save(p[4], "TIFF"),
        "anim.gif": _save(p[5].convert("P"), "GIF"),
    }


def broken(pictures) -> dict[str, tuple[bytes, str]]:
    """Files that must be skipped, with the reason the report must give."""
    jpg, png = _save(pictures[8], "JPEG"), _save(pictures[9], "PNG")
    return {
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated or damaged image"),
        "truncated.png": (png[: len(png) // 2], "truncated or damaged image"),
        "corrupt.png": (png[:40] + bytes(range(256)) * 4, "truncated or damaged image"),
        "notes.jpg": (b"this is a text file with a picture's name", "not an image (or a format this tool does not read)"),
        "empty.png": (b"", "empty file"),
        "giant.png": (huge_png_header(), "too large (400 megapixels; the limit is 64 megapixels)"),  # Pillow's guard
        "readme.txt": (b"shot on a phone", "not an image file"),
    }


def write_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def messy_zip(pictures, tmp_path_factory):
    """Two wrapping folders, every mode, every kind of broken file, hidden and system files."""
    members = {f"export/photos/shirt/{k}": v for k, v in every_mode(pictures).items()}
    members.update({f"export/photos/trousers/{i}.png": _save(p, "PNG") for i, p in enumerate(pictures[8:])})
    members.update({f"export/photos/trousers/{k}": v for k, (v, _) in broken(pictures).items()})
    members.update({
        "export/photos/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "export/photos/shirt/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "__MACOSX/export/photos/shirt/._rgb.png": b"\x00\x05\x16\x07",
        "export/photos/.hidden/1.png": _save(pictures[0], "PNG"),
        "README.md": b"# My photos\n",  # beside the wrapping folder: it must not stop the unwrapping
    })
    return write_zip(tmp_path_factory.mktemp("messy") / "messy.zip", members), members


def _reasons(ds) -> dict[str, str]:
    return {f.rsplit("/", 1)[-1]: r for f, r in ds.skipped}


def test_every_mode_is_read_and_every_broken_file_is_skipped_with_its_reason(messy_zip, pictures):
    path, members = messy_zip
    ds = read_dataset(path)
    assert ds.task == "image" and ds.classes == ["shirt", "trousers"]  # two wrapping folders unwrapped
    counts = {c["name"]: c["count"] for c in ds.report()["classes"]}
    assert counts == {"shirt": len(every_mode(pictures)), "trousers": 8}
    reasons = _reasons(ds)
    for name, (_, reason) in broken(pictures).items():
        assert reasons[name] == reason, name
    for name in (".DS_Store", "Thumbs.db", "._rgb.png", "1.png"):
        assert reasons[name] == "hidden or system file", name
    report = ds.report()
    assert report["used"] + report["skipped"] == len(members)  # every file accounted for
    assert report["skipped_reasons"]["hidden or system file"] == 4
    assert reasons["README.md"] == "not an image file"


def test_modes_decode_to_rgb_the_right_way_up(messy_zip):
    ds = read_dataset(messy_zip[0])
    by_name = {n.rsplit("/", 1)[-1]: i for i, n in enumerate(ds.inputs)}
    for name, i in by_name.items():
        img = ds.load_image(i)
        assert img.mode == "RGB", name
        assert np.asarray(img).max() > 0, name
    assert ds.load_image(by_name["rotated.jpg"]).size == (20, 40)  # stored 40 wide, shown 20 wide
    assert np.asarray(ds.load_image(by_name["grey16.png"])).max() >= 250  # 16-bit scaled down, not clipped to black
    assert ds.load_image(by_name["rgb16.png"]).size == (28, 28)


def test_giant_picture_is_refused_without_decoding(tmp_path):
    from tlgui.data.images import BadImage, open_rgb

    t0 = time.perf_counter()
    with pytest.raises(BadImage, match="too large"):
        open_rgb(huge_png_header())  # 400 megapixels, 1.2 GB decoded: refused from its header
    assert time.perf_counter() - t0 < 0.5


def test_messy_zip_trains(messy_zip, tmp_path):
    result = train(RunConfig(**SMALL), read_dataset(messy_zip[0]), tmp_path)
    assert result.status == "finished" and (tmp_path / "model.zip").exists()


def test_folder_names_with_spaces_unicode_and_case_clashes(pictures, tmp_path):
    cafe_nfd, cafe_nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    folders = {"hot dog ": 6, "Cat": 6, "cat": 6, "日本": 6}
    members = {f"{c}/{i}.png": _save(pictures[i], "PNG") for c, n in folders.items() for i in range(n)}
    members.update({f"{cafe_nfd}/{i}.png": _save(pictures[i], "PNG") for i in range(3)})  # macOS writes NFD
    members.update({f"{cafe_nfc}/{i + 3}.png": _save(pictures[i], "PNG") for i in range(3)})
    ds = read_dataset(write_zip(tmp_path / "names.zip", members))
    assert sorted(ds.classes) == sorted(["Cat", "cat", "café", "hot dog", "日本"])  # one café, trailing space trimmed
    assert {c["name"]: c["count"] for c in ds.report()["classes"]}["café"] == 6
    assert any("differ only in case: Cat, cat" in w for w in ds.warnings)


def test_zip_without_utf8_flag_keeps_its_unicode_names(pictures, tmp_path):
    """Older zip tools write UTF-8 names without saying so; Python would read them as cp437."""
    path = tmp_path / "legacy.zip"
    with zipfile.ZipFile(path, "w") as z:  # ASCII stand-ins of the same byte length: no UTF-8 flag is set
        for c in ("cafXX", "thXX"):
            for i in range(2):
                z.writestr(f"{c}/{i}.png", _save(pictures[i], "PNG"))
    raw = path.read_bytes().replace(b"cafXX", "café".encode()).replace(b"thXX", "thé".encode())
    path.write_bytes(raw)
    assert not any(i.flag_bits & 0x800 for i in zipfile.ZipFile(path).infolist())
    assert read_dataset(path).classes == ["café", "thé"]


def test_empty_class_folder_is_ignored_with_a_warning(pictures, tmp_path):
    for c in ("shirt", "trousers"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / c / f"{i}.png").write_bytes(_save(pictures[i], "PNG"))
    (tmp_path / "data" / "socks").mkdir()
    ds = read_dataset(tmp_path / "data")
    assert ds.classes == ["shirt", "trousers"]
    assert "empty folders ignored: socks" in ds.warnings


def test_class_with_one_example_warns_and_trains(pictures, tmp_path):
    members = {f"shirt/{i}.png": _save(pictures[i], "PNG") for i in range(8)}
    members.update({f"trousers/{i}.png": _save(pictures[8 + i], "PNG") for i in range(8)})
    members["sock/0.png"] = _save(pictures[3], "PNG")
    ds = read_dataset(write_zip(tmp_path / "one-sock.zip", members))
    assert any("fewer than 5 examples in: sock" in w for w in ds.warnings)
    result = train(RunConfig(**SMALL), ds, tmp_path / "run")
    assert result.status == "finished"
    assert ds.splits[ds.inputs.index("sock/0.png")] == "train"  # its only example is not held out


def test_one_class_inspects_but_train_refuses_in_one_line(pictures, tmp_path, capsys):
    path = write_zip(tmp_path / "shirts.zip", {f"shirt/{i}.png": _save(p, "PNG") for i, p in enumerate(pictures)})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 classes, 16 images used" in out and "only one class (shirt)" in out
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the dataset has only one class (shirt): a classifier needs at least two"]
    assert not (tmp_path / "run" / "model.zip").exists()


def test_nothing_usable_is_refused_in_one_line(pictures, tmp_path):
    path = write_zip(tmp_path / "bad.zip", {f"a/{k}": v for k, (v, _) in broken(pictures).items()})
    with pytest.raises(TlguiError, match=r"^none of the images could be read \(most common reason: truncated"):
        read_dataset(path)
    with pytest.raises(TlguiError, match="no images found in class folders"):
        read_dataset(write_zip(tmp_path / "flat.zip", {"1.png": _save(pictures[0], "PNG")}))
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(TlguiError, match="no images found"):
        read_dataset(empty)
    (tmp_path / "nothing.zip").write_bytes(b"")
    with pytest.raises(TlguiError, match="not a readable zip file"):
        read_dataset(tmp_path / "nothing.zip")


# -- tables ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reviews():
    return movie_reviews(6, seed=1, max_chars=300)


def _read_text(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return read_dataset(path)


def test_csv_with_bom(reviews, tmp_path):
    ds = _read_text(tmp_path, "bom.csv", reviews.to_csv(index=False).encode("utf-8-sig"))
    assert ds.task == "text" and len(ds) == 12 and ds.classes == ["negative", "positive"]


def test_csv_in_latin1_and_utf16(tmp_path):
    rows = "text;label\nun café très serré;négatif\nune crème brûlée parfaite;positif\nle thé était froid;négatif\n"
    ds = _read_text(tmp_path, "latin1.csv", rows.encode("latin-1"))
    assert ds.classes == ["négatif", "positif"] and ds.inputs[0] == "un café très serré"
    ds = _read_text(tmp_path, "excel.csv", rows.encode("utf-16"))  # Excel's "Unicode text"
    assert ds.classes == ["négatif", "positif"] and len(ds) == 3


def test_csv_with_semicolons_quoted_newlines_and_blank_rows(reviews, tmp_path):
    texts = reviews["text"].tolist()
    lines = ["review;sentiment", f'"{texts[0]}\nsecond line; with a semicolon";positive', "", ";", "  ", "",
             *[f'"{t}";{y}' for t, y in zip(texts[1:], reviews["label"][1:])], "", ""]
    ds = _read_text(tmp_path, "semi.csv", "\r\n".join(lines).encode())
    assert len(ds) == 12 and ds.inputs[0].endswith("second line; with a semicolon")
    assert ds.skipped == [] and ds.inputs[1] == texts[1]  # blank rows (or only separators) are not rows


def test_csv_with_missing_and_extra_columns(tmp_path):
    rows = ["text,label,source", "good film,pos,imdb", "bad film,neg", "fine film,pos,imdb,extra,fields",
            "a lonely text", "okay film,neg,,", ",pos,imdb"]
    ds = _read_text(tmp_path, "ragged.csv", "\n".join(rows).encode())
    assert ds.inputs == ["good film", "bad film", "okay film"]
    assert dict(ds.skipped) == {
        "ragged.csv row 4": "more fields than the header has columns (quote values that contain the separator)",
        "ragged.csv row 5": "missing text or label",
        "ragged.csv row 7": "missing text or label",
    }
    r = ds.report()
    assert r["used"] + r["skipped"] == len(rows) - 1


def test_numeric_labels_sort_as_numbers(tmp_path):
    rows = ["text,label"] + [f"review number {i},{i % 11}" for i in range(33)]
    ds = _read_text(tmp_path, "numbers.csv", "\n".join(rows).encode())
    assert ds.classes == [str(i) for i in range(11)]


def test_tables_that_cannot_be_used_are_refused_in_one_line(tmp_path):
    cases = {
        "empty.csv": (b"", "empty.csv is empty"),
        "blank.csv": (b"\n\n  \n", "blank.csv is empty"),
        "header.csv": (b"text,label\n", "no usable rows"),
        "unknown.csv": (b"col_a,col_b,col_c\n1,2,3\n", "cannot tell which columns hold the labels"),
        "nolabels.csv": (b"text,label\nhello,\nworld,\n", "no usable rows"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(TlguiError, match=message) as e:
            _read_text(tmp_path, name, data)
        assert "\n" not in str(e.value)
    with pytest.raises(TlguiError, match="has no column 'body'"):
        (tmp_path / "ok.csv").write_bytes(b"text,label\nhi,a\n")
        read_dataset(tmp_path / "ok.csv", text_column="body")


def test_image_table_reports_missing_and_escaping_paths(pictures, tmp_path):
    members = {f"pics/{i}.png": _save(p, "PNG") for i, p in enumerate(pictures)}
    rows = ["filename,class"] + [f"pics/{i}.png,{'shirt' if i < 8 else 'trousers'}" for i in range(16)]
    rows += ["pics/99.png,shirt", "../../etc/passwd,shirt", "/etc/passwd,shirt", "pics\\3.png,shirt", "pics/4.png,"]
    members["labels.csv"] = "\n".join(rows).encode("utf-8-sig")
    ds = read_dataset(write_zip(tmp_path / "table.zip", members))
    assert ds.task == "image" and len(ds) == 17 and ds.classes == ["shirt", "trousers"]
    assert dict(ds.skipped) == {
        "labels.csv row 18": "image not found: pics/99.png",
        "labels.csv row 19": "image path leaves the dataset folder",
        "labels.csv row 20": "image path leaves the dataset folder",
        "labels.csv row 22": "missing image path or label",
    }
