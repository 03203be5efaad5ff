"""The page's recipe settings from a program (gradio_client): auto with its budget, k folds, the
learning-rate finder, the tokens kept per text, and their bad values as one line in the status."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from test_app_api import client, wait_until_done  # noqa: F401 - the fixture and the poll loop, shared


def test_folds_auto_budget_and_lr_find_from_a_program(client, animal_zip):
    client.predict(handle_file(str(animal_zip)), api_name="/load_dataset")
    status = client.predict(backbones=["efficientnet_lite0"], freeze="all", folds=3, image_size="32", api_name="/train")
    assert "Error" not in status, status
    status = wait_until_done(client)
    assert "fitted in" in status and "3-fold cross-validation" in status, status

    status = client.predict(backbones=["efficientnet_lite0"], freeze="auto", budget=0.001, image_size="32",
                            api_name="/train")
    status = wait_until_done(client)
    assert "too small for even one linear probe" in status and "\n" not in status, status  # as on the command line

    lr, message, _ = client.predict(backbones=["efficientnet_lite0"], freeze="all", image_size="32", api_name="/lr_find")
    assert 1e-7 <= lr <= 1 and "Suggested learning rate" in message, message


@pytest.mark.parametrize("settings,words", [
    (dict(freeze="auto", budget=-3), "--budget must be a positive number"),
    (dict(freeze="all", folds=40), "more than the smallest class has examples"),
    (dict(max_length=-5), "--max-length must be a whole number of tokens"),
])
def test_bad_recipe_settings_are_one_line(client, animal_zip, settings, words):
    client.predict(handle_file(str(animal_zip)), api_name="/load_dataset")
    status = client.predict(backbones=["efficientnet_lite0"], image_size="32", **settings, api_name="/train")
    if "Error" not in status:
        status = wait_until_done(client)
    assert status.startswith("**Error:**") and words in status and "\n" not in status, status
