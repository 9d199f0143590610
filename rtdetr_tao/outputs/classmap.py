"""The class-name file of ``rtdetr inference`` and ``rtdetr-deploy inference``: line 1 is label 0.

One function for both, so the two can never disagree (TAO's TensorRT path read it shifted by one).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def read_classmap(path: str | Path, *, num_classes: int | None = None) -> list[str]:
    """Class names in label order: line ``i + 1`` names label ``i``.

    Names are stripped of surrounding whitespace; blank lines at the end are ignored.

    Raises:
        DataError: the file is missing or unreadable, holds no names, has an empty or repeated name before
            its last name, or (when ``num_classes`` is given) lists a different number of names.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"classmap {path} does not exist; set dataset.infer_data_sources.classmap to a text file with one "
            "class name per line"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"classmap {path} is not a readable UTF-8 text file ({exc})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"classmap {path} is empty; write one class name per line, in label order")
    first_seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"classmap {path}, line {number}: empty class name; line 1 names label 0, and so on")
        if name in first_seen:
            raise DataError(
                f"classmap {path}, line {number}: {name!r} repeats line {first_seen[name]}; names must differ"
            )
        first_seen[name] = number
    if num_classes is not None and len(names) != num_classes:
        raise DataError(
            f"classmap {path} lists {len(names)} names but the model predicts {num_classes} classes; "
            "write one name per class, in label order"
        )
    return names
