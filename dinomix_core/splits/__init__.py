"""Package data: the fixed case splits of the Synapse and AMOS benchmarks (``synapse.json``, ``amos.json``).

They are read by :func:`dinomix_core.labels.load_split` (see ``docs/benchmarks.md``), re-exported here so that
``from dinomix_core.splits import load_split`` keeps working.
"""

from __future__ import annotations

from ..labels import DATASETS, fraction_key, load_split

__all__ = ["DATASETS", "load_split", "fraction_key"]
