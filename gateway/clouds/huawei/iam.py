"""IAM token authentication: the alternative to AK/SK for accounts that only have a password.

Huawei IAM is Keystone v3: a project-scoped token from `POST /v3/auth/tokens` (password method, the
account name as the user's domain), without the catalog (the ECS endpoint is known from the region).
Renewal, the one retry after a 401 and the backoff after a rejected password are `KeystoneAuth`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.clouds.keystone import KeystoneAuth

__all__ = ["IAMTokenAuth"]


class IAMTokenAuth(KeystoneAuth):
    """Password auth against IAM; the token is held only in memory."""

    def __init__(
        self,
        *,
        domain: str,
        user: str,
        password: str,
        project_id: str,
        region: str,
        endpoint: str | None = None,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (domain and user and password and project_id):
            raise ValueError("IAM auth needs domain, user, password and project_id")
        super().__init__(
            url=endpoint or f"https://iam.{region}.myhuaweicloud.com",
            user=user,
            password=password,
            user_domain=domain,
            project_id=project_id,
            catalog=False,
            refresh_margin=refresh_margin,
            clock=clock,
        )
        self.domain = domain
        self.region = region

    @property
    def endpoint(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"IAMTokenAuth(domain={self.domain!r}, user={self.user!r}, endpoint={self.endpoint!r})"
