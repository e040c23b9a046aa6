"""The toy web service: `python -m toyweb.server --name NAME --port PORT`.

GET /        -> 200 "hello from NAME"
GET /health  -> 200 "ok"
Listens on every address, IPv4 and IPv6.
"""
import argparse
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def handler(name):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok\n" if self.path == "/health" else f"hello from {name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    return Handler


def main(argv=None):
    p = argparse.ArgumentParser(prog="toyweb.server")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    DualStackServer(("::", args.port), handler(args.name)).serve_forever()


if __name__ == "__main__":
    main()
