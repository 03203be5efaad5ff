"""The web app as a person uses it, in a real browser: train, watch, stop, try, download, stay private."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

from playwright.sync_api import Page, expect

from tlgui.outputs.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "assets" / "screenshot.png"
FASHION_CLASSES = ["ankle-boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "t-shirt", "trouser"]
ANIMAL_CLASSES = ["bear", "cat", "dog", "zebra"]
LOAD_S, RUN_S = 90_000, 240_000  # milliseconds; generous because the test machine is shared


def open_app(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#dataset-summary")).to_contain_text("fashion-mnist", timeout=LOAD_S)
    # the page binds itself to its browser on load; the runs list answers once that is done
    expect(page.locator("#runs-empty, #runs-table").first).to_be_visible(timeout=LOAD_S)


def pick(page: Page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input[role=combobox]")
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input[role=combobox]")).to_have_value(option)


def small_settings(page: Page, epochs: int, image_size: str = "32 px", freeze: str | None = None,
                   patience: int | None = None) -> None:
    page.get_by_text("Advanced settings").click()
    page.fill("#epochs input", str(epochs))
    pick(page, "image-size", image_size)
    if patience is not None:
        page.fill("#patience input", str(patience))
    if freeze:
        pick(page, "freeze", freeze)
    expect(page.locator("#cli-command")).to_contain_text(f"--epochs {epochs}")


def upload(page: Page, path: Path) -> None:
    page.locator("#dataset-upload input[type=file]").set_input_files(str(path))
    expect(page.locator(f'#dataset-upload td.filename[aria-label="{path.name}"]')).to_be_attached(timeout=LOAD_S)


def wait_ready(page: Page, dataset_file: str) -> None:
    """The model step has caught up with a newly read dataset (its command line names the file)."""
    expect(page.locator("#cli-command")).to_contain_text(dataset_file, timeout=LOAD_S)


def points(page: Page) -> int:
    return page.locator("#loss-plot .scatterlayer .point").count()


def wait_status(page: Page, word: str, timeout: int = RUN_S) -> str:
    expect(page.locator("#status")).to_contain_text(word, timeout=timeout)
    return page.inner_text("#status")


def predict(page: Page, picture: Path, classes: list[str]) -> str:
    expect(page.locator("#predict-input")).to_be_visible(timeout=LOAD_S)
    page.locator("#predict-input input[type=file]").set_input_files(str(picture))
    expect(page.locator("#predict-input img")).to_be_visible(timeout=LOAD_S)
    page.click("#predict-btn")
    output = page.locator("#predict-output")
    expect(output).to_contain_text("%", timeout=LOAD_S)  # confidences
    text = output.inner_text()
    assert any(c in text for c in classes), text
    return text


def test_example_dataset_train_watch_try_download(page: Page, app_url, fashion_pictures, tmp_path):
    """The default path: the built-in example, Train, the curve, results, a prediction, model.zip."""
    open_app(page, app_url)
    expect(page.locator("#dataset-summary")).to_contain_text("10 classes")
    expect(page.locator("#dataset-summary")).to_contain_text("300 images used")
    expect(page.locator("#backbones")).to_contain_text("auto")  # every installed backbone tried, the best kept
    expect(page.locator("#estimate")).to_contain_text("Estimated time", timeout=LOAD_S)
    small_settings(page, epochs=3, image_size="64 px")
    page.click("#train-btn")
    status = wait_status(page, "Finished")
    assert "validation accuracy" in status
    expect(page.locator("#loss-plot .scatterlayer .trace")).to_have_count(4)  # train/val x loss/accuracy
    assert "fitted in" in status or "LP-FT" in status  # the classifier's fit, not an undertrained curve
    expect(page.locator("#leaderboard")).to_contain_text("mobilenet_v2")  # what auto tried, under the status
    expect(page.locator("#loss-plot .scatterlayer .point").first).to_be_visible()  # one point per group of fit steps
    results = page.locator("#results")
    expect(results).to_be_visible(timeout=LOAD_S)
    expect(page.locator("#results-summary")).to_contain_text("macro F1")
    expect(page.locator("#confusion-plot .js-plotly-plot")).to_be_visible()
    expect(page.locator("#per-class")).to_contain_text("trouser")
    expect(page.locator("#runs-table")).to_contain_text("fashion-mnist")
    predict(page, fashion_pictures[0], FASHION_CLASSES)

    page.locator("#train-btn").scroll_into_view_if_needed()
    page.evaluate("document.querySelector('#train-btn').scrollIntoView({block: 'start'})")
    page.set_viewport_size({"width": 1280, "height": 1450})
    page.wait_for_timeout(800)
    page.screenshot(path=str(SCREENSHOT))

    with page.expect_download(timeout=LOAD_S) as download:
        page.click("#download-btn")
    saved = tmp_path / "model.zip"
    download.value.save_as(saved)
    assert {"model.safetensors", "tlgui.json", "README.md"} <= set(zipfile.ZipFile(saved).namelist())
    model = load_bundle(saved)
    assert model.classes == FASHION_CLASSES
    rows = model.predict([str(p) for p in fashion_pictures], top_k=3)
    assert all(r["label"] in FASHION_CLASSES and len(r["top_k"]) == 3 for r in rows)


def test_uploaded_zip_trains_and_predicts(page: Page, app_url, animal_zip, fashion_pictures):
    open_app(page, app_url)
    upload(page, animal_zip)
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("animals", timeout=LOAD_S)
    expect(summary).to_contain_text("4 classes")
    expect(summary).to_contain_text("100 images used")
    expect(page.locator("#class-counts .js-plotly-plot")).to_be_visible()
    expect(page.locator("#samples")).to_contain_text("zebra")
    wait_ready(page, animal_zip.name)
    small_settings(page, epochs=2)
    page.click("#train-btn")
    wait_status(page, "Finished")
    expect(page.locator("#per-class")).to_contain_text("zebra", timeout=LOAD_S)
    predict(page, fashion_pictures[0], ANIMAL_CLASSES)  # any picture gets one of the model's classes


def test_curve_grows_reopening_shows_the_run_and_stop_keeps_the_best(page: Page, app_url, tiny_zip):
    open_app(page, app_url)
    upload(page, tiny_zip)
    expect(page.locator("#dataset-summary")).to_contain_text("40 images used", timeout=LOAD_S)
    wait_ready(page, tiny_zip.name)
    small_settings(page, epochs=300, freeze="none", patience=0)  # every layer trains; Stop ends it
    page.click("#train-btn")
    seen: set[int] = set()
    deadline = time.monotonic() + RUN_S / 1000
    while time.monotonic() < deadline and len(seen) < 2:  # the curve drawn twice, with more epochs
        seen.add(points(page))
        seen.discard(0)
        page.wait_for_timeout(200)
    assert len(seen) >= 2, f"the curve was never redrawn with more epochs: {seen}"
    page.reload()  # closing the page does not end the run: it is still there, still training
    expect(page.locator("#status")).to_contain_text("Training", timeout=LOAD_S)
    expect(page.locator("#loss-plot .scatterlayer .point").first).to_be_visible(timeout=LOAD_S)
    page.click("#stop-btn")
    status = wait_status(page, "Stopped", timeout=60_000)
    assert "best model" in status
    expect(page.locator("#download-btn")).to_be_visible(timeout=LOAD_S)
    expect(page.locator("#runs-table")).to_contain_text("stopped")


def test_bad_upload_says_why_and_the_page_goes_on(page: Page, app_url, animal_zip, tmp_path):
    open_app(page, app_url)
    fake = tmp_path / "holiday.zip"
    fake.write_text("this is a text file with a .zip name\n")
    upload(page, fake)
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("Error", timeout=LOAD_S)
    expect(summary).to_contain_text("holiday.zip is not a readable zip file")
    assert "Traceback" not in page.content()
    page.click("#train-btn")  # no dataset now: one readable line, nothing breaks
    expect(page.locator("#status")).to_contain_text("Error: choose a built-in example or upload a dataset first")
    page.locator("#dataset-upload button[aria-label='Clear']").click()  # back to the example
    expect(summary).to_contain_text("fashion-mnist", timeout=LOAD_S)
    upload(page, animal_zip)
    expect(summary).to_contain_text("4 classes", timeout=LOAD_S)


def test_two_browsers_each_see_only_their_own_runs(browser, app_url, animal_zip):
    """Two people at once: the second run waits its turn, and neither sees the other's run."""
    first, second = browser.new_context(), browser.new_context()
    try:
        a, b = first.new_page(), second.new_page()
        open_app(a, app_url)
        open_app(b, app_url)
        small_settings(a, epochs=1, image_size="64 px")  # the first test's size: its features are cached
        upload(b, animal_zip)
        expect(b.locator("#dataset-summary")).to_contain_text("animals", timeout=LOAD_S)
        wait_ready(b, animal_zip.name)
        small_settings(b, epochs=1)
        a.click("#train-btn")
        expect(a.locator("#status")).not_to_contain_text("Press", timeout=LOAD_S)
        b.click("#train-btn")
        expect(b.locator("#status")).to_contain_text("Queued", timeout=LOAD_S)
        wait_status(a, "Finished")
        wait_status(b, "Finished")
        expect(a.locator("#runs-table")).to_contain_text("fashion-mnist")
        expect(b.locator("#runs-table")).to_contain_text("animals")
        expect(a.locator("#runs-table")).not_to_contain_text("animals")
        expect(b.locator("#runs-table")).not_to_contain_text("fashion-mnist")
        a.reload()  # the browser keeps its key: its run is still there, and still only its own
        expect(a.locator("#status")).to_contain_text("Finished", timeout=LOAD_S)
        expect(a.locator("#runs-table")).to_contain_text("fashion-mnist")
        assert a.inner_text("#runs-table").count("fashion-mnist") == 1
    finally:
        first.close()
        second.close()
