"""Cloud providers: where console URLs come from."""

from gateway.clouds.base import ApiObserver, CloudError, CloudErrorKind, CloudProvider, ConsoleURL, Server

__all__ = ["ApiObserver", "CloudError", "CloudErrorKind", "CloudProvider", "ConsoleURL", "Server"]
