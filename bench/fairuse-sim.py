#!/usr/bin/env python3
"""A public-mirror day in compressed time against ferry's fair use (issue 14).

Starts a docker-registry upstream with synthetic images and one `ferry serve` with the rules of
examples/public-mirror.yaml scaled down (1 "day" = --day seconds), then replays, in parallel:
light users (distinct IPs pulling a few Zipf-popular images once), an office of logged-in users
behind one NAT address, CI abusers pulling one image again and again, a scraper walking tags, and
an error-storm client. It reports who was caught and after how many requests, whether any light
user or office user was ever refused, warned or slowed (goal: none), light-user pull times, the
bytes served against an egress budget, ferry's memory after --distinct distinct client IPs, and
manifest-hit throughput with fair use on and off (one Python client: compare, do not quote).

  bench/fairuse-sim.py                      # uses target/debug/ferry (FERRY_BIN to choose)
  FERRY_BIN=target/release/ferry bench/fairuse-sim.py --distinct 100000

Python 3.11 stdlib only; needs docker-registry (apt). Everything runs on loopback ports in a
temporary directory, removed afterwards; only the processes this script started are stopped.
"""

import argparse, hashlib, http.client, json, os, random, socket, subprocess, sys, tempfile
import threading, time
from concurrent.futures import ThreadPoolExecutor

ADMIN = "sim-admin-token-0123456789"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(300):
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

    def once(self, method, path, headers, body):
        c = getattr(self.local, "c", None)
        if c is None or self.local.port != self.port:
            c = self.local.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.local.port = self.port
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
        except (http.client.HTTPException, OSError):
            self.local.c = None
            raise


def push_images(up, n, rng):
    """n repositories library/img<i>:1, each a config and one layer of 64 KiB to 2 MiB."""
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
        st, _, b = up.req("PUT", f"/v2/library/img{i}/manifests/1", {"Content-Type": ACCEPT}, m)
        assert st == 201, (st, b)
        sizes[i] = [x["digest"] for x in descs]
    return sizes


def config(up_port, port, day, rules_on):
    def scaled(hours):
        return f"{max(1, int(day * hours / 24))}s"
    rules = [
        {"name": "ip-daily-requests", "per": "client", "window": scaled(24), "requests": 2000,
         "action": "ban", "duration": scaled(24), "who": "anonymous"},
        {"name": "same-blob-hint", "per": "client_blob", "window": scaled(24), "requests": 20,
         "bytes": "5MiB", "action": "warn", "message": "cache it"},
        {"name": "same-blob", "per": "client_blob", "window": scaled(24), "requests": 100,
         "bytes": "10MiB", "action": "ban", "duration": scaled(24)},
        {"name": "same-image", "per": "client_repository", "window": scaled(24),
         "requests": 300, "bytes": "20MiB", "action": "slow", "bandwidth": "2MiB/s",
         "duration": scaled(24)},
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
                   "budgets": {"total": "10GiB/1h", "steps": [{"at": 90, "action": "users_only"}]}},
    }


def basic(user, pw):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by = {}

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


def pull(cli, stats, cls, ip, image, digests, auth=None):
    h = {"X-Forwarded-For": ip, "Accept": ACCEPT}
    if auth:
        h["Authorization"] = auth
    t0 = time.monotonic()
    st, hd, _ = cli.req("GET", f"/v2/library/img{image}/manifests/1", h)
    stats.add(cls, ip if not auth else auth, st, "warning" in hd, time.monotonic() - t0)
    if st != 200:
        return
    for d in digests:
        t1 = time.monotonic()
        st, hd, _ = cli.req("GET", f"/v2/library/img{image}/blobs/{d}", h)
        took = time.monotonic() - t1
        warned = "warning" in hd
        stats.add(cls, ip if not auth else auth, st, warned, took)
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
            jobs.append(("light", ip, img, None))
    for u in range(30):
        for img in rng.choices(range(len(images)), zipf, k=3):
            jobs.append(("office", "192.0.2.9", img, basic(f"dev{u}", f"office-password-{u:04d}")))
    for a in range(args.abusers):
        img = rng.randrange(len(images))
        jobs += [("ci-abuser", f"198.51.100.{a + 1}", img, None)] * args.abuse_pulls
    rng.shuffle(jobs)
    anon = {}

    def run(job):
        cls, ip, img, auth = job
        if auth is None:
            auth = anon.get(ip) or anon.setdefault(ip, tokens(cli, ip))
        pull(cli, stats, cls, ip, img, images[img], auth)

    def storm():
        ip = "203.0.113.66"
        auth = tokens(cli, ip)
        for i in range(300):
            t0 = time.monotonic()
            h = {"X-Forwarded-For": ip, "Authorization": auth, "Accept": ACCEPT}
            st, _, _ = cli.req("GET", f"/v2/library/nope{i}/manifests/1", h)
            stats.add("error-storm", ip, st, False, time.monotonic() - t0)

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        pool.submit(storm)
        list(pool.map(run, jobs))
    return stats, time.monotonic() - t0


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def throughput(cli, secs, threads):
    tok = tokens(cli, "10.200.0.1")
    stop = time.monotonic() + secs
    count = [0]
    lock = threading.Lock()

    def worker(i):
        n = 0
        while time.monotonic() < stop:
            ip = f"10.201.{i}.{n % 250}"
            cli.req("GET", "/v2/library/img0/manifests/1", {"X-Forwarded-For": ip, "Accept": ACCEPT, "Authorization": tok})
            n += 1
        with lock:
            count[0] += n

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return count[0] / secs


def start_ferry(binary, tmp, up_port, args, rules_on):
    port = free_port()
    cfg = config(up_port, port, args.day, rules_on)
    cfg["storage"] = {"fs": {"root": os.path.join(tmp, f"cache-{rules_on}")}}
    path = os.path.join(tmp, f"ferry-{rules_on}.yaml")
    json.dump(cfg, open(path, "w"))  # JSON is YAML
    proc = subprocess.Popen([binary, "serve", "--config", path], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, f"ferry-{rules_on}.log"), "w"))
    wait_port(port, proc, "ferry")
    return proc, Client(port)


def report(stats, wall, served):
    print(f"simulated day took {wall:.1f}s")
    for cls, e in sorted(stats.by.items()):
        caught = e["caught"]
        firsts = sorted(caught.values())
        refused = sorted(e["refused_at"].values())
        print(f"  {cls:12} requests {e['requests']:6}  refused {e['refused']:5}  warned/slowed "
              f"{e['warned']:5}  clients caught {len(caught):4}/{len(e['count']):4}"
              + (f" (first note after {firsts[0]}-{firsts[-1]} requests" if firsts else "")
              + (f", refused after {refused[0]}-{refused[-1]})" if refused else (")" if firsts else ""))
              + f"  p50 {p(e['times'], .5) * 1000:.1f} ms  p99 {p(e['times'], .99) * 1000:.1f} ms")
    print(f"  served {served / 2**20:.0f} MiB against a 10 GiB/1h budget")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--day", type=int, default=60, help="seconds a simulated day lasts")
    ap.add_argument("--light", type=int, default=1000, help="light users (distinct IPs)")
    ap.add_argument("--abusers", type=int, default=20)
    ap.add_argument("--abuse-pulls", type=int, default=150)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--distinct", type=int, default=20000, help="distinct IPs for the memory run")
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("FERRY_BIN", os.path.join(repo, "target/debug/ferry"))
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
            images = push_images(Client(up_port), args.images, rng)
            results = {}
            for rules_on in (True, False):
                ferry, cli = start_ferry(binary, tmp, up_port, args, rules_on)
                procs.append(ferry)
                stats, wall = day(cli, images, args, random.Random(7))
                st, _, b = cli.req("GET", "/admin/v1/usage?by=upstream&window=1h", {"Authorization": f"Bearer {ADMIN}"})
                served = json.loads(b)["total"]["bytes"] if st == 200 else 0
                print(f"\n== fair use {'ON' if rules_on else 'OFF'} ==")
                report(stats, wall, served)
                before = rss_kib(ferry.pid)
                tok = tokens(cli, "10.250.0.1")
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(lambda i: cli.req("GET", "/v2/library/img0/manifests/1", {
                        "X-Forwarded-For": f"172.{16 + (i >> 16) % 16}.{(i >> 8) & 255}.{i & 255}",
                        "Accept": ACCEPT, "Authorization": tok}), range(args.distinct)))
                print(f"  memory: {before / 1024:.0f} MiB before, {rss_kib(ferry.pid) / 1024:.0f} MiB after "
                      f"{args.distinct} distinct client IPs")
                results[rules_on] = throughput(cli, 5, args.threads)
                print(f"  manifest hits: {results[rules_on]:.0f}/s ({args.threads} threads, one Python client)")
                ferry.terminate()
                ferry.wait(10)
            print(f"\nthroughput with fair use on / off: {results[True] / results[False]:.3f}")
        finally:
            for pr in procs:
                if pr.poll() is None:
                    pr.terminate()
                    pr.wait(10)


if __name__ == "__main__":
    main()
