"""String normalisation for search: case- and accent-insensitive, Chinese left intact.

NFKD splits accented letters into a base letter and combining marks, which are dropped; NFKC
then folds full-width letters and digits into their ordinary forms; ``casefold`` handles
case, including non-ASCII. Han characters pass through every step unchanged.
"""

from __future__ import annotations

import unicodedata

MAX_INDEXED = 255


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", stripped).casefold().strip()


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix`` (code point order).

    Lets a prefix match use an index range (``value >= p AND value < bound``) on both databases.
    """
    return prefix + "\U0010ffff"
