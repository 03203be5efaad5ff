"""The web app from a program: gradio_client uploads a dataset, trains, polls, downloads, predicts."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tlgui.outputs.bundle import load_bundle

ANIMAL_CLASSES = ["bear", "cat", "dog", "zebra"]
RUN_S = 240


@pytest.fixture
def client(app_url, tmp_path) -> Client:
    return Client(app_url, download_files=str(tmp_path / "downloads"), verbose=False)


def wait_until_done(client: Client) -> str:
    deadline = time.monotonic() + RUN_S
    status = client.predict(api_name="/status")
    while not any(word in status for word in ("Finished", "Stopped", "Error")):
        assert time.monotonic() < deadline, status
        time.sleep(1)
        status = client.predict(api_name="/status")
    return status


def test_named_endpoints_are_the_documented_ones(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/load_dataset", "/train", "/stop", "/resume", "/status", "/predict", "/download", "/pretrain",
                     "/pretrain_stop", "/pretrain_status", "/add_class", "/add_pictures", "/add_webcam_picture",
                     "/dataset_zip", "/find_label_errors", "/save_corrected", "/load_server_dataset",
                     "/lr_find", "/hub_check"}


def test_upload_train_poll_download_predict(client, animal_zip, fashion_pictures, tmp_path):
    summary = client.predict(handle_file(str(animal_zip)), api_name="/load_dataset")
    assert "animals" in summary and "4 classes" in summary and "100 images used" in summary
    status = client.predict(backbones=["efficientnet_lite0"], epochs=2, image_size="32", export=["onnx"],
                            api_name="/train")
    assert "Error" not in status, status
    status = wait_until_done(client)
    assert "Finished" in status and "validation accuracy" in status, status
    assert "Finished" in client.predict(api_name="/stop")  # stopping an ended run changes nothing

    path = Path(client.predict(api_name="/download"))
    assert path.name == "model.zip" and path.is_relative_to(tmp_path / "downloads")
    assert "model.onnx" in zipfile.ZipFile(path).namelist()  # asked for: runs without tlgui
    model = load_bundle(path)
    assert model.classes == ANIMAL_CLASSES
    assert model.predict([str(fashion_pictures[0])])[0]["label"] in ANIMAL_CLASSES

    label, message = client.predict(handle_file(str(fashion_pictures[0])), None, api_name="/predict")
    assert label["label"] in ANIMAL_CLASSES and not message
    assert [c["label"] for c in label["confidences"]][0] == label["label"]
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 0.05 or len(label["confidences"]) == 3


def test_mistakes_come_back_as_one_line(client, animal_zip):
    assert client.predict(api_name="/status") == "**Error:** no run is going: press Train first"
    client.predict(handle_file(str(animal_zip)), api_name="/load_dataset")
    status = client.predict(backbones=["minilm_l6"], epochs=1, api_name="/train")
    assert status.startswith("**Error:** minilm_l6 works on texts, but the dataset holds images"), status
    with pytest.raises(AppError, match="less than minimum"):  # the page's own limits hold for programs too
        client.predict(backbones=["efficientnet_lite0"], epochs=0, api_name="/train")
    label, message = client.predict(None, "some text", api_name="/predict")
    assert message.startswith("**Error:**") and "\n" not in message
