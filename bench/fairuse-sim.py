#!/usr/bin/env python3
"""A public-mirror day in compressed time against ferry's fair use (issue 14).

Starts a docker-registry upstream with synthetic images and one `ferry serve` with the rules of
examples/public-mirror.yaml scaled down (1 "day" = --day seconds), then replays, in parallel:
--light light users (distinct IPs pulling a few Zipf-popular images once), an office of 30
logged-in users behind one NAT address, an office of --office-machines anonymous machines (each
its own User-Agent) behind another NAT address and the same traffic from one User-Agent behind a
third (`agents: 8` tells them apart), --abusers CI clients pulling one image again and again, a
scraper listing every repository's tags and fetching every tag's manifest, and an error-storm
client. Each day runs with fair use on and off, on local disk and (with SeaweedFS installed)
with `storage.s3.redirect: true`, where blobs are answered with a 307 to the store, the client
follows it, and the redirected bytes are accounted at redirect time.

It reports who was caught and after how many requests, whether any light user or office was
ever refused, warned or slowed (goal: no light user), light-user pull times, the bytes served
against an egress budget, ferry's RSS after --distinct distinct client IPs, and (with `wrk`)
manifest-hit throughput at 64 connections with fair use on and off (wrk rotates
X-Forwarded-For over 8,192 addresses, each a few times per second, and over 65,536, where
nearly every request is a new client; no rule fires at these rates, so this is the cost of
accounting and checking), with ferry's CPU time per request (from /proc, steadier than
requests/s on a shared machine).

  bench/fairuse-sim.py                      # uses target/release/ferry if built, else debug
  FERRY_BIN=target/release/ferry bench/fairuse-sim.py --distinct 100000

Python 3.11 stdlib only; needs docker-registry (apt), optionally wrk (apt) and SeaweedFS
(scripts/install-test-deps.sh). Everything runs on loopback ports in a temporary directory,
removed afterwards; only the processes this script started are stopped.
"""

import argparse, glob, hashlib, http.client, json, os, random, shutil, socket, subprocess, sys, tempfile
import threading, time, urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (process helpers)
import s3 as S3  # noqa: E402  (SeaweedFS)

ADMIN = "sim-admin-token-0123456789"
BUDGET = "24GiB/1h"  # the day serves about half of it: no budget step is reached
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


class Client:
    """One keep-alive connection per thread."""

    local = threading.local()

    def __init__(self, port):
        self.port = port

    def req(self, method, path, headers=None, body=None):
        """One request; a connection the server closed is opened again once."""
        try:
            return self.once(method, path, headers, body)
        except (http.client.HTTPException, OSError):
            return self.once(method, path, headers, body)

    def once(self, method, path, headers, body, port=None):
        port = port or self.port
        conns = self.local.__dict__.setdefault("conns", {})
        c = conns.get(port)
        if c is None:
            c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        except (http.client.HTTPException, OSError):
            conns.pop(port, None)
            raise

    def follow(self, location):
        """GET a redirect's target (the object store) on a connection of its own."""
        u = urllib.parse.urlsplit(location)
        assert u.hostname in ("127.0.0.1", "localhost"), location
        path = u.path + ("?" + u.query if u.query else "")
        try:
            return self.once("GET", path, None, None, u.port)
        except (http.client.HTTPException, OSError):
            return self.once("GET", path, None, None, u.port)


def push_images(up, n, rng, extra_tags):
    """n repositories library/img<i>, each a config and one layer of 64 KiB to 2 MiB, tagged
    `1` and (for the scraper) s0..s<extra_tags-1>."""
    sizes = {}
    for i in range(n):
        layer = rng.randbytes(rng.choice([64, 256, 1024, 2048]) * 1024)
        config = json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode()
        descs = []
        for blob, mt in ((config, "application/vnd.oci.image.config.v1+json"),
                         (layer, "application/vnd.oci.image.layer.v1.tar")):
            d = "sha256:" + hashlib.sha256(blob).hexdigest()
            st, h, _ = up.req("POST", f"/v2/library/img{i}/blobs/uploads/")
            loc = h["location"].split("127.0.0.1:%d" % up.port)[-1]
            sep = "&" if "?" in loc else "?"
            st, _, b = up.req("PUT", f"{loc}{sep}digest={d}", {"Content-Type": "application/octet-stream"}, blob)
            assert st == 201, (st, b)
            descs.append({"mediaType": mt, "digest": d, "size": len(blob)})
        m = json.dumps({"schemaVersion": 2, "mediaType": ACCEPT, "config": descs[0],
                        "layers": descs[1:]}).encode()

        def put(tag):
            st, _, b = up.req("PUT", f"/v2/library/img{i}/manifests/{tag}", {"Content-Type": ACCEPT}, m)
            assert st == 201, (st, b)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, ["1"] + [f"s{k}" for k in range(extra_tags)]))
        sizes[i] = [x["digest"] for x in descs]
    return sizes


def config(up_port, port, day, rules_on):
    def scaled(hours):
        return f"{max(1, int(day * hours / 24))}s"
    rules = [
        {"name": "ip-daily-requests", "per": "client", "window": scaled(24), "requests": 2000,
         "action": "ban", "duration": scaled(24), "who": "anonymous", "agents": 8},
        {"name": "same-blob-hint", "per": "client_blob", "window": scaled(24), "requests": 20,
         "bytes": "5MiB", "action": "warn", "message": "cache it", "agents": 8},
        {"name": "same-blob", "per": "client_blob", "window": scaled(24), "requests": 100,
         "bytes": "10MiB", "action": "ban", "duration": scaled(24), "agents": 8},
        {"name": "same-image", "per": "client_repository", "window": scaled(24),
         "requests": 300, "bytes": "20MiB", "action": "slow", "bandwidth": "2MiB/s",
         "duration": scaled(24), "agents": 8},
        {"name": "error-storm", "per": "client_errors", "window": scaled(48), "requests": 100,
         "action": "ban", "duration": scaled(48)},
    ] if rules_on else []
    users = {f"dev{i}": {"password": f"office-password-{i:04d}"} for i in range(30)}
    return {
        "listen": f"127.0.0.1:{port}",
        "upstreams": {"docker.io": {"url": f"http://127.0.0.1:{up_port}"}},
        "log": {"level": "warn"},
        "access": {"trusted_proxies": ["127.0.0.1"], "admin": {"tokens": [ADMIN]},
                   "users": users, "rules": rules,
                   "budgets": {"total": BUDGET, "steps": [{"at": 90, "action": "users_only"}]}
                   if rules_on else {}},
    }


def basic(user, pw):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by = {}
        self.redirects = 0

    def add(self, cls, who, status, warned, secs):
        with self.lock:
            e = self.by.setdefault(cls, {"requests": 0, "refused": 0, "warned": 0, "times": [],
                                         "caught": {}, "refused_at": {}, "count": {}})
            e["requests"] += 1
            n = e["count"][who] = e["count"].get(who, 0) + 1
            if status in (403, 429) or warned:
                e["refused" if status in (403, 429) else "warned"] += 1
                e["caught"].setdefault(who, n)
            if status in (403, 429):
                e["refused_at"].setdefault(who, n)
            e["times"].append(secs)


def pull(cli, stats, cls, ip, image, digests, auth=None, ua=None, who=None):
    h = {"X-Forwarded-For": ip, "Accept": ACCEPT, "User-Agent": ua or "docker/27.3.1 go/go1.22.7"}
    if auth:
        h["Authorization"] = auth
    who = who or ip
    t0 = time.monotonic()
    st, hd, _ = cli.req("GET", f"/v2/library/img{image}/manifests/1", h)
    stats.add(cls, who, st, "warning" in hd, time.monotonic() - t0)
    if st != 200:
        return
    for d in digests:
        t1 = time.monotonic()
        st, hd, _ = cli.req("GET", f"/v2/library/img{image}/blobs/{d}", h)
        if st == 307:
            stats.redirects += 1
            st, _, _ = cli.follow(hd["location"])
        stats.add(cls, who, st, "warning" in hd, time.monotonic() - t1)
        if st != 200:
            return


def tokens(cli, ip):
    st, _, b = cli.req("GET", "/token?service=ferry", {"X-Forwarded-For": ip})
    return "Bearer " + json.loads(b)["token"]


def day(cli, images, args, rng):
    stats = Stats()
    zipf = [1 / (k + 1) for k in range(len(images))]
    jobs = []
    for u in range(args.light):
        ip = f"10.{(u >> 16) & 255}.{(u >> 8) & 255}.{u & 255}"
        for img in rng.choices(range(len(images)), zipf, k=rng.randint(1, 3)):
            jobs.append(("light", ip, img, None, None))
    for u in range(30):
        for img in rng.choices(range(len(images)), zipf, k=3):
            jobs.append(("office-users", "192.0.2.9", img, basic(f"dev{u}", f"office-password-{u:04d}"), None))
    for m in range(args.office_machines):
        ua = f"docker/27.{m % 6}.1 go/go1.22.7 git-commit/4c9b3b0 kernel/6.8.0-{m}-generic os/linux arch/amd64"
        for img in rng.choices(range(len(images)), zipf, k=args.office_pulls):
            jobs.append(("office-agents", "192.0.2.10", img, None, ua))
            jobs.append(("office-1ua", "192.0.2.11", img, None, "docker/27.3.1 go/go1.22.7"))
    for a in range(args.abusers):
        img = rng.randrange(len(images))
        jobs += [("ci-abuser", f"198.51.100.{a + 1}", img, None, None)] * args.abuse_pulls
    rng.shuffle(jobs)
    anon = {}
    lock = threading.Lock()

    def token_of(ip):
        with lock:
            t = anon.get(ip)
        if t is None:
            t = tokens(cli, ip)
            with lock:
                anon[ip] = t
        return t

    def run(job):
        cls, ip, img, auth, ua = job
        who = ua if cls == "office-agents" else ip if auth is None else auth
        pull(cli, stats, cls, ip, img, images[img], auth or token_of(ip), ua, who)

    def storm():
        ip = "203.0.113.66"
        auth = tokens(cli, ip)
        for i in range(300):
            t0 = time.monotonic()
            h = {"X-Forwarded-For": ip, "Authorization": auth, "Accept": ACCEPT}
            st, _, _ = cli.req("GET", f"/v2/library/nope{i}/manifests/1", h)
            stats.add("error-storm", ip, st, False, time.monotonic() - t0)

    def scraper():
        """Lists every repository's tags and fetches every tag's manifest, in order."""
        ip = "203.0.113.99"
        h = {"X-Forwarded-For": ip, "Authorization": tokens(cli, ip), "Accept": ACCEPT,
             "User-Agent": "regscraper/0.1"}
        for i in range(len(images)):
            t0 = time.monotonic()
            st, _, b = cli.req("GET", f"/v2/library/img{i}/tags/list", h)
            stats.add("scraper", ip, st, False, time.monotonic() - t0)
            for tag in (json.loads(b).get("tags") or []) if st == 200 else []:
                t0 = time.monotonic()
                st, hd, _ = cli.req("GET", f"/v2/library/img{i}/manifests/{tag}", h)
                stats.add("scraper", ip, st, "warning" in hd, time.monotonic() - t0)

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        side = [pool.submit(storm), pool.submit(scraper)]
        list(pool.map(run, jobs))
        for f in side:
            f.result()
    return stats, time.monotonic() - t0


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pinned(cmd, cpu):
    """`cmd` run on CPU `cpu` only (with --pin and taskset), else as is."""
    return (["taskset", "-c", str(cpu)] + cmd) if PIN and shutil.which("taskset") else cmd


PIN = False


def wrk_hits(port, tok, secs, addrs):
    """wrk, 2 threads x 32 connections, GETs of one cached manifest with X-Forwarded-For
    rotating over `addrs` addresses per thread (bench/wrk-xff.lua); returns (requests/s, p99
    ms, non-2xx, requests)."""
    env = dict(os.environ, WRK_AUTH=tok, WRK_ACCEPT=ACCEPT, WRK_PATH="/v2/library/img0/manifests/1",
               WRK_ADDRS=str(addrs))
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(pinned(["wrk", "-t2", "-c64", f"-d{secs}s", "--latency", "-s",
                          os.path.join(here, "wrk-xff.lua"), f"http://127.0.0.1:{port}"], 1),
                         capture_output=True, text=True, env=env, timeout=secs + 60).stdout
    j = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    return (j["requests"] / (j["duration_us"] / 1e6), j["latency_us"]["p99"] / 1000, j["errors"]["status"],
            j["requests"])


def cpu_secs(pid):
    """User + system CPU seconds process `pid` has used (/proc/<pid>/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_ferry(binary, tmp, up_port, args, rules_on, s3=None, tag="", wrap=()):
    """A ferry with fair use on or off, on local disk or `s3` with redirects; run under
    `wrap` (a command prefix such as valgrind's) when given."""
    port = free_port()
    name = f"{tag}{'on' if rules_on else 'off'}{'-redirect' if s3 else ''}"
    cfg = config(up_port, port, args.day, rules_on)
    if s3:
        cfg["storage"] = {"s3": {"bucket": "bench", "endpoint": s3, "prefix": name,
                                 "access_key_id": S3.AK, "secret_access_key": S3.SK,
                                 "redirect": True},
                          "spool_dir": os.path.join(tmp, f"spool-{name}")}
    else:
        cfg["storage"] = {"fs": {"root": os.path.join(tmp, f"cache-{name}")}}
    path = os.path.join(tmp, f"ferry-{name}.yaml")
    json.dump(cfg, open(path, "w"))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_") and k != "RUST_LOG"}
    proc = subprocess.Popen(pinned([*wrap, binary, "serve", "--config", path], 0), stdout=subprocess.DEVNULL, env=env,
                            stderr=open(os.path.join(tmp, f"ferry-{name}.log"), "w"))
    wait_port(port, proc, "ferry")
    return proc, Client(port)


def stop_proc(pr):
    if pr.poll() is None:
        pr.terminate()
        pr.wait(10)


def report(stats, wall, served, day_secs):
    print(f"simulated day took {wall:.1f}s of a {day_secs}s day; {stats.redirects} blob answers were "
          f"redirects to the store" + ("  (WARNING: longer than the day: rates diluted)" if wall > day_secs else ""))
    for cls, e in sorted(stats.by.items()):
        caught = e["caught"]
        firsts = sorted(caught.values())
        refused = sorted(e["refused_at"].values())
        print(f"  {cls:13} requests {e['requests']:6}  refused {e['refused']:5}  warned/slowed "
              f"{e['warned']:5}  clients caught {len(caught):5}/{len(e['count']):5}"
              + (f" (first note after {firsts[0]}-{firsts[-1]} requests" if firsts else "")
              + (f", refused after {refused[0]}-{refused[-1]})" if refused else (")" if firsts else ""))
              + f"  p50 {p(e['times'], .5) * 1000:.1f} ms  p99 {p(e['times'], .99) * 1000:.1f} ms")
    print(f"  accounted {served / 2**20:.0f} MiB served (budget: {BUDGET}, users only from 90%)")


def memory(ferry, cli, args):
    """ferry's RSS before and after --distinct requests from distinct client addresses."""
    before = rss_kib(ferry.pid)
    tok = tokens(cli, "10.250.0.1")
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda i: cli.req("GET", "/v2/library/img0/manifests/1", {
            "X-Forwarded-For": f"172.{16 + (i >> 16) % 16}.{(i >> 8) & 255}.{i & 255}",
            "Accept": ACCEPT, "Authorization": tok}), range(args.distinct)))
    after = rss_kib(ferry.pid)
    print(f"  memory: {before / 1024:.0f} MiB RSS before, {after / 1024:.0f} MiB after "
          f"{args.distinct} distinct client IPs")


def simulate(binary, tmp, up_port, images, args, rules_on, s3):
    ferry, cli = start_ferry(binary, tmp, up_port, args, rules_on, s3)
    try:
        stats, wall = day(cli, images, args, random.Random(7))
        st, _, b = cli.req("GET", "/admin/v1/usage?by=upstream&window=1h", {"Authorization": f"Bearer {ADMIN}"})
        served = json.loads(b)["total"]["bytes"] if st == 200 else 0
        print(f"\n== fair use {'ON' if rules_on else 'OFF'}, "
              f"{'redirect: true (SeaweedFS)' if s3 else 'local disk'} ==  (load average {os.getloadavg()[0]:.2f})")
        report(stats, wall, served, args.day)
        if not s3 and args.distinct:
            memory(ferry, cli, args)
    finally:
        stop_proc(ferry)


def throughput(binary, tmp, up_port, args):
    """Manifest hits at 64 connections, fair use on and off alternately, --wrk-reps each."""
    if not shutil.which("wrk"):
        print("\nwrk not installed (apt-get install wrk): no throughput run")
        return
    for addrs in (4096, 32768):
        runs = {True: [], False: []}
        for rep in range(args.wrk_reps):
            for rules_on in (True, False) if rep % 2 == 0 else (False, True):
                ferry, cli = start_ferry(binary, tmp, up_port, args, rules_on, tag=f"wrk{addrs}-{rep}-")
                try:
                    tok = tokens(cli, "10.200.0.1")
                    st, _, _ = cli.req("GET", "/v2/library/img0/manifests/1", {
                        "Accept": ACCEPT, "Authorization": tok, "X-Forwarded-For": "10.200.0.1"})
                    assert st == 200, st
                    cpu = cpu_secs(ferry.pid)
                    rps, p99, bad, n = wrk_hits(cli.port, tok, args.wrk_secs, addrs)
                    us = (cpu_secs(ferry.pid) - cpu) * 1e6 / max(n, 1)
                    runs[rules_on].append((rps, p99, bad, us, os.getloadavg()[0]))
                finally:
                    stop_proc(ferry)
        print(f"\n== manifest hits, wrk -t2 -c64 -d{args.wrk_secs}s, X-Forwarded-For rotating over "
              f"{2 * addrs} addresses ==")
        for on in (True, False):
            for rps, p99, bad, us, load in runs[on]:
                print(f"  fair use {'on ' if on else 'off'}: {rps:8.0f} req/s  p99 {p99:6.2f} ms  non-2xx {bad}  "
                      f"ferry CPU {us:5.1f} us/request  (load average {load:.2f})")
        med = {on: sorted(r[0] for r in runs[on])[len(runs[on]) // 2] for on in runs}
        cpu = {on: sorted(r[3] for r in runs[on])[len(runs[on]) // 2] for on in runs}
        print(f"  median on / off: {med[True]:.0f} / {med[False]:.0f} = {med[True] / med[False]:.3f} (goal >= 0.95)")
        print(f"  median ferry CPU per request on / off: {cpu[True]:.1f} / {cpu[False]:.1f} us = "
              f"{cpu[True] / cpu[False]:.3f}")


def instructions(binary, tmp, up_port, args):
    """Instructions ferry executes per manifest hit, fair use on and off, counted by
    valgrind's callgrind (the same count whatever else the machine does): ferry runs under
    callgrind, wrk sends requests for --wrk-secs after a warm-up, and the counters are zeroed
    before and dumped after wrk (callgrind_control)."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control") and shutil.which("wrk")):
        print("\nvalgrind or wrk not installed: no instruction count")
        return
    for addrs in (4096, 32768):
        per = {}
        for rules_on in (True, False):
            out = os.path.join(tmp, f"callgrind-{addrs}-{rules_on}.out")
            wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
            ferry, cli = start_ferry(binary, tmp, up_port, args, rules_on, tag=f"cg{addrs}-", wrap=wrap)
            try:
                tok = tokens(cli, "10.200.0.1")
                wrk_hits(cli.port, tok, 2, addrs)  # warm-up: first counters, buckets, tables
                subprocess.run(["callgrind_control", "-z", str(ferry.pid)], capture_output=True, check=True)
                n = wrk_hits(cli.port, tok, args.wrk_secs, addrs)[3]
                time.sleep(0.1)  # the accounting task's last batch
                subprocess.run(["callgrind_control", "-d", str(ferry.pid)], capture_output=True, check=True)
                dumps = sorted(glob.glob(out + "*"), key=os.path.getmtime)
                total = next(int(l.split()[1]) for l in open(dumps[-1]) if l.startswith(("summary:", "totals:")))
                per[rules_on] = total / max(n, 1)
                print(f"  fair use {'on ' if rules_on else 'off'}: {n} requests, "
                      f"{per[rules_on]:,.0f} instructions per request")
            finally:
                stop_proc(ferry)
        print(f"== instructions per manifest hit, X-Forwarded-For over {2 * addrs} addresses: "
              f"on / off = {per[True] / per[False]:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--day", type=int, default=600,
                    help="seconds a simulated day lasts (the rules' windows; keep it above the run's wall time)")
    ap.add_argument("--light", type=int, default=10000, help="light users (distinct IPs)")
    ap.add_argument("--office-machines", type=int, default=50, help="anonymous machines behind one NAT address")
    ap.add_argument("--office-pulls", type=int, default=25, help="pulls per office machine")
    ap.add_argument("--abusers", type=int, default=20)
    ap.add_argument("--abuse-pulls", type=int, default=150)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--scraper-tags", type=int, default=100, help="extra tags per image for the scraper")
    ap.add_argument("--distinct", type=int, default=100000, help="distinct IPs for the memory run")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--wrk-secs", type=int, default=5)
    ap.add_argument("--wrk-reps", type=int, default=5)
    ap.add_argument("--pin", action="store_true",
                    help="throughput runs with ferry on CPU 0 and wrk on CPU 1 (taskset): the "
                         "two do not compete for a core, so runs scatter less")
    ap.add_argument("--no-redirect", action="store_true", help="skip the redirect: true runs")
    ap.add_argument("--only-throughput", action="store_true",
                    help="run only the manifest-hit throughput comparison (wrk)")
    ap.add_argument("--instructions", action="store_true",
                    help="instead of the throughput runs, count ferry's instructions per manifest "
                         "hit with fair use on and off under valgrind's callgrind (steady on a "
                         "shared machine; use a --profile profiling build for per-function counts)")
    args = ap.parse_args()
    args.only_throughput |= args.instructions
    global PIN
    PIN = args.pin
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("FERRY_BIN")
    if not binary:
        rel = os.path.join(repo, "target/release/ferry")
        binary = rel if os.access(rel, os.X_OK) else os.path.join(repo, "target/debug/ferry")
    print(f"ferry binary: {binary}; {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    rng = random.Random(14)
    procs = []
    with tempfile.TemporaryDirectory(prefix="ferry-fairuse-sim-") as tmp:
        try:
            up_port = free_port()
            ucfg = os.path.join(tmp, "registry.yml")
            open(ucfg, "w").write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/up\n"
                                  f"http:\n  addr: 127.0.0.1:{up_port}\nlog:\n  level: error\n")
            up = subprocess.Popen(["docker-registry", "serve", ucfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(up)
            wait_port(up_port, up, "docker-registry")
            images = push_images(Client(up_port), args.images, rng, args.scraper_tags)
            stores = [] if args.only_throughput else [None]
            if not args.no_redirect and not args.only_throughput:
                try:
                    stores.append(S3.start_seaweed(tmp).url)
                except SystemExit as e:
                    print(f"(no redirect runs: {e})")
            for s3 in stores:
                for rules_on in (True, False):
                    simulate(binary, tmp, up_port, images, args, rules_on, s3)
            if args.instructions:
                instructions(binary, tmp, up_port, args)
            else:
                throughput(binary, tmp, up_port, args)
        finally:
            for pr in procs:
                stop_proc(pr)
            B.stop_all()


if __name__ == "__main__":
    main()
