"""Who the user is: session cookie, OIDC, trusted proxy (signed assertion or plain headers), local users."""

from .identity import AuthError, Identity

__all__ = ["AuthError", "Identity"]
