"""Resumable, checksummed downloads and safe archive extraction (for data_scripts/).

Resume: the file grows as <dest>.part; a rerun asks the server for the rest with an HTTP Range
header (bytes=<size>-) and appends when the server answers 206 Partial Content (it starts over on
200). The finished file is checked against its SHA-256 when one is known, then renamed to dest.

Offline: connections use a short timeout and any network failure becomes a DownloadError whose
message says what to do by hand.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The file could not be fetched (no network, server error)."""


class ChecksumError(ValueError):
    """The fetched file does not have the expected SHA-256."""


# exit statuses of the data_scripts/prepare_* commands
EXIT_NETWORK, EXIT_CHECKSUM, EXIT_LAYOUT = 2, 3, 4


def exit_status(prepare) -> int:
    """Run `prepare()` (download, extract, convert); turn its errors into one message on stderr
    and an exit status: 2 no network, 3 checksum mismatch, 4 bad layout; 0 on success."""
    try:
        prepare()
    except DownloadError as err:
        return _fail(err, EXIT_NETWORK)
    except ChecksumError as err:
        return _fail(err, EXIT_CHECKSUM)
    except ValueError as err:
        return _fail(err, EXIT_LAYOUT)
    return 0


def _fail(err: Exception, status: int) -> int:
    print(f"error: {err}", file=sys.stderr)
    return status


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None) -> None:
    """Raise ChecksumError when sha256 is given and the file's digest differs."""
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise ChecksumError(
            f"{path} has SHA-256 {actual}, expected {sha256}; delete it and download again")


def download(
    url: str, dest: str | Path, sha256: str | None = None, timeout: float = 10.0,
    progress: bool = True,
) -> Path:
    """Fetch url to dest, resuming a previous partial download; verify its SHA-256.

    Args:
        url: http(s) or file URL. dest: output file.
        sha256: expected hex digest, or None when unknown (then only the size is trusted).
        timeout: seconds for connecting and for each read.
        progress: tqdm bar.

    Returns:
        dest. An existing dest is only verified, not fetched again.

    Raises:
        DownloadError: no connection / HTTP error (message names url and dest).
        ChecksumError: digest mismatch (the bad file is kept as <dest>.bad for inspection).
    """
    dest = Path(dest)
    if dest.exists():
        verify(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part file is complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except OSError as err:  # URLError, refused connection, timeout, DNS failure
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not reach {url} ({reason}). This step needs the internet. Offline, download "
            f"the file elsewhere and put it at {dest}; it will be checked and used.") from err
    if response is not None:
        with response:
            append = getattr(response, "status", 200) == 206
            total = response.headers.get("Content-Length")
            total = int(total) + (have if append else 0) if total else None
            with open(part, "ab" if append else "wb") as out, tqdm(
                total=total, initial=have if append else 0, unit="B", unit_scale=True,
                desc=dest.name, disable=not progress,
            ) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                except OSError as err:
                    raise DownloadError(
                        f"download of {url} interrupted ({err}); rerun to resume") from err
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; rerun")
    try:
        verify(part, sha256)
    except ChecksumError:
        part.replace(dest.with_name(dest.name + ".bad"))
        raise
    part.replace(dest)
    return dest


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if PurePosixPath(name).is_absolute() or not target.is_relative_to(root.resolve()):
        raise ValueError(f"archive member {name!r} would be written outside {root}")
    return target


def extract(archive: str | Path, out_dir: str | Path) -> Path:
    """Extract a .tar[.gz|.xz|.bz2] or .zip archive, refusing members that escape out_dir.

    Args:
        archive: archive file. out_dir: folder to extract into (created).

    Returns:
        out_dir.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _safe_target(out_dir, name)
            zf.extractall(out_dir)
        return out_dir
    if not tarfile.is_tarfile(archive):
        raise ValueError(f"{archive} is neither a tar nor a zip archive")
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _safe_target(out_dir, member.name)
            if member.issym() or member.islnk() or member.isdev():
                raise ValueError(f"archive member {member.name!r} is a link or device; refusing")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(out_dir, **safe)
    return out_dir

