"""Cross-origin rules: which headers to add to answers and to preflights.

With `("*",)` every answer allows every origin. With a list, a listed `Origin` is echoed
back; every answer then carries `Vary: Origin`, because its headers depend on the origin
(an unlisted one gets no `Access-Control-Allow-Origin`, so the browser blocks the page).
`apply` adds them to an answer's headers, merging `Vary` with what the answer has already.
"""

from __future__ import annotations

import re
from typing import Protocol

import attrs

__all__ = ["ALLOWED_HEADERS", "ALLOWED_METHODS", "EXPOSED_HEADERS", "CorsPolicy", "merge_vary"]

ALLOWED_METHODS = "GET, POST, OPTIONS"
# By name: a `*` in Access-Control-Allow-Headers never covers Authorization.
ALLOWED_HEADERS = ("Content-Type", "Authorization", "X-Token", "X-Session-Id", "Last-Event-ID")
EXPOSED_HEADERS = "Retry-After, X-Request-Id"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP field name (RFC 9110 token)


class HeaderSink(Protocol):
    """An answer's headers: a dict, or Werkzeug's `Headers`."""

    def get(self, key: str, /) -> str | None: ...

    def __setitem__(self, key: str, value: str, /) -> None: ...


def merge_vary(current: str | None, added: str) -> str:
    """`Vary` naming every field of `current` and `added`, each once (in any case), in
    order; `*` stays `*`."""
    names: list[str] = []
    seen: set[str] = set()
    for part in f"{current or ''},{added}".split(","):
        name = part.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return "*" if "*" in seen else ", ".join(names)


@attrs.frozen
class CorsPolicy:
    """The allowed origins (`("*",)` for any) and how long browsers may cache a preflight."""

    origins: tuple[str, ...] = ("*",)
    max_age: int = 7200
    _any: bool = attrs.field(init=False)
    _listed: frozenset[str] = attrs.field(init=False)

    @_any.default
    def _any_default(self) -> bool:
        return "*" in self.origins

    @_listed.default
    def _listed_default(self) -> frozenset[str]:
        return frozenset(self.origins)

    def headers_for(self, origin: str | None) -> dict[str, str]:
        """CORS headers for an actual answer (errors and streams included)."""
        if self._any:
            return {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            }
        if origin is not None and origin in self._listed:
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
                "Vary": "Origin",
            }
        return {"Vary": "Origin"}

    def apply(self, headers: HeaderSink, origin: str | None) -> None:
        """Add `headers_for(origin)` to an answer's `headers`; a `Vary` already there
        (a preflight's, say) is merged with ours, never replaced."""
        for name, value in self.headers_for(origin).items():
            if name == "Vary":
                value = merge_vary(headers.get("Vary"), value)
            headers[name] = value

    def preflight_headers(
        self,
        origin: str | None,
        requested_method: str | None = None,
        requested_headers: str | None = None,
    ) -> dict[str, str]:
        """Headers for an `OPTIONS` preflight; the allowed methods are fixed, so
        `requested_method` changes nothing. Requested header names are allowed as well."""
        del requested_method
        headers = self.headers_for(origin)
        if "Access-Control-Allow-Origin" not in headers:
            headers["Vary"] = "Origin, Access-Control-Request-Headers"
            return headers
        headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        headers["Access-Control-Allow-Headers"] = ", ".join(_allowed_headers(requested_headers))
        headers["Access-Control-Max-Age"] = str(self.max_age)
        headers["Vary"] = ", ".join(
            [*(["Origin"] if not self._any else []), "Access-Control-Request-Headers"]
        )
        return headers


def _allowed_headers(requested: str | None) -> list[str]:
    """Our named headers, then any other well-formed names the browser asked for."""
    names = list(ALLOWED_HEADERS)
    seen = {name.lower() for name in names}
    for part in (requested or "").split(","):
        name = part.strip()
        if _TOKEN.fullmatch(name) and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names
