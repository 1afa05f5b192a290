#!/usr/bin/env python3
"""Ground truth for tracer/src/python/linetable.rs.

Run with each CPython (3.10+):  for p in /root/.pyenv/versions/3.1*/bin/python3 /usr/bin/python3.11 \
    target/cpython-sid/3.1*/root/usr/bin/python3.1*-sid; do $p gen.py; done
Writes py<version>.json next to this script.

For every code object of FIXTURE (recursively through co_consts) it records co_linetable (hex),
co_firstlineno and the expected line of every instruction slot, taken from CPython itself:
  3.10 : one entry per instruction index (f_lasti); byte offset = 2*index. Source: co_lines().
  3.11+: one entry per 2-byte code unit, CACHE units included (what _PyInterpreterFrame_LASTI gives).
         Source: co_lines(), cross-checked unit by unit against co_positions(); any disagreement aborts.
null = CPython reports no line. It also dumps a few str objects straight from the interpreter's memory
(state word, length, raw character bytes, and the offset where those bytes were found) so the Rust side
can check pystr.rs (StrLayout::data_offset, decode) against the real layout.
"""
import ctypes
import dis
import json
import os
import sys

FIXTURE = '''\
import asyncio


def alloc_first(n):
    return bytearray(n)


def multi_line(a, b, c):
    x = (a +
         b *
         c -
         max(a,
             b))
    return [x,
            a,
            b]


class Handler:
    def __init__(self):
        self.items = []

    def handle(self, req):
        self.items.append(bytes(len(req)))
        return len(self.items)


def comprehension(n):
    return [bytes(i) for i in range(n) if i % 2]


square = lambda v: [v] * v


def generator(n):
    for i in range(n):
        yield bytearray(i)
    return n


async def coroutine(delay):
    await asyncio.sleep(delay)
    buf = bytearray(delay)
    return buf


def outer(k):
    held = []

    def inner(m):
        held.append(bytes(m))
        return len(held)
    return inner


def with_try(n):
    kept = []
    try:
        raise ValueError(n)
    except ValueError as e:
        kept.append(e)
    finally:
        kept.append(None)
    return kept


def long_line(a):
    return [a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9, a + 10, a + 11, a + 12, a + 13, a + 14, a + 15, a + 16, a + 17, a + 18, a + 19, a + 20, a + 21, a + 22, a + 23, a + 24, a + 25, a + 26, a + 27, a + 28, a + 29, a + 30, a + 31, a + 32, a + 33, a + 34, a + 35, a + 36, a + 37, a + 38, a + 39, a + 40, a + 41, a + 42, a + 43, a + 44, a + 45, a + 46, a + 47, a + 48, a + 49, a + 50, a + 51, a + 52, a + 53, a + 54, a + 55, a + 56, a + 57, a + 58, a + 59]


def loop_back(n):
    total = 0
    while n > 0:
        total += n
        n -= 1
    return total
''' + '\n' * 300 + '''\

def far_away():
    return bytearray(1)


def far_jump():
    x = 1
''' + '\n' * 200 + '''\
    return x
'''

STRINGS = ['handler', '/srv/app.py', 'caf\xe9', '\xe9t\xe9', '\u03a9mega', 'x\U0001d11e clef',
           '\udcff.py', 'a' * 70]


def code_lines(co, minor):
    n = len(co.co_code) // 2
    lines = ['unset'] * n
    for start, end, line in co.co_lines():
        assert start % 2 == 0 and end % 2 == 0, (co, start, end)
        for b in range(start, end, 2):
            assert lines[b // 2] == 'unset', (co.co_name, b)
            lines[b // 2] = line
    assert 'unset' not in lines, (co.co_name, lines)
    n_cache = 0
    if minor >= 11:
        positions = list(co.co_positions())
        assert len(positions) == n, (co.co_name, len(positions), n)
        for i, pos in enumerate(positions):
            if pos[0] != lines[i]:
                raise SystemExit('co_positions/co_lines disagree: %s unit %d: %r vs %r'
                                 % (co.co_qualname, i, pos[0], lines[i]))
        cache = dis.opmap.get('CACHE')
        n_cache = sum(1 for i in range(n) if co.co_code[2 * i] == cache)
    return lines, n_cache


def walk(co, minor, out):
    lines, n_cache = code_lines(co, minor)
    out.append({
        'name': getattr(co, 'co_qualname', co.co_name),
        'firstlineno': co.co_firstlineno,
        'linetable': co.co_linetable.hex(),
        'lines': lines,
        'cache_units': n_cache,
    })
    for c in co.co_consts:
        if hasattr(c, 'co_code'):
            walk(c, minor, out)


def str_dump(s):
    addr = id(s)
    length = ctypes.c_ssize_t.from_address(addr + 16).value
    state = ctypes.c_uint32.from_address(addr + 32).value
    kind = (state >> 2) & 7
    enc = {1: 'latin-1', 2: 'utf-16-le', 4: 'utf-32-le'}[kind]
    raw = s.encode(enc, 'surrogatepass')
    assert len(raw) == length * kind
    mem = ctypes.string_at(addr, 128 + len(raw))
    found = mem.find(raw, 32)
    assert found > 0, s
    return {'text_hex': s.encode('utf-8', 'surrogatepass').hex(), 'state': state, 'length': length,
            'offset': found, 'data': raw.hex()}


def main():
    minor = sys.version_info[1]
    assert sys.version_info[0] == 3 and minor >= 10
    top = compile(FIXTURE, '/srv/fixture.py', 'exec')
    codes = []
    walk(top, minor, codes)
    # Force distinct, non-interned runtime copies for the string dump.
    strings = [str_dump(''.join(list(s))) for s in STRINGS]
    ver = '%d.%d.%d' % sys.version_info[:3]
    doc = {'python': ver, 'minor': minor,
           'unit': 'code_unit' if minor >= 11 else 'instruction_index',
           'codes': codes, 'strings': strings}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'py%s.json' % ver)
    with open(path, 'w') as f:
        json.dump(doc, f, separators=(',', ':'))
        f.write('\n')
    n = sum(len(c['lines']) for c in codes)
    nc = sum(c['cache_units'] for c in codes)
    print('%s: %d code objects, %d slots (%d CACHE units), %d strings -> %s (%d bytes)'
          % (ver, len(codes), n, nc, len(strings), path, os.path.getsize(path)))


main()
