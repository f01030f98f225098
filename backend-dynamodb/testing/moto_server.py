"""moto's DynamoDB server mode, one request at a time.

`moto_server` serves each request on its own thread and its DynamoDB backend
takes no lock between a condition check and the write it guards, so two
conditional writes racing on one item can both succeed, and a failed
`TransactWriteItems` restores a copy of the whole table, undoing writes made
by other requests meanwhile. DynamoDB itself is linearizable per item, and
Flowstate's tests race conditional writes on purpose: this launcher runs the
same application (threaded I/O) behind one lock.

Usage: python moto_server.py -H 127.0.0.1 -p PORT   (same flags as moto_server)
"""

import argparse
import os
import signal
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    # Exit at once: after a full test run moto holds a large object graph
    # (over 1 GB), and a normal interpreter shutdown tears it down for longer
    # than the test script's grace period. Nothing here needs flushing.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # Drain the response inside the lock: the server would otherwise
            # iterate it (and run the backend) after we returned.
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
