"""Class-name tables, and how a model's classes line up with a dataset's (``match_class_names``).

Matching rules (one place, used wherever a model meets a dataset: evaluation now, training next):

* Names are compared after stripping surrounding whitespace and ignoring case (``str.casefold``);
  nothing else is normalised (``"traffic light"`` and ``"traffic_light"`` are different classes).
* Same names, same order: nothing to do, empty message.
* Same names, another order: model classes are remapped to the dataset's by name, and the message says so.
* Partial overlap: only the shared classes are scored; detections of model classes the dataset lacks are
  dropped, dataset classes the model does not know are left out of the scoring; the message lists both.
* No shared name: ``ValueError`` listing both name sets and pointing at ``--ignore-names``.
* ``ignore_names=True`` (``--ignore-names``): class ``k`` of the model is class ``k`` of the dataset, on purpose;
  the class counts must agree (``ValueError`` otherwise).
* Placeholder names on either side (every name ``i`` is ``"i"``, ``"class{i}"`` or ``"class_{i}"``, as given to
  unnamed classes by this package, the reference trainer and its ``nc``-only data.yaml) carry no meaning, so
  classes are matched by index as with ``ignore_names`` (counts must agree), and the message says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # the 80 COCO classes, in the order of the official detectors


@dataclass(frozen=True)
class ClassMatch:
    """How the classes of a model line up with those of a dataset (see the module docstring for the rules).

    Attributes:
        model_to_data: length = the model's class count; entry ``m`` is the dataset class index that model
            class ``m`` is scored (or trained) as, or None when the dataset has no such class.
        scored: dataset class indices some model class maps to, ascending: the classes that are scored.
        unscored: dataset class indices the model does not know, ascending: left out of the scoring.
        message: one line for the user; empty when the names agree in the same order.
    """

    model_to_data: tuple[int | None, ...]
    scored: tuple[int, ...]
    unscored: tuple[int, ...]
    message: str = ""

    @property
    def dropped(self) -> tuple[int, ...]:
        """Model class indices without a dataset class (their detections are dropped)."""
        return tuple(m for m, d in enumerate(self.model_to_data) if d is None)

    @property
    def partial(self) -> bool:
        """Whether some class of either side is left out (a warning, not just a remap)."""
        return bool(self.dropped or self.unscored)


def class_names(names: Sequence[str] | dict | None) -> list[str] | None:
    """Class names from a list, or from an ``{index: name}`` mapping (keys ints or digit strings) whose keys are
    exactly ``0 … n-1``; None stays None.

    Raises ValueError for gaps in the indices or anything else than a list or a mapping.
    """
    if names is None:
        return None
    if isinstance(names, dict):
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise ValueError(f"class indices in names must be 0..{len(keys) - 1} without gaps, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"names must be a list or an {{index: name}} mapping, got {names!r}")
    return [str(n) for n in names]


def name_key(name: object) -> str:
    """The form in which class names are compared: surrounding whitespace stripped, case folded."""
    return str(name).strip().casefold()


_PLACEHOLDER = re.compile(r"(?:class_?)?(\d+)")


def is_placeholder(names: Sequence[str]) -> bool:
    """Whether every name ``i`` is ``"i"``, ``"class{i}"`` or ``"class_{i}"`` (names given to unnamed classes)."""
    matches = [_PLACEHOLDER.fullmatch(name_key(n)) for n in names]
    return bool(matches) and all(m is not None and int(m.group(1)) == i for i, m in enumerate(matches))


def _listing(names: Sequence[str], limit: int = 12) -> str:
    """``"a, b, c"``, or the first ``limit`` names and how many more."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")


def _count(n: int) -> str:
    """``"1 class"``, ``"3 classes"``."""
    return f"{n} class" if n == 1 else f"{n} classes"


def _check_unique(keys: list[str], side: str) -> None:
    """Raise ValueError when two class names of one side compare equal (``name_key``)."""
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"the {side} class names repeat (ignoring case and surrounding spaces): "
                         f"{_listing(repeated)}; pass --ignore-names to match classes by index")


def _match_by_index(model_names: Sequence[str], data_names: Sequence[str], reason: str) -> ClassMatch:
    """Model class ``k`` is dataset class ``k``; counts must agree."""
    if len(model_names) != len(data_names):
        raise ValueError(f"{reason} classes are matched by index, but the model has {len(model_names)} classes "
                         f"({_listing(model_names, 5)}) and the dataset {len(data_names)} "
                         f"({_listing(data_names, 5)})")
    same = [name_key(n) for n in model_names] == [name_key(n) for n in data_names]
    message = "" if same else (f"{reason} classes matched by index, model {_listing(model_names)} "
                               f"-> dataset {_listing(data_names)}")
    n = len(data_names)
    return ClassMatch(tuple(range(n)), tuple(range(n)), (), message)


def match_class_names(model_names: Sequence[str], data_names: Sequence[str], ignore_names: bool = False
                      ) -> ClassMatch:
    """Line up a model's classes with a dataset's by name (rules in the module docstring).

    Args:
        model_names: the model's class names; index ``m`` is model class ``m``.
        data_names: the dataset's class names; index ``d`` is dataset class ``d``.
        ignore_names: match by index on purpose (``--ignore-names``); the counts must agree.

    Returns:
        ``ClassMatch`` with the model → dataset class map, the scored and unscored dataset classes and a
        one-line message (empty when nothing needs saying).

    Raises:
        ValueError: no shared name; names repeating within one side; different counts when matching by index.
    """
    if ignore_names:
        return _match_by_index(model_names, data_names, "--ignore-names:")
    for side, names in (("model", model_names), ("dataset", data_names)):
        if is_placeholder(names):
            return _match_by_index(model_names, data_names,
                                   f"the {side}'s class names are placeholders ({_listing(names, 3)}):")
    model_keys, data_keys = [name_key(n) for n in model_names], [name_key(n) for n in data_names]
    if model_keys == data_keys:
        n = len(data_keys)
        return ClassMatch(tuple(range(n)), tuple(range(n)), (), "")
    _check_unique(model_keys, "model")
    _check_unique(data_keys, "dataset")
    where = {key: d for d, key in enumerate(data_keys)}
    model_to_data = tuple(where.get(key) for key in model_keys)
    scored = tuple(sorted(d for d in model_to_data if d is not None))
    if not scored:
        raise ValueError(f"the model's classes ({_listing(model_names, 20)}) and the dataset's "
                         f"({_listing(data_names, 20)}) share no name: check the weights and the dataset, "
                         f"or pass --ignore-names to match classes by index")
    unscored = tuple(d for d in range(len(data_names)) if d not in scored)
    match = ClassMatch(model_to_data, scored, unscored)
    return replace(match, message=_by_name_message(match, model_names, data_names))


def _by_name_message(match: ClassMatch, model_names: Sequence[str], data_names: Sequence[str]) -> str:
    """The one line that says what matching by name did: classes moved, dropped, left out."""
    moved = [f"{model_names[m]} {m}->{d}" for m, d in enumerate(match.model_to_data) if d is not None and d != m]
    remap = f"remapped by name (model class -> dataset class): {_listing(moved)}" if moved else ""
    if not match.partial:
        return f"the model and the dataset name the same {len(match.scored)} classes in another order; {remap}"
    parts = [f"the model and the dataset share {_count(len(match.scored))}, only those are scored: "
             f"{_listing([data_names[d] for d in match.scored])}", remap]
    if match.dropped:
        parts.append(f"model classes not in the dataset (their detections dropped): "
                     f"{_listing([model_names[m] for m in match.dropped])}")
    if match.unscored:
        parts.append(f"dataset classes the model does not know (left out of the scoring): "
                     f"{_listing([data_names[d] for d in match.unscored])}")
    return "; ".join(part for part in parts if part)
