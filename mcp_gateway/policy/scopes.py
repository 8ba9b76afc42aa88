"""Scope hierarchies: which scopes a token effectively holds, compared as exact RFC 6749 scope tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ScopeHierarchy"]


class ScopeHierarchy:
    """Implications between scopes (`admin` implies `tools:call`), closed transitively once, at construction.

    Scopes are exact, case-sensitive strings: RFC 6749 §3.3 defines `scope` as space-delimited,
    case-sensitive tokens, so `ADMIN`, `admin2`, `admin,tools:call` or ` admin` never stand for `admin`.
    Splitting the token's `scope` claim on spaces is the verifier's job; this class only ever compares
    whole strings. Cycles are fine: every scope on a cycle implies every other one.

        hierarchy = ScopeHierarchy({"admin": ["tools:call"], "tools:call": ["tools:read"]})
        hierarchy.satisfies(frozenset({"admin"}), ["tools:read"])   # True
    """

    __slots__ = ("_holders", "_implies")

    def __init__(self, implications: Mapping[str, Iterable[str]] | None = None) -> None:
        direct: dict[str, set[str]] = {}
        for scope, implied in (implications or {}).items():
            if isinstance(implied, str):
                # A bare string would be iterated letter by letter and imply "a", "d", "m", ...
                raise TypeError(f"scope_implications[{scope!r}] must be a list of scopes, not a string")
            direct.setdefault(scope, set()).update(implied)
        implies: dict[str, frozenset[str]] = {}
        for start in direct:
            reached = {start}
            stack = [start]
            while stack:
                for nxt in direct.get(stack.pop(), ()):
                    if nxt not in reached:
                        reached.add(nxt)
                        stack.append(nxt)
            implies[start] = frozenset(reached)
        holders: dict[str, set[str]] = {}
        for holder, reached_scopes in implies.items():
            for scope in reached_scopes:
                holders.setdefault(scope, {scope}).add(holder)
        # scope → every scope that grants it (itself included); the only table decisions consult.
        self._implies = implies
        self._holders = {scope: frozenset(found) for scope, found in holders.items()}

    def expand(self, granted: frozenset[str]) -> frozenset[str]:
        """Every scope a token holding `granted` effectively has: `granted` plus all it implies."""
        out = set(granted)
        for scope in granted:
            implied = self._implies.get(scope)
            if implied is not None:
                out |= implied
        return frozenset(out)

    def holders_of(self, scope: str) -> frozenset[str]:
        """The scopes any one of which grants `scope` (`scope` itself included)."""
        found = self._holders.get(scope)
        return found if found is not None else frozenset((scope,))

    def satisfies(self, granted: frozenset[str], required: Iterable[str]) -> bool:
        """Whether a token holding `granted` has every scope in `required`, directly or by implication."""
        return all(not granted.isdisjoint(self.holders_of(scope)) for scope in required)

    def minimal_challenge(self, required: Iterable[str]) -> tuple[str, ...]:
        """The `scope` of a 403 insufficient_scope challenge: the operation's scopes as configured.

        MCP 2026-07-28 (authorization, scope challenges): the challenge names the scopes the current
        operation needs, and the client unions them with what it already asked for. So the answer is
        the configured list, duplicates removed, order kept. It deliberately does not swap a scope for
        a broader one that implies it (asking for `admin` where `tools:read` suffices breaks least
        privilege, and the authorization server need not know our hierarchy), nor add what the token
        already holds (RFC 6750 §3.1: the scope necessary to access the resource).
        """
        return tuple(dict.fromkeys(required))
