"""`push`: the unpacked bundle published as a Hugging Face Hub model repository, whose page
shows the model card (README.md) with its metadata."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from ..errors import TlguiError

LOGIN = "log in with `hf auth login` (or set HF_TOKEN)"


def push(bundle: str | Path, repo: str, private: bool = False) -> str:
    """Upload the bundle's files to `repo` (created where missing); returns the repository's address."""
    path = _checked_bundle(Path(bundle))
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise TlguiError(f"{repo!r} is not a Hub repository name: use user/name or name, with letters, digits, "
                         "'-', '_' and '.'") from None

    token = get_token()
    if not token:
        raise TlguiError(f"not logged in to the Hugging Face Hub: {LOGIN}, then push again")
    api = HfApi(token=token)
    _check_reachable(api.endpoint)
    try:
        with tempfile.TemporaryDirectory(prefix="tlgui-push-") as tmp:
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)  # members checked by _checked_bundle: plain names, no zip bomb
            url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(repo_id=url.repo_id, folder_path=tmp, repo_type="model",
                              commit_message=f"Upload {path.name} from tlgui")
        return str(url)
    except OfflineModeIsEnabled:
        raise TlguiError("the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is set): unset it, then push "
                         "again") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise TlguiError(f"the Hugging Face Hub refused the upload to {repo}: {LOGIN} with a token that may "
                             "write there, then push again") from None
        raise TlguiError(f"the Hugging Face Hub refused the upload to {repo} (HTTP {status}): check the repository "
                         "name, then push again") from None
    except OSError:
        raise TlguiError("cannot reach the Hugging Face Hub: connect to the internet, then push again") from None
    except Exception as e:  # httpx's connection and timeout errors, whichever client the hub library uses
        if type(e).__module__.split(".")[0].rstrip("0123456789") in ("httpx", "httpcore", "requests", "urllib3"):
            raise TlguiError("cannot reach the Hugging Face Hub: connect to the internet, then push again") from None
        raise


def _check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """One quick connection first: offline, the hub library would retry for half a minute before failing."""
    import socket
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise TlguiError("the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is set): unset it, then push again")
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        raise TlguiError(f"cannot reach the Hugging Face Hub at {url.hostname}: connect to the internet, then push "
                         "again") from None


def _checked_bundle(path: Path) -> Path:
    """The bundle, refused before anything leaves the machine when it is not one (without importing torch)."""
    from ..data.sources import check_zip_bomb

    path = path / "model.zip" if path.is_dir() else path
    if not path.is_file():
        raise TlguiError(f"model not found: {path} (give a model.zip or the folder of a run)")
    try:
        with zipfile.ZipFile(path) as z:
            check_zip_bomb(z.infolist(), path.name)
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        names = set()
    if not {"tlgui.json", "model.safetensors", "README.md"} <= names or any(n.startswith("/") or ".." in n for n in names):
        raise TlguiError(f"{path.name} is not a tlgui model bundle (model.zip with tlgui.json and model.safetensors)")
    return path
