"""`[servers.NAME.credentials]`: the model of what the gateway sends upstream, validated per type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from mcp_gateway.config.common import FROZEN, Scope, absolute_http_url, secure_or_loopback

CredentialType = Literal["bearer", "header", "oauth_client_credentials", "token_exchange", "signed_assertion"]
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
_STATIC_TYPES = frozenset({"bearer", "header"})
_OAUTH_TYPES = frozenset({"oauth_client_credentials", "token_exchange"})


class Credentials(BaseModel):
    """`[servers.NAME.credentials]`: what the gateway sends upstream in place of the client's token.

    `bearer`/`header`: a secret from `token_env` or `token_file` (re-read when it changes).
    `oauth_client_credentials`/`token_exchange`: the gateway is an OAuth client of the upstream's
    authorization server (`token_url`, or discovered from the upstream's RFC 9728 metadata).
    `signed_assertion`: the gateway signs a short JWT per call with `private_key_file`.
    Paths are relative to gateway.toml; secrets are only ever named here, never written.
    """

    model_config = FROZEN

    type: CredentialType = "bearer"
    token_env: str | None = None
    token_file: str | None = None
    header: str = "authorization"  # for type = "header": the header name; value is the secret as is
    token_url: str | None = None  # absent → RFC 9728 → RFC 8414 discovery from the upstream URL
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    auth_method: ClientAuthMethod | None = None  # default: private_key_jwt with a key file, else client_secret_basic
    private_key_file: str | None = None  # PEM: private_key_jwt's key, or the signed_assertion signing key
    scope: tuple[Scope, ...] | Literal["operation"] | None = None  # "operation": exactly the call's scopes
    audience: str | None = None  # default: the upstream URL
    resource: str | None = None  # RFC 8707; default: the upstream URL
    refresh_before_seconds: float = Field(default=30.0, ge=0)  # cached tokens are replaced this long before exp
    lifetime_seconds: int = Field(default=60, gt=0, le=60)  # signed_assertion: exp at most 60 s ahead
    timeout_seconds: float = Field(default=10.0, gt=0)  # token and discovery requests

    @model_validator(mode="after")
    def _fits_type(self) -> Credentials:
        kind = self.type
        given = {name for name in self.model_fields_set if name != "type"}
        if kind in _STATIC_TYPES:
            if (self.token_env is None) == (self.token_file is None):
                raise ValueError(f'type = "{kind}" needs exactly one of token_env or token_file')
            allowed = {"token_env", "token_file", "header"}
        elif kind in _OAUTH_TYPES:
            if not self.client_id:
                raise ValueError(f'type = "{kind}" needs client_id (the gateway\'s client at the authorization server)')
            method = self.method
            if method == "private_key_jwt":
                if self.private_key_file is None:
                    raise ValueError('auth_method = "private_key_jwt" needs private_key_file (a PEM private key)')
                if self.client_secret_env is not None or self.client_secret_file is not None:
                    raise ValueError('auth_method = "private_key_jwt" takes no client secret; remove client_secret_*')
            elif (self.client_secret_env is None) == (self.client_secret_file is None):
                raise ValueError(
                    f'auth_method = "{method}" needs exactly one of client_secret_env or client_secret_file'
                )
            allowed = {
                "token_url", "client_id", "client_secret_env", "client_secret_file", "auth_method",
                "private_key_file", "scope", "audience", "resource", "refresh_before_seconds", "timeout_seconds",
            }  # fmt: skip
        else:  # signed_assertion
            if self.private_key_file is None:
                raise ValueError('type = "signed_assertion" needs private_key_file (a PEM P-256 key for ES256)')
            allowed = {"private_key_file", "scope", "audience", "lifetime_seconds"}
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f'{extra[0]} does not apply to type = "{kind}"; remove it')
        for name in ("token_url", "audience", "resource"):
            value = getattr(self, name)
            if value is not None and not absolute_http_url(value):
                raise ValueError(f"{name} must be an absolute http(s) URL without a fragment, got {value!r}")
        if self.token_url is not None and not secure_or_loopback(self.token_url):
            raise ValueError("token_url must be https (plain http only to a loopback host): it carries secrets")
        return self

    @property
    def method(self) -> ClientAuthMethod:
        """How the gateway authenticates at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2)."""
        if self.auth_method is not None:
            return self.auth_method
        return "private_key_jwt" if self.private_key_file is not None else "client_secret_basic"

    def __repr_args__(self) -> Any:
        # Names of secrets are config, never secrets; still, keep repr() to what identifies the table.
        return [(name, getattr(self, name)) for name in ("type", "client_id", "token_url") if getattr(self, name)]
