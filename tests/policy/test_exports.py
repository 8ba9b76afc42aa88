from __future__ import annotations

import mcp_gateway.policy as policy_package
from mcp_gateway.policy import decision, listing, ratelimit, resources, scopes


def test_the_policy_package_exports_a_sorted_list_of_names_that_exist() -> None:
    assert policy_package.__all__ == sorted(policy_package.__all__)
    for name in policy_package.__all__:
        assert getattr(policy_package, name) is not None


def test_every_public_name_of_the_policy_modules_is_declared() -> None:
    for module in (decision, listing, ratelimit, resources, scopes):
        declared = set(module.__all__)
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
        assert public <= declared, module.__name__
        assert all(hasattr(module, name) for name in declared)
