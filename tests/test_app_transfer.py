"""Every kind of transfer in the browser: pretrained weights, an earlier model, no pretraining,
a saved recipe applied to other data, the runs compared side by side; and a text dataset."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

from playwright.sync_api import Page, expect

from tlgui.ui.text import t
from test_app_browser import LOAD_S, RUN_S, open_app, pick, small_settings, upload, wait_ready, wait_status

REVIEW_LABELS = ["negative", "positive"]


def pick_like(page: Page, elem_id: str, pattern: str) -> None:
    """Choose the first option of a dropdown whose label matches `pattern` (run labels carry a time)."""
    page.click(f"#{elem_id} input[role=combobox]")
    page.get_by_role("option", name=re.compile(pattern)).first.click()


def train(page: Page, runs_root: Path) -> Path:
    """Press Train and wait for that run (not the one shown before) to finish; its folder."""
    def runs() -> set[Path]:  # a run's folder counts once its run.json is written
        return {f.parent for f in runs_root.glob("*/run.json")}

    before = runs()
    page.click("#train-btn")
    deadline = time.monotonic() + RUN_S / 1000
    while not (new := runs() - before):
        assert time.monotonic() < deadline, page.inner_text("#status")
        page.wait_for_timeout(200)
    (folder,) = new
    while json.loads((folder / "run.json").read_text())["state"] != "finished":
        assert time.monotonic() < deadline, page.inner_text("#status")
        page.wait_for_timeout(200)
    wait_status(page, "Finished")
    return folder


def card(folder: Path) -> str:
    return zipfile.ZipFile(folder / "model.zip").read("README.md").decode()


def accuracy_history(folder: Path) -> list[float]:
    return [h["val_accuracy"] for h in json.loads((folder / "results.json").read_text())["history"]]


def test_transfer_kinds_recipe_and_comparison(page: Page, app_server, animal_zip):
    runs_root = app_server["runs"]
    open_app(page, app_server["url"])
    small_settings(page, epochs=8, image_size="64 px", freeze="all")
    frozen = train(page, runs_root)
    assert "parameters: pretrained weights, feature extraction" in card(frozen)

    # the settings as a named recipe, for later
    page.get_by_text("Recipes (reuse").click()
    page.fill("#recipe-name textarea, #recipe-name input", "quick look")
    page.click("#recipe-save-btn")
    expect(page.locator("#recipe-message")).to_contain_text("Saved the recipe quick look", timeout=LOAD_S)

    # parameter transfer: the frozen run's model goes on training, every layer now
    page.get_by_label("one of my earlier models").check()
    # no earlier model picked yet: the command line gives way to the reason, which Train would show too
    expect(page.locator("#cli-command")).to_contain_text(t("init_pick_run"), timeout=LOAD_S)
    pick_like(page, "init-run", r"^#\d+ fashion-mnist")
    expect(page.locator("#cli-command")).to_contain_text(re.compile(r"--init \S*model\.zip"), timeout=LOAD_S)
    pick(page, "freeze", "none")
    page.fill("#epochs input", "1")
    tuned = train(page, runs_root)
    assert "started from an earlier tlgui model" in card(tuned)
    # it starts where the earlier model was, not from chance (0.1)
    assert accuracy_history(tuned)[0] > max(accuracy_history(frozen)) - 0.15 > 0.4

    # structure transfer: the same network with random weights
    page.get_by_label("no pretraining").check()
    scratch = train(page, runs_root)
    assert "structure only" in card(scratch)

    # the three side by side: curves and final metrics
    for number in (1, 2, 3):  # this browser's runs are numbered from 1
        pick_like(page, "compare", rf"^#{number} fashion-mnist")
    page.keyboard.press("Escape")
    expect(page.locator("#compare-plot .js-plotly-plot")).to_be_visible(timeout=LOAD_S)
    table = page.locator("#compare-table")
    for words in ("feature extraction", "started from an earlier", "structure only"):
        expect(table).to_contain_text(words, timeout=LOAD_S)

    # training-strategy transfer: the recipe, in one click, on another dataset
    upload(page, animal_zip)
    wait_ready(page, animal_zip.name)
    pick(page, "recipe-pick", "recipe: quick look")
    page.click("#recipe-apply-btn")
    expect(page.locator("#recipe-message")).to_contain_text("Applied", timeout=LOAD_S)
    expect(page.locator("#epochs input")).to_have_value("8")
    # the recipe was saved with the first run's freeze, `all` (the page since went on to `none`)
    expect(page.locator("#freeze input[role=combobox]")).to_have_value("all")
    expect(page.locator("#cli-command")).to_contain_text("--image-size 64")
    expect(page.locator("#cli-command")).not_to_contain_text("--no-pretrained")


def test_text_dataset_in_the_browser(page: Page, app_url):
    """The movie-reviews example: text backbones offered, a text run, misclassified texts, a text prediction."""
    open_app(page, app_url)
    page.locator("#example-picker label", has_text="movie-reviews").click()
    expect(page.locator("#dataset-summary")).to_contain_text("texts used", timeout=LOAD_S)
    expect(page.locator("#cli-command")).to_contain_text("movie-reviews", timeout=LOAD_S)
    page.click("#backbones input[role=combobox]")  # the list matches the data: text backbones only
    expect(page.get_by_role("option", name="minilm_l6", exact=True)).to_be_visible(timeout=LOAD_S)
    expect(page.get_by_role("option", name="efficientnet_lite0", exact=True)).to_have_count(0)
    page.keyboard.press("Escape")
    page.get_by_text("Advanced settings").click()
    page.fill("#epochs input", "3")
    expect(page.locator("#cli-command")).to_contain_text("--epochs 3")
    page.click("#train-btn")
    assert "validation accuracy" in wait_status(page, "Finished")
    expect(page.locator("#mistakes-text")).to_contain_text("predicted", timeout=LOAD_S)
    expect(page.locator("#predict-text")).to_be_visible(timeout=LOAD_S)
    page.fill("#predict-text textarea", "A wonderful film: moving, funny and beautifully acted. I loved it.")
    page.click("#predict-btn")
    output = page.locator("#predict-output")
    expect(output).to_contain_text("%", timeout=LOAD_S)
    assert any(label in output.inner_text() for label in REVIEW_LABELS)
