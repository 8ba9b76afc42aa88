from __future__ import annotations

import pytest

from mcp_gateway.policy.resources import AMBIGUOUS, ResourceRules, normalize_uri, template_literal_prefix

RULES = ResourceRules(
    {
        "file:///": "any-file",
        "file:///public/": "public",
        "file:///public/secret/": "secret",
        "file:///My%20Docs/": "docs",
        "https://example.com/api/": "api",
    }
)


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("file:///public/readme.md", "public"),
        ("file:///public/", "public"),
        ("file:///public/secret/key.pem", "secret"),  # longest prefix wins
        ("file:///public/secrets.txt", "public"),  # exact string prefix, not a path-component guess
        ("file:///publicity.txt", "any-file"),
        ("file:///etc/passwd", "any-file"),
        ("file:///public/a%20b.txt", "public"),
        ("file:///public/.hidden", "public"),  # dots inside names are not dot-segments
        ("file:///public/a..b", "public"),
        ("file:///public/...", "public"),
        ("file:///My%20Docs/cv.pdf", "docs"),  # a key written encoded matches the URI written alike
        ("https://example.com/api/v1", "api"),
        ("https://example.com/apix", None),
        ("mem://x", None),
        ("", None),
    ],
)
def test_the_longest_configured_prefix_decides(uri: str, rule: str | None) -> None:
    assert RULES.match(uri) == rule


@pytest.mark.parametrize(
    "uri",
    [
        "file:///public/../secret.txt",
        "file:///public/secret/../../etc/passwd",
        "file:///public/./secret/key.pem",
        "file:///public/%2e%2e/etc/passwd",
        "file:///public/%2E%2e/etc/passwd",
        "file:///public/.%2e/etc/passwd",
        "file:///public/%252e%252e/etc/passwd",  # encoded twice
        "file:///public/..%2fetc/passwd",
        "file:///public/..%5cetc/passwd",
        "file:///public/..\\etc\\passwd",
        "file:///public/..;/etc/passwd",
        "file:///public/..?x",
        "file:///public/..",
        "file:///public/x%00.txt",
        "file:///public/x\n",
        "file:///public/%25252525252e%25252525252e/x",  # still changing after every decoding round
    ],
)
def test_a_uri_with_dot_segments_or_control_characters_is_ambiguous(uri: str) -> None:
    assert RULES.match(uri) is AMBIGUOUS


@pytest.mark.parametrize(
    "uri",
    [
        "file:///public/%73ecret/key.pem",  # %73 is "s": means .../secret/..., matched as .../public/
        "FILE:///public/readme.md",  # the scheme is case-insensitive; matched raw it would fall to no rule
        "HTTPS://EXAMPLE.COM/api/v1",
        "file:///My Docs/cv.pdf",
        "file:///%70ublic/readme.md",
    ],
)
def test_a_uri_whose_normalized_spelling_matches_another_rule_is_ambiguous(uri: str) -> None:
    assert RULES.match(uri) is AMBIGUOUS


def test_keys_that_normalize_alike_with_different_rules_make_their_subtree_ambiguous() -> None:
    rules = ResourceRules({"file:///a/": "lower", "FILE:///a/": "upper"})
    assert rules.match("file:///a/x") is AMBIGUOUS
    assert rules.match("file:///b/x") is None


def test_a_key_with_dot_segments_still_matches_as_sent_but_its_uris_are_ambiguous() -> None:
    rules = ResourceRules({"file:///a/../b/": "odd"})
    assert rules.match("file:///a/../b/x") is AMBIGUOUS
    assert rules.match("file:///c") is None


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("file:///x", "file:///x"),
        ("FILE:///X", "file:///X"),  # path case is kept
        ("HTTPS://User@EXAMPLE.com:443/P?Q#F", "https://user@example.com:443/P?Q#F"),
        ("file:///a%20b", "file:///a b"),
        ("file:///a%2541", "file:///aA"),
        ("file:///bad%zz", "file:///bad%zz"),
        ("urn:isbn:0451450523", "urn:isbn:0451450523"),
        ("file:///a/../b", None),
    ],
)
def test_normalization_lowercases_scheme_and_authority_and_decodes(uri: str, normalized: str | None) -> None:
    assert normalize_uri(uri) == normalized


@pytest.mark.parametrize(
    ("template", "prefix"),
    [
        ("file:///public/{name}", "file:///public/"),
        ("file:///{path}", "file:///"),
        ("{+url}", ""),
        ("file:///fixed.txt", "file:///fixed.txt"),
        ("db://{table}/{id}", "db://"),
    ],
)
def test_a_template_is_judged_by_its_text_before_the_first_expression(template: str, prefix: str) -> None:
    assert template_literal_prefix(template) == prefix
