"""Licence ids (the hub's list: https://huggingface.co/docs/hub/repositories-licenses), their
names and links, and the share-alike rule: data derived from a CC BY-SA source must be shared under
CC BY-SA. Version 3.0 lets adaptations be shared under a later version with the same elements, so
data mixing BY-SA 3.0 and 4.0 sources goes out under BY-SA 4.0."""

from __future__ import annotations

import re
from collections.abc import Iterable

from qa_forge.core.io import UserError

UNKNOWN = "unknown"
UNKNOWN_TEXT = "unknown, check the model's own card"

NAMES = {
    "apache-2.0": ("Apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "mit": ("MIT", "https://opensource.org/license/mit"),
    "cc-by-4.0": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc-by-3.0": ("CC BY 3.0", "https://creativecommons.org/licenses/by/3.0/"),
    "cc-by-sa-4.0": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    "cc-by-sa-3.0": ("CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0/"),
    "cc-by-nc-sa-4.0": ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    "cc-by-nc-sa-3.0": ("CC BY-NC-SA 3.0", "https://creativecommons.org/licenses/by-nc-sa/3.0/"),
}
_SHARE_ALIKE = re.compile(r"^(?P<family>cc-by(?:-nc)?-sa)-(?P<version>\d+\.\d+)$")


def name(license_id: str | None) -> str:
    if not license_id or license_id == UNKNOWN:
        return UNKNOWN
    return NAMES.get(license_id, (license_id, None))[0]


def link(license_id: str | None) -> str:
    """The licence as Markdown: its name, linked where the link is known."""
    text = name(license_id)
    url = NAMES.get(license_id or "", (None, None))[1]
    return f"[{text}]({url})" if url else text


def is_share_alike(license_id: str | None) -> bool:
    return bool(license_id and _SHARE_ALIKE.match(license_id))


def share_alike_license(ids: Iterable[str | None]) -> str | None:
    """The licence data derived from sources under `ids` must carry: the newest version of their
    share-alike licence; None when none is share-alike. Two share-alike families (BY-SA and
    BY-NC-SA) cannot both be met by one licence: that is an error to resolve by hand."""
    found = [m for i in ids if i and (m := _SHARE_ALIKE.match(i))]
    if not found:
        return None
    families = sorted({m["family"] for m in found})
    if len(families) > 1:
        raise UserError(f"sources under {' and '.join(families)} cannot be shared under one licence: drop one of them")
    version = max((m["version"] for m in found), key=lambda v: tuple(int(x) for x in v.split(".")))
    return f"{families[0]}-{version}"
