"""Write one target's deliverables: models stamped with metadata, manifest.json with hashes, report.md."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .report import markdown


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(target_dir: Path, manifest: dict) -> dict:
    """Hash every deliverable, then write manifest.json and report.md beside them."""
    files = sorted(p for p in target_dir.iterdir() if p.is_file() and p.name not in ("manifest.json", "report.md"))
    manifest["files"] = {p.name: sha256(p) for p in files}
    manifest["sizes"] = {p.name: p.stat().st_size for p in files}
    (target_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    (target_dir / "report.md").write_text(markdown(manifest))
    return manifest
