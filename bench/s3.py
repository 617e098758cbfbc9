#!/usr/bin/env python3
"""ferry on an S3-compatible store vs ferry on local disk: cached blob throughput with presigned
redirects on and off, and cold pull time. See docs/storage.md and bench/s3.sh.

Targets (all over one upstream docker-registry and one SeaweedFS server on loopback):
  disk          ferry, storage.fs
  s3-stream     ferry, storage.s3 with redirect: false (bytes go store -> ferry -> client)
  s3-redirect   ferry, storage.s3 with redirect: true (client follows a 307 to the store)
  s3-tier       ferry, storage.s3 + local_cache (hot blobs from local disk)
  store-direct  presigned GETs straight to SeaweedFS (what s3-redirect can reach at best)

Reuses the process, fixture and image helpers of bench/bench.py. Python 3.11 stdlib only.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

PROFILES = {
    "full": dict(blob_mib=256, cold_mib=100, secs=5.0, conns=[1, 8, 32], reps=3),
    "quick": dict(blob_mib=64, cold_mib=32, secs=1.5, conns=[1, 8], reps=1),
}
TARGETS = ["disk", "s3-stream", "s3-redirect", "s3-tier"]
AK, SK = "ferrybench", "ferrybenchsecret"


def weed_binary():
    tools = os.environ.get("FERRY_TEST_TOOLS", os.path.expanduser("~/.cache/ferry-test-tools"))
    for p in [os.environ.get("FERRY_WEED_BIN"), os.path.join(tools, "venv/bin/weed"), shutil.which("weed")]:
        if p and os.access(p, os.X_OK):
            return p
    raise SystemExit("SeaweedFS not found: run scripts/install-test-deps.sh (or set FERRY_WEED_BIN)")


def grpc_safe_port():
    """A free port p with p+10000 free too (SeaweedFS puts gRPC there)."""
    for _ in range(200):
        p = B.free_port()
        if p < 55536:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                pass
            finally:
                s.close()
    raise SystemExit("no free ports for SeaweedFS")


def start_seaweed(W):
    weed = weed_binary()
    d = os.path.join(W, "seaweed")
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "s3.json"), "w") as f:
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": AK, "secretKey": SK}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    s3, master, volume, filer = (grpc_safe_port() for _ in range(4))
    argv = [weed, "server", "-dir=" + os.path.join(d, "data"), "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-master.telemetry.url=http://127.0.0.1:1/",
            "-master.port=%d" % master, "-master.port.grpc=%d" % (master + 10000),
            "-volume.port=%d" % volume, "-volume.port.grpc=%d" % (volume + 10000),
            "-filer.port=%d" % filer, "-filer.port.grpc=%d" % (filer + 10000),
            "-s3", "-s3.port=%d" % s3, "-s3.port.grpc=%d" % (s3 + 10000), "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-s3.config=" + os.path.join(d, "s3.json"),
            "-master.volumeSizeLimitMB=1024", "-volume.max=100"]
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY")}
    srv = B.Server("seaweedfs", argv, os.path.join(W, "seaweedfs.log"), "http://127.0.0.1:%d" % s3, env=env, cwd=d)
    B.STARTED.append(srv)
    shell = [weed, "shell", "-master=127.0.0.1:%d.%d" % (master, master + 10000)]
    deadline = time.time() + 60
    while time.time() < deadline:
        out = subprocess.run(shell, input=b"s3.bucket.create -name bench\n", capture_output=True, cwd=d)
        if b"created" in out.stdout or b"exist" in out.stdout:
            return srv
        time.sleep(0.5)
    raise SystemExit("SeaweedFS did not come up; see %s" % srv.logpath)


def start_ferry(W, name, ferry_bin, upstream_port, s3_url, extra):
    d = os.path.join(W, name)
    os.makedirs(d)
    port = B.free_port()
    if extra is None:
        storage = "  fs:\n    root: %s\n" % os.path.join(d, "data")
    else:
        storage = ("  s3:\n    bucket: bench\n    endpoint: %s\n    prefix: %s\n    access_key_id: %s\n"
                   "    secret_access_key: %s\n%s  spool_dir: %s\n"
                   % (s3_url, name, AK, SK, extra, os.path.join(d, "spool")))
        if name == "s3-tier":
            storage += "  local_cache:\n    root: %s\n    max_size: 100GiB\n" % os.path.join(d, "local")
    cfg = os.path.join(d, "ferry.yaml")
    with open(cfg, "w") as f:
        f.write("listen: 127.0.0.1:%d\nstorage:\n%s  max_size: 100GiB\nupstreams:\n  docker.io:\n"
                "    url: http://127.0.0.1:%d\ndefault_upstream: docker.io\nlog:\n  level: warn\n"
                % (port, storage, upstream_port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    srv = B.Server(name, [ferry_bin, "serve", "--config", cfg], os.path.join(W, name + ".log"),
                   "http://127.0.0.1:%d" % port, env=env, cwd=d)
    B.STARTED.append(srv)
    B.wait_http(srv.url, srv.proc)
    return srv


def get(url, buf, deadline=None):
    """GET url (following one redirect to the store); reads into buf; returns bytes received."""
    for _ in range(2):
        u = urllib.parse.urlsplit(url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        c.request("GET", u.path + ("?" + u.query if u.query else ""))
        r = c.getresponse()
        if r.status in (301, 302, 307, 308):
            url = r.getheader("Location")
            r.read()
            c.close()
            continue
        if r.status != 200:
            raise SystemExit("GET %s: %d %s" % (url, r.status, r.read()[:200]))
        n = 0
        view = memoryview(buf)
        while True:
            k = r.readinto(view)
            if not k:
                break
            n += k
            if deadline and time.time() > deadline:
                break
        c.close()
        return n
    raise SystemExit("too many redirects for %s" % url)


def throughput(url, conns, secs):
    """conns threads GET url over and over for secs; MiB/s received in the window."""
    total = [0] * conns
    end = time.time() + secs

    def worker(i):
        buf = bytearray(1 << 20)
        while time.time() < end:
            total[i] += get(url, buf, end)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total) / (time.time() - t0) / B.MIB


def presign(ferry_url, path, wait=60):
    """The presigned URL ferry redirects a cached blob GET to. Right after a cold pull the blob
    may still be on its way into the bucket (clients get its last byte once it is verified, not
    once it is uploaded), and until then ferry answers 200 from the download: wait for the 307."""
    u = urllib.parse.urlsplit(ferry_url)
    deadline = time.time() + wait
    while True:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        if r.status == 307:
            return r.getheader("Location")
        if r.status != 200 or time.time() > deadline:
            raise SystemExit("expected a redirect from %s%s, got %d" % (ferry_url, path, r.status))
        time.sleep(0.2)


def cold_pull(W, skopeo, host, repo):
    out = tempfile.mkdtemp(dir=W)
    t0 = time.time()
    B.run(skopeo + ["copy", "--src-tls-verify=false", "docker://%s/%s:v1" % (host, repo), "dir:" + out])
    secs = time.time() - t0
    shutil.rmtree(out)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry-bin", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    profile = "quick" if args.quick else "full"
    P = PROFILES[profile]
    W = tempfile.mkdtemp(prefix="ferry-bench-s3-")
    try:
        R = bench(P, W, args.ferry_bin)
        R["profile"] = profile
        report(R)
    finally:
        B.stop_all()
        if not args.keep:
            shutil.rmtree(W, ignore_errors=True)
        else:
            B.log("kept %s" % W)


def bench(P, W, ferry_bin):
    with open(os.path.join(W, "policy.json"), "w") as f:
        f.write('{"default":[{"type":"insecureAcceptAnything"}]}')
    skopeo = ["skopeo", "--policy", os.path.join(W, "policy.json"), "--override-os", "linux",
              "--override-arch", "amd64"]
    up_port = B.free_port()
    up_dir = os.path.join(W, "upstream")
    os.makedirs(up_dir)
    with open(os.path.join(up_dir, "config.yml"), "w") as f:
        f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (os.path.join(up_dir, "data"), up_port))
    up = B.Server("upstream", ["docker-registry", "serve", os.path.join(up_dir, "config.yml")],
                  os.path.join(W, "upstream.log"), "http://127.0.0.1:%d" % up_port)
    B.STARTED.append(up)
    B.wait_http(up.url, up.proc)
    B.log("building and pushing fixtures")
    blob_img = B.Image(W, "s3/blob", "big", "s3-bench-blob", P["blob_mib"])
    blob_img.push(skopeo, "127.0.0.1:%d" % up_port, "test/blob")
    colds = {}
    for t in TARGETS:
        img = B.Image(W, "s3/cold-" + t, "big", "s3-bench-cold-" + t, P["cold_mib"])
        img.push(skopeo, "127.0.0.1:%d" % up_port, "test/cold-" + t)
        colds[t] = img
    seaweed = start_seaweed(W)
    extras = {"disk": None, "s3-stream": "    redirect: false\n", "s3-redirect": "    redirect: true\n",
              "s3-tier": "    redirect: true\n"}
    ferries = {t: start_ferry(W, t, ferry_bin, up_port, seaweed.url, extras[t]) for t in TARGETS}
    R = {"blob_mib": P["blob_mib"], "cold_mib": P["cold_mib"], "cold_s": {}, "cached_mib_s": {}}

    B.log("cold pulls (%d MiB image, empty cache) through each target" % P["cold_mib"])
    for t in TARGETS:
        host = ferries[t].url[len("http://"):] + "/docker.io"
        R["cold_s"][t] = round(cold_pull(W, skopeo, host, "test/cold-" + t), 2)
    R["cold_s"]["upstream-direct"] = round(cold_pull(W, skopeo, "127.0.0.1:%d" % up_port, "test/cold-disk"), 2)

    path = "/v2/docker.io/test/blob/blobs/" + blob_img.layer["digest"]
    buf = bytearray(1 << 20)
    for t in TARGETS:
        get(ferries[t].url + path, buf)  # warm: the blob is cached (and, for the tier, copied local)
    time.sleep(3)
    targets = TARGETS + ["store-direct"]
    urls = {t: ferries[t].url + path for t in TARGETS}
    urls["store-direct"] = presign(ferries["s3-redirect"].url, path)
    B.log("cached %d MiB blob throughput, %s clients" % (P["blob_mib"], P["conns"]))
    for conns in P["conns"]:
        row = {t: [] for t in targets}
        for rep in range(P["reps"]):
            for t in B.rotate(targets, rep):
                row[t].append(throughput(urls[t], conns, P["secs"]))
        R["cached_mib_s"][str(conns)] = {t: round(B.med(v), 1) for t, v in row.items()}
    return R


def report(R):
    lines = ["ferry storage benchmark (%s profile): SeaweedFS S3 on loopback vs local disk" % R["profile"], ""]
    lines.append("cold pull of a %d MiB image (s, lower is better)" % R["cold_mib"])
    for t, v in R["cold_s"].items():
        lines.append("  %-16s %8.2f" % (t, v))
    lines.append("")
    lines.append("cached %d MiB blob, MiB/s (higher is better; s3-redirect includes the 307 round trip)"
                 % R["blob_mib"])
    cols = list(next(iter(R["cached_mib_s"].values())).keys())
    lines.append("  %-8s" % "clients" + "".join("%14s" % c for c in cols))
    for conns, row in R["cached_mib_s"].items():
        lines.append("  %-8s" % conns + "".join("%14.1f" % row[c] for c in cols))
    text = "\n".join(lines)
    print(text)
    out = os.path.join(B.HERE, "results")
    os.makedirs(out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(out, "s3-%s-%s.json" % (stamp, R["profile"])), "w") as f:
        json.dump(R, f, indent=2)
    with open(os.path.join(out, "s3-%s-%s.txt" % (stamp, R["profile"])), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
