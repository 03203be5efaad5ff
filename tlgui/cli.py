"""`python -m tlgui`: the engine from the command line. Heavy imports wait until a command runs."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from .config import AUTO, DEVICES, EXPORTS, NOT_SWEPT, RunConfig, cli_settings, flag_of, started_from
from .errors import TlguiError


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line and exit 2, as every other bad input, naming the help to read."""

    def parse_args(self, args=None, namespace=None):
        known, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports these from the top parser: point at the command they followed
            command = getattr(known, "command", None)
            hint = f"{self.prog} {command}" if command else self.prog
            self._fail(f"unrecognized arguments: {' '.join(extras)}", hint)
        return known

    def error(self, message: str):
        self._fail(message, self.prog)  # `tlgui`, or `tlgui train` for a command's own parser

    @staticmethod
    def _fail(message: str, prog: str):
        print(f"error: {message} (see `python -m {prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-column", help="column of image paths in a CSV (detected when omitted)")
    p.add_argument("--text-column", help="column of texts in a CSV (detected when omitted)")
    p.add_argument("--label-column", help="column of labels in a CSV (detected when omitted)")


def _train_options(p: argparse.ArgumentParser) -> None:
    """A run's options: the data, a config file, one flag per setting `RunConfig` offers (its fields'
    metadata give the flag, the choices and the help), resuming, GPUs and the dataset's columns."""
    p.add_argument("data")
    p.add_argument("--config", help="a run's config.json to repeat; flags given beside it win")
    for setting in cli_settings():
        keywords = {k: v for k, v in setting.metadata["cli"].items() if k != "flag"}
        p.add_argument(flag_of(setting), dest=setting.name, default=None, **keywords)  # None: not given
    p.add_argument("--resume", action="store_true", help="continue a killed or stopped run in --out from its last epoch")
    p.add_argument("--gpus", type=int, help="train on N GPUs: starts torchrun --nproc-per-node N (with --device cpu: N CPU processes)")
    _columns(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlgui", description="Transfer learning for image and text classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("backbones", help="list the backbones")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("inspect", help="read a dataset and report what was found")
    p.add_argument("data")
    p.add_argument("--json", action="store_true")
    _columns(p)

    p = train = sub.add_parser("train", help="train a classifier")
    _train_options(p)
    p.add_argument("--out", required=True, help="run folder for config.json, metrics.jsonl and model.zip")

    # every train option is accepted (a train line can be repeated as an audit); --out is not needed
    p = sub.add_parser("audit", help="find likely label errors (frozen features, out-of-fold, cleanlab)")
    _train_options(p)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="a JSON list, most suspicious first")

    p = sub.add_parser("lr-find", help="a short learning-rate sweep; prints loss by rate and a suggested rate")
    for action in train._actions:  # the train options, but nothing is written
        if action.dest not in ("help", "out", "resume", "config", *NOT_SWEPT):
            p._add_action(action)
    p.add_argument("--steps", type=int, default=60, help="steps of the sweep")

    p = sub.add_parser("pretrain", help="pretrain an encoder on unlabelled pictures (labels, if any, ignored)")
    p.add_argument("data")
    p.add_argument("--method", choices=["autoencoder", "vae"], default="autoencoder")
    p.add_argument("--out", required=True, help="run folder for config.json, metrics.jsonl and encoder.zip")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")

    p = sub.add_parser("predict", help="classify images or texts with a model.zip")
    p.add_argument("model")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--text", action="store_true", help="the inputs are texts, not image files")

    p = sub.add_parser("export", help="export a model.zip as ONNX or TorchScript, to run without tlgui")
    p.add_argument("model")
    p.add_argument("--format", required=True, choices=EXPORTS)
    p.add_argument("--out", help="write the file here instead of adding it to the bundle")
    p.add_argument("--data", help="the dataset to check the export on (its validation part) and to calibrate int8 with")

    p = sub.add_parser("push", help="publish a model.zip to the Hugging Face Hub (online, logged in)")
    p.add_argument("model")
    p.add_argument("--repo", required=True, help="the Hub repository, as user/name or name")
    p.add_argument("--private", action="store_true", help="create the repository as private")

    p = sub.add_parser("evaluate", help="score a model.zip on a labelled dataset")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--json", action="store_true")
    _columns(p)
    return parser


def _read(args):
    from .data.datasets import read_dataset
    from .data.tables import check_allowed, data_dirs

    if data_dirs() and Path(args.data).is_dir():  # an operator limits folders to those allowed
        check_allowed(args.data)
    ds = read_dataset(args.data, image_column=args.image_column, text_column=args.text_column,
                      label_column=args.label_column)
    ds.wait_checked()  # a big set's file-by-file check: the report below then counts every file
    return ds


def cmd_backbones(args) -> None:
    from .nets.backbones import all_backbones

    infos = list(all_backbones().values())
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=1))
        return
    print(f"{'name':<22} {'task':<5} {'params':>8} {'size':>5} {'stages':>6} {'offline':>7}")
    for i in infos:
        print(f"{i.name:<22} {i.task:<5} {i.params / 1e6:>7.1f}M {i.input_size:>5} {i.stages:>6} {'yes' if i.offline else 'no':>7}")


def cmd_inspect(args) -> None:
    ds = _read(args)
    print(json.dumps(ds.report(), indent=1) if args.json else ds.summary())


def run_config(args, config_file: str | Path | None = None) -> RunConfig:
    """The run's settings from a `train` line: the config file's, the flags given over them, and an
    earlier model's network (`--init`) over both, as on the page (`config.started_from`)."""
    settings = RunConfig.load(config_file).to_dict() if config_file else {}
    settings.update({f.name: getattr(args, f.name) for f in cli_settings() if getattr(args, f.name, None) is not None})
    if args.init:
        from .outputs.bundle import init_settings

        settings = started_from(settings, args.init, init_settings(args.init))
    return RunConfig.from_dict(settings)


def flags_of(config: RunConfig, always: tuple[str, ...] = ()) -> list[str]:
    """The `train` flags that give `config` back through `run_config`: one for each setting that
    differs from the default, or is named in `always`. Settings without a flag are left out."""
    default, out = RunConfig(), []
    for setting in cli_settings():
        value, flag, action = getattr(config, setting.name), flag_of(setting), setting.metadata["cli"].get("action")
        if (value == getattr(default, setting.name) and setting.name not in always) or value is None:
            continue
        if action == "append":
            out += [f"{flag} {shlex.quote(str(v))}" for v in value]
        elif action == "store_false":
            out += [] if value else [flag]
        elif action is argparse.BooleanOptionalAction:
            out.append(flag if value else f"--no-{flag[2:]}")
        else:
            out.append(f"{flag} {shlex.quote(str(value))}")
    return out


def cmd_train(args) -> None:
    from .events import print_progress
    from .nets.backbones import get_info
    from .training import distributed
    from .training.train import train

    main_rank = distributed.is_main()  # in a torchrun world only rank 0 prints

    config_file = args.config or (Path(args.out, "config.json") if args.resume and Path(args.out, "config.json").exists() else None)
    config = run_config(args, config_file)
    if args.gpus and distributed.world() == 1:  # start the processes; each runs this command without --gpus
        distributed.check_gpus(args.gpus, config.device)
        raise SystemExit(distributed.launch(args.gpus, _without_gpus(args.argv)))
    for name in config.backbones:  # fail fast, before a long dataset read (auto is made real by the data's kind)
        if name != AUTO:
            get_info(name)
    ds = _read(args)
    if main_rank:
        print(ds.summary(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop at the next batch, keep the best model
    if distributed.world() > 1:  # torchrun answers Ctrl-C with SIGTERM to every process: stop the same way
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        result = train(config, ds, args.out, [print_progress] if main_rank else [], stop, resume=args.resume)
    finally:
        distributed.finish()
    if not main_rank:
        return
    if result.bundle is None:
        raise TlguiError("stopped before the first epoch ended: no model was written")
    if result.metrics.get("per_class"):
        print(f"validation accuracy {result.metrics['accuracy']:.4f}, macro F1 {result.metrics['macro_f1']:.4f}")
    print(f"done: {result.bundle}")


def cmd_audit(args) -> None:
    from .events import print_progress
    from .training.audit import DEFAULT_FOLDS, audit, format_issues

    config = run_config(args, args.config)
    ds = _read(args)
    print(ds.summary(), file=sys.stderr, flush=True)
    issues = audit(config, ds, getattr(args, "folds", None) or DEFAULT_FOLDS,
                   listeners=[lambda e: print_progress(e, sys.stderr)])
    print(json.dumps(issues, indent=1, ensure_ascii=False) if args.json else format_issues(issues))


def _without_gpus(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--gpus":
            skip = True
        elif not a.startswith("--gpus="):
            out.append(a)
    return out


def cmd_lr_find(args) -> None:
    from .nets.backbones import get_info
    from .training.lr_find import lr_find

    config = run_config(args)
    for name in config.backbones:
        if name != AUTO:
            get_info(name)
    ds = _read(args)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    found = lr_find(config, ds, steps=args.steps, stop=stop)
    if found["frozen"]:
        print("note: a frozen head is fitted to convergence without a learning rate; this sweep trains the head "
              "alone (the rate matters for --freeze none, N or auto)")
    for lr, loss in zip(found["lrs"], found["losses"]):
        print(f"lr {lr:.2e}  loss {loss:.4f}")
    print(f"suggested lr: {found['suggested']:.2e}")


def cmd_pretrain(args) -> None:
    from .events import print_progress
    from .training.pretrain import PretrainConfig, pretrain, read_images, summary

    config = PretrainConfig(method=args.method, epochs=args.epochs, image_size=args.image_size,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    ds = read_images(args.data)
    print(summary(ds), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop at the next batch, keep the best encoder
    result = pretrain(config, ds, args.out, [print_progress], stop)
    if result.bundle is None:
        raise TlguiError("stopped before the first epoch ended: no encoder was written")
    print(f"done: {result.bundle}")


def cmd_predict(args) -> None:
    from .outputs.bundle import load_bundle

    model = load_bundle(args.model)
    if model.task == "text" and not args.text:
        raise TlguiError("this is a text model: pass texts with --text")
    if model.task == "image" and args.text:
        raise TlguiError("this is an image model: pass image files, without --text")
    for row in model.predict(args.inputs, top_k=args.top_k):
        row["input"] = row["input"] or ""
        print(json.dumps(row, ensure_ascii=False))


def cmd_evaluate(args) -> None:
    from .outputs.bundle import load_bundle
    from .outputs.evaluate import evaluate
    from .outputs.metrics import format_metrics

    model = load_bundle(args.model)
    m = evaluate(model, _read(args))
    for w in m.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps(m, indent=1) if args.json else format_metrics(m))


def cmd_export(args) -> None:
    from .outputs.bundle import add_export

    print(f"done: {add_export(args.model, args.format, args.out, args.data)}")


def cmd_push(args) -> None:
    from .outputs.hub import push

    print(f"done: {push(args.model, args.repo, private=args.private)}")


COMMANDS = {"backbones": cmd_backbones, "inspect": cmd_inspect, "train": cmd_train, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "pretrain": cmd_pretrain, "lr-find": cmd_lr_find, "export": cmd_export,
            "push": cmd_push, "audit": cmd_audit}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --gpus N` passes them on to torchrun
    try:
        COMMANDS[args.command](args)
    except TlguiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: the output was not wanted further
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    return 0
