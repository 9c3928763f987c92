"""vendpay's launcher for moto's server (the AWS emulator of the tests).

Why our own launcher: moto's DynamoDB backend takes no lock, and moto's server handles requests on
threads. Under concurrent requests two conditional writes can both read the old item, both pass their
condition and both write: seen here as 11 of 10 conditional decrements succeeding. Real DynamoDB makes
each request atomic, so this launcher restores that by running every DynamoDB request (recognised by its
`X-Amz-Target: DynamoDB_...` header) under one process-wide lock. Other services (SQS long polls in
particular) are not serialised: they must not wait behind each other.

    python moto_server.py [--host 127.0.0.1] [--port 0] [--port-file PATH] [--no-lock]

`--port 0` binds a free port chosen by the kernel (no race between finding a port and binding it); the
bound port is printed as `moto listening on http://HOST:PORT` and written to --port-file once the
server accepts connections. `--no-lock` serves moto unmodified: it exists only for the test that proves
the lock is needed (shared/3-adapters/store-aws/tests/launcher.rs).
"""

import argparse
import logging
import os
import signal
import sys
import threading


class SerialisedDynamoDb:
    """WSGI middleware: one DynamoDB request at a time, each run to completion (body included)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    @staticmethod
    def is_dynamodb(environ):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            return True
        # Fallback for a request without the target header: its SigV4 credential scope names the service.
        return "/dynamodb/aws4_request" in environ.get("HTTP_AUTHORIZATION", "")

    def __call__(self, environ, start_response):
        if not self.is_dynamodb(environ):
            return self.app(environ, start_response)
        with self.lock:
            captured = []
            chunks = []

            def capture(status, headers, exc_info=None):
                captured.append((status, headers, exc_info))
                return chunks.append

            result = self.app(environ, capture)
            try:
                # Drain the body inside the lock: a lazy body could still be reading moto's state.
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status, headers, exc_info = captured[0]
        start_response(status, headers, exc_info)
        return chunks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", default=None)
    parser.add_argument("--no-lock", action="store_true", help="serve moto unmodified (tests only)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    app = DomainDispatcherApplication(create_backend_app)
    if not args.no_lock:
        app = SerialisedDynamoDb(app)
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = server.server_address[1]
    # moto builds some URLs (SQS queue URLs) from MOTO_PORT.
    os.environ.setdefault("MOTO_PORT", str(port))

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    mode = "unlocked (--no-lock)" if args.no_lock else "DynamoDB serialised"
    print(f"moto listening on http://{args.host}:{port} [{mode}]", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
