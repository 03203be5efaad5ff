"""Experiment tracking and publishing: TensorBoard event files in each run folder, an MLflow run
in a local file store when TLGUI_MLFLOW_TRACKING_URI is set, and `push` offline."""

from __future__ import annotations

import json

import pytest

from realdata import fashion_mnist, write_class_zip
from test_cli import _one_line_error, tlgui

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    data = write_class_zip(root / "train.zip", *fashion_mnist(12, classes=[1, 8, 9]))
    store = root / "mlruns"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLGUI_MLFLOW_TRACKING_URI", store.as_uri())
        # frozen with augmentation: the head trains by epochs (a frozen run without it is one converged fit)
        p = tlgui("train", data, "--backbone", "efficientnet_lite0", "--freeze", "all", "--epochs", "3", "--patience", "0", "--image-size", "32", "--augment",
                  "--out", root / "run")
    assert "warning" not in p.stdout
    return root / "run", store


def test_tensorboard_holds_the_runs_curves(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in history if r["split"] == "val"]
    assert [s.step for s in events.Scalars("loss/val")] == [1, 2, 3]
    assert [round(s.value, 5) for s in events.Scalars("loss/val")] == [round(r["loss"], 5) for r in val]
    assert [round(s.value, 5) for s in events.Scalars("accuracy/train")] == \
        [round(r["accuracy"], 5) for r in history if r["split"] == "train"]
    lr = [s.value for s in events.Scalars("learning_rate")]
    assert len(lr) == 3 and lr[0] > lr[-1] >= 0  # the cosine schedule falls
    (image,) = events.Images("confusion_matrix")
    assert image.width > image.height > 3 * 20  # three classes, a cell each way, their names on the left


def test_mlflow_run_holds_params_metrics_and_bundle(tracked, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    run, store = tracked
    client = MlflowClient(tracking_uri=store.as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("tlgui").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["backbones"] == "efficientnet_lite0" and found.data.params["epochs"] == "3"
    results = json.loads((run / "results.json").read_text())
    assert found.data.metrics["accuracy"] == pytest.approx(results["metrics"]["accuracy"])
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_loss")] == [1, 2, 3]
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["model.zip"]
    local = client.download_artifacts(found.info.run_id, "model.zip", str(run.parent / "downloaded"))
    assert open(local, "rb").read() == (run / "model.zip").read_bytes()


def test_push_says_one_sentence_when_it_cannot(tracked, monkeypatch, tmp_path):
    run, _ = tracked
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    said = _one_line_error(tlgui("push", run / "model.zip", "--repo", "someone/model", check=False))
    assert said == "error: not logged in to the Hugging Face Hub: log in with `hf auth login` (or set HF_TOKEN), then push again"
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as offline
    said = _one_line_error(tlgui("push", run / "model.zip", "--repo", "someone/model", check=False))
    assert said.startswith("error: cannot reach the Hugging Face Hub") and said.endswith("then push again")
    said = _one_line_error(tlgui("push", run / "model.zip", "--repo", "a b/../c", check=False))
    assert "'a b/../c' is not a Hub repository name" in said
    said = _one_line_error(tlgui("push", run / "config.json", "--repo", "someone/model", check=False))
    assert "config.json is not a tlgui model bundle" in said
