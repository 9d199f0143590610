"""Where data lives: local paths, ``s3://bucket/key`` objects and image archives, resolved to local paths.

Torch-free (``rtdetr-deploy`` uses it). S3 goes through boto3 with the standard credential chain and endpoint
settings (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ...), so S3-compatible stores work too.
Downloads land in the cache folder (``dataset.cache_dir``, else ``$RTDETR_CACHE_DIR``, else
``~/.cache/rtdetr_tao``) under a temporary name and are renamed when complete; a cached object is reused while
its size and ETag match the bucket's. Archives (``.tar.gz``, ``.tgz``, ``.tar``) are extracted once, safely: a
member with an absolute path, ``..``, a link leaving the target, or a device file rejects the archive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DataError, require
from ..outputs.progress import Progress

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


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


def download(uri: str, cache_dir: str | None = None, client: Any = None) -> Path:
    """The local copy of the S3 object ``uri``, downloaded unless a copy with the same size and ETag is cached."""
    bucket, key = split_s3(uri)
    client = client or s3_client()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise _s3_error(uri, exc) from None
    target = cache_root(cache_dir) / "s3" / bucket / Path(*PurePosixPath(key).parts)
    stamp = target.with_name(target.name + ".etag")
    fingerprint = json.dumps({"etag": head.get("ETag"), "size": head.get("ContentLength")})
    cached = target.is_file() and stamp.is_file() and stamp.read_text() == fingerprint
    if cached and target.stat().st_size == head.get("ContentLength"):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (%d bytes)", uri, head.get("ContentLength", 0))
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        with Progress(f"download {uri}", total=head.get("ContentLength"), unit="B") as bar:
            client.download_file(bucket, key, tmp, Callback=bar.update)
        os.replace(tmp, target)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _s3_error(uri, exc) from None
    stamp.write_text(fingerprint)
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
    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    except Exception as exc:
        raise _s3_error(uri, exc) from None
    if not keys:
        raise DataError(f"no objects under {uri}")
    for key in keys:
        download(f"s3://{bucket}/{key}", cache_dir, client)
    return cache_root(cache_dir) / "s3" / bucket / Path(*PurePosixPath(prefix).parts)


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
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, archive)
                total = sum(m.size for m in members)
                with Progress(f"extract {archive.name}", total=total, unit="B") as bar:
                    for member in members:  # one at a time: progress in bytes
                        tar.extract(member, tmp, filter="data")
                        bar.update(member.size)
        except tarfile.TarError as exc:
            raise DataError(f"cannot read archive {archive}: {exc}") from None
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
