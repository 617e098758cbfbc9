#!/usr/bin/env python3
"""Cold pulls over an emulated long link (bench/wan.py), through ferry vs direct.

Between the upstream registry (Debian's docker-registry) and its clients sits the WAN
emulator: each TCP connection gets at most RATE (default 8 MiB/s) and every request burst is
delayed by RTT (default 150 ms). Measured, one cold blob of SIZE bytes each time (every "through" run uses a fresh, empty
cache):
  - direct: one GET through the emulator (what a client far from the registry gets);
  - ferry, segments on (the default): a cold GET through a fresh ferry whose upstream is the
    emulator, so ferry fetches in parallel ranges;
  - ferry, segments off (`parallel: 1`): the same with one stream;
  - distribution: the same GET through Debian's docker-registry in proxy mode;
  - a cold pull of the image (manifest, config, the SIZE layer) with skopeo, direct, through
    ferry and through distribution (unless --no-skopeo);
  - time to the first byte of a cold Range of the blob's last MiB through ferry.
Prints times and ratios. Loopback only. Not a test: numbers depend on the machine.

With --loopback there is no emulator: the clients and ferry reach the registry over plain
loopback (issue 15 item 3: the first client fed as fast as bytes arrive), and a curl-like cold
pull of the image (manifest, config, layer, one after the other) is timed as well.

Usage: bench/wan_bench.py --ferry-bin target/debug/ferry [--size 200MiB|1GiB] [--rate 8MiB]
       [--rtt 150ms] [--reps 1] [--no-skopeo] [--loopback]
"""

import argparse
import hashlib
import http.client
import json
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


def start_registry(work, name="registry", proxy_of=None):
    """Debian's docker-registry with its own empty storage under work/name; with `proxy_of`
    (a port), in proxy mode (distribution's pull-through cache) in front of that registry."""
    port = free_port()
    d = os.path.join(work, name)
    os.makedirs(d)
    cfg = os.path.join(d, "registry.yml")
    proxy = f"proxy:\n  remoteurl: http://127.0.0.1:{proxy_of}\n" if proxy_of else ""
    with open(cfg, "w") as f:
        f.write(
            "version: 0.1\nlog: {level: error}\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {d}/data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n" + proxy
        )
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_http(port)
    return p, port


def push_blob(port, size, data=None):
    data = os.urandom(size) if data is None else data
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


def push_image(port, layer, layer_size):
    """bench/big:latest: an OCI image manifest naming a small config and the big layer."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    cdigest = push_blob(port, len(config), config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdigest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}],
    }).encode()
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("PUT", "/v2/bench/big/manifests/latest", body=manifest,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status


def start_distribution(work, name, upstream_port):
    """docker-registry in proxy mode (pull-through cache) with its own empty cache."""
    return start_registry(work, name, proxy_of=upstream_port)


def timed_pull(port, repo):
    """Seconds for `skopeo copy` of repo:latest from 127.0.0.1:port into a fresh dir:."""
    out = tempfile.mkdtemp(prefix="ferry-wan-pull-")
    try:
        start = time.monotonic()
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                        f"docker://127.0.0.1:{port}/{repo}:latest", f"dir:{out}"],
                       check=True, stdout=subprocess.DEVNULL)
        return time.monotonic() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def timed_curl_pull(port, repo):
    """Seconds to GET repo:latest's manifest, then its config, then its layer (like curl)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.monotonic()
    c.request("GET", f"/v2/{repo}/manifests/latest",
              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    m = json.loads(r.read())
    assert r.status == 200, r.status
    for d in [m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]:
        c.request("GET", f"/v2/{repo}/blobs/{d}")
        r = c.getresponse()
        h = hashlib.sha256()
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            h.update(b)
        assert r.status == 200 and "sha256:" + h.hexdigest() == d, (r.status, d)
    return time.monotonic() - start


def parse_size(text):
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if text.endswith(unit):
            return int(text[: -len(unit)]) << shift
    return int(text)


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


def settle():
    """Flushes the page cache's dirty bytes of earlier runs (their spool and cache files) so
    their writeback does not land on the next timed run."""
    os.sync()
    time.sleep(0.2)


def stop(p):
    """Stops one mirror once its run is timed (its background work would land on the next)."""
    p.terminate()
    p.wait(10)


def three_ways(timed, name, ferry_bin, work, rep, upstream_port, procs):
    """`timed(port, repo)` of bench/big direct, through a fresh ferry and through a fresh
    distribution proxy: {name}_direct, {name}_ferry, {name}_dist."""
    settle()
    out = {f"{name}_direct": timed(upstream_port, "bench/big")}
    fe, fport = start_ferry(ferry_bin, work, f"{name}{rep}", upstream_port, 4)
    procs.append(fe)
    settle()
    out[f"{name}_ferry"] = timed(fport, "docker.io/bench/big")
    stop(fe)
    di, dport = start_distribution(work, f"dist{name}{rep}", upstream_port)
    procs.append(di)
    settle()
    out[f"{name}_dist"] = timed(dport, "bench/big")
    stop(di)
    return out


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
    ap.add_argument("--no-skopeo", action="store_true")
    ap.add_argument("--loopback", action="store_true",
                    help="no emulator: plain loopback to the registry")
    a = ap.parse_args()
    size = parse_size(a.size)
    work = tempfile.mkdtemp(prefix="ferry-wan-")
    procs = []
    try:
        reg, reg_port = start_registry(work)
        procs.append(reg)
        digest = push_blob(reg_port, size)
        push_image(reg_port, digest, size)
        if a.loopback:
            wan_port = reg_port
        else:
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
            settle()
            _, direct, d1, _ = timed_get(wan_port, path)
            assert d1 == digest
            fe, fport = start_ferry(a.ferry_bin, work, f"seg{rep}", wan_port, 4)
            procs.append(fe)
            settle()
            _, seg, d2, _ = timed_get(fport, fpath)
            assert d2 == digest
            stop(fe)
            fe1, fport1 = start_ferry(a.ferry_bin, work, f"one{rep}", wan_port, 1)
            procs.append(fe1)
            settle()
            _, one, d3, _ = timed_get(fport1, fpath)
            assert d3 == digest
            stop(fe1)
            fe2, fport2 = start_ferry(a.ferry_bin, work, f"rng{rep}", wan_port, 4)
            procs.append(fe2)
            tail = f"bytes={size - (1 << 20)}-{size - 1}"
            # A cold download must be running for the range to be forwarded: start one.
            import threading
            settle()
            bg = threading.Thread(target=timed_get, args=(fport2, fpath))
            bg.start()
            time.sleep(0.5)
            ttfb, rng, _, st = timed_get(fport2, fpath, {"Range": tail})
            assert st == 206, st
            bg.join()
            stop(fe2)
            di, dport = start_distribution(work, f"dist{rep}", wan_port)
            procs.append(di)
            settle()
            _, dist, d4, _ = timed_get(dport, path)
            assert d4 == digest
            stop(di)
            row = {"direct": direct, "seg": seg, "one": one, "dist": dist, "ttfb": ttfb,
                   "rng": rng}
            if not a.no_skopeo:
                row.update(three_ways(timed_pull, "pull", a.ferry_bin, work, rep, wan_port, procs))
            if a.loopback:
                row.update(three_ways(timed_curl_pull, "curl", a.ferry_bin, work, rep, wan_port,
                                      procs))
            rows.append(row)
        mib = size >> 20
        link = "plain loopback" if a.loopback else f"a link of {a.rate}/connection, RTT {a.rtt}"
        print(f"cold {mib} MiB blob over {link}:")
        for r in rows:
            direct = r["direct"]
            print(f"  direct (one stream through the link): {direct:7.2f} s")
            vs = (f"{r['seg'] / direct:.2f}x the direct time" if a.loopback
                  else f"{direct / r['seg']:.2f}x faster than direct")
            print(f"  through ferry, segments on:           {r['seg']:7.2f} s  ({vs})")
            print(f"  through ferry, segments off:          {r['one']:7.2f} s  "
                  f"({r['one'] / direct:.2f}x the direct time)")
            print(f"  through distribution's proxy:         {r['dist']:7.2f} s  "
                  f"({r['dist'] / direct:.2f}x the direct time; ferry "
                  f"{r['dist'] / r['seg']:.2f}x faster)")
            print(f"  cold Range of the last MiB via ferry: first byte {r['ttfb']:.2f} s, "
                  f"whole {r['rng']:.2f} s")
            if "curl_direct" in r:
                cd = r["curl_direct"]
                print(f"  curl-like cold pull (manifest, config, layer): direct {cd:.2f} s, "
                      f"ferry {r['curl_ferry']:.2f} s ({r['curl_ferry'] / cd:.2f}x direct), "
                      f"distribution {r['curl_dist']:.2f} s ({r['curl_dist'] / cd:.2f}x direct)")
            if "pull_direct" in r:
                pd = r["pull_direct"]
                print(f"  skopeo cold pull of the {mib} MiB image: direct {pd:.2f} s, "
                      f"ferry {r['pull_ferry']:.2f} s ({pd / r['pull_ferry']:.2f}x faster), "
                      f"distribution {r['pull_dist']:.2f} s ({pd / r['pull_dist']:.2f}x)")
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
