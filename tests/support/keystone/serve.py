"""Serve Keystone's public WSGI application on loopback; run by the Keystone virtualenv's Python.

Usage: serve.py CONFIG_FILE PORT. A threaded stdlib WSGI server is enough for tests; request lines are not
logged (token validation requests carry no token in the path, but quiet is the safe default).
"""

import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main() -> None:
    config, port = sys.argv[1], int(sys.argv[2])
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = config
    del sys.argv[1:]  # oslo.config parses the command line too
    from keystone.server import wsgi

    app = wsgi.initialize_public_application()
    server = make_server("127.0.0.1", port, app, server_class=_Threaded, handler_class=_Quiet)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
