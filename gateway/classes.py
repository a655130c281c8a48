"""Which SLA class a request runs in.

The body's ``service_tier`` (OpenAI's field) wins over the ``X-SLA-Class``
header; neither means the default (the API key's, else the config's). OpenAI's
own tier words ``auto`` and ``default`` mean the default class, so stock
clients work. A class the key does not allow, asked for by name, is a 403: a
silent downgrade would hide a misconfigured client behind worse latency.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from gateway.errors import Forbidden, InvalidRequest


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_DEFAULT_WORDS = frozenset({"auto", "default"})

C = TypeVar("C", bound=_Named)


def resolve_class(
    classes: Sequence[C], default: str, service_tier: str | None, header: str | None,
    allowed: Collection[str] | None = None,
) -> C:
    """The class object the request asked for, or the default; within ``allowed``
    (the key's classes; None: all) or ``Forbidden``."""
    by_name = {c.name: c for c in classes}
    asked = service_tier if service_tier is not None else header
    param = "service_tier" if service_tier is not None else "X-SLA-Class"
    if asked is None or asked.strip().lower() in _DEFAULT_WORDS:
        chosen = by_name[default]
    else:
        chosen = _named(by_name, asked, param)
    if allowed is not None and chosen.name not in allowed:
        permitted = ", ".join(sorted(allowed)) or "none"
        raise Forbidden(f"This API key may not use SLA class {chosen.name!r}; allowed: "
                        f"{permitted}.", param=param if asked is not None else None,
                        code="class_not_allowed")
    return chosen


def _named(by_name: dict[str, C], asked: str, param: str) -> C:
    chosen = by_name.get(asked.strip().lower())
    if chosen is None:
        known = ", ".join(sorted(by_name))
        shown = asked[:64].encode("unicode_escape").decode("ascii")
        raise InvalidRequest(f"Unknown SLA class {shown!r}; known classes: {known}.",
                             param=param)
    return chosen
