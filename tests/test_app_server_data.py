"""The app on a server with data folders (TLGUI_DATA_DIRS): a folder of 20,000 pictures is
reported in seconds, read in place; a folder outside the allowed ones gets the CLI's sentence."""

from __future__ import annotations

import os
import time

import pytest
from conftest import start_app
from gradio_client import Client

from tlgui.cli import main
from tlgui.ui.guard import hide_paths


@pytest.fixture(scope="module")
def server(big_folder, tmp_path_factory):
    base = tmp_path_factory.mktemp("server-app")
    env = {**os.environ, "TLGUI_RUNS_DIR": str(base / "runs"), "GRADIO_TEMP_DIR": str(base / "gradio"),
           "TLGUI_CACHE_DIR": str(base / "features"), "TLGUI_DATA_DIRS": str(big_folder.parent),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("TLGUI_PUBLIC", None)
    env.pop("SPACE_ID", None)
    proc, url = start_app(env, base / "app.log")
    yield Client(url, verbose=False)
    proc.terminate()
    proc.wait(timeout=30)


def test_a_big_server_folder_is_reported_within_ten_seconds(server, big_folder):
    t = time.perf_counter()
    summary = server.predict(str(big_folder), api_name="/load_server_dataset")
    seconds = time.perf_counter() - t
    assert seconds < 10, f"the report took {seconds:.1f} s"
    assert "10 classes" in summary and "20001 images used" in summary.replace(",", "")
    assert "checking every file in the background" in summary


def test_a_folder_outside_the_allowed_ones_gets_the_cli_sentence(server, tmp_path, capsys, monkeypatch, big_folder):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    page = server.predict(str(outside), api_name="/load_server_dataset")
    monkeypatch.setenv("TLGUI_DATA_DIRS", str(big_folder.parent))
    monkeypatch.delenv("TLGUI_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert main(["inspect", str(outside)]) == 2
    line = capsys.readouterr().err.strip()
    # the same sentence, with the server's folders shortened to their names as every page message is
    assert line.startswith("error: ") and hide_paths(line[len("error: "):]) in page
