"""The fixed case splits of the Synapse and AMOS benchmarks (see ``docs/benchmarks.md``).

``synapse.json`` and ``amos.json`` record train / validation / test case ids, the labeled and unlabeled
training ids for each labeled fraction, and where each list was copied from (``"source"``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Dict, Optional

__all__ = ["DATASETS", "load_split", "fraction_key"]

DATASETS = ("synapse", "amos")


def fraction_key(fraction: float) -> str:
    """The JSON key of a labeled fraction: ``0.2 -> "0.2"``, ``0.05 -> "0.05"``."""
    return f"{float(fraction):g}"


def load_split(dataset: str, variant: Optional[str] = None) -> Dict[str, Any]:
    """The split of ``dataset`` (``"synapse"`` or ``"amos"``).

    Args:
        dataset: benchmark name.
        variant: ``None``/``"default"`` for the protocol's split, or the name of an entry of ``"alternatives"``
            (``"dhc"`` for Synapse: DHC's own partition). The alternative's lists replace the default ones.

    Returns:
        A dict with ``train``, ``validation``, ``test`` (case id lists), ``labeled`` and ``unlabeled``
        (``{fraction key: ids}``), ``source`` and the dataset's other fields.
    """
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}.")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    split = json.loads(text)
    alternatives = split.pop("alternatives", {})
    if variant not in (None, "", "default"):
        if variant not in alternatives:
            raise ValueError(
                f"{name} has no split variant {variant!r}; choose 'default'"
                + (f" or one of {sorted(alternatives)}." if alternatives else ".")
            )
        split.update(alternatives[variant])
        split["variant"] = variant
    else:
        split["variant"] = "default"
    split["available_variants"] = ["default", *sorted(alternatives)]
    return split
