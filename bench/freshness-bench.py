#!/usr/bin/env python3
"""Freshness in compressed time (issue 16): a day of pulls of 50 hot tags whose `tag_ttl`
expires throughout, the upstream 50 ms away, through ferry and through distribution's proxy.

One docker-registry upstream holds 50 tags (10 repositories x 5 tags, every tag its own
manifest). In front of it nginx challenges like Docker Hub (`/v2/` answers 401 with a Bearer
challenge, `/token` hands out a token that is not checked): without a challenge,
distribution's proxy pings the upstream's `/v2/` under a lock on every request, one round trip
at a time (--no-auth shows that). Each target gets its own WAN emulator (bench/wan.py: every request burst held back
by --rtt, downloads capped at --rate) in front of that upstream, is warmed (every tag and blob
pulled once), then serves a "day" of --day seconds: --rate-pulls manifest pulls per second by
tag (Poisson arrivals, Zipf-popular tags; every --blob-every-th pull also GETs the image's
config blob), from --threads client threads. Halfway through the day --update tags get a new
manifest upstream.

Targets (--targets, in this order):
  ferry           cache.revalidate: background (the default), refresh_ahead on (the default)
  ferry-no-ahead  background revalidation, refresh_ahead: false
  ferry-blocking  cache.revalidate: blocking (the behaviour before issue 16)
  distribution    Debian's docker-registry (distribution 2.8) with proxy.remoteurl

Reported per target: client manifest latency (p50, p99) of requests past the TTL and of the
others ("hits"); a request is "past the TTL" when --ttl seconds have passed since the last
request of that tag that was itself past the TTL (or since the warm-up): the requests a
mirror that trusts a tag for --ttl has to revalidate at, classified the same way for every
target (our clock restarts a round trip after that request, when the mirror's refresh is
answered). Requests within 0.3 s after it, or within 1 s before a TTL's end (ferry keeps fetch
times in whole seconds), count as neither. Upstream manifest GETs and HEADs per 1,000 pulls (from the upstream's access log,
the day only), and how long after the upstream update the new digests were first served.

  FERRY_BIN=target/release/ferry bench/freshness-bench.py            # ~10 minutes
  bench/freshness-bench.py --day 20 --targets ferry,distribution      # a quick look

Python 3.11 stdlib; needs docker-registry and nginx (apt). Loopback only; only the processes this script
started are stopped; the temporary directory is removed (--keep keeps it).
"""

import argparse, hashlib, http.client, json, os, random, re, shutil, subprocess, sys
import tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OCI = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = (OCI + ", application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")
ACCESS_RE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d+)')
# Requests this close after a refresh, or before a TTL's end, count as neither hit nor past the
# TTL: ferry keeps a tag's fetch time in whole seconds, so its TTL can end up to 1 s early.
EDGE_AFTER, EDGE_BEFORE = 0.3, 1.0
TARGETS = ["ferry", "ferry-no-ahead", "ferry-blocking", "distribution"]
STARTED = []
NGINX_FRONT = """worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(d)s/tmp;
  proxy_temp_path %(d)s/tmp;
  fastcgi_temp_path %(d)s/tmp;
  uwsgi_temp_path %(d)s/tmp;
  scgi_temp_path %(d)s/tmp;
  upstream registry { server 127.0.0.1:%(up)d; keepalive 64; }
  server {
    listen 127.0.0.1:%(port)d;
    location = /v2/ {
      add_header WWW-Authenticate 'Bearer realm="http://127.0.0.1:%(port)d/token",service="bench"' always;
      default_type application/json;
      return 401 '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}';
    }
    location = /token {
      default_type application/json;
      return 200 '{"token":"bench-token","access_token":"bench-token","expires_in":300}';
    }
    location /v2/ {
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_buffering off;
    }
  }
}
"""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, proc, what, path="/v2/"):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"{what} exited (rc {proc.returncode})")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


def start(argv, log, **kw):
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Conn:
    """One keep-alive connection per thread and port; `auth` goes with every request."""

    local = threading.local()

    def __init__(self, port, auth=None):
        self.port = port
        self.auth = auth

    def req(self, method, path, headers=None, body=None):
        headers = dict(headers or {})
        if self.auth:
            headers["Authorization"] = self.auth
        for attempt in (0, 1):
            conns = self.local.__dict__.setdefault("conns", {})
            c = conns.get(self.port)
            if c is None:
                c = conns[self.port] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, OSError):
                conns.pop(self.port, None)
                if attempt:
                    raise


def push_blob(up, repo, blob):
    d = "sha256:" + hashlib.sha256(blob).hexdigest()
    st, h, _ = up.req("POST", f"/v2/{repo}/blobs/uploads/")
    loc = h["location"].split(f"127.0.0.1:{up.port}")[-1]
    sep = "&" if "?" in loc else "?"
    st, _, b = up.req("PUT", f"{loc}{sep}digest={d}", {"Content-Type": "application/octet-stream"}, blob)
    assert st == 201, (st, b)
    return {"digest": d, "size": len(blob)}


def push_tag(up, repo, tag, cfg, layer, note):
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                    "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
                    "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")],
                    "annotations": {"bench.tag": f"{repo}:{tag}", "bench.note": note}}).encode()
    st, _, b = up.req("PUT", f"/v2/{repo}/manifests/{tag}", {"Content-Type": OCI}, m)
    assert st == 201, (st, b)
    return "sha256:" + hashlib.sha256(m).hexdigest()


def push_fixtures(up, repos, per_repo, rng):
    """repos x per_repo tags; returns [(repo, tag, config digest)] and the blobs per repo."""
    tags, blobs = [], {}
    for r in range(repos):
        repo = f"hot/app{r}"
        cfg = push_blob(up, repo, json.dumps({"architecture": "amd64", "os": "linux", "r": r}).encode())
        layer = push_blob(up, repo, rng.randbytes(256 * 1024))
        blobs[repo] = (cfg, layer)
        for t in range(per_repo):
            push_tag(up, repo, f"t{t}", cfg, layer, "v1")
            tags.append((repo, f"t{t}", cfg["digest"]))
    return tags, blobs


def token_front(tmp, up_port):
    """nginx in front of the upstream, challenging like Docker Hub: /v2/ answers 401 with a
    Bearer challenge, /token hands out a token, everything else goes to the registry."""
    d = os.path.join(tmp, "front")
    os.makedirs(os.path.join(d, "tmp"))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    open(conf, "w").write(NGINX_FRONT % {"d": d, "up": up_port, "port": port})
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = start([nginx, "-e", os.path.join(d, "error.log"), "-c", conf, "-p", d, "-g", "daemon off;"],
              open(os.path.join(d, "nginx.log"), "w"))
    wait_http(port, p, "nginx")
    return port


def ferry_config(tmp, name, port, wan_port, ttl):
    cache = {"tag_ttl": f"{ttl}s"}
    if name == "ferry-no-ahead":
        cache["refresh_ahead"] = False
    if name == "ferry-blocking":
        cache["revalidate"] = "blocking"
    cfg = {"listen": f"127.0.0.1:{port}", "storage": {"fs": {"root": os.path.join(tmp, name, "data")}},
           "upstreams": {"docker.io": {"url": f"http://127.0.0.1:{wan_port}"}},
           "default_upstream": "docker.io", "cache": cache, "log": {"level": "warn"}}
    path = os.path.join(tmp, name, "ferry.yaml")
    json.dump(cfg, open(path, "w"))  # JSON is YAML
    return path


def registry_yaml(path, port, root, extra=""):
    open(path, "w").write(
        f"version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: ferry-freshness-bench\nhealth:\n"
        f"  storagedriver:\n    enabled: false\n{extra}")
    return path


def start_target(name, tmp, up_port, args, ferry_bin):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    wan_port, port = free_port(), free_port()
    wan = start([sys.executable, os.path.join(HERE, "wan.py"), "--listen", f"127.0.0.1:{wan_port}",
                 "--target", f"127.0.0.1:{up_port}", "--rtt", args.rtt, "--rate", args.wan_rate],
                open(os.path.join(d, "wan.log"), "w"))
    wait_http(wan_port, wan, "wan.py")
    log = open(os.path.join(d, "server.log"), "w")
    if name == "distribution":
        cfg = registry_yaml(os.path.join(d, "proxy.yml"), port, os.path.join(d, "data"),
                            f"proxy:\n  remoteurl: http://127.0.0.1:{wan_port}\n")
        srv = start(["docker-registry", "serve", cfg], log)
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_") and k != "RUST_LOG"}
        srv = start([ferry_bin, "serve", "--config", ferry_config(tmp, name, port, wan_port, args.ttl)],
                    log, env=env)
    wait_http(port, srv, name)
    return wan, srv, Conn(port)


class Day:
    """The clients' view of one day through one target."""

    def __init__(self, tags, ttl, rtt):
        self.lock = threading.Lock()
        self.ttl = ttl
        self.rtt = rtt
        self.last = {}  # tag -> time of its last past-TTL request (or the warm-up)
        self.lat = {"past_ttl": [], "hit": [], "edge": []}
        self.edge = 0
        self.errors = 0
        self.pulls = 0
        self.blob_gets = 0
        self.new_digest = {}  # updated tag -> when its new digest was first served
        self.updated_at = None
        self.updates = {}  # tag -> new digest

    def classify(self, tag, now):
        """past_ttl, hit, or edge: just after a refresh or just before a TTL's end, where a
        mirror's own clock may differ from ours."""
        with self.lock:
            since = now - self.last[tag]
            if since > self.ttl:
                # A mirror's clock restarts when the upstream's answer is back.
                self.last[tag] = now + self.rtt
                return "past_ttl"
            if since < EDGE_AFTER or since > self.ttl - EDGE_BEFORE:
                self.edge += 1
                return "edge"
            return "hit"

    def record(self, cls, secs, ok, tag, digest, at):
        with self.lock:
            self.pulls += 1
            if not ok:
                self.errors += 1
                return
            self.lat[cls].append(secs)
            if tag in self.updates and digest == self.updates[tag] and tag not in self.new_digest:
                self.new_digest[tag] = at - self.updated_at


def pull(cli, day, item, blob_too):
    repo, tag, cfg = item
    key = f"{repo}:{tag}"
    t0 = time.monotonic()
    cls = day.classify(key, t0)
    try:
        st, h, _ = cli.req("GET", f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT})
    except OSError:
        st, h = 0, {}
    took = time.monotonic() - t0
    day.record(cls, took, st == 200, key, h.get("docker-content-digest"), time.monotonic())
    if blob_too and st == 200:
        st, _, _ = cli.req("GET", f"/v2/{repo}/blobs/{cfg}")
        with day.lock:
            day.blob_gets += 1
            day.errors += st != 200


def warm(cli, tags, blobs):
    """Pulls every tag and blob once; returns when each tag was cached."""
    when = {}
    for repo, tag, _ in tags:
        st, _, b = cli.req("GET", f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT})
        assert st == 200, (repo, tag, st, b[:200])
        when[f"{repo}:{tag}"] = time.monotonic()
    for repo, (cfg, layer) in blobs.items():
        for d in (cfg, layer):
            st, _, _ = cli.req("GET", f"/v2/{repo}/blobs/{d['digest']}")
            assert st == 200, (repo, d, st)
    return when


def schedule(args, n_tags, rng):
    """(at seconds, tag index, blob too) of every pull of the day: Poisson, Zipf."""
    weights = [1 / (k + 1) for k in range(n_tags)]
    at, out, i = 0.0, [], 0
    while True:
        at += rng.expovariate(args.rate_pulls)
        if at >= args.day:
            return out
        i += 1
        out.append((at, rng.choices(range(n_tags), weights)[0], i % args.blob_every == 0))


def run_day(cli, up, tags, blobs, args, rng, warmed):
    rtt = float(args.rtt[:-2]) / 1000 if args.rtt.endswith("ms") else float(args.rtt.rstrip("s"))
    day = Day([f"{r}:{t}" for r, t, _ in tags], args.ttl, rtt)
    plan = schedule(args, len(tags), rng)
    updated = [tags[i] for i in range(0, len(tags), max(1, len(tags) // max(1, args.update)))][:args.update]
    start_at = time.monotonic()
    day.last.update(warmed)

    def update():
        time.sleep(args.day / 2)
        news = {f"{r}:{t}": push_tag(up, r, t, *blobs[r], f"v2-{start_at}") for r, t, _ in updated}
        with day.lock:
            day.updates = news
            day.updated_at = time.monotonic()

    def worker(k):
        for at, idx, blob_too in plan[k::args.threads]:
            delay = start_at + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pull(cli, day, tags[idx], blob_too)

    with ThreadPoolExecutor(args.threads + 1) as pool:
        futs = [pool.submit(update)] + [pool.submit(worker, k) for k in range(args.threads)]
        for f in futs:
            f.result()
    day.wall = time.monotonic() - start_at
    day.missing_updates = len(updated) - len(day.new_digest)
    return day


def upstream_counts(log_path, offset):
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    c = {"manifest_GET": 0, "manifest_HEAD": 0, "blob_GET": 0, "other": 0}
    for m in ACCESS_RE.finditer(text):
        method, path = m.group(1), m.group(2)
        if "/manifests/" in path and method in ("GET", "HEAD"):
            c["manifest_" + method] += 1
        elif "/blobs/" in path and method == "GET":
            c["blob_GET"] += 1
        elif method in ("GET", "HEAD") and path.rstrip("/") != "/v2":
            c["other"] += 1
    return c


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def measure(name, tmp, up, front, up_log, tags, blobs, args, ferry_bin):
    wan, srv, cli = start_target(name, tmp, front, args, ferry_bin)
    try:
        warmed = warm(cli, tags, blobs)
        time.sleep(1.0)  # the warm-up's upstream requests are logged before the mark
        offset = os.path.getsize(up_log)
        load0 = os.getloadavg()
        day = run_day(cli, up, tags, blobs, args, random.Random(16), warmed)
        time.sleep(1.5)  # background revalidations of the last requests belong to the day
        day.upstream = upstream_counts(up_log, offset)
        day.load = (load0, os.getloadavg())
        # Put the updated tags back so the next target starts from the same upstream.
        for r, t, _ in tags:
            if f"{r}:{t}" in day.updates:
                push_tag(up, r, t, *blobs[r], "v1")
        return day
    finally:
        stop(srv)
        stop(wan)


def report(results, args, binary_note):
    w = print
    w(f"freshness benchmark: {args.repos * args.per_repo} tags, tag_ttl {args.ttl}s, day {args.day}s, "
      f"~{args.rate_pulls}/s pulls (Poisson, Zipf tags; every {args.blob_every}th also GETs a blob), "
      f"{args.threads} client threads, upstream RTT {args.rtt} (bench/wan.py, rate cap {args.wan_rate}/conn)")
    w(binary_note)
    names = list(results)
    w("")
    w("%-44s" % "" + "".join("%16s" % n for n in names))

    def row(label, f, spec="%16.1f"):
        w("%-44s" % label + "".join(spec % f(results[n]) for n in names))

    row("pulls (manifest GETs by tag)", lambda d: d.pulls, "%16d")
    row("  of them past the TTL", lambda d: len(d.lat["past_ttl"]), "%16d")
    row("  of them near a refresh or TTL end (neither)", lambda d: d.edge, "%16d")
    row("client errors", lambda d: d.errors, "%16d")
    row("manifest p50, hits (ms)", lambda d: pct(d.lat["hit"], .5))
    row("manifest p99, hits (ms)", lambda d: pct(d.lat["hit"], .99))
    row("manifest p50, past the TTL (ms)", lambda d: pct(d.lat["past_ttl"], .5))
    row("manifest p99, past the TTL (ms)", lambda d: pct(d.lat["past_ttl"], .99))
    row("manifest max, all (ms)", lambda d: 1000 * max(d.lat["hit"] + d.lat["past_ttl"] + d.lat["edge"]))
    row("manifest requests slower than 1 s", lambda d: sum(x > 1 for v in d.lat.values() for x in v), "%16d")
    row("p99 past the TTL / p99 hits (goal <= 1.10)",
        lambda d: pct(d.lat["past_ttl"], .99) / pct(d.lat["hit"], .99), "%16.2f")
    per_k = lambda d, k: 1000 * d.upstream[k] / max(1, d.pulls)
    row("upstream manifest GETs per 1,000 pulls", lambda d: per_k(d, "manifest_GET"))
    row("upstream manifest HEADs per 1,000 pulls", lambda d: per_k(d, "manifest_HEAD"))
    row("upstream blob GETs in the day", lambda d: d.upstream["blob_GET"], "%16d")
    row("updated tags: new digest served after (max s)",
        lambda d: max(d.new_digest.values()) if d.new_digest else float("nan"), "%16.2f")
    row("updated tags never served new in the day", lambda d: d.missing_updates, "%16d")
    row("load average at start (1 min)", lambda d: d.load[0][0], "%16.2f")
    row("load average at end (1 min)", lambda d: d.load[1][0], "%16.2f")
    if "distribution" in results:
        dist = results["distribution"]
        w("")
        w("ratios ferry / distribution:")
        for n in names:
            if n == "distribution":
                continue
            d = results[n]
            up_n = d.upstream["manifest_GET"] + d.upstream["manifest_HEAD"]
            up_d = dist.upstream["manifest_GET"] + dist.upstream["manifest_HEAD"]
            w(f"  {n:16} p99 hits {pct(d.lat['hit'], .99) / pct(dist.lat['hit'], .99):.3f}  "
              f"p99 past the TTL {pct(d.lat['past_ttl'], .99) / pct(dist.lat['past_ttl'], .99):.3f}  "
              f"upstream manifest requests per pull {(up_n / max(1, d.pulls)) / max(1e-9, up_d / max(1, dist.pulls)):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--day", type=float, default=120, help="seconds a simulated day lasts")
    ap.add_argument("--ttl", type=int, default=5, help="ferry's cache.tag_ttl, seconds")
    ap.add_argument("--repos", type=int, default=10)
    ap.add_argument("--per-repo", type=int, default=5, help="tags per repository")
    ap.add_argument("--rate-pulls", type=float, default=20, help="pulls per second")
    ap.add_argument("--blob-every", type=int, default=10, help="every Nth pull also GETs a blob")
    ap.add_argument("--update", type=int, default=5, help="tags changed upstream at mid-day")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--rtt", default="50ms")
    ap.add_argument("--wan-rate", default="1GiB", help="per-connection rate cap of the WAN emulator")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-auth", action="store_true",
                    help="no challenging front: the mirrors talk to the registry itself")
    args = ap.parse_args()
    names = [n for n in args.targets.split(",") if n]
    for n in names:
        if n not in TARGETS:
            sys.exit(f"unknown target {n}; choose from {TARGETS}")
    ferry_bin = os.environ.get("FERRY_BIN")
    if not ferry_bin:
        rel = os.path.join(ROOT, "target/release/ferry")
        ferry_bin = rel if os.access(rel, os.X_OK) else os.path.join(ROOT, "target/debug/ferry")
    kind = "release" if "/release/" in ferry_bin else "debug" if "/debug/" in ferry_bin else "?"
    note = f"ferry binary: {ferry_bin} ({kind} build); uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    tmp = tempfile.mkdtemp(prefix="ferry-freshness-")
    try:
        up_port = free_port()
        up_log = os.path.join(tmp, "upstream.log")
        up_proc = start(["docker-registry", "serve",
                         registry_yaml(os.path.join(tmp, "upstream.yml"), up_port, os.path.join(tmp, "up"))],
                        open(up_log, "w"))
        wait_http(up_port, up_proc, "docker-registry")
        up = Conn(up_port)
        front = up_port if args.no_auth else token_front(tmp, up_port)
        tags, blobs = push_fixtures(up, args.repos, args.per_repo, random.Random(16))
        results = {}
        for n in names:
            print(f"[freshness] {n}: warming, then a {args.day:.0f}s day", file=sys.stderr, flush=True)
            results[n] = measure(n, tmp, up, front, up_log, tags, blobs, args, ferry_bin)
        report(results, args, note)
    finally:
        for p in reversed(STARTED):
            stop(p)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
