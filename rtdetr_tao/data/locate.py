"""Finding the image file of a COCO ``file_name`` under an image folder, as other tools' exports lay them out.

A ``file_name`` is looked up, in order:

1. as given, when it is an absolute path to an existing file;
2. relative to the image folder (``image_dir/file_name``; sub-folders in ``file_name`` work);
3. inside the folder's single top-level folder (TAO's ``images.tar.gz`` holds ``images/…``);
4. by the longest trailing run of path parts shared with a file anywhere below the folder: a unique relative-path
   suffix, else a unique basename (a Label Studio ``images/x.jpg`` with ``image_dir`` pointing at ``images/``, an
   absolute path from the exporter's machine, CVAT's ``images/default/…``).

Two or more equally good matches are an error that lists them; no match is an error that says where it looked.
The folder is walked at most once per locator (on the first lookup that needs it), never per image. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import DataError

_SHOWN = 5
"""Candidates listed in an ambiguity error."""


class ImageLocator:
    """Resolves ``file_name``s of one annotation file (``source``, for messages) against the folder ``root``."""

    def __init__(self, root: Path, source: str) -> None:
        self.root, self.source = Path(root), source
        self._top: Path | bool | None = False  # False: not looked at yet
        self._by_name: dict[str, list[tuple[str, ...]]] | None = None

    def find(self, file_name: str) -> Path:
        """The file of ``file_name``; :class:`DataError` when none or several files fit."""
        parts = _parts(file_name)
        if not parts:
            raise DataError(f"{self.source}: an image has an empty file_name")
        given = Path(file_name).expanduser()
        if given.is_absolute():
            if given.is_file():
                return given
            return self._match(file_name, parts, [given])
        looked = [self.root / given]
        top = self._top_folder()
        if top is not None:
            looked.append(top / given)
        for path in looked:
            if path.is_file():
                return path
        return self._match(file_name, parts, looked)

    def _top_folder(self) -> Path | None:
        """The only entry of ``root`` when that is a folder (hidden entries aside), else None."""
        if self._top is False:
            try:
                entries = [e for e in os.scandir(self.root) if not e.name.startswith(".")]
            except OSError:
                entries = []
            self._top = Path(entries[0].path) if len(entries) == 1 and entries[0].is_dir() else None
        return self._top  # type: ignore[return-value]

    def _index(self) -> dict[str, list[tuple[str, ...]]]:
        if self._by_name is None:
            self._by_name = {}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                base = Path(folder).relative_to(self.root).parts
                for name in files:
                    self._by_name.setdefault(name, []).append((*base, name))
        return self._by_name

    def _match(self, file_name: str, parts: tuple[str, ...], looked: list[Path]) -> Path:
        candidates = self._index().get(parts[-1], [])
        if candidates:
            shared = [_shared_tail(parts, c) for c in candidates]
            best = max(shared)
            winners = [c for c, n in zip(candidates, shared, strict=True) if n == best]
            if len(winners) == 1:
                return self.root.joinpath(*winners[0])
            listed = ", ".join(str(self.root.joinpath(*w)) for w in winners[:_SHOWN])
            more = f" and {len(winners) - _SHOWN} more" if len(winners) > _SHOWN else ""
            raise DataError(
                f"{self.source}: file_name '{file_name}' matches {len(winners)} files under {self.root}: {listed}"
                f"{more}; give file_name with enough folders to tell them apart (relative to image_dir)"
            )
        raise DataError(
            f"{self.source}: image '{file_name}' not found: looked for {' and '.join(map(str, looked))} and for a "
            f"file named '{parts[-1]}' anywhere under {self.root}; check dataset image_dir and the file_name"
        )


def _parts(file_name: str) -> tuple[str, ...]:
    """Path parts of ``file_name`` (``/`` or ``\\``), without the root, ``.`` and empty parts."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return tuple(p for p in path.parts if p not in ("/", ".", "") and not p.endswith(":"))


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """How many trailing parts ``a`` and ``b`` have in common."""
    count = 0
    for x, y in zip(reversed(a), reversed(b), strict=False):
        if x != y:
            break
        count += 1
    return count
