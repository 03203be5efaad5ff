"""Speed benchmark: each row compares two things measured side by side in one run, as a ratio.

    python bench/run.py [--data DIR] [--write]   (about 4 minutes on an idle 2-core CPU)

1. a frozen backbone, 10 epochs against 1 epoch (features computed once, epochs nearly free);
2. a second run on the same data and backbone against the first (the disk feature cache);
3. full fine-tuning for one epoch: tlgui against a plain PyTorch loop on the same model, data,
   batch size and optimizer;
4. forward images/s of each offline backbone at its native size, the GFLOP/s that implies,
   against this machine's fp32 matrix-multiply rate; channels-last against NCHW; picture
   decoding against the forward pass;
5. the time estimate told at the start of a run against the time the run then took.

Data: the built-in example (assets/examples/fashion-mnist: 300 real Fashion-MNIST pictures).
`--write` also writes bench/RESULTS.md. On a GPU (when one is present) the same rows run there.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlgui.config import RunConfig  # noqa: E402
from tlgui.data.batches import decode_images, image_batch, uses_channels_last  # noqa: E402
from tlgui.data.datasets import read_dataset  # noqa: E402
from tlgui.nets.backbones import build_backbone, get_info  # noqa: E402
from tlgui.training import timing  # noqa: E402
from tlgui.training.device import pick_device, seed_everything  # noqa: E402
from tlgui.training.inputs import build_classifier  # noqa: E402
from tlgui.training.train import train  # noqa: E402

OFFLINE = ("efficientnet_lite0", "efficientnet_lite1", "mobilenet_v2")
TARGETS = {"epochs": 1.3, "cache": 0.3, "finetune": 1.1}


# -- the machine -------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split())
    except (OSError, StopIteration):
        flags = set()
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["no bf16 instructions"]
    return {"cpu": cpu, "bf16_units": ", ".join(bf16), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "gpu": gpu, "load": os.getloadavg()}


def matmul_gflops(device: torch.device, dtype=torch.float32, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- row 4: throughput ---------------------------------------------------------------------------
def forward_rate(backbone, pixels: torch.Tensor, device: torch.device, channels_last: bool, batch: int,
                 rounds: int = 2) -> float:
    """Images/s of a frozen forward pass (inference mode), best of `rounds` after a warm-up."""
    backbone.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    amp = torch.bfloat16 if device.type == "cuda" else None
    x = pixels.repeat(batch // len(pixels) + 1, 1, 1, 1)[:batch]
    best = 0.0
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        backbone(image_batch(x, device, False, channels_last=channels_last))
        for _ in range(rounds):
            _sync(device)
            t = time.perf_counter()
            backbone(image_batch(x, device, False, channels_last=channels_last))
            _sync(device)
            best = max(best, batch / (time.perf_counter() - t))
    return best


def throughput_rows(ds, device: torch.device) -> list[dict]:
    batch = 128 if device.type == "cuda" else 32
    peak = matmul_gflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    rows = []
    idx = np.arange(min(batch, len(ds)))
    for name in OFFLINE:
        info = get_info(name)
        if not info.offline:
            continue
        t = time.perf_counter()
        pixels = decode_images(ds, idx, info.input_size)
        decode_rate = len(idx) / (time.perf_counter() - t)
        backbone = build_backbone(name, pretrained=True).to(device).eval()
        cl = forward_rate(backbone, pixels, device, True, batch)
        plain = forward_rate(backbone, pixels, device, False, batch)
        best = max(cl, plain)
        gflops = best * 2 * info.gflops  # the registry counts multiply-adds; a matmul's rate counts 2 per
        row = {"backbone": name, "size": info.input_size, "img_s": best, "channels_last": cl, "nchw": plain,
               "gflop_s": gflops, "peak": peak, "decode_img_s": decode_rate}
        if name == OFFLINE[0] and device.type == "cpu":  # the extraction batch and the thread count
            row["batches"] = {b: forward_rate(backbone, pixels, device, True, b) for b in (8, 16, 64)} | {batch: cl}
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                row["one_thread"] = forward_rate(backbone, pixels, device, True, batch)
            finally:
                torch.set_num_threads(threads)
        rows.append(row)
    return rows


# -- rows 1, 2, 5: frozen runs -------------------------------------------------------------------
class Clock:
    """A listener keeping when each event first came, and the `started` event's estimate."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.at: dict[str, float] = {}
        self.estimate: dict | None = None
        self.epochs = 0

    def __call__(self, e: dict) -> None:
        now = time.perf_counter() - self.t0
        self.at.setdefault(e["event"], now)
        if e["event"] == "preparing":
            self.at[e["what"]] = now  # the last report of a phase: when it ended
        if e["event"] == "started":
            self.estimate = e.get("estimate")
        if e["event"] == "estimate":  # a frozen run tells its time from its first batches, counted from its start
            self.estimate = {"total": e["total"], "told_after": now}
        if e["event"] == "epoch":
            self.epochs += 1


def timed_run(config: RunConfig, ds, out: Path, cache: str | None) -> tuple[float, Clock]:
    """Wall seconds of `train()`, as a fresh process would run it: empty probe memory, and the
    feature cache at `cache` (None: off)."""
    timing.forget()
    if cache is None:
        os.environ["TLGUI_CACHE_MB"] = "0"
    else:
        os.environ["TLGUI_CACHE_MB"] = "1024"
        os.environ["TLGUI_CACHE_DIR"] = cache
    clock = Clock()
    train(config, ds, out, [clock])
    return time.perf_counter() - clock.t0, clock


# -- row 3: a plain PyTorch loop -----------------------------------------------------------------
def plain_finetune(config: RunConfig, ds, device: torch.device) -> float:
    """One epoch of full fine-tuning written plainly: decode with PIL, the same classifier, AdamW
    with the same parameter groups, the same batch size, a validation pass, weights saved."""
    from PIL import Image
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    generator = seed_everything(config.seed)
    ds.assign_splits(config.val_split, config.seed)
    tr, va = ds.indices("train"), ds.indices("val")
    model = build_classifier(config, len(ds.classes)).to(device)
    if uses_channels_last(device):
        model.to(memory_format=torch.channels_last)
    size = model.backbones[0].input_size

    def load(indices):
        arrays = [np.asarray(Image.open(io.BytesIO(ds.source.read(ds.inputs[i]))).convert("RGB").resize((size, size), Image.BILINEAR))
                  for i in indices]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    x_tr, x_va = load(tr), load(va)
    y_tr, y_va = torch.as_tensor(ds.labels[tr]), torch.as_tensor(ds.labels[va])
    backbone = [p for p in model.backbones.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    opt = torch.optim.AdamW([{"params": head, "lr": config.lr},
                             {"params": backbone, "lr": config.lr * config.backbone_lr_scale}],
                            lr=config.lr, weight_decay=config.weight_decay)
    amp = torch.bfloat16 if device.type == "cuda" else None
    model.train()
    order = torch.randperm(len(tr), generator=generator)
    for start in range(0, len(tr), config.batch_size):
        idx = order[start : start + config.batch_size]
        x = x_tr[idx].to(device).float().div_(255)
        if uses_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y_tr[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(va), 64):
            x = x_va[start : start + 64].to(device).float().div_(255)
            if uses_channels_last(device):
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                correct += (model(x).argmax(1).cpu() == y_va[start : start + 64]).sum().item()
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, f"{tmp}/model.safetensors")
    return time.perf_counter() - t0


# -- the report ----------------------------------------------------------------------------------
def fmt_ratio(value: float, target: float | None = None) -> str:
    mark = "" if target is None else (" (target <= %.1fx: %s)" % (target, "met" if value <= target else "MISSED"))
    return f"{value:.2f}x{mark}"


def fastest(runs: list[tuple[float, Clock]]) -> tuple[float, Clock]:
    """The quickest of repeated runs: on a shared machine, other work only ever adds time."""
    return min(runs, key=lambda r: r[0])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tlgui-speed-"))  # runs and the feature cache of this benchmark
    try:
        bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "assets" / "examples" / "fashion-mnist"))
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the compared runs, interleaved (fastest kept)")
    parser.add_argument("--write", action="store_true", help="also write bench/RESULTS.md")
    parser.add_argument("--skip-finetune", action="store_true", help="leave out the fine-tuning rows")
    args = parser.parse_args()

    info = machine()
    device = pick_device("auto")
    ds = read_dataset(args.data)
    lines: list[str] = []
    started = time.perf_counter()

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    # a first run pays once per process for imports and kernel set-up: not part of any row
    timed_run(RunConfig(freeze="all", epochs=1), ds, work / "warm-up", cache=None)

    # rows 1, 2, 5: frozen default runs (efficientnet_lite0, native size, 10 epochs), and row 3:
    # one epoch of fine-tuning without augmentation, tlgui and a plain loop; rounds interleaved
    tuned = RunConfig(freeze="none", epochs=1, augment=False)
    one, ten, again, plain, tl = [], [], [], [], []
    for r in range(args.repeat):
        cache = str(work / f"cache{r}")  # empty at each round's first 10-epoch run
        one.append(timed_run(RunConfig(freeze="all", epochs=1), ds, work / f"frozen1-{r}", cache=None))
        ten.append(timed_run(RunConfig(freeze="all"), ds, work / f"frozen10-{r}", cache=cache))
        again.append(timed_run(RunConfig(freeze="all"), ds, work / f"frozen10-again-{r}", cache=cache))
        if not args.skip_finetune:
            plain.append(plain_finetune(tuned, ds, device))
            tl.append(timed_run(tuned, ds, work / f"tuned-{r}", cache=None))
    # long enough for the estimate to time a training step (with augmentation, as by default)
    long = None if args.skip_finetune else timed_run(RunConfig(freeze="none", epochs=3, patience=0), ds,
                                                      work / "tuned3", cache=None)
    rows4 = throughput_rows(ds, device)
    (t1, _), (t10, c10), (t_warm, c_warm) = fastest(one), fastest(ten), fastest(again)

    say("# tlgui speed benchmark")
    say()
    say("`python bench/run.py --write` wrote this file. Every ratio compares runs made side by side in one")
    say(f"process, {args.repeat} interleaved rounds, the fastest of each kept (other work on a shared machine only adds time).")
    say()
    cpu = torch.device("cpu")
    say(f"- CPU: {info['cpu']}, {info['cores']} cores ({info['bf16_units']}); torch {info['torch']} with "
        f"{info['threads']} threads; Python {info['python']}; GPU: {info['gpu']}")
    say(f"- CPU matmul: fp32 {matmul_gflops(cpu):.0f} GFLOP/s, bf16 "
        f"{matmul_gflops(cpu, torch.bfloat16, n=256, seconds=0.5):.1f} GFLOP/s (tlgui autocasts on CUDA only; CPU runs stay fp32)")
    say(f"- data: {Path(args.data).name}, {len(ds)} real Fashion-MNIST images, {len(ds.classes)} classes, "
        f"80/20 split; device {device}")
    say(f"- load average (1/5/15 min) at the start {' / '.join(f'{x:.1f}' for x in info['load'])}, "
        f"at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}; whole benchmark {time.perf_counter() - started:.0f} s")
    say()
    say("| # | measure | figures | ratio |")
    say("|---|---|---|---|")
    say(f"| 1 | frozen efficientnet_lite0 at 224 px: {c10.epochs} epochs vs 1 epoch (features computed once; "
        f"cache empty / off) | {t10:.1f} s vs {t1:.1f} s | {fmt_ratio(t10 / t1, TARGETS['epochs'])} |")
    say(f"| 2 | the same 10-epoch run again, features from the disk cache, vs the first "
        f"| {t_warm:.1f} s vs {t10:.1f} s | {fmt_ratio(t_warm / t10, TARGETS['cache'])} |")
    if tl:
        (t_tl, c_tl), t_plain = fastest(tl), min(plain)
        say(f"| 3 | full fine-tuning, 1 epoch at 224 px, batch 32, AdamW: tlgui (all of `train()`, its time "
            f"estimate included) vs a plain PyTorch loop | {t_tl:.1f} s vs {t_plain:.1f} s "
            f"| {fmt_ratio(t_tl / t_plain, TARGETS['finetune'])} |")
    for r in rows4:
        say(f"| 4 | {r['backbone']} forward at {r['size']} px, batch 32: {r['img_s']:.1f} img/s = "
            f"{r['gflop_s']:.0f} GFLOP/s vs fp32 matmul {r['peak']:.0f} GFLOP/s | channels-last "
            f"{r['channels_last']:.1f} vs NCHW {r['nchw']:.1f} img/s; decode+resize {r['decode_img_s']:.0f} img/s "
            f"| {r['gflop_s'] / r['peak']:.2f} of peak; channels-last {r['channels_last'] / r['nchw']:.2f}x; "
            f"decode/forward time {r['img_s'] / r['decode_img_s']:.2f} |")
        if "batches" in r:
            by_batch = ", ".join(f"{b}: {v:.1f}" for b, v in sorted(r["batches"].items()))
            say(f"| 4 | {r['backbone']} forward img/s by batch size; 1 thread vs {info['threads']} | {by_batch}; "
                f"1 thread {r['one_thread']:.1f} vs {r['channels_last']:.1f} "
                f"| batch 16 vs 64: {r['batches'][16] / r['batches'][64]:.2f}x; threads {r['channels_last'] / r['one_thread']:.2f}x |")
    checks = [("default frozen run (10 epochs)", c10, t10), ("the same, features cached", c_warm, t_warm)]
    if tl:
        checks.append(("fine-tune 1 epoch (step reckoned from the timed forward pass)", c_tl, t_tl))
        checks.append(("fine-tune 3 epochs, augmented (training step timed)", long[1], long[0]))
    for label, clock, total in checks:
        if not clock.estimate:
            continue
        # the `started` event's estimate covers what follows it; one told from the first batches, the whole run
        real = total if "told_after" in clock.estimate else total - clock.at["started"]
        est = clock.estimate["total"]
        told = f"after {clock.estimate['told_after']:.1f} s" if "told_after" in clock.estimate else "in `started`"
        say(f"| 5 | time estimate (told {told}) vs the time the run then took: {label} "
            f"| {est:.1f} s vs {real:.1f} s | {est / real:.2f} (target 0.7-1.3: {'met' if 0.7 <= est / real <= 1.3 else 'MISSED'}) |")
    say()
    for label, clock, _ in checks:
        if clock.estimate:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in clock.estimate.items() if isinstance(v, float) and k != "total")
            say(f"- estimate of {label}, seconds: {parts}; run reached `started` after {clock.at['started']:.1f} s")
    say()
    say(NOTES)
    if args.write:
        (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines) + "\n")


NOTES = """## What the rows show, and what was chosen

- Row 1: with every backbone frozen and no augmentation, features are computed once per run (each
  picture decoded once, one forward pass each) and the epochs train only the head on stored features.
- Row 2: the disk cache (`tlgui/training/featcache.py`; `TLGUI_CACHE_DIR`, default `~/.cache/tlgui/features`;
  `TLGUI_CACHE_MB`, default 1024, 0 turns it off) keys features by a hash of the backbone's weights,
  its preprocessing and the decode size, and by each picture's content hash: a second run decodes
  nothing and runs no backbone, even on another split or a subset of the same pictures.
- Row 3: a fine-tuning epoch costs what a plain loop costs; the fixed extras (time estimate,
  checkpoint, bundle) are a second or two.
- Row 4, decoding: pictures are decoded and resized once per run (`tlgui/data/batches.py`), a small
  fraction of the forward pass's time (last column).
- Row 4, layout: channels-last (NHWC) runs the offline convnets faster than NCHW on this CPU (oneDNN),
  so image models run channels-last on CPU and CUDA.
- Row 4, batch size: frozen features and validation run in batches of 16 on a CPU, whatever the
  training batch: small batches stay in the caches, and 64 is slower. A GPU uses 256.
- Threads: torch's default (one per core) is fastest for a backbone. Training a head on stored
  features is a few tiny matrix products a step; on a busy machine two OpenMP threads made each step
  70 ms against 1-3 ms with one, so the trainer trains a head in one thread (restored afterwards).
- Precision: autocast runs on CUDA only (bf16 where supported, else fp16 with a loss scaler), with
  pinned, non-blocking batch copies and cuDNN autotuning. CPUs stay in fp32: on a CPU without bf16
  units a bf16 matmul ran at 1.3 GFLOP/s against 143 in fp32; where the units exist (the bf16 rate
  above), bf16 on the CPU is a possible gain not yet measured on the backbones' convolutions.
- Row 5: before training, the trainer times a forward pass of the run's own pictures at its batch size
  and, for runs long enough to be worth it, one training step (a copy of the model, random streams left
  as they were); a cache hit is counted as free. `python -m tlgui train` prints it as `estimated time:`.
"""


if __name__ == "__main__":
    main()
