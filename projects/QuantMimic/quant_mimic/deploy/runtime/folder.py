"""The deployed folder's format: its file names, ``deploy.json`` (the spec) and ``manifest.json`` (the
size and sha256 of every file), read and checked before anything runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEPLOY_FILE = "deploy.json"
NETWORK_FILES = {"backbone": "backbone.ts", "rpn_head": "rpn_head.ts", "head": "head.ts"}
ONNX_FILES = {"backbone": "backbone.onnx", "rpn_head": "rpn_head.onnx", "head": "head.onnx"}
FORMAT_VERSION = 2  # 2: the backbone network takes mean-subtracted images (1: raw 0-255)
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
# what deploy.json must hold for DeployedPredictor to run the folder
SPEC_KEYS = ("format_version", "features", "input", "rpn", "roi", "classes")


class DeployedFolderError(ValueError):
    """A deployed folder that is missing, incomplete, damaged or not this runtime's; the message is one
    sentence naming the file and saying "deploy again"."""


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(folder: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a deployed folder, after checking that every file it lists is there with its
    size and sha256, and that no file the runtime reads is there without being listed. Returns it.

    Raises:
        DeployedFolderError: the folder or a file is missing, truncated, altered or foreign, or the
            manifest itself is damaged.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir() or not (manifest_path.is_file() or (folder / DEPLOY_FILE).is_file()):
        raise DeployedFolderError(
            f"{folder / DEPLOY_FILE} does not exist: {folder} is not a deployed model; write one with "
            "`python -m quant_mimic_tools.deploy --config-file ... --output-dir DIR` (deploy again)."
        )
    if not manifest_path.is_file():
        raise DeployedFolderError(
            f"{manifest_path} does not exist: {folder} was written by an older version or not completely; "
            "deploy again."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        version = manifest["manifest_version"]
        entries = {name: (int(e["size"]), str(e["sha256"])) for name, e in files.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DeployedFolderError(
            f"{manifest_path} is damaged ({type(e).__name__}: {e}); deploy again."
        ) from None
    if version != MANIFEST_VERSION:
        raise DeployedFolderError(
            f"{manifest_path} has manifest version {version}, this runtime reads {MANIFEST_VERSION}: deploy again."
        )
    for name, (size, sha256) in entries.items():
        path = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise DeployedFolderError(
                f"{manifest_path} lists {name!r}, which is not a file of the folder: deploy again."
            )
        if not path.is_file():
            raise DeployedFolderError(f"{path} is missing ({manifest_path} lists it): deploy again.")
        actual = path.stat().st_size
        if actual != size:
            raise DeployedFolderError(
                f"{path} has {actual} bytes, not the {size} that {manifest_path} lists (truncated, altered or "
                "from another deployed folder): deploy again."
            )
        if file_sha256(path) != sha256:
            raise DeployedFolderError(
                f"{path} does not match its sha256 in {manifest_path} (altered, or from another deployed "
                "folder): deploy again."
            )
    for name in (DEPLOY_FILE, *NETWORK_FILES.values(), *ONNX_FILES.values()):
        if name not in entries and (folder / name).exists():
            raise DeployedFolderError(
                f"{folder / name} is not part of this deployed folder (not in {manifest_path}): deploy again."
            )
    if DEPLOY_FILE not in entries:
        raise DeployedFolderError(f"{manifest_path} does not list {DEPLOY_FILE}: deploy again.")
    return manifest


def load_spec(folder: str | Path) -> dict[str, Any]:
    """``deploy.json`` of a deployed folder, checked: first every file against ``manifest.json``
    (:func:`check_manifest`), then deploy.json itself. Raises DeployedFolderError."""
    check_manifest(folder)
    path = Path(folder) / DEPLOY_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DeployedFolderError(
            f"{path} is not valid JSON ({type(e).__name__}: {e}); deploy again."
        ) from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise DeployedFolderError(f"{path} lacks {', '.join(missing)}: deploy again.")
    if spec.get("format_version") != FORMAT_VERSION:
        raise DeployedFolderError(
            f"{path} has format version {spec.get('format_version')}, this runtime reads {FORMAT_VERSION}: "
            "deploy the model again with this version."
        )
    return spec
