from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.policy import ScopeHierarchy

from ._build import ADMIN_IMPLIES, scopes


@pytest.mark.parametrize(
    ("granted", "expected"),
    [
        (scopes("admin"), True),
        (scopes("admin2"), False),
        (scopes("ADMIN"), False),
        (scopes("Admin"), False),
        (scopes("adm"), False),
        (scopes("admin,tools:call"), False),
        (scopes("admin tools:call"), False),
        (scopes(" admin"), False),
        (scopes("admin "), False),
        (scopes("\tadmin"), False),
        (scopes(), False),
        (scopes("tools:call", "tools:read"), False),  # what admin implies does not imply admin back
    ],
)
def test_only_the_exact_scope_token_counts_as_admin(granted: frozenset[str], expected: bool) -> None:
    assert ScopeHierarchy(ADMIN_IMPLIES).satisfies(granted, ["admin"]) is expected


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        (scopes("admin"), ["tools:call"], True),
        (scopes("admin"), ["tools:call", "tools:read"], True),
        (scopes("ADMIN"), ["tools:call"], False),
        (scopes("admin2"), ["tools:call"], False),
        (scopes("admin,tools:call"), ["tools:call"], False),
        (scopes("tools:call"), ["tools:call", "tools:read"], False),
        (scopes("tools:call", "tools:read"), ["tools:call", "tools:read"], True),
        (scopes("anything"), [], True),
        (scopes(), [], True),
    ],
)
def test_a_scope_is_satisfied_by_itself_or_by_a_scope_that_implies_it(
    granted: frozenset[str], required: list[str], expected: bool
) -> None:
    assert ScopeHierarchy(ADMIN_IMPLIES).satisfies(granted, required) is expected


def test_implications_are_transitive() -> None:
    hierarchy = ScopeHierarchy({"owner": ["admin"], "admin": ["write"], "write": ["read"]})
    assert hierarchy.expand(scopes("owner")) == scopes("owner", "admin", "write", "read")
    assert hierarchy.satisfies(scopes("owner"), ["read"])
    assert not hierarchy.satisfies(scopes("write"), ["admin"])


@pytest.mark.parametrize(
    "implications",
    [
        {"a": ["b"], "b": ["a"]},
        {"a": ["b"], "b": ["c"], "c": ["a"]},
        {"a": ["a", "b"], "b": ["b", "c"], "c": ["a"]},
    ],
)
def test_scopes_on_a_cycle_imply_each_other_and_construction_terminates(implications: dict[str, list[str]]) -> None:
    hierarchy = ScopeHierarchy(implications)
    members = set(implications)
    for scope in members:
        assert hierarchy.expand(scopes(scope)) >= members
        assert all(hierarchy.satisfies(scopes(scope), [other]) for other in members)


def test_a_scope_nobody_configured_expands_to_itself_only() -> None:
    hierarchy = ScopeHierarchy(ADMIN_IMPLIES)
    assert hierarchy.expand(scopes("mail:send")) == scopes("mail:send")
    assert hierarchy.holders_of("mail:send") == scopes("mail:send")
    assert hierarchy.holders_of("tools:call") == scopes("tools:call", "admin")


def test_an_empty_hierarchy_expands_nothing() -> None:
    assert ScopeHierarchy().expand(scopes("admin")) == scopes("admin")
    assert ScopeHierarchy({}).satisfies(scopes("admin"), ["admin"])
    assert not ScopeHierarchy({}).satisfies(scopes("admin"), ["tools:call"])


def test_a_bare_string_as_implied_scopes_is_refused_rather_than_read_letter_by_letter() -> None:
    with pytest.raises(TypeError, match="scope_implications"):
        ScopeHierarchy({"admin": "tools:call"})


@pytest.mark.parametrize(
    ("required", "challenge"),
    [
        (["tools:call"], ("tools:call",)),
        (["b", "a", "b"], ("b", "a")),  # configured order, duplicates removed
        (["admin", "tools:call"], ("admin", "tools:call")),  # not reduced to the implying scope
        (["tools:read"], ("tools:read",)),  # never broadened to `admin`
        ([], ()),
    ],
)
def test_the_challenge_names_the_configured_scopes_without_broadening_them(
    required: list[str], challenge: tuple[str, ...]
) -> None:
    assert ScopeHierarchy(ADMIN_IMPLIES).minimal_challenge(required) == challenge


_SCOPE = st.sampled_from(["a", "b", "c", "d", "e"])


@given(
    implications=st.dictionaries(_SCOPE, st.lists(_SCOPE, max_size=3), max_size=5),
    granted=st.frozensets(_SCOPE),
)
def test_expansion_is_a_closure(implications: dict[str, list[str]], granted: frozenset[str]) -> None:
    hierarchy = ScopeHierarchy(implications)
    expanded = hierarchy.expand(granted)
    assert expanded >= granted
    assert hierarchy.expand(expanded) == expanded  # idempotent: nothing left to imply
    for scope in expanded:
        assert hierarchy.satisfies(granted, [scope])
    for scope in set("abcde") - expanded:
        assert not hierarchy.satisfies(granted, [scope])
