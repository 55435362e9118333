"""Read source files (PEP 263 decoding, clear errors) and write results back atomically."""

from __future__ import annotations

import errno
import os
import re
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

# A file that never mentions torch is skipped before decoding: the cheapest possible test
# and the one that makes whole-repository runs fast (most files of a project are not
# training code).
TORCH_MARKER = b"torch"


@dataclass(frozen=True)
class Decoded:
    """A source file's text plus what is needed to write it back byte-compatibly."""

    text: str
    encoding: str  # "utf-8", "utf-8-sig" (BOM) or a PEP 263 cookie's codec
    stat: os.stat_result | None  # None for stdin


@dataclass
class InputError(Exception):
    """Why a file cannot be migrated: a MIG0xx code, a position and one human line."""

    code: str
    message: str
    line: int = 1
    col: int = 1


@dataclass
class Skip(Exception):
    """A file deliberately not processed (no error): ``reason`` says why."""

    reason: str


def read_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The raw bytes of ``path``; OS problems become an ``InputError`` (MIG003)."""
    try:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise InputError("MIG003", "not a regular file")
        with open(path, "rb") as fh:
            return fh.read(), st
    except InputError:
        raise
    except OSError as exc:
        raise InputError("MIG003", f"cannot read: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    return exc.strerror or str(exc)


def decode(data: bytes, stat: os.stat_result | None = None, *, prefilter: bool = True) -> Decoded:
    """Decode ``data`` as Python source: UTF-8 unless a BOM or PEP 263 cookie says otherwise.

    Raises ``Skip`` for an empty file or (with ``prefilter``) one that never mentions torch,
    ``InputError`` (MIG002) for NUL bytes, an unknown codec or undecodable bytes.
    """
    if not data.strip():
        raise Skip("empty file")
    if prefilter and TORCH_MARKER not in data:
        raise Skip("never mentions torch")
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _position(data, nul)
        raise InputError("MIG002", "contains NUL bytes (binary file?)", line, col)
    lines = iter(data.splitlines(keepends=True))
    try:
        encoding, _ = tokenize.detect_encoding(lambda: next(lines, b""))
    except SyntaxError as exc:
        raise InputError("MIG002", f"bad encoding declaration: {exc.msg}") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        shown = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
        raise InputError(
            "MIG002",
            f"not valid {shown} (byte {data[exc.start]:#04x}); save the file as UTF-8 "
            "or declare its encoding with a '# -*- coding: ... -*-' line",
            line,
            col,
        ) from None
    except LookupError:
        raise InputError("MIG002", f"unknown encoding {encoding!r}") from None
    return Decoded(text=text, encoding=encoding, stat=stat)


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def write_atomic(path: Path, text: str, decoded: Decoded) -> None:
    """Replace ``path`` with ``text`` atomically, in the original encoding and permissions.

    Temp file in the same directory (same file system, so ``os.replace`` is atomic), fsync,
    then replace: a crash leaves either the old or the new file, never half of one. A file
    changed on disk since it was read is left alone (``InputError`` MIG003).
    """
    target = Path(os.path.realpath(path))  # write through symlinks, keep the link
    try:
        data = text.encode(decoded.encoding)
    except UnicodeEncodeError as exc:
        raise InputError("MIG002", f"result not encodable as {decoded.encoding}: {exc}") from None
    old = decoded.stat
    try:
        now = os.stat(target)
    except OSError as exc:
        raise InputError("MIG003", f"cannot write: {_os_reason(exc)}") from None
    if old is not None and (now.st_mtime_ns, now.st_size) != (old.st_mtime_ns, old.st_size):
        raise InputError("MIG003", "changed on disk while being migrated; not written")
    remove_stale_temps(target)
    import tempfile  # (with shutil, bz2, lzma, random: only writes pay for it)

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, now.st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise InputError("MIG003", f"cannot write: {_os_reason(exc)}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_new(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` (``-o``), creating parent directories, atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError("MIG003", f"cannot write {path}: {_os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode(encoding))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


STALE_TEMP_S = 60.0  # a live write holds its temp file for milliseconds, not a minute


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temp files an earlier, killed write of ``target`` left beside it; return them.

    Only our exact naming (``mkstemp(prefix=".NAME.", suffix=".tmp")``: eight characters of
    ``[a-z0-9_]`` in between), only regular files (never symlinks) owned by this user and
    untouched for ``STALE_TEMP_S``: a concurrent run's live temp file is younger than that.
    """
    pattern = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            mine = S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
            if not mine or now - st.st_mtime < STALE_TEMP_S:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
