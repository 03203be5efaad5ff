"""The page's settings and the command line are one set of `RunConfig` fields: the same names and
choices, and the page's command line gives back the page's run, an earlier model included. No
training: parsing is enough."""

from __future__ import annotations

import json
import shlex
import zipfile
from types import SimpleNamespace

import gradio as gr
import pytest

from tlgui.cli import build_parser, run_config
from tlgui.config import RunConfig, cli_settings, flag_of
from tlgui.outputs.bundle import FORMAT_VERSION
from tlgui.ui import model_step
from tlgui.ui.run_settings import START, cli_command, make_config, page_values, start_model


@pytest.fixture(scope="module")
def step() -> SimpleNamespace:
    step = SimpleNamespace(initial_dataset=None)
    with gr.Blocks():
        model_step.build(step, ctx=None)
    return step


def defaults(step) -> dict:
    return {name: component.value for name, component in step.settings.items()}


def parsed(command: str, *more: str) -> RunConfig:
    """The RunConfig that `train` makes of a command line."""
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:4] == ["python", "-m", "tlgui", "train"], command
    return run_config(build_parser().parse_args([*argv[3:], *more]))


def test_every_page_setting_is_a_flag_with_the_same_choices(step):
    settings = {f.name: f for f in cli_settings()}
    train = build_parser()._subparsers._group_actions[0].choices["train"]._option_string_actions
    assert set(step.settings) - set(START) <= set(settings), "a page setting the command line lacks"
    for name, component in step.settings.items():
        if name in START:  # where a run starts: --no-pretrained and --init
            continue
        flag = train[flag_of(settings[name])]
        assert flag.dest == name
        offered = [value for _, value in getattr(component, "choices", None) or []]
        if flag.choices:
            assert offered == list(flag.choices), name
        for value in offered:  # every choice the page offers makes a valid run, and shows again as itself
            shown = [value] if name in ("backbones", "export") else value
            config = make_config({**defaults(step), name: shown})
            assert page_values(config, [name])[name] == shown, name


def test_the_page_starts_where_a_bare_train_does(step):
    """One set of defaults for both faces: the page's untouched settings are a bare `train`'s run
    (freeze `auto` included), and the command line the page shows says nothing more."""
    bare = parsed("python -m tlgui train data.zip --out run")
    assert make_config(defaults(step)) == bare and bare.freeze == "auto"
    command = cli_command({"cli_path": "data.zip"}, bare)
    assert "--freeze" not in command and parsed(command) == bare


@pytest.mark.parametrize("changes", [
    {},
    {"backbones": ["efficientnet_lite0", "mobilenet_v2"], "fusion": "weighted", "freeze": "2", "image_size": "64",
     "augment": "on", "start_from": "scratch", "export": ["onnx", "torchscript"], "lr": 0.003, "val_split": 0.25,
     "patience": 0, "seed": 7, "batch_size": 8},
    {"freeze": "auto", "budget": 30.5, "class_weights": "off", "augment": "off", "fusion": "mean"},
    {"freeze": "all", "folds": 3, "epochs": 4, "image_size": "native"},
])
def test_the_pages_command_line_gives_back_the_pages_run(step, changes):
    config = make_config({**defaults(step), **changes})
    assert parsed(cli_command({"cli_path": "my data.zip"}, config)) == config


def test_an_earlier_models_network_wins_on_the_page_and_the_command_line(step, tmp_path, monkeypatch):
    """Started from an earlier model, a run takes that model's network over the settings beside it
    (the page's fields, a flag, a config file), and the page's command line says `--init`."""
    earlier = RunConfig(backbones=["mobilenet_v2"], image_size=32, fusion_dim=128)
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as z:
        z.writestr("tlgui.json", json.dumps({"format_version": FORMAT_VERSION, "classes": ["cat", "dog"],
                                             "backbones": [{"name": "mobilenet_v2"}], "config": earlier.to_dict()}))
    monkeypatch.chdir(tmp_path)
    values = {**defaults(step), "image_size": "64", "epochs": 2, "start_from": "upload", "init_upload": "model.zip"}
    config = start_model(None, "someone", make_config(values), values)
    assert (config.backbones, config.image_size, config.fusion_dim, config.init) == (["mobilenet_v2"], 32, 128,
                                                                                   "model.zip")
    command = cli_command(None, config)
    assert "--init model.zip" in command
    assert parsed(command) == config
    assert parsed(command, "--backbone", "resnet18", "--image-size", "96").backbones == ["mobilenet_v2"]
    RunConfig(image_size=96).save(tmp_path / "config.json")
    assert parsed(command, "--config", "config.json").image_size == 32
