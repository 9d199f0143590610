"""Where data lives: local paths, ``s3://bucket/key`` objects and image archives, resolved to local paths.

Torch-free (``rtdetr-deploy`` uses it). S3 goes through boto3 with the standard credential chain and endpoint
settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ...), so S3-compatible stores work too.
Downloads land in the cache folder (``dataset.cache_dir``, else ``$RTDETR_CACHE_DIR``, else
``~/.cache/rtdetr_tao``) at ``s3/<bucket>/<key>``, under a temporary name renamed when complete; a cached object is
reused while its size and ETag (kept in ``s3-etags/``) match the bucket's. A key must be a plain relative path that
maps onto exactly one file inside the cache: a key that is absolute, holds a backslash, an empty, ``.`` or ``..``
segment, or names a folder of another key is refused. An ``s3://`` prefix is mirrored: cached files whose objects
left the bucket are removed. Archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``) are extracted once,
safely: a member with an absolute path, ``..``, a link leaving the target (any link, in a zip), or a device file
rejects the archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DataError, require
from ..io import atomic_write_text
from ..progress import Progress

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_archive(uri: str) -> bool:
    return uri.lower().endswith(ARCHIVE_SUFFIXES)


def cache_root(cache_dir: str | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RTDETR_CACHE_DIR``, else ``~/.cache/rtdetr_tao``."""
    return Path(cache_dir or os.environ.get("RTDETR_CACHE_DIR") or Path.home() / ".cache" / "rtdetr_tao")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → (``bucket``, ``a/b``)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise DataError(f"'{uri}' names no bucket; write s3://bucket/key")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client from the standard configuration chain (endpoint from ``AWS_ENDPOINT_URL``)."""
    boto3 = require("boto3", extra="deploy", purpose="reading s3:// data")
    return boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _s3_error(uri: str, exc: Exception) -> DataError:
    return DataError(
        f"cannot read {uri}: {type(exc).__name__}: {exc}; check the bucket and key, the AWS credentials "
        "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and, for S3-compatible stores, AWS_ENDPOINT_URL"
    )


def _cache_path(root: Path, bucket: str, key: str, uri: str) -> Path:
    """Where the object ``key`` is cached under ``root``: refuses keys that could leave ``root`` or land on the
    file of another key (absolute, backslash, empty / ``.`` / ``..`` segments)."""
    parts = key.split("/")
    base = root / "s3" / bucket
    problem = None
    if not key or key.startswith("/"):
        problem = "is absolute" if key else "is empty"
    elif "\\" in key or "\0" in key:
        problem = "holds a backslash or NUL"
    elif any(part in ("", ".", "..") for part in parts):
        problem = "has an empty, '.' or '..' segment"
    elif bucket in (".", "..") or "\\" in bucket:
        problem = "is in a bucket with an unusable name"
    elif not (base / Path(*parts)).resolve().is_relative_to(base.resolve()):
        problem = "resolves outside the cache folder"
    if problem:
        raise DataError(
            f"refusing S3 object {uri}: its key {key!r} {problem}, so it cannot be cached safely; "
            "rename or remove that object"
        )
    return base / Path(*parts)


def download(uri: str, cache_dir: str | None = None, client: Any = None) -> Path:
    """The local copy of the S3 object ``uri``, downloaded unless a copy with the same size and ETag is cached."""
    bucket, key = split_s3(uri)
    root = cache_root(cache_dir)
    target = _cache_path(root, bucket, key, uri)
    client = client or s3_client()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _s3_error(uri, exc) from None
    stamp = root / "s3-etags" / hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()
    fingerprint = json.dumps({"etag": head.get("ETag"), "size": head.get("ContentLength")})
    cached = target.is_file() and stamp.is_file() and stamp.read_text() == fingerprint
    if cached and target.stat().st_size == head.get("ContentLength"):
        return target
    if target.is_dir():
        raise DataError(f"refusing S3 object {uri}: the cache holds a folder at {target} (another key's folder)")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (%d bytes)", uri, head.get("ContentLength", 0))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        with Progress(f"download {uri}", total=head.get("ContentLength"), unit="B") as bar:
            client.download_file(bucket, key, tmp, Callback=bar.update)
        os.replace(tmp, target)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _s3_error(uri, exc) from None
    atomic_write_text(stamp, fingerprint)
    return target


def resolve_file(uri: str, cache_dir: str | None = None) -> Path:
    """A local path for the file ``uri`` (local path or ``s3://``); missing files are a :class:`DataError`."""
    if is_s3(uri):
        return download(uri, cache_dir)
    path = Path(uri).expanduser()
    if not path.is_file():
        raise DataError(f"file not found: {uri}")
    return path


def resolve_image_dir(uri: str, cache_dir: str | None = None) -> Path:
    """A local folder with the images of ``uri``: a folder, an archive (extracted into the cache), an ``s3://``
    archive or an ``s3://`` prefix (every object below it downloaded)."""
    if is_archive(uri):
        return extract(resolve_file(uri, cache_dir), cache_dir)
    if is_s3(uri):
        return _download_prefix(uri, cache_dir)
    path = Path(uri).expanduser()
    if not path.is_dir():
        raise DataError(f"image folder not found: {uri} (give a folder, an images.tar.gz or an s3:// URI)")
    return path


def _download_prefix(uri: str, cache_dir: str | None) -> Path:
    """Mirror the objects under the prefix ``uri`` into the cache: download new or changed ones, remove cached
    files whose object is gone (a key that is also another key's folder is refused)."""
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    except Exception as exc:
        raise _s3_error(uri, exc) from None
    if not keys:
        raise DataError(f"no objects under {uri}")
    root = cache_root(cache_dir)
    targets = {_cache_path(root, bucket, key, f"s3://{bucket}/{key}"): key for key in keys}
    folders = {parent for target in targets for parent in target.parents}
    for target, key in targets.items():
        if target in folders:
            raise DataError(
                f"refusing S3 prefix {uri}: key {key!r} is both an object and the folder of other keys; "
                "rename that object"
            )
    local = _cache_path(root, bucket, prefix.rstrip("/"), uri) if prefix.strip("/") else root / "s3" / bucket
    for path in sorted(local.rglob("*"), reverse=True):  # stale files first (one may stand where a folder goes)
        if path.is_file() and path not in targets and not path.name.endswith(".part"):
            log.info("removing %s from the cache: its object is no longer in %s", path, uri)
            path.unlink()
        elif path.is_dir() and path not in folders:
            with contextlib.suppress(OSError):
                path.rmdir()
    for key in targets.values():
        download(f"s3://{bucket}/{key}", cache_dir, client)
    return local


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    problem = None
    if name.is_absolute() or member.name.startswith(("/", "\\")):
        problem = "has an absolute path"
    elif ".." in name.parts:
        problem = "climbs out with '..'"
    elif member.isdev() or member.isfifo():
        problem = "is a device or pipe"
    elif member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        parts: list[str] = []
        for part in (base / link).parts if not link.is_absolute() else ("..",):
            if part == "..":
                if not parts:
                    problem = f"links outside the archive ({member.linkname})"
                    break
                parts.pop()
            elif part != ".":
                parts.append(part)
    if problem:
        raise DataError(f"unsafe archive {archive}: member '{member.name}' {problem}; refusing to extract it")


def _extract_zip(archive: Path, target: Path) -> None:
    """Extract a zip after checking every member as :func:`_check_member` does; links are refused outright."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            problem = None
            if name.is_absolute() or (name.parts and name.parts[0].endswith(":")):
                problem = "has an absolute path"
            elif ".." in name.parts:
                problem = "climbs out with '..'"
            elif (info.external_attr >> 16) & 0o170000 == 0o120000:
                problem = "is a link"
            if problem:
                raise DataError(f"unsafe archive {archive}: member '{info.filename}' {problem}; refusing to extract it")
        zf.extractall(target)


def extract(archive: Path, cache_dir: str | None = None) -> Path:
    """Extract ``archive`` once into the cache (keyed by its path, size and mtime) and return the folder; the
    extraction goes to a temporary folder renamed when complete, so an interrupted one is never reused."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root(cache_dir) / "extracted" / f"{archive.name.split('.')[0]}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                _extract_zip(archive, tmp)
            else:
                with tarfile.open(archive) as tar:
                    members = tar.getmembers()
                    for member in members:
                        _check_member(member, archive)
                    total = sum(m.size for m in members)
                    with Progress(f"extract {archive.name}", total=total, unit="B") as bar:
                        for member in members:  # one at a time: progress in bytes
                            tar.extract(member, tmp, filter="data")
                            bar.update(member.size)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, tarfile.ReadError | zipfile.BadZipFile):
                why = "not a .tar, .tar.gz, .tgz or .zip archive"
            else:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(
                f"cannot read archive {archive}: {why} (truncated or damaged?); download or create it again"
            ) from None
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # another process finishing the same extraction first is fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s into %s", archive, target)
    return target
