"""Pretraining an own encoder in the web app, then training a classifier on it; private to its browser."""

from __future__ import annotations

import json
import re
import time
import zipfile

from gradio_client import Client, handle_file
from playwright.sync_api import Page, expect
from realdata import encode_image, fashion_mnist
from test_app_browser import LOAD_S, RUN_S, open_app, pick, small_settings, wait_status

MY_ENCODER = re.compile(r"^my encoder: autoencoder #\d+ · fashion-mnist")


def newest_pretrain_run(runs_root) -> str:
    metas = [json.loads(p.read_text()) for p in runs_root.glob("*/run.json")]
    return max((m for m in metas if m.get("kind") == "pretrain"), key=lambda m: m["created"])["id"]


def one_error_line(status: str) -> None:
    assert status.startswith("**Error:**") and "\n" not in status and "Traceback" not in status, status


def test_pretrain_an_encoder_then_train_on_it(page: Page, app_server):
    open_app(page, app_server["url"])
    page.get_by_text("Optional: pretrain your own encoder").click()
    page.get_by_label("AutoEncoder").check()
    page.fill("#pretrain-epochs input", "2")
    pick(page, "pretrain-image-size", "32 px")
    page.click("#pretrain-btn")
    status = page.locator("#pretrain-status")
    expect(status).to_contain_text("Finished", timeout=RUN_S)
    expect(status).to_contain_text("my encoder: autoencoder #1 · fashion-mnist")
    expect(page.locator("#pretrain-plot .scatterlayer .point")).to_have_count(2 * 2)  # train and val, per epoch
    expect(page.locator("#pretrain-sheet img")).to_be_visible(timeout=LOAD_S)
    expect(page.locator("#pretrain-download-btn")).to_be_visible()

    # the finished encoder is offered among this browser's backbones, by name
    page.locator("#backbones .token", has_text="auto").locator(".token-remove").click()
    page.click("#backbones input[role=combobox]")
    page.get_by_role("option", name=MY_ENCODER).click()
    expect(page.locator("#backbones .token")).to_have_text([MY_ENCODER])
    small_settings(page, epochs=2, image_size="32 px")
    expect(page.locator("#cli-command")).to_contain_text("--backbone encoder.zip")
    expect(page.locator("#estimate")).not_to_contain_text("Warning")
    page.click("#train-btn")
    wait_status(page, "Finished")
    expect(page.locator("#runs-table")).to_contain_text("my autoencoder #1")
    assert str(app_server["runs"]) not in page.inner_text("#runs-table")

    page.reload()  # the encoder stays this browser's: offered again after a reload
    open_app(page, app_server["url"])
    page.get_by_text("Optional: pretrain your own encoder").click()
    expect(page.locator("#pretrain-status")).to_contain_text("Finished", timeout=LOAD_S)
    page.click("#backbones input[role=combobox]")
    expect(page.get_by_role("option", name=MY_ENCODER)).to_be_visible(timeout=LOAD_S)


def test_pretraining_goes_on_after_a_reload_stops_and_stays_private(page: Page, browser, app_server):
    open_app(page, app_server["url"])
    page.get_by_text("Optional: pretrain your own encoder").click()
    page.fill("#pretrain-epochs input", "60")
    pick(page, "pretrain-image-size", "64 px")
    page.click("#pretrain-btn")
    expect(page.locator("#pretrain-plot .scatterlayer .point").first).to_be_visible(timeout=RUN_S)
    page.reload()  # closing the page does not end the run; the section opens by itself to show it
    expect(page.locator("#pretrain-status")).to_contain_text("Training", timeout=LOAD_S)
    page.click("#pretrain-stop-btn")
    expect(page.locator("#pretrain-status")).to_contain_text("Stopped", timeout=60_000)
    expect(page.locator("#pretrain-status")).to_contain_text("best encoder so far")
    expect(page.locator("#pretrain-sheet img")).to_be_visible(timeout=LOAD_S)

    other = browser.new_context()
    try:
        stranger = other.new_page()
        open_app(stranger, app_server["url"])
        stranger.click("#backbones input[role=combobox]")
        expect(stranger.get_by_role("option", name="efficientnet_lite1")).to_be_visible()
        expect(stranger.get_by_role("option", name=re.compile("^my encoder"))).to_have_count(0)
        stranger.get_by_text("Optional: pretrain your own encoder").click()
        expect(stranger.locator("#pretrain-status")).to_contain_text("Press Pretrain")
    finally:
        other.close()


def test_programs_pretrain_on_an_upload_and_name_only_their_own_encoders(app_server, tmp_path):
    """An upload of loose pictures, a VAE, the shared queue, Stop, and encoders that only their owner can name."""
    pictures = tmp_path / "shots.zip"
    images, _, _ = fashion_mnist(3, split="test", seed=3)
    with zipfile.ZipFile(pictures, "w") as z:  # no class folders, no labels, a note beside the pictures
        for i, image in enumerate(images):
            z.writestr(f"shop/{i}.png", encode_image(image))
        z.writestr("shop/notes.txt", "taken in the shop")
    ann = Client(app_server["url"], download_files=str(tmp_path / "ann"), verbose=False)
    bob = Client(app_server["url"], download_files=str(tmp_path / "bob"), verbose=False)
    one_error_line(ann.predict(api_name="/pretrain_stop"))  # nothing pretraining yet
    status = ann.predict(handle_file(str(pictures)), method="vae", epochs=1, image_size=32, api_name="/pretrain")
    assert "Error" not in status, status
    run_id = newest_pretrain_run(app_server["runs"])

    one_error_line(bob.predict(backbones=[f"encoder:{run_id}"], epochs=1, image_size="32", api_name="/train"))
    for path in ("/etc/passwd.zip", str(app_server["runs"] / run_id / "encoder.zip"), "../encoder.zip"):
        status = bob.predict(backbones=[path], epochs=1, image_size="32", api_name="/train")
        one_error_line(status)
        assert "file path" in status

    deadline = time.monotonic() + RUN_S / 1000
    status = ann.predict(api_name="/pretrain_status")
    while "Finished" not in status:  # a program follows its pretraining as a person would
        assert time.monotonic() < deadline and "Error" not in status, status
        time.sleep(0.5)
        status = ann.predict(api_name="/pretrain_status")
    assert f"encoder:{run_id}" in status  # the name the finished status gives programs
    status = ann.predict(backbones=[f"encoder:{run_id}"], epochs=1, image_size="32", api_name="/train")
    assert "Error" not in status, status
    # one run at a time here: a pretraining waits behind the training, and Stop takes it out of the queue
    assert "Queued" in ann.predict(epochs=50, api_name="/pretrain")
    assert "Stopped" in ann.predict(api_name="/pretrain_stop")
    while not any(word in status for word in ("Finished", "Stopped", "Error")):
        assert time.monotonic() < deadline, status
        time.sleep(1)
        status = ann.predict(api_name="/status")
    assert "Finished" in status, status
