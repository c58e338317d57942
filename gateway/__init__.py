"""novnc-gateway: a VNC console gateway."""
