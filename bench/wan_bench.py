#!/usr/bin/env python3
"""Cold pulls over an emulated long link (bench/wan.py), through ferry vs direct.

Between the upstream registry (Debian's docker-registry) and its clients sits the WAN
emulator: each TCP connection gets at most RATE (default 8 MiB/s) and every request burst is
delayed by RTT (default 150 ms). Measured, one cold blob of SIZE bytes each time:
  - direct: one GET through the emulator (what a client far from the registry gets);
  - ferry, segments on (the default): a cold GET through a fresh ferry whose upstream is the
    emulator, so ferry fetches in parallel ranges;
  - ferry, segments off (`parallel: 1`): the same with one stream;
  - time to the first byte of a cold Range of the blob's last MiB through ferry.
Prints times and ratios. Loopback only. Not a test: numbers depend on the machine.

Usage: bench/wan_bench.py --ferry-bin target/debug/ferry [--size 200MiB] [--rate 8MiB]
       [--rtt 150ms] [--reps 1]
"""

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/v2/", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def start_registry(work):
    port = free_port()
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(
            "version: 0.1\nlog: {level: error}\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {work}/registry\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
        )
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_http(port)
    return p, port


def push_blob(port, size):
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/v2/bench/big/blobs/uploads/")
    r = c.getresponse()
    r.read()
    loc = r.getheader("Location")
    sep = "&" if "?" in loc else "?"
    path = loc.split("127.0.0.1:%d" % port)[-1] + f"{sep}digest={digest}"
    c.request("PUT", path, body=data, headers={"Content-Length": str(size)})
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    return digest


def timed_get(port, path, headers=None):
    """Seconds to the first byte and to the last, and the body's sha256."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.monotonic()
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    h = hashlib.sha256()
    first = None
    while True:
        b = r.read(1 << 20)
        if first is None:
            first = time.monotonic() - start
        if not b:
            break
        h.update(b)
    return first, time.monotonic() - start, "sha256:" + h.hexdigest(), r.status


def start_ferry(ferry_bin, work, name, upstream_port, parallel):
    port = free_port()
    d = os.path.join(work, name)
    os.makedirs(d)
    cfg = os.path.join(d, "ferry.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"listen: 127.0.0.1:{port}\nstorage: {{fs: {{root: {d}/data}}}}\n"
            f"upstreams:\n  docker.io:\n    url: http://127.0.0.1:{upstream_port}\n"
            f"    segments: {{parallel: {parallel}}}\n"
            "log: {level: warn}\n"
        )
    p = subprocess.Popen([ferry_bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_http(port)
    return p, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry-bin", required=True)
    ap.add_argument("--size", default="200MiB")
    ap.add_argument("--rate", default="8MiB")
    ap.add_argument("--rtt", default="150ms")
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    size = int(a.size.replace("MiB", "")) << 20
    work = tempfile.mkdtemp(prefix="ferry-wan-")
    procs = []
    try:
        reg, reg_port = start_registry(work)
        procs.append(reg)
        digest = push_blob(reg_port, size)
        wan_port = free_port()
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "wan.py"),
                                       "--listen", f"127.0.0.1:{wan_port}",
                                       "--target", f"127.0.0.1:{reg_port}",
                                       "--rate", a.rate, "--rtt", a.rtt]))
        wait_http(wan_port)
        path = f"/v2/bench/big/blobs/{digest}"
        fpath = f"/v2/docker.io/bench/big/blobs/{digest}"
        rows = []
        for rep in range(a.reps):
            _, direct, d1, _ = timed_get(wan_port, path)
            assert d1 == digest
            fe, fport = start_ferry(a.ferry_bin, work, f"seg{rep}", wan_port, 4)
            procs.append(fe)
            _, seg, d2, _ = timed_get(fport, fpath)
            assert d2 == digest
            fe1, fport1 = start_ferry(a.ferry_bin, work, f"one{rep}", wan_port, 1)
            procs.append(fe1)
            _, one, d3, _ = timed_get(fport1, fpath)
            assert d3 == digest
            fe2, fport2 = start_ferry(a.ferry_bin, work, f"rng{rep}", wan_port, 4)
            procs.append(fe2)
            tail = f"bytes={size - (1 << 20)}-{size - 1}"
            # A cold download must be running for the range to be forwarded: start one.
            import threading
            bg = threading.Thread(target=timed_get, args=(fport2, fpath))
            bg.start()
            time.sleep(0.5)
            ttfb, rng, _, st = timed_get(fport2, fpath, {"Range": tail})
            assert st == 206, st
            bg.join()
            rows.append((direct, seg, one, ttfb, rng))
        print(f"cold {size >> 20} MiB blob over a link of {a.rate}/connection, RTT {a.rtt}:")
        for direct, seg, one, ttfb, rng in rows:
            print(f"  direct (one stream through the link): {direct:7.2f} s")
            print(f"  through ferry, segments on:           {seg:7.2f} s  "
                  f"({direct / seg:.2f}x faster than direct)")
            print(f"  through ferry, segments off:          {one:7.2f} s  "
                  f"({one / direct:.2f}x the direct time)")
            print(f"  cold Range of the last MiB via ferry: first byte {ttfb:.2f} s, "
                  f"whole {rng:.2f} s")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
