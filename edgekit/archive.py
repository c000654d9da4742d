"""Reproducible .tar.gz archives of a target folder, and a reader that refuses anything unsafe."""
from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .errors import InputError, disk_full, first_line
from .published import INDEX, MAX_INDEX_BYTES

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 2 << 30  # the largest ONNX protobuf a single file can hold
MAX_TOTAL_BYTES = 4 << 30
MAX_HEADER_BYTES = 1 << 20  # a GNU long name or PAX header: real ones are a few hundred bytes
MAX_MANIFEST_BYTES = 4 << 20  # a real one is a few KB; a listed name costs ~140 bytes of memory per byte
MAX_EXTENDED_IN_A_ROW = 4  # long name, long link name, PAX: at most three precede a real member
MAX_TRAILING_BYTES = 1 << 20  # zeros after the end marker (tar pads to a 10 KiB record), at most
# outdir's record of the files it wrote (archives first, hence the name). A visible file: GitHub's upload-artifact
# skips hidden files by default, and an OUT downloaded without it could not be checked as a tar nor exported into.
LEDGER = "edgekit-archives.json"
MAX_LEDGER_BYTES = 1 << 20  # a real one is a few hundred bytes; outdir reads no larger one either


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


def extract(archive: Path, dest: Path,
            limits: tuple[int, int, int] = (MAX_MEMBERS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES)) -> dict[str, str]:
    """Unpack a package archive below `dest`: regular files and folders only, and only the files its
    manifest.json lists, no larger than it says and with the hash it says. The raw tar headers are scanned
    first, so an oversized long-name/PAX header, too many members or too many bytes are refused before
    tarfile parses them; links, devices, sparse files, `..` and absolute paths are refused before a byte is
    written.

    The archive is read front to back (a compressed stream read backwards restarts at its first byte): once to
    check every header and hash every file, once to write the files whose hash matched. A member whose bytes do
    not match its manifest hash is never written (a manifest can list a 2 GiB member of zeros): returns
    {path below dest: actual sha256} of those, for the integrity check."""
    max_members, max_member, max_total = limits
    try:
        with open(archive, "rb") as raw:  # one file for every pass: what the later passes read is what was checked
            _scan_headers(archive, raw, max_members, max_total)
            raw.seek(0)
            seen, hashes, manifests, ledger_data = [], {}, {}, {}
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                for member in tar:
                    _refuse_unsafe(archive, member, max_member)
                    parts = _parts(member.name)
                    seen.append((member.name, member.size, member.type))
                    if member.isreg() and (parts in hashes or parts in manifests):
                        raise InputError(f"{archive}: member {member.name!r} is in it twice")
                    if member.isreg() and parts[-1] == "manifest.json" and len(parts) <= 3:
                        manifests[parts] = tar.extractfile(member).read(_manifest_budget(archive, member, manifests))
                    elif member.isreg() and parts[-1] == LEDGER and len(parts) <= 2:  # OUT's, or a copy's in a tar
                        if member.size + sum(map(len, ledger_data.values())) > MAX_LEDGER_BYTES:
                            shown = " and ".join(sorted({*map("/".join, ledger_data), "/".join(parts)}))
                            raise InputError(f"{archive}: its {shown} declare more than {MAX_LEDGER_BYTES} bytes, "
                                             "more than edgekit's ledger of an OUT's files may")
                        data = ledger_data[parts] = tar.extractfile(member).read(member.size)
                        hashes[parts] = (member.name, member.size, hashlib.sha256(data).hexdigest())
                    elif member.isreg():
                        hashes[parts] = (member.name, member.size, _sha256(tar.extractfile(member)))
            listed = _listed_files(archive, manifests)
            ledgers = {(*parts[:-2], LEDGER) for parts in listed if parts[-1] == "manifest.json"}  # beside packages
            # OUT's record of its targets, which `check` of a tar of OUT reads: unpacked, though no manifest lists it
            records = {(*parts[:-1], INDEX) for parts in ledgers}
            # OUT/<target>.tar.gz (export --archive), which `check` of a tar of OUT checks as it does in OUT: only
            # where OUT's ledger in this tar records it, and only with the sha256 recorded there
            ledgered = _ledgered_archives({parts: data for parts, data in ledger_data.items() if parts in ledgers
                                            and any(p[:-2] == parts[:-1] and len(p) >= 2 for p in listed)})
            mismatched = {}
            for parts, (name, size, actual) in hashes.items():
                if parts in records and size > MAX_INDEX_BYTES:
                    raise InputError(f"{archive}: member {name!r} holds {size} bytes, more than edgekit's record of "
                                     "an OUT's targets may")
                if parts in ledgers or parts in records:
                    continue  # edgekit's own bookkeeping in an OUT folder: not part of any package
                if parts in ledgered:  # one whose bytes are not those recorded is never written: check fails it
                    if actual != ledgered[parts]:
                        mismatched[parts] = actual
                    continue
                if parts not in listed:
                    beside = name.endswith(".tar.gz") and any(parts[:-1] == p[:-2] for p in listed)
                    raise InputError(f"{archive}: member {name!r} is not listed in its manifest.json"
                                     + (f" nor, as an archive, in OUT's {LEDGER} beside it" if beside else ""))
                if size > listed[parts][0]:
                    raise InputError(f"{archive}: member {name!r} holds {size} bytes, its manifest says "
                                     f"{listed[parts][0]}")
                if listed[parts][1] not in (None, actual):
                    mismatched[parts] = actual
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r|*") as tar:
                for i, member in enumerate(tar):
                    if i >= len(seen) or (member.name, member.size, member.type) != seen[i]:
                        raise InputError(f"{archive}: changed while being read")
                    parts = _parts(member.name)
                    target = dest.joinpath(*parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    if not parts or parts in ledgers or parts in mismatched:
                        continue  # the archive's own "." folder (tar czf x.tar.gz -C dir .), edgekit's ledger
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "xb") as out:
                        digest = _copy_hashing(src, out)
                    if (ledgered[parts] if parts in ledgered else listed.get(parts, (0, None))[1]) not in (
                            None, digest):
                        raise InputError(f"{archive}: member {member.name!r} changed while being read")
            return {"/".join(parts): actual for parts, actual in mismatched.items()}
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, lzma.LZMAError, ValueError, RecursionError) as e:
        if full := disk_full(e):  # where it is unpacked, not the archive: a CI job must not chase a whole artifact
            why = (getattr(full, "strerror", None) or "no space left on device").lower()
            scratch = tempfile.gettempdir()
            where = f"the temporary folder {scratch} (TMPDIR)" if dest.is_relative_to(scratch) else str(dest)
            raise InputError(f"{archive}: unpacking it into {where} failed: {why}: free space there, or set TMPDIR "
                             "to a folder with room") from e
        raise InputError(f"{archive}: not a readable archive ({type(e).__name__}: {first_line(e)})") from e


def _ledgered_archives(ledger_data: dict[tuple[str, ...], bytes]) -> dict[tuple[str, ...], str]:
    """{path parts: sha256} of each `<target>.tar.gz` an OUT's ledger ({its path parts: its bytes}) records beside
    it. A ledger that is not edgekit's (not JSON names and hashes) records none: its archives stay unlisted."""
    found = {}
    for parts, data in ledger_data.items():
        try:
            ledger = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if isinstance(ledger, dict):
            found.update({(*parts[:-1], name): digest for name, digest in ledger.items()
                          if isinstance(digest, str) and name.endswith(".tar.gz") and name != ".tar.gz"
                          and _parts(name) == (name,) and "\\" not in name})
    return found


def _manifest_budget(archive: Path, member: tarfile.TarInfo, manifests: dict) -> int:
    """A manifest's bytes, if all the archive's manifests together stay within MAX_MANIFEST_BYTES (a listed name
    costs ~140 bytes of memory per byte of JSON)."""
    if member.size + sum(len(data) for data in manifests.values()) > MAX_MANIFEST_BYTES:
        raise InputError(f"{archive}: its manifest.json files declare more than {MAX_MANIFEST_BYTES} bytes")
    return member.size


def _copy_hashing(src, out) -> str:
    digest = hashlib.sha256()
    while chunk := src.read(1 << 20):
        digest.update(chunk)
        out.write(chunk)
    return digest.hexdigest()


def _sha256(f) -> str:
    with f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _scan_headers(archive: Path, raw, max_members: int, max_total: int) -> None:
    """Walk the decompressed tar stream of `raw` (the archive's open file) block by block, never holding more
    than a block: tarfile itself reads a GNU long name or PAX header whole into memory (a 3 GiB one from a 469 KB
    archive)."""
    magic = raw.read(6)
    raw.seek(0)
    wrappers = {b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f), b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}
    members = total = extended = 0
    with next((w for m, w in wrappers.items() if magic.startswith(m)), contextlib.nullcontext)(raw) as stream:
        while True:
            block = stream.read(512)
            if len(block) < 512 and not members:
                raise InputError(f"{archive}: not a tar archive (shorter than one tar header)")
            if len(block) < 512 or block == bytes(512):  # end of archive (or truncated: tarfile reports that)
                rest = stream.read(MAX_TRAILING_BYTES + 1) if len(block) == 512 else b""
                if len(rest) > MAX_TRAILING_BYTES or rest.strip(b"\0"):  # `tar -i` reads on past the end
                    raise InputError(f"{archive}: holds data after the end of its archive (another one appended?)")
                return
            if not _checksum_ok(block):  # random bytes would read as sizes: say what the file is not
                raise InputError(f"{archive}: not a tar archive (member {members + 1}'s header checksum is wrong)")
            size = _header_size(block)
            kind = block[156:157]
            if kind in (b"L", b"K", b"x", b"g") and size > MAX_HEADER_BYTES:
                raise InputError(f"{archive}: an extended header declares {size} bytes (limit {MAX_HEADER_BYTES})")
            if kind == b"S":  # its header gives the bytes stored, tarfile then the (larger) size written
                raise InputError(f"{archive}: member {members + 1} is a sparse file; edgekit archives hold none")
            extended = extended + 1 if kind in (b"L", b"K", b"x", b"g") else 0
            if extended > MAX_EXTENDED_IN_A_ROW:  # tarfile reads each one by calling itself again
                raise InputError(f"{archive}: more than {MAX_EXTENDED_IN_A_ROW} extended headers in a row")
            total += size
            if kind in (b"x", b"g"):  # a PAX size record would make tarfile step differently from this scan
                records = stream.read(-(-size // 512) * 512)
                if b" size=" in records or b"GNU.sparse" in records:
                    raise InputError(f"{archive}: a PAX header overrides a member's size; edgekit archives never do")
                size = 0  # its data is consumed
            members += not extended
            if members > max_members:
                raise InputError(f"{archive}: more than {max_members} members")
            if total > max_total:
                raise InputError(f"{archive}: members declare more than {max_total} bytes in total")
            stream.seek(-(-size // 512) * 512, io.SEEK_CUR)  # over its data (a truncated stream stops at its end)


def _checksum_ok(block: bytes) -> bool:
    """A tar header's stored checksum against its bytes (tarfile's own two ways of summing them)."""
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"x", 8)
    except ValueError:
        return False
    return stored in tarfile.calc_chksums(block)


def _header_size(block: bytes) -> int:
    field = block[124:136]
    if field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return 0  # not a size tarfile would accept either: it reports the archive as unreadable


def file_sizes(manifest: dict) -> dict[str, int] | None:
    """A manifest's `sizes` (file → bytes; absent: none claimed), or None when it is not such a table."""
    sizes = manifest.get("sizes", {})
    ok = isinstance(sizes, dict) and all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in sizes.items())
    return sizes if ok else None


def _listed_files(archive: Path, manifests: dict) -> dict[tuple[str, ...], tuple[int, str | None]]:
    """{path parts: (largest allowed size, sha256 or None for any)} for every file a manifest.json in the
    archive lists ({its path parts: its bytes}), and the manifest and report themselves. Manifests two folders
    down (`tar czf dist.tgz dist` of an OUT) count only where none is higher: a package never holds another."""
    listed: dict[tuple[str, ...], tuple[int, str | None]] = {}
    depth = max(2, min(map(len, manifests), default=0))
    for parts, data in ((parts, data) for parts, data in manifests.items() if len(parts) <= depth):
        folder, name = parts[:-1], "/".join(parts)
        try:
            manifest = json.loads(data)
            files, sizes = manifest["files"], file_sizes(manifest)
            if sizes is None:
                raise InputError(f"{archive}: {name}'s sizes are not a table of file sizes in bytes")
            listed.update({(*folder, file): (sizes.get(file, MAX_MEMBER_BYTES), str(digest))
                           for file, digest in files.items()})
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError) as e:
            raise InputError(f"{archive}: {name} is not a valid manifest ({type(e).__name__})") from e
        listed[(*folder, "manifest.json")] = (MAX_MANIFEST_BYTES, None)  # the one file a manifest cannot hash
    if not listed:
        raise InputError(f"{archive}: no manifest.json in it, its top folders or theirs")
    return listed


def _parts(name: str) -> tuple[str, ...]:
    """Path parts without "." entries (tar's `./name` style)."""
    return tuple(p for p in PurePosixPath(name).parts if p != ".")


def _refuse_unsafe(archive: Path, member: tarfile.TarInfo, max_member: int) -> None:
    name, parts = member.name, _parts(member.name)
    why = ("has an absolute path" if name.startswith(("/", "\\")) or name[1:2] == ":"
           else "has no name" if not name or (not parts and not member.isdir())
           else "leaves the archive's folder" if ".." in parts or "\\" in name
           else "is a link" if member.issym() or member.islnk()
           else "is a sparse file" if member.issparse()
           else "is not a regular file or folder" if not (member.isreg() or member.isdir())
           else f"declares {member.size} bytes (limit {max_member})" if member.size > max_member else None)
    if why:
        raise InputError(f"{archive}: member {name!r} {why}")
