"""Tornado saturation benchmark for `cargo xtask bench`.

Two roles, run as separate processes so that only the server is traced:

  tornado_bench.py serve
      A small Tornado app on 127.0.0.1 (an OS-chosen port). Its handler does some allocation
      work per request (small objects, a few buffers above 512 bytes, a JSON body). Prints
      `ready <port> <pid>` once listening; runs until SIGTERM/SIGINT.

  tornado_bench.py load --port P [--seconds 10] [--threads 4] [--warmup 1]
      A bounded load generator on loopback only: THREADS threads, each with its own keep-alive
      http.client connection, request as fast as they can for a fixed duration (after a warm-up
      that is not counted). Prints one line of JSON: {"requests", "errors", "seconds", "rps"}.
"""

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time


def serve(args):
    import asyncio

    import tornado.web

    class Work(tornado.web.RequestHandler):
        def get(self):
            n = int(self.get_argument("n", "40"))
            rows = [{"id": i, "name": "item-%d" % i, "tags": ["a", "b", str(i)]} for i in range(n)]
            blobs = [b"x" * (600 + 97 * i) for i in range(6)]
            zero = bytes(2048)
            body = json.dumps({"rows": rows, "sizes": [len(b) for b in blobs], "z": len(zero)})
            self.set_header("Content-Type", "application/json")
            self.write(body)

    async def main():
        app = tornado.web.Application([(r"/work", Work)])
        server = app.listen(0, address="127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        print("ready %d %d" % (port, os.getpid()), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(main())


def load(args):
    deadline_warm = time.perf_counter() + args.warmup
    counts = []
    errors = []
    start_measure = threading.Event()
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
        done = 0
        errs = 0
        measuring = False
        while True:
            now = time.perf_counter()
            if not measuring and now >= deadline_warm:
                measuring = True
                start_measure.set()
            if now >= deadline_end:
                break
            try:
                conn.request("GET", "/work?n=40")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errs += measuring
                elif measuring:
                    done += 1
            except (OSError, http.client.HTTPException):
                errs += measuring
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
        conn.close()
        with lock:
            counts.append(done)
            errors.append(errs)

    deadline_end = deadline_warm + args.seconds
    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(counts)
    print(
        json.dumps(
            {
                "requests": total,
                "errors": sum(errors),
                "seconds": args.seconds,
                "threads": args.threads,
                "rps": round(total / args.seconds, 2),
            }
        ),
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role", required=True)
    sub.add_parser("serve")
    lp = sub.add_parser("load")
    lp.add_argument("--port", type=int, required=True)
    lp.add_argument("--seconds", type=float, default=10.0)
    lp.add_argument("--threads", type=int, default=4)
    lp.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args()
    if args.role == "serve":
        serve(args)
    else:
        if args.seconds <= 0 or args.seconds > 600 or args.threads < 1 or args.threads > 64:
            sys.exit("load: --seconds must be in (0, 600] and --threads in [1, 64]")
        load(args)


if __name__ == "__main__":
    main()
