"""Read a checkout (a bare git directory, as the fetch tool leaves it, or a work tree) and export folders from it."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path


class Checkout:
    """A repository on disk: ``export`` copies a folder of HEAD (bare) or of the work tree."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise SystemExit(f"no such checkout: {path}")
        self.bare = (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()
        self.missing: list[str] = []  # blobs absent from a partial mirror (e.g. large data files)

    def git(self, *args: str, **kw) -> subprocess.CompletedProcess:
        where = ["--git-dir", str(self.path)] if self.bare else ["-C", str(self.path)]
        return subprocess.run(["git", *where, *args], capture_output=True, **kw)

    def commit(self) -> str:
        proc = self.git("rev-parse", "HEAD", text=True)
        return proc.stdout.strip() if proc.returncode == 0 else "unknown"

    def export(self, folder: str, dest: Path) -> None:
        """Write ``folder`` (a path inside the repository) to ``dest``; absent blobs are skipped."""
        if not self.bare:
            shutil.copytree(
                self.path / folder,
                dest,
                symlinks=True,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".git", "__pycache__"),
            )
            return
        listing = self.git("ls-tree", "-r", "-z", "HEAD", "--", folder).stdout.split(b"\0")
        entries = []
        for item in filter(None, listing):
            meta, path = item.split(b"\t", 1)
            mode, kind, sha = meta.split()
            if kind == b"blob":
                entries.append((mode.decode(), sha.decode(), path.decode()))
        if not entries:
            raise SystemExit(f"{folder!r} is not a folder of {self.path}")
        blobs = self.git(
            "cat-file", "--batch", input="".join(f"{s}\n" for _, s, _ in entries).encode()
        )
        data, pos = blobs.stdout, 0
        for mode, sha, path in entries:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if header[-1] == b"missing":
                self.missing.append(path)
                continue
            size = int(header[2])
            body, pos = data[pos : pos + size], pos + size + 1
            target = dest / Path(path).relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "120000":
                target.symlink_to(body.decode())
            else:
                target.write_bytes(body)
                if mode == "100755":
                    target.chmod(0o755)


def snapshot(root: Path, rev: str, dest: Path) -> str:
    """torch-migrate's ``migrator`` and ``runtime`` packages at ``rev``, exported into ``dest``
    (templates where the installed package has them), so a run measures one commit even while
    the work tree changes under it; returns the full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit, "migrator", "runtime", "templates"],
        capture_output=True,
        check=True,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "templates").rename(dest / "migrator" / "templates")
    return commit
