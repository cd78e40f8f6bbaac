"""Read a `.nemo` archive without NeMo (spec §1.1): config, weights, tokenizer artifacts."""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the file or tensor named."""


@dataclass(frozen=True)
class NemoArchive:
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    artifacts: dict[str, bytes]  # `nemo:` reference (without the prefix) → file bytes


def _member(tar: tarfile.TarFile, names: dict[str, tarfile.TarInfo], suffix: str, path: Path) -> bytes:
    """Bytes of the member whose name (without './') equals or ends with `suffix`."""
    for name, info in names.items():
        if name == suffix or name.endswith("/" + suffix):
            data = tar.extractfile(info)
            if data is not None:
                return data.read()
    raise CheckpointError(f"{path}: the archive has no '{suffix}'")


def _nemo_refs(node: Any) -> list[str]:
    """Every `nemo:<file>` string in the config tree."""
    if isinstance(node, dict):
        return [r for v in node.values() for r in _nemo_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _nemo_refs(v)]
    return [node[5:]] if isinstance(node, str) and node.startswith("nemo:") else []


def read_nemo(path: str | Path) -> NemoArchive:
    """Open the tar (plain, or gzip for old checkpoints), parse the config, load the weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise CheckpointError(f"{path}: not a .nemo archive ({err})") from err
    with tar:
        names = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        config = yaml.safe_load(_member(tar, names, CONFIG_NAME, path))
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: {CONFIG_NAME} is not a mapping")
        config = config.get("model", config) if "encoder" not in config else config
        weights = _member(tar, names, WEIGHTS_NAME, path)
        artifacts = {ref: _member(tar, names, ref, path) for ref in _nemo_refs(config)}
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return NemoArchive(config=config, state_dict=state, artifacts=artifacts)


def artifact(archive: NemoArchive, ref: str | None) -> bytes | None:
    """Bytes of a config value `nemo:<file>`; None when the value is empty."""
    if not ref:
        return None
    key = ref[5:] if ref.startswith("nemo:") else ref
    if key not in archive.artifacts:
        raise CheckpointError(f"config refers to {ref!r}, which the archive does not hold")
    return archive.artifacts[key]


def write_nemo(path: str | Path, config: dict[str, Any], state_dict: dict[str, torch.Tensor],
               artifacts: dict[str, bytes]) -> Path:
    """Write a `.nemo` tar NeMo restores: config with `nemo:<file>` refs, weights, artifact files.

    `artifacts` maps member names (e.g. '<uuid>_tokenizer.model') to bytes; the config must already
    refer to them as 'nemo:<name>'.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = [r for r in _nemo_refs(config) if r not in artifacts]
    if missing:
        raise CheckpointError(f"config refers to artifacts that are not given: {missing}")
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, weights)
    return _write_members(path, {CONFIG_NAME: _config_bytes(config), WEIGHTS_NAME: weights.getvalue(), **artifacts})


def replace_config(path: str | Path, config: dict[str, Any]) -> Path:
    """Rewrite a `.nemo`'s model_config.yaml in place; every other member is copied byte for byte
    (so metadata such as trained_locales can be added without touching the weights)."""
    path = Path(path)
    with tarfile.open(path, "r:*") as tar:
        members = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    config_name = next(n for n in members if n == CONFIG_NAME or n.endswith("/" + CONFIG_NAME))
    members[config_name] = _config_bytes(config)
    return _write_members(path, members)


def _config_bytes(config: dict[str, Any]) -> bytes:
    """The YAML text of a model config, in its own key order."""
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()


def _write_members(path: Path, members: dict[str, bytes]) -> Path:
    """An uncompressed tar of the members, each as './name', in the given order."""
    with tarfile.open(path, "w:") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
