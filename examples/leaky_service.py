"""A small simulated web service with two leaks and two innocent look-alikes (stdlib only).

Run it under the tracer (this is what `cargo xtask demo` does):

    sudo target/release/tracer record -d 12s -i 1s -- python3 examples/leaky_service.py

It serves about 50 fake requests per second for DURATION seconds (default 15), then exits.
What a leak tracer should report:
    leak     remember_request   ~8 KB bytearray per request, kept forever in REQUEST_LOG
    leak     cache_upload       a 64 KB upload every 25th request, kept in UPLOADS under a new key
    bounded  lookup_session     an LRU cache of 4 KB sessions, capped at 200 entries
    stable   parse_body         a 2 MB buffer per request, freed before the request ends
"""

import collections
import os
import sys
import time

REQUESTS_PER_SECOND = 50
REQUEST_LOG = []  # leak 1: grows by one 8 KB bytearray per request, never trimmed
UPLOADS = {}  # leak 2: one 64 KB upload per 25 requests, keyed by an ever-growing counter
SESSIONS = collections.OrderedDict()  # bounded: LRU cache, oldest entry evicted past 200
SESSION_LIMIT = 200


def remember_request(request_id):
    """Leak 1: keep an 8 KB copy of every request "for debugging"."""
    REQUEST_LOG.append(bytearray(8 * 1024))


def cache_upload(request_id):
    """Leak 2 (slower): every 25th request uploads 64 KB, cached under a key never reused."""
    if request_id % 25 == 0:
        UPLOADS[len(UPLOADS)] = os.urandom(64 * 1024)


def lookup_session(request_id):
    """Bounded: a 4 KB session per user, LRU-evicted once 200 are cached (1000 users churn it)."""
    user = (request_id * 7919) % 1000
    session = SESSIONS.get(user)
    if session is None:
        session = SESSIONS[user] = bytes([user % 256]) * (4 * 1024)
        if len(SESSIONS) > SESSION_LIMIT:
            SESSIONS.popitem(last=False)
    else:
        SESSIONS.move_to_end(user)
    return session


def parse_body(request_id):
    """Not a leak: a 2 MB scratch buffer per request, freed when the function returns."""
    body = bytearray(2 * 1024 * 1024)
    body[request_id % len(body)] = 1
    return sum(body[:64])


def handle_request(request_id):
    """One request: touches all four patterns above."""
    parse_body(request_id)
    lookup_session(request_id)
    remember_request(request_id)
    cache_upload(request_id)


def serve(duration):
    """Serve REQUESTS_PER_SECOND requests per second for `duration` seconds."""
    interval = 1.0 / REQUESTS_PER_SECOND
    start = time.monotonic()
    next_at = start
    request_id = 0
    while time.monotonic() - start < duration:
        handle_request(request_id)
        request_id += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return request_id


def main():
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    print(
        f"leaky_service: pid {os.getpid()}, ~{REQUESTS_PER_SECOND} requests/s for {duration:g} s",
        file=sys.stderr,
    )
    serve(duration)


if __name__ == "__main__":
    main()
