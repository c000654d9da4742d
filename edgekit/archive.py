"""Reproducible .tar.gz archives of a target folder, and a reader that refuses anything unsafe."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path, PurePosixPath

from .errors import InputError

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 2 << 30  # the largest ONNX protobuf a single file can hold
MAX_TOTAL_BYTES = 4 << 30


def write(folder: Path, dest: Path) -> Path:
    """`<name>/<file>` members in name order, with fixed times, owners and modes: same bytes every run."""
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info(f"{folder.name}/", tarfile.DIRTYPE, 0, 0o755))
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            data = path.read_bytes()
            tar.addfile(_info(f"{folder.name}/{path.name}", tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
    return dest


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def extract(archive: Path, dest: Path, limits: tuple[int, int, int] = (MAX_MEMBERS, MAX_MEMBER_BYTES,
                                                                      MAX_TOTAL_BYTES)) -> None:
    """Unpack regular files and folders only, below `dest`; refuse links, devices, `..`, absolute paths
    and oversized members before a byte of them is written."""
    max_members, max_member, max_total = limits
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            total = 0
            for member in tar:
                members.append(member)
                if len(members) > max_members:
                    raise InputError(f"{archive}: more than {max_members} members")
                _refuse_unsafe(archive, member, max_member)
                total += member.size
                if total > max_total:
                    raise InputError(f"{archive}: members declare more than {max_total} bytes in total")
            for member in members:
                parts = _parts(member.name)
                if not parts:
                    continue  # the archive's own "." folder (tar czf x.tar.gz -C dir .)
                target = dest.joinpath(*parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
    except InputError:
        raise
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{archive}: not a readable archive ({type(e).__name__}: {e})") from e


def _parts(name: str) -> tuple[str, ...]:
    """Path parts without "." entries (tar's `./name` style)."""
    return tuple(p for p in PurePosixPath(name).parts if p != ".")


def _refuse_unsafe(archive: Path, member: tarfile.TarInfo, max_member: int) -> None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"{archive}: member {name!r} has an absolute path")
    if not name or (not _parts(name) and not member.isdir()):
        raise InputError(f"{archive}: member {name!r} has no name")
    if ".." in _parts(name) or "\\" in name:
        raise InputError(f"{archive}: member {name!r} leaves the archive's folder")
    if member.issym() or member.islnk():
        raise InputError(f"{archive}: member {name!r} is a link")
    if not (member.isreg() or member.isdir()):
        raise InputError(f"{archive}: member {name!r} is not a regular file or folder")
    if member.size > max_member:
        raise InputError(f"{archive}: member {name!r} declares {member.size} bytes (limit {max_member})")
