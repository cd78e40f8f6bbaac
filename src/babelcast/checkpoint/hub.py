"""Resolve a model argument: a local `.nemo` path, or a hub id such as `nvidia/nemotron-3.5-asr-streaming-0.6b`."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .nemo_archive import CheckpointError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(model: str | Path) -> Path:
    """A local file as is; a hub id through the hub cache, downloading when the network allows."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.nemo"))
        if len(found) == 1:
            return found[0]
        raise CheckpointError(f"{path}: expected exactly one .nemo file in the folder, found {len(found)}")
    if not _HUB_ID.match(str(model)):
        raise CheckpointError(f"{model}: no such file, and not a hub id of the form 'org/name'")
    return _from_hub(str(model))


def _from_hub(repo_id: str) -> Path:
    """Find the repo's .nemo in the local hub cache, else download it."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files
    except ImportError as err:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointError("resolving hub ids needs huggingface_hub: pip install huggingface_hub") from err
    filename = repo_id.split("/")[1] + ".nemo"
    # Read at call time: huggingface_hub reads these once at import, which may have come before they were set.
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True, cache_dir=cache_dir))
    except Exception:
        pass
    try:
        if offline:
            raise ConnectionError("HF_HUB_OFFLINE is set and the file is not in the hub cache")
        names = [n for n in list_repo_files(repo_id) if n.endswith(".nemo")]
        if not names:
            raise CheckpointError(f"hub repo {repo_id} has no .nemo file")
        return Path(hf_hub_download(repo_id, names[0], cache_dir=cache_dir))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"could not fetch {repo_id} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            f"Without network access, download {filename} from the hub repository {repo_id} on a "
            f"connected machine (e.g. `huggingface-cli download {repo_id} {filename}`), copy it here "
            f"and pass its path with --model, or set HF_HOME to a cache that holds it."
        ) from err
