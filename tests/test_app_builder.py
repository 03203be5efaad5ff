"""Building a dataset in the page and cleaning its labels, in a real browser (and one bad webcam picture
from a program)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import realdata
from conftest import CHROMIUM, CHROMIUM_ARGS
from gradio_client import Client, handle_file
from playwright.sync_api import Page, expect
from test_app_browser import LOAD_S, open_app, pick, predict, small_settings, upload, wait_ready, wait_status

from tlgui.data.datasets import read_dataset

TWO_CLASSES = ["bag", "trouser"]


@pytest.fixture(scope="module")
def class_pictures(tmp_path_factory) -> dict[str, list[Path]]:
    """12 real Fashion-MNIST pictures per class as PNG files, as a person would have them on disk."""
    images, labels, names = realdata.fashion_mnist(12, classes=[1, 8], seed=5)
    folder = tmp_path_factory.mktemp("drop")
    out: dict[str, list[Path]] = {n: [] for n in names}
    for i, (image, label) in enumerate(zip(images, labels)):
        path = folder / f"{names[label]}-{i}.png"
        path.write_bytes(realdata.encode_image(image))
        out[names[label]].append(path)
    return out


@pytest.fixture(scope="module")
def flipped_zip(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """100 Fashion-MNIST pictures of 4 classes with 5 of them (5%) in the wrong class folder:
    returns the zip and, for each mislabelled file, its true class."""
    images, labels, names = realdata.fashion_mnist(25, classes=[1, 3, 7, 8], seed=4)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 5, replace=False)
    true = labels.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, 4, 5)) % 4
    path = realdata.write_class_zip(tmp_path_factory.mktemp("flip") / "fashion-flipped.zip", images, labels, names)
    return path, {f"{names[labels[i]]}/{i}.png": names[true[i]] for i in flipped}


def open_builder(page: Page) -> None:
    page.get_by_text("Build or extend a dataset here").click()
    expect(page.locator("#builder-new-btn")).to_be_visible(timeout=LOAD_S)


def message(page: Page, text: str) -> None:
    expect(page.locator("#builder-message")).to_contain_text(text, timeout=LOAD_S)


def add_class(page: Page, name: str) -> None:
    page.locator("#class-name textarea, #class-name input").first.fill(name)
    page.click("#class-add-btn")


def test_build_two_classes_by_dropping_pictures_then_train_predict_download(page: Page, app_url, app_server,
                                                                             class_pictures, fashion_pictures,
                                                                             tmp_path):
    open_app(page, app_url)
    open_builder(page)
    page.locator("#builder-name textarea, #builder-name input").first.fill("clothes")
    page.click("#builder-new-btn")
    message(page, "New dataset")
    for name in TWO_CLASSES:
        add_class(page, name)
        message(page, f"Class {name} added")
        expect(page.locator("#class-pick input[role=combobox]")).to_have_value(name)
        page.locator("#class-files input[type=file]").set_input_files([str(p) for p in class_pictures[name]])
        message(page, f"Added 12 picture(s) to {name}")
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("clothes", timeout=LOAD_S)
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("24 images used")
    wait_ready(page, "clothes.zip")
    # kept on the server, inside the runs folder, per browser
    kept = list(app_server["runs"].glob(".datasets/*/*/clothes/*/*.png"))
    assert len(kept) == 24

    small_settings(page, epochs=3, image_size="32 px")
    page.click("#train-btn")
    wait_status(page, "Finished")
    predict(page, fashion_pictures[0], TWO_CLASSES)

    page.click("#augment-preview-btn")  # in the advanced settings, opened above
    expect(page.locator("#augment-note")).to_contain_text("Augmentation is off", timeout=LOAD_S)  # frozen: auto = off
    expect(page.locator("#augment-preview img")).to_have_count(8)

    page.click("#builder-zip-btn")
    message(page, "Zip ready: 24 pictures in 2 classes")
    with page.expect_download(timeout=LOAD_S) as download:
        page.click("#builder-download")
    saved = tmp_path / "clothes.zip"
    download.value.save_as(saved)
    names = zipfile.ZipFile(saved).namelist()
    assert sum(n.startswith("clothes/bag/") for n in names) == 12
    assert sum(n.startswith("clothes/trouser/") for n in names) == 12


def test_bad_class_names_and_an_empty_class_say_why_and_keep_the_pictures(page: Page, app_url, class_pictures):
    open_app(page, app_url)
    open_builder(page)
    page.click("#builder-new-btn")
    message(page, "New dataset")
    for bad, why in (("a/b", "cannot contain /"), ("..", "cannot contain /"), ("  ", "type a name")):
        add_class(page, bad)
        message(page, why)
        expect(page.locator("#builder-message")).not_to_contain_text("Traceback")
    add_class(page, "trouser")
    message(page, "Class trouser added")
    page.locator("#class-files input[type=file]").set_input_files([str(p) for p in class_pictures["trouser"][:4]])
    message(page, "Added 4 picture(s) to trouser")
    add_class(page, "bag")
    message(page, "Class bag added")
    page.click("#train-btn")
    status = wait_status(page, "Error")
    assert "'bag' has no pictures yet" in status and "Traceback" not in status
    expect(page.locator("#builder-counts")).to_contain_text("trouser (4)")  # nothing lost


def test_label_errors_listed_then_relabelled_and_trained_again(page: Page, app_url, flipped_zip):
    data, wrong = flipped_zip
    open_app(page, app_url)
    upload(page, data)
    wait_ready(page, data.name)
    small_settings(page, epochs=3, image_size="64 px")
    page.click("#train-btn")
    wait_status(page, "Finished")
    page.click("#audit-btn")
    expect(page.locator("#audit-message")).to_contain_text("possible label error", timeout=LOAD_S)
    expect(page.locator("#audit-gallery")).to_be_visible()
    page.click("#audit-item input[role=combobox]")
    options = page.get_by_role("option").all_inner_texts()
    first_five = [o for o in options if any(o.startswith(f"{k}. ") for k in range(1, 6))]
    hits = [(o, path) for o in first_five for path in wrong if f" {path}:" in o]
    assert hits, (first_five, sorted(wrong))
    option, path = hits[0]
    page.get_by_role("option", name=option, exact=True).click()
    pick(page, "audit-action", f"relabel as {wrong[path]}")
    expect(page.locator("#audit-decisions")).to_contain_text("1 relabelled, 0 removed", timeout=LOAD_S)
    page.click("#audit-save-btn")
    expect(page.locator("#audit-message")).to_contain_text("Saved", timeout=LOAD_S)
    expect(page.locator("#dataset-summary")).to_contain_text("fashion-flipped-corrected", timeout=LOAD_S)
    expect(page.locator("#dataset-summary")).to_contain_text("100 images used")
    wait_ready(page, "fashion-flipped-corrected.zip")
    page.click("#train-btn")
    expect(page.locator("#status")).not_to_contain_text("Finished", timeout=LOAD_S)
    wait_status(page, "Finished")
    expect(page.locator("#runs-table")).to_contain_text("fashion-flipped-corrected")


def test_a_webcam_picture_is_added_to_the_class(browser_type, app_url, app_server):
    """Chromium's fake camera stands in for a webcam: capture, add, and the picture is kept."""
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    browser = browser_type.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_camera)
    try:
        page = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000}).new_page()
        open_app(page, app_url)
        open_builder(page)
        page.locator("#builder-name textarea, #builder-name input").first.fill("camera-shots")
        page.click("#builder-new-btn")
        message(page, "New dataset")
        add_class(page, "cam")
        message(page, "Class cam added")
        page.get_by_text("Click to Access Webcam").click()
        page.click('#webcam button[aria-label="capture photo"]', timeout=LOAD_S)
        for _ in range(90):  # the captured frame uploads in the background: until then the page asks for one
            page.click("#webcam-add-btn")
            page.wait_for_timeout(1000)
            if "Added 1 picture(s) to cam" in page.inner_text("#builder-message"):
                break
        message(page, "Added 1 picture(s) to cam")
        expect(page.locator("#builder-counts")).to_contain_text("cam (1)")
    finally:
        browser.close()
    shots = list(app_server["runs"].glob(".datasets/*/*/camera-shots/cam/*"))
    assert len(shots) == 1 and read_dataset(shots[0].parents[1]).classes == ["cam"]


def test_webcam_picture_that_is_not_a_picture_is_one_sentence(app_url, app_server, fashion_pictures, tmp_path):
    """From a program: a bad webcam picture changes nothing; a good one goes into a copy of the example."""
    before = set(app_server["runs"].glob(".datasets/*/*"))
    fake = tmp_path / "webcam.png"
    fake.write_text("this is not a picture")
    client = Client(app_url, download_files=str(tmp_path))
    out = client.predict(None, handle_file(str(fake)), api_name="/add_webcam_picture")
    text = " ".join(str(o) for o in out)
    assert "the webcam picture could not be used (not an image" in text, text
    assert set(app_server["runs"].glob(".datasets/*/*")) == before  # nothing copied or kept

    out = client.predict("from-webcam", api_name="/add_class")
    assert "editable copy" in " ".join(map(str, out)) and "Class **from-webcam** added" in " ".join(map(str, out))
    out = client.predict("from-webcam", handle_file(str(fashion_pictures[0])), api_name="/add_webcam_picture")
    assert "Added 1 picture(s) to **from-webcam**" in " ".join(map(str, out))
    copies = set(app_server["runs"].glob(".datasets/*/*/fashion-mnist-edited")) - before
    assert len(copies) == 1
    copy = next(iter(copies))
    assert len([p for p in copy.glob("*/*") if p.is_file()]) == 301  # the example's 300 and the webcam's
    assert len(list((copy / "from-webcam").iterdir())) == 1
