"""Fixtures of the web app's tests: the app in a subprocess, Debian's chromium, small real datasets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_S = 240  # importing gradio and torch takes 15 s on an idle 2-core machine, far more on a busy one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False

def start_app(env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """app.py on a free port with `env`, its output in `log_path`: (the process, its URL) once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_S
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the app did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc, url


@pytest.fixture(scope="module")
def one_thread():
    """One compute thread for a module: on a shared 2-core machine, OpenMP threads spin against
    each other and small steps run many times slower split over two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def own_feature_cache(tmp_path_factory):
    """A feature cache of the module's own, so that no earlier module's features are reused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLGUI_CACHE_DIR", str(tmp_path_factory.mktemp("features")))
        yield


@contextlib.contextmanager
def running_app(base: Path, **env):
    """`python app.py` whose runs, uploads, temporary files and features stay in folders under `base`;
    `env` is set on top (None removes a variable). Yields (its URL, those folders, the process)."""
    dirs = {name: base / name for name in ("runs", "gradio", "tmp", "features")}
    for d in dirs.values():
        d.mkdir()
    full = {**os.environ, "TLGUI_RUNS_DIR": str(dirs["runs"]), "GRADIO_TEMP_DIR": str(dirs["gradio"]),
            "TMPDIR": str(dirs["tmp"]), "TLGUI_CACHE_DIR": str(dirs["features"]), "TLGUI_MAX_JOBS": "1",
            "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc, url = start_app(full, base / "app.log")
    try:
        yield url, dirs, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`python app.py` on a free port; runs, uploads and temporary files stay in the test's folder."""
    base = tmp_path_factory.mktemp("app")
    with running_app(base) as (url, dirs, _):
        yield {"url": url, "runs": dirs["runs"], "log": base / "app.log"}


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server["url"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "accept_downloads": True, "viewport": {"width": 1280, "height": 1000}}


@pytest.fixture(scope="session")
def animal_zip(tmp_path_factory) -> Path:
    """A real uploadable dataset: 4 Animal-MNIST classes, 25 silhouettes each, zipped in class folders."""
    import realdata

    images, labels, names = realdata.animal_mnist(25, classes=[0, 2, 4, 9])
    return realdata.write_class_zip(tmp_path_factory.mktemp("data") / "animals.zip", images, labels, names)


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory) -> Path:
    """40 Animal-MNIST silhouettes of 4 classes: small enough that training every layer takes seconds an epoch."""
    import realdata

    images, labels, names = realdata.animal_mnist(10, classes=[1, 3, 5, 7], seed=1)
    return realdata.write_class_zip(tmp_path_factory.mktemp("data") / "tiny.zip", images, labels, names)


@pytest.fixture(scope="session")
def fashion_pictures(tmp_path_factory) -> list[Path]:
    """Fashion-MNIST test-split pictures (never among the built-in example's training pictures), as PNG files."""
    import realdata

    images, labels, names = realdata.fashion_mnist(1, split="test", classes=[1, 7])  # a trouser, a sneaker
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for image, label in zip(images, labels, strict=True):
        path = folder / f"{names[label]}.png"
        path.write_bytes(realdata.encode_image(image))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def big_folder(tmp_path_factory) -> Path:
    """20,000 real Fashion-MNIST pictures (28 px PNG) in class folders, and one damaged file."""
    import realdata

    images, labels, names = realdata.fashion_mnist(2000)
    root = tmp_path_factory.mktemp("big") / "big"
    realdata.write_class_folders(root, images, labels, names)
    (root / "bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


@pytest.fixture(autouse=True)
def fail_on_page_errors(request):
    """Fail a test whose page threw a JavaScript error (a broken component, say)."""
    if "page" not in request.fixturenames:
        yield
        return
    page = request.getfixturevalue("page")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield
    assert not errors, errors
