"""``msae-audit discover``: shortcuts nobody labelled, found among the bank's concepts.

* :mod:`.config` — discover's settings; the one-group-per-class attribute it starts from;
* :mod:`.scan` — one pass: margins, each concept's activation and the decisions after removing it;
* :mod:`.effects` — per concept: its groups, ΔWGA, bootstrap, exact reruns, the null, BH;
* :mod:`.findings` — the reported rows, ranks, re-check commands, example rows;
* :mod:`.judge` — checks and verdict; :mod:`.run` — the whole run (:func:`run_discover`);
* :mod:`.export` — a linear head without the flagged concepts' directions;
* :mod:`.result`, :mod:`.serialize`, :mod:`.schema` — the typed result and its JSON.
"""

from audit.discover.config import DiscoverSettings
from audit.discover.result import DiscoverResult
from audit.discover.run import run_discover
from audit.discover.serialize import SCHEMA, dumps, parse_discover, published, to_json

__all__ = [
    "SCHEMA",
    "DiscoverResult",
    "DiscoverSettings",
    "dumps",
    "parse_discover",
    "published",
    "run_discover",
    "to_json",
]
