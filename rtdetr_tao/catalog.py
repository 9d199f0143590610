"""Named pretrained weights: the official RT-DETRv2 releases and ImageNet backbones, downloaded once into a cache.

Every weights key (``train.pretrained_model_path``, ``model.pretrained_backbone_path``,
``distill.pretrained_teacher_model_path``, ``evaluate/inference/export.checkpoint``, ``quantize.model_path``) accepts a
catalog name besides a path; :func:`resolve_weights` turns a name into the cached file (anything else passes through
unchanged, for the path / ``s3://`` resolution). Torch-free.

Downloads go to ``$RTDETR_CACHE`` (default ``$XDG_CACHE_HOME/rtdetr_tao/weights``, i.e. ``~/.cache/...``) through a
``<file>.part`` temporary file renamed into place once complete and verified. An interrupted download resumes from
the ``.part`` file with an HTTP Range request where the server allows it. A cached file is used without any network
call.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError

log = logging.getLogger(__name__)

_RELEASE = "https://github.com/lyuwenyu/storage/releases/download"


@dataclass(frozen=True)
class WeightsEntry:
    """One named weights file.

    ``model``: the ``model.*`` keys the file needs (a preset, or the backbone it fits).
    ``sha256``: expected digest; None where no published digest could be found (the release pages publish none):
    a download is then not verified, and a warning gives the digest of the downloaded file for comparison.
    """

    url: str
    model: dict[str, Any]
    description: str
    sha256: str | None = None
    kind: str = "detector"  # or "backbone"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _detector(path: str, description: str, *, sha256: str | None = None, **model: Any) -> WeightsEntry:
    return WeightsEntry(f"{_RELEASE}/{path}", model, description, sha256)


def _backbone(path: str, backbone: str, description: str) -> WeightsEntry:
    return WeightsEntry(f"{_RELEASE}/{path}", {"backbone": backbone}, description, kind="backbone")


_DSP = "discrete"
CATALOG: dict[str, WeightsEntry] = {
    # RT-DETRv2 COCO models (official README "Model Zoo"); the README's M* is R34 (our preset m), its M is the scaled
    # R50 (our preset m_star)
    "rtdetrv2_s_coco": _detector(
        "v0.2/rtdetrv2_r18vd_120e_coco_rerun_48.1.pth",
        "RT-DETRv2-S, COCO 48.1 AP",
        # the digest this release file (81,198,974 bytes) is checked against in github.com/rodolfo-salgado/swimtrack-ai
        # scripts/export_rtdetrv2_onnx.py (DEFAULT_CHECKPOINT_SHA256, commit a3e521fc21a2dbe7e49e9a12c96d60b738fa795a)
        sha256="2ace52184b620204004509b72752ac7bfe64aadaf7fc1d076b18df8ab5a5c77e",
        preset="s",
    ),
    "rtdetrv2_m_star_coco": _detector(
        "v0.1/rtdetrv2_r34vd_120e_coco_ema.pth", "RT-DETRv2-M* (R34), COCO 49.9 AP", preset="m"
    ),
    "rtdetrv2_m_coco": _detector(
        "v0.1/rtdetrv2_r50vd_m_7x_coco_ema.pth", "RT-DETRv2-M (R50-m), COCO 51.9 AP", preset="m_star"
    ),
    "rtdetrv2_l_coco": _detector("v0.1/rtdetrv2_r50vd_6x_coco_ema.pth", "RT-DETRv2-L, COCO 53.4 AP", preset="l"),
    "rtdetrv2_x_coco": _detector(
        "v0.1/rtdetrv2_r101vd_6x_coco_from_paddle.pth", "RT-DETRv2-X, COCO 54.3 AP", preset="x"
    ),
    # discrete sampling (deployment without grid_sample)
    "rtdetrv2_s_dsp_coco": _detector(
        "v0.1/rtdetrv2_r18vd_dsp_3x_coco.pth", "RT-DETRv2-S_dsp, COCO 47.4 AP", preset="s", cross_attn_method=_DSP
    ),
    "rtdetrv2_m_star_dsp_coco": _detector(  # the release file name starts with 'rrtdetrv2', as in the README's link
        "v0.1/rrtdetrv2_r34vd_dsp_1x_coco.pth",
        "RT-DETRv2-M*_dsp (R34), COCO 49.2 AP",
        preset="m",
        cross_attn_method=_DSP,
    ),
    "rtdetrv2_m_dsp_coco": _detector(
        "v0.1/rtdetrv2_r50vd_m_dsp_3x_coco.pth",
        "RT-DETRv2-M_dsp (R50-m), COCO 51.4 AP",
        preset="m_star",
        cross_attn_method=_DSP,
    ),
    "rtdetrv2_l_dsp_coco": _detector(
        "v0.1/rtdetrv2_r50vd_dsp_1x_coco.pth", "RT-DETRv2-L_dsp, COCO 52.9 AP", preset="l", cross_attn_method=_DSP
    ),
    # HGNetv2 models (converted from Paddle)
    "rtdetrv2_hgnetv2_l_coco": _detector(
        "v0.1/rtdetrv2_hgnetv2_l_6x_coco_from_paddle.pth", "RT-DETRv2 HGNetv2-L, COCO 52.9 AP", preset="hgnetv2_l"
    ),
    "rtdetrv2_hgnetv2_x_coco": _detector(
        "v0.1/rtdetrv2_hgnetv2_x_6x_coco_from_paddle.pth", "RT-DETRv2 HGNetv2-X, COCO 54.7 AP", preset="hgnetv2_x"
    ),
    "rtdetrv2_hgnetv2_h_coco": _detector(
        "v0.1/rtdetrv2_hgnetv2_h_6x_coco_from_paddle.pth", "RT-DETRv2 HGNetv2-H, COCO 56.3 AP", preset="hgnetv2_h"
    ),
    # pre-trained on Objects365, fine-tuned on COCO (converted from Paddle)
    "rtdetrv2_s_coco_objects365": _detector(
        "v0.1/rtdetrv2_r18vd_5x_coco_objects365_from_paddle.pth", "R18, COCO+Objects365 49.0 AP", preset="s"
    ),
    "rtdetrv2_l_coco_objects365": _detector(
        "v0.1/rtdetrv2_r50vd_2x_coco_objects365_from_paddle.pth", "R50, COCO+Objects365 55.2 AP", preset="l"
    ),
    "rtdetrv2_x_coco_objects365": _detector(
        "v0.1/rtdetrv2_r101vd_2x_coco_objects365_from_paddle.pth", "R101, COCO+Objects365 56.2 AP", preset="x"
    ),
    # ImageNet backbones of the official code (model.pretrained_backbone_path)
    "presnet18_vd_imagenet": _backbone("v0.1/ResNet18_vd_pretrained_from_paddle.pth", "resnet_18", "ResNet18-vd"),
    "presnet34_vd_imagenet": _backbone("v0.1/ResNet34_vd_pretrained_from_paddle.pth", "resnet_34", "ResNet34-vd"),
    "presnet50_vd_imagenet": _backbone(
        "v0.1/ResNet50_vd_ssld_v2_pretrained_from_paddle.pth", "resnet_50", "ResNet50-vd (SSLD v2)"
    ),
    "presnet101_vd_imagenet": _backbone(
        "v0.1/ResNet101_vd_ssld_pretrained_from_paddle.pth", "resnet_101", "ResNet101-vd (SSLD)"
    ),
    "hgnetv2_l_imagenet": _backbone("v0.1/PPHGNetV2_L_ssld_pretrained_from_paddle.pth", "hgnetv2_l", "PP-HGNetV2-L"),
    "hgnetv2_x_imagenet": _backbone("v0.1/PPHGNetV2_X_ssld_pretrained_from_paddle.pth", "hgnetv2_x", "PP-HGNetV2-X"),
    "hgnetv2_h_imagenet": _backbone("v0.1/PPHGNetV2_H_ssld_pretrained_from_paddle.pth", "hgnetv2_h", "PP-HGNetV2-H"),
}
"""Every named weights file (URLs from the official RT-DETRv2 README and backbone code)."""


def cache_dir() -> Path:
    """``$RTDETR_CACHE``, else ``$XDG_CACHE_HOME/rtdetr_tao/weights`` (``~/.cache/rtdetr_tao/weights``)."""
    if os.environ.get("RTDETR_CACHE"):
        return Path(os.environ["RTDETR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rtdetr_tao" / "weights"


def _looks_like_name(value: str) -> bool:
    return not any(c in value for c in "/\\.:") and not Path(value).exists()


def resolve_weights(value: str, *, catalog: dict[str, WeightsEntry] | None = None, progress: bool = True) -> str:
    """The local file of a catalog name (downloaded on first use); any other value (a path, ``s3://``) unchanged.

    A bare word that is neither a file nor a catalog name is a :class:`CheckpointError` with the closest names.
    """
    catalog = CATALOG if catalog is None else catalog
    if value in catalog:
        entry = catalog[value]
        needs = ", ".join(f"model.{k}={v}" for k, v in entry.model.items())
        log.info("weights '%s' (%s) are made for %s", value, entry.description, needs)
        return str(fetch(value, entry, progress=progress))
    if _looks_like_name(value):
        close = difflib.get_close_matches(value, list(catalog), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise CheckpointError(
            f"weights '{value}' is neither a file nor a weights-catalog name; {hint}'rtdetr weights list' shows the "
            "catalog"
        )
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(name: str, entry: WeightsEntry, path: Path) -> None:
    """Verify ``path`` against the entry's sha256; a mismatch deletes the file."""
    digest = _sha256(path)
    if entry.sha256 is None:
        log.warning(
            "weights '%s' from %s could not be verified: no published sha256 to compare with; its sha256 is %s",
            name,
            entry.url,
            digest,
        )
    elif digest != entry.sha256:
        path.unlink(missing_ok=True)
        raise CheckpointError(
            f"weights '{name}' from {entry.url} have sha256 {digest}, expected {entry.sha256}; the file was deleted, "
            "run again to download it anew"
        )


def fetch(name: str, entry: WeightsEntry, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """The cached file of ``entry``: no network call when present; else downloaded (resuming a ``.part`` file),
    checked and renamed into place."""
    dest = cache_dir() / entry.filename
    if dest.is_file():
        if entry.sha256 is not None:
            _check(name, entry, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _download(name, entry, part, dest, progress=progress, timeout=timeout)
    _check(name, entry, part)
    os.replace(part, dest)
    log.info("weights '%s' saved to %s", name, dest)
    return dest


def _download(name: str, entry: WeightsEntry, part: Path, dest: Path, *, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(entry.url, headers={"Range": f"bytes={have}-"} if have else {})
    offline = f"cannot download weights '{name}' from {entry.url} ({{why}}); download it elsewhere and put it at {dest}"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part file is already complete
            return
        raise CheckpointError(offline.format(why=f"HTTP {exc.code}")) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CheckpointError(offline.format(why=getattr(exc, "reason", exc))) from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        written = have
        with (
            part.open("ab" if resumed else "wb") as handle,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=name, disable=not progress) as bar,
        ):
            try:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    handle.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise CheckpointError(
                    f"download of weights '{name}' from {entry.url} broke off after {written} bytes ({exc}); run "
                    f"again to resume from {part}"
                ) from None
    if total is not None and written < total:
        raise CheckpointError(
            f"download of weights '{name}' from {entry.url} broke off after {written} of {total} bytes; run again "
            f"to resume from {part}"
        )


def format_catalog(catalog: dict[str, WeightsEntry] | None = None) -> str:
    """The catalog as a text table (``rtdetr weights list``)."""
    catalog = CATALOG if catalog is None else catalog
    rows = [("name", "kind", "model keys", "description", "sha256")]
    for name, entry in catalog.items():
        keys = ", ".join(f"{k}={v}" for k, v in entry.model.items())
        rows.append((name, entry.kind, keys, entry.description, (entry.sha256 or "unpublished")[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([*lines, f"cache: {cache_dir()} (RTDETR_CACHE)"])
