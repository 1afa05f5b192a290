"""An idle CPython service for the host-mode benchmark of `cargo xtask bench`.

Wakes up ten times a second, makes one small allocation through libc (a 1 KiB bytearray,
freed again) and goes back to sleep, like a worker waiting for requests. argv[1] is a tag for
`tracer record --all --match TAG`; it is otherwise ignored. Prints `ready` once started and
runs until killed.
"""

import time


def main():
    print("ready", flush=True)
    while True:
        buf = bytearray(1024)
        del buf
        time.sleep(0.1)


if __name__ == "__main__":
    main()
