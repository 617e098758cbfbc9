#!/usr/bin/env python3
"""ferry's side-by-side benchmark (run it through bench/run.sh, which builds the binaries).

Starts, in a fresh temporary directory, on loopback ports of its own:
  * upstream      Debian's docker-registry (distribution 2.8.2) holding the fixtures;
  * ferry         `ferry serve`, pull-through cache of the upstream (its own cache dir);
  * distribution  the same docker-registry binary in proxy mode (`proxy.remoteurl`, own cache dir);
  * nginx         serving the very same blob file and manifest bytes from disk with sendfile
                  (the practical limit for serving cached bytes on this machine).
Pushes the fixtures, warms the caches, measures every target with the same load client
(bench/loadgen, reads 1 MiB at a time), and prints absolute values and ratios. Raw numbers of
every run go to bench/results/*.json. See bench/README.md for what each number means.

Only the processes this script starts are ever signalled (by pid).
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MKIMAGE = os.path.join(ROOT, "tests", "fixtures", "mkimage.py")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")
MIB = 1 << 20

PROFILES = {
    # The full run: what the README reports. About 10-12 minutes on 2 cores.
    "full": dict(big_mib=1024, cold_mib=200, herd_mib=64, herd=100, many=1000, reps=3,
                 blob_secs=5.0, manifest_secs=4.0, many_secs=3.0, manifest_conns=64,
                 blob_conns=[1, 8, 32, 128], many_conns=[1, 8, 32, 128]),
    # A smoke run of the harness itself: same steps, small sizes, one repetition. ~2 minutes.
    "quick": dict(big_mib=128, cold_mib=32, herd_mib=8, herd=100, many=100, reps=1,
                  blob_secs=1.5, manifest_secs=1.0, many_secs=1.0, manifest_conns=64,
                  blob_conns=[1, 8, 32, 128], many_conns=[1, 8, 32, 128]),
}

MIRRORS = ["ferry", "distribution"]
SERVED = ["ferry", "distribution", "nginx", "upstream"]  # targets of the cached-serving tests


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Processes


class Server:
    """A process this script started (by pid), with its log file and base URL."""

    def __init__(self, name, argv, logpath, url, env=None, cwd=None):
        self.name, self.argv, self.logpath, self.url = name, argv, logpath, url
        self.logf = open(logpath, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.children = []

    def pids(self):
        return [self.proc.pid] + self.children

    def find_children(self):
        """nginx: its worker processes count too (RSS and CPU are summed over master + workers)."""
        kids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == self.proc.pid:
                kids.append(int(d))
        self.children = kids

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.logf.close()


STARTED = []


def _die_with_parent():
    """In the child before exec: SIGTERM it if this script dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass


def stop_all():
    while STARTED:
        s = STARTED.pop()
        try:
            s.stop()
        except Exception as e:  # keep stopping the others
            log("stopping %s: %s" % (s.name, e))


def wait_http(url, proc, timeout=30.0):
    host, port = url[len("http://"):].split(":")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited with status %s during startup" % (url, proc.returncode))
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.request("GET", "/v2/")
            r = c.getresponse()
            r.read()
            c.close()
            return r.status
        except OSError:
            time.sleep(0.1)
    raise SystemExit("%s did not answer within %ss" % (url, timeout))


# ---------------------------------------------------------------------------------------------
# /proc: memory and CPU of the servers


def proc_status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def reset_hwm(pid):
    """Resets VmHWM (peak RSS) to the current RSS: `echo 5 > /proc/PID/clear_refs` (root)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Monitor:
    """Per-phase peak RSS (VmHWM after a reset, plus a 100 ms VmRSS sampler as a cross-check),
    server CPU time, and the upstream's access-log lines of the phase."""

    def __init__(self, servers, upstream_log, served_logs):
        self.servers = servers
        self.upstream_log = upstream_log
        self.served_logs = served_logs  # target -> AccessLog of the requests it served
        self.lock = threading.Lock()
        self.sampled = {n: 0 for n in servers}
        self.overall = {n: 0 for n in servers}
        self.hwm_resettable = True
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stop_ev.wait(0.1):
            for n, s in self.servers.items():
                rss = sum(proc_status_kib(p, "VmRSS") for p in s.pids())
                with self.lock:
                    self.sampled[n] = max(self.sampled[n], rss)

    def rss_now(self):
        return {n: sum(proc_status_kib(p, "VmRSS") for p in s.pids()) for n, s in self.servers.items()}

    def begin(self):
        for s in self.servers.values():
            for p in s.pids():
                self.hwm_resettable &= reset_hwm(p)
        with self.lock:
            for n in self.sampled:
                self.sampled[n] = 0
        self.cpu0 = {n: sum(proc_cpu_s(p) for p in s.pids()) for n, s in self.servers.items()}
        self.mark = self.upstream_log.mark()
        self.served_marks = {n: l.mark() for n, l in self.served_logs.items()}
        self.t0 = time.time()

    def cpu_total(self):
        return sum(proc_cpu_s(p) for s in self.servers.values() for p in s.pids())

    def wait_idle(self, settle, limit=15.0):
        """Waits until no server burns CPU (< 10% of a core over 250 ms), at least `settle` s:
        a server still working through requests queued before the client stopped (and the
        upstream requests they cause) is counted in this run and does not slow the next one."""
        t0 = time.time()
        time.sleep(settle)
        while time.time() - t0 < limit:
            c0 = self.cpu_total()
            time.sleep(0.25)
            if self.cpu_total() - c0 < 0.025:
                break
        return time.time() - t0

    def end(self, settle=0.3):
        wall = time.time() - self.t0
        idle_wait = self.wait_idle(settle)  # access-log lines are written when responses complete
        out = {"wall_s": wall, "idle_wait_s": round(idle_wait, 2), "servers": {}}
        with self.lock:
            sampled = dict(self.sampled)
        for n, s in self.servers.items():
            hwm = sum(proc_status_kib(p, "VmHWM") for p in s.pids())
            peak = max(hwm, sampled[n]) if self.hwm_resettable else sampled[n]
            self.overall[n] = max(self.overall[n], peak, hwm)
            out["servers"][n] = {
                "peak_rss_kib": peak,
                "vmhwm_kib": hwm,
                "sampled_peak_rss_kib": sampled[n],
                "cpu_s": round(sum(proc_cpu_s(p) for p in s.pids()) - self.cpu0[n], 3),
            }
        out["upstream"] = self.upstream_log.since(self.mark)
        out["served"] = {n: len(l.since(self.served_marks[n])) for n, l in self.served_logs.items()}
        return out

    def close(self):
        self.stop_ev.set()


ACCESS_RE = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d+) (\d+|-) "[^"]*" "([^"]*)"')


class AccessLog:
    """docker-registry logs one combined-format access line per request."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def since(self, offset):
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read().decode("utf-8", "replace")
        reqs = []
        for line in data.splitlines():
            m = ACCESS_RE.match(line)
            if m:
                reqs.append({"method": m.group(1), "path": m.group(2), "status": int(m.group(3)),
                             "ua": m.group(5)})
        return reqs


BENCH_UA = "ferry-bench"  # our clients' User-Agent prefix (load client, wrk)


def upstream_summary(reqs, blob_digest=None, own=False):
    """Counts of upstream access-log lines. Unless `own` (the upstream is the target itself),
    requests made by our own load clients are left out: they are the direct-to-upstream runs."""
    if not own:
        reqs = [r for r in reqs if not r["ua"].startswith(BENCH_UA)]
    s = {"requests": len(reqs),
         "GET": sum(r["method"] == "GET" for r in reqs),
         "HEAD": sum(r["method"] == "HEAD" for r in reqs),
         "blob_GET": sum(r["method"] == "GET" and "/blobs/" in r["path"] for r in reqs),
         "manifest_requests": sum("/manifests/" in r["path"] for r in reqs)}
    if blob_digest:
        s["this_blob_GET"] = sum(r["method"] == "GET" and r["path"].endswith("/blobs/" + blob_digest)
                                 for r in reqs)
    return s


# ---------------------------------------------------------------------------------------------
# Fixtures


def run(argv, timeout=600, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if r.returncode != 0:
        raise SystemExit("command failed (%d): %s\n%s%s" % (r.returncode, " ".join(argv),
                                                            r.stdout.decode(), r.stderr.decode()))
    return r.stdout.decode()


class Image:
    def __init__(self, workdir, name, kind, seed, mib=None):
        self.name, self.dir = name, os.path.join(workdir, "img", name.replace("/", "_"))
        argv = [sys.executable, MKIMAGE, kind, self.dir] + ([str(mib)] if mib is not None else []) + ["--seed", seed]
        run(argv)
        with open(os.path.join(self.dir, "fixture.json")) as f:
            self.fixture = json.load(f)
        self.digest = self.fixture["digest"]
        with open(self.blob_path(self.digest), "rb") as f:
            self.manifest_bytes = f.read()
        self.manifest = json.loads(self.manifest_bytes)
        layers = self.manifest["layers"]
        self.layer = max(layers, key=lambda d: d["size"])

    def blob_path(self, digest):
        return os.path.join(self.dir, "blobs", "sha256", digest.split(":", 1)[1])

    def push(self, skopeo, registry, repo, tag="v1"):
        run(skopeo + ["copy", "--preserve-digests", "--dest-tls-verify=false",
                      "oci:%s:latest" % self.dir, "docker://%s/%s:%s" % (registry, repo, tag)])


def push_many(port, repo, base, n):
    """n distinct small manifests (the base image's manifest plus an index annotation), pushed as
    tags m0..m{n-1} of repo straight over the registry API; returns [(digest, bytes)]."""
    out = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        m = dict(base.manifest)
        m["annotations"] = {"dev.ferry.bench.manifest": str(i)}
        body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        c.request("PUT", "/v2/%s/manifests/m%d" % (repo, i), body=body, headers={"Content-Type": OCI_MANIFEST})
        r = c.getresponse()
        r.read()
        if r.status != 201:
            raise SystemExit("PUT manifest m%d: HTTP %d" % (i, r.status))
        out.append((digest, body))
    c.close()
    return out


# ---------------------------------------------------------------------------------------------
# Load


class Loader:
    def __init__(self, binary, workdir):
        self.binary, self.workdir, self.n = binary, workdir, 0

    def __call__(self, urls, conns, secs=None, requests=None, headers=(), timeout=120):
        argv = [self.binary, "-c", str(conns)]
        argv += ["-d", str(secs)] if secs is not None else ["-n", str(requests)]
        for h in headers:
            argv += ["-H", h]
        if len(urls) > 20:
            self.n += 1
            path = os.path.join(self.workdir, "urls-%d.txt" % self.n)
            with open(path, "w") as f:
                f.write("\n".join(urls) + "\n")
            argv += ["--urls-file", path]
        else:
            argv += urls
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + (secs or 0))
        if r.returncode != 0:
            raise SystemExit("load client failed: %s\n%s" % (" ".join(argv[:8]), r.stderr.decode()))
        res = json.loads(r.stdout)
        res["client"] = "ferry-bench-load"
        return res

    def wrk(self, urls, conns, secs, headers=()):
        """Request-rate runs with wrk (2 event-loop threads: cheaper per request than one thread per
        connection, so the fastest server is not capped by the client); same result shape."""
        argv = ["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", "%gs" % secs, "--timeout", "60s",
                "-s", os.path.join(HERE, "wrk-json.lua")]
        for h in list(headers) + ["User-Agent: ferry-bench-wrk"]:
            argv += ["-H", h]
        env = dict(os.environ)
        env.pop("WRK_PATHS", None)
        if len(urls) > 1:
            self.n += 1
            path = os.path.join(self.workdir, "paths-%d.txt" % self.n)
            with open(path, "w") as f:
                f.write("\n".join(u[u.index("/", len("http://")):] for u in urls) + "\n")
            env["WRK_PATHS"] = path
        argv.append(urls[0])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=secs + 120, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = [l for l in r.stdout.decode().splitlines() if l.startswith("{")]
        if r.returncode != 0 or not line:
            raise SystemExit("wrk failed: %s\n%s%s" % (" ".join(argv), r.stdout.decode(), r.stderr.decode()))
        w = json.loads(line[-1])
        elapsed = w["duration_us"] / 1e6
        e = w["errors"]
        errors = e["connect"] + e["read"] + e["write"] + e["timeout"]
        ok = w["requests"] - e["status"]
        lat = {k: v / 1000.0 for k, v in w["latency_us"].items()}
        status = {"200": ok}
        if e["status"]:
            status["non-2xx/3xx"] = e["status"]
        return {"client": "wrk", "connections": conns, "mode": "duration", "elapsed_s": elapsed,
                "requests": w["requests"], "errors": errors, "bytes": w["bytes"],
                "bytes_per_s": w["bytes"] / elapsed, "mib_per_s": w["bytes"] / elapsed / MIB,
                "rps": w["requests"] / elapsed, "latency_ms": lat, "status": status,
                "client_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
                "wrk_errors": e, "error_samples": []}


def rotate(items, k):
    k %= len(items)
    return items[k:] + items[:k]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------------------------------------
# The run


def main():
    ap = argparse.ArgumentParser(description="ferry vs distribution proxy vs nginx vs upstream, side by side")
    ap.add_argument("--quick", action="store_true", help="smoke run: small fixtures, short runs, 1 repetition")
    ap.add_argument("--ferry-bin")
    ap.add_argument("--load-bin")
    ap.add_argument("--render", metavar="RESULTS_JSON", help="only print the table of an earlier results file")
    ap.add_argument("--reps", type=int, help="repetitions of each measurement (median is reported)")
    ap.add_argument("--workdir", help="use this directory instead of a fresh temporary one")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, caches) afterwards")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--rate-client", choices=["wrk", "loadgen"], default=None,
                    help="client of the manifest request-rate runs (default: wrk if installed)")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return
    if not args.ferry_bin or not args.load_bin:
        ap.error("--ferry-bin and --load-bin are required (bench/run.sh passes them)")

    profile_name = "quick" if args.quick else "full"
    P = dict(PROFILES[profile_name])
    if args.reps:
        P["reps"] = args.reps
    for tool in ("docker-registry", "skopeo", "nginx"):
        if not shutil.which(tool):
            raise SystemExit("%s is not installed (apt-get install docker-registry skopeo nginx)" % tool)

    W = args.workdir or tempfile.mkdtemp(prefix="ferry-bench-")
    os.makedirs(W, exist_ok=True)
    # The big blob exists 4 times (fixture layout, upstream, ferry, distribution), every cold and
    # herd image 4 times too (layout, upstream, both caches) plus one pulled copy at a time.
    need = (4 * P["big_mib"] + 4 * (P["reps"] * P["cold_mib"] + P["herd_mib"]) + P["cold_mib"] + 256) * MIB
    st = os.statvfs(W)
    if st.f_bavail * st.f_frsize < need:
        if not args.workdir:
            os.rmdir(W)
        raise SystemExit("%s has %.1f GiB free, the %s run needs about %.1f GiB (set TMPDIR or --workdir)" % (
            W, st.f_bavail * st.f_frsize / 2**30, profile_name, need / 2**30))
    for d in ("img", "logs", "pull"):
        os.makedirs(os.path.join(W, d), exist_ok=True)
    log("profile %s, work directory %s" % (profile_name, W))

    def on_signal(signum, _frame):
        stop_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.time()
    keep = args.keep or args.workdir
    try:
        results = bench(P, profile_name, W, args)
    except BaseException:
        stop_all()
        if keep:
            log("work directory kept: %s" % W)
        else:
            saved = os.path.join(args.results_dir, "failed-%s-logs" % started_at.strftime("%Y%m%d-%H%M%S"))
            shutil.copytree(os.path.join(W, "logs"), saved, dirs_exist_ok=True)
            log("failed; server logs copied to %s, work directory removed (--keep keeps it)" % saved)
            shutil.rmtree(W, ignore_errors=True)
        raise
    finally:
        stop_all()
    results["meta"]["started"] = started_at.isoformat(timespec="seconds")
    results["meta"]["total_s"] = round(time.time() - t_start, 1)
    text = render(results)
    print(text)
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(args.results_dir, "bench-%s-%s" % (stamp, profile_name))
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    with open(base + ".txt", "w") as f:
        f.write(text + "\n")
    shutil.copyfile(base + ".json", os.path.join(args.results_dir, "latest-%s.json" % profile_name))
    log("results: %s.json (and .txt)" % base)
    if keep:
        log("work directory kept: %s" % W)
    else:
        shutil.rmtree(W, ignore_errors=True)


def bench(P, profile_name, W, args):
    skopeo = ["skopeo", "--policy", os.path.join(W, "policy.json"),
              "--registries-conf", os.path.join(W, "registries.conf")]
    with open(os.path.join(W, "policy.json"), "w") as f:
        json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
    with open(os.path.join(W, "registries.conf"), "w") as f:
        f.write("# nothing: only explicit 127.0.0.1 references are used\n")
    ports = {n: free_port() for n in SERVED}
    url = {n: "http://127.0.0.1:%d" % p for n, p in ports.items()}
    reg_version = run(["docker-registry", "--version"]).strip()
    nginx_version = subprocess.run(["nginx", "-v"], stderr=subprocess.PIPE).stderr.decode().strip()
    ferry_version = run([args.ferry_bin, "--version"]).strip()
    results = {
        "meta": {"profile": profile_name, "params": P, "workdir": W, "host": platform.node(),
                 "cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_start": os.getloadavg(), "versions": {
                     "ferry": ferry_version, "docker-registry": reg_version, "nginx": nginx_version,
                     "skopeo": run(["skopeo", "--version"]).strip(),
                     "wrk": (subprocess.run(["wrk", "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                             .stdout.decode().splitlines() or [""])[0] if shutil.which("wrk") else None},
                 "ferry_bin": os.path.abspath(args.ferry_bin), "ports": ports},
        "runs": [],
    }

    # --- upstream ---------------------------------------------------------------------------
    def registry_yaml(name, port, extra=""):
        path = os.path.join(W, name + ".yml")
        with open(path, "w") as f:
            f.write("""version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:%d
  secret: ferry-bench-%s
health:
  storagedriver:
    enabled: false
%s""" % (os.path.join(W, name + "-data"), port, name, extra))
        return path

    up_log = os.path.join(W, "logs", "upstream.log")
    up = Server("upstream", ["docker-registry", "serve", registry_yaml("upstream", ports["upstream"])],
                up_log, url["upstream"])
    STARTED.append(up)
    wait_http(url["upstream"], up.proc)
    log("upstream docker-registry on %s" % url["upstream"])

    # --- fixtures ---------------------------------------------------------------------------
    t = time.time()
    reg = "127.0.0.1:%d" % ports["upstream"]
    big = Image(W, "test/big1g", "big", "ferry-bench-big", P["big_mib"])
    big.push(skopeo, reg, "test/big1g")
    log("pushed test/big1g:v1 (%d MiB layer) in %.1fs" % (big.layer["size"] // MIB, time.time() - t))
    colds = []
    for r in range(P["reps"]):
        img = Image(W, "test/cold%d" % r, "big", "ferry-bench-cold-%d" % r, P["cold_mib"])
        img.push(skopeo, reg, "test/cold%d" % r)
        colds.append(img)
    herd = Image(W, "test/herd", "big", "ferry-bench-herd", P["herd_mib"])
    herd.push(skopeo, reg, "test/herd")
    small = Image(W, "test/small", "single", "ferry-bench-small")
    small.push(skopeo, reg, "test/small")
    small.push(skopeo, reg, "test/many", "base")
    many = push_many(ports["upstream"], "test/many", small, P["many"])
    results["meta"]["fixture_s"] = round(time.time() - t, 1)
    results["fixtures"] = {
        "big_blob": {"repo": "test/big1g", "digest": big.layer["digest"], "size": big.layer["size"]},
        "cold_images": [{"repo": "test/cold%d" % i, "digest": c.digest, "layer_size": c.layer["size"]}
                        for i, c in enumerate(colds)],
        "herd_blob": {"repo": "test/herd", "digest": herd.layer["digest"], "size": herd.layer["size"]},
        "small_manifest": {"repo": "test/small", "tag": "v1", "digest": small.digest,
                           "size": len(small.manifest_bytes)},
        "many_manifests": {"repo": "test/many", "count": len(many),
                           "sizes": [min(len(b) for _, b in many), max(len(b) for _, b in many)]},
    }
    log("fixtures pushed in %.1fs" % (time.time() - t))

    # --- nginx root: the same bytes, at the same paths ---------------------------------------
    nroot = os.path.join(W, "nginx", "root")
    os.makedirs(os.path.join(W, "nginx", "tmp"), exist_ok=True)

    def nfile(path, data=None, link=None):
        full = os.path.join(nroot, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if link:
            os.link(link, full)
        else:
            with open(full, "wb") as f:
                f.write(data)

    big_path = "/v2/test/big1g/blobs/" + big.layer["digest"]
    nfile(big_path, link=big.blob_path(big.layer["digest"]))
    nfile("/v2/test/small/manifests/v1", small.manifest_bytes)
    nfile("/v2/test/small/manifests/" + small.digest, small.manifest_bytes)
    for d, b in many:
        nfile("/v2/test/many/manifests/" + d, b)
    nconf = os.path.join(W, "nginx", "nginx.conf")
    with open(nconf, "w") as f:
        f.write("""# nginx serving the benchmark's blob file and manifests from disk: the practical limit.
user root;
daemon off;
worker_processes auto;
pid %(w)s/nginx/nginx.pid;
error_log %(w)s/nginx/error.log;
events { worker_connections 4096; }
http {
  types { }
  default_type application/octet-stream;
  access_log %(w)s/nginx/access.log combined buffer=64k flush=1s;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path %(w)s/nginx/tmp;
  proxy_temp_path %(w)s/nginx/tmp;
  fastcgi_temp_path %(w)s/nginx/tmp;
  uwsgi_temp_path %(w)s/nginx/tmp;
  scgi_temp_path %(w)s/nginx/tmp;
  server {
    listen 127.0.0.1:%(port)d;
    root %(w)s/nginx/root;
    location /v2/ { }
    location ~ /manifests/ { default_type %(mt)s; }
  }
}
""" % {"w": W, "port": ports["nginx"], "mt": OCI_MANIFEST})

    # --- the mirrors and nginx ----------------------------------------------------------------
    fconf = os.path.join(W, "ferry.yaml")
    with open(fconf, "w") as f:
        f.write("""# ferry config written by bench/bench.py
listen: 127.0.0.1:%d
storage:
  fs:
    root: %s
  max_size: 50GiB
upstreams:
  docker.io:
    url: "http://127.0.0.1:%d"
default_upstream: docker.io
cache:
  tag_ttl: 10m
""" % (ports["ferry"], os.path.join(W, "ferry-data"), ports["upstream"]))
    fenv = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_") and k != "RUST_LOG"}
    servers = {"upstream": up}
    servers["ferry"] = Server("ferry", [args.ferry_bin, "serve", "--config", fconf],
                              os.path.join(W, "logs", "ferry.log"), url["ferry"], env=fenv)
    STARTED.append(servers["ferry"])
    servers["distribution"] = Server(
        "distribution",
        ["docker-registry", "serve", registry_yaml("distribution", ports["distribution"],
                                                   "proxy:\n  remoteurl: %s\n" % url["upstream"])],
        os.path.join(W, "logs", "distribution.log"), url["distribution"])
    STARTED.append(servers["distribution"])
    servers["nginx"] = Server("nginx", ["nginx", "-e", os.path.join(W, "nginx", "error.log"), "-c", nconf,
                                        "-p", os.path.join(W, "nginx")],
                              os.path.join(W, "logs", "nginx.log"), url["nginx"])
    STARTED.append(servers["nginx"])
    for n in ("ferry", "distribution", "nginx"):
        wait_http(url[n], servers[n].proc)
    time.sleep(0.5)
    servers["nginx"].find_children()
    log("ferry %s, distribution proxy %s, nginx %s (%d workers)" % (
        url["ferry"], url["distribution"], url["nginx"], len(servers["nginx"].children)))

    mon = Monitor(servers, AccessLog(up_log),
                  {"distribution": AccessLog(os.path.join(W, "logs", "distribution.log"))})
    time.sleep(1.0)
    results["idle_rss_kib"] = mon.rss_now()
    load = Loader(args.load_bin, W)
    rate_client = args.rate_client or ("wrk" if shutil.which("wrk") else "loadgen")
    results["meta"]["rate_client"] = rate_client
    results["meta"]["blob_client"] = "ferry-bench-load (1 MiB reads, one thread per connection)"
    runs = results["runs"]

    def record(kind, target, rep, conns, res, phase, **extra):
        entry = {"kind": kind, "target": target, "rep": rep, "connections": conns, "load": res,
                 "server": phase["servers"].get(target), "all_servers": phase["servers"],
                 "upstream": upstream_summary(phase["upstream"], extra.pop("blob_digest", None),
                                              own=target in ("upstream", "direct")),
                 "loadavg": os.getloadavg(), "wall_s": round(phase["wall_s"], 3),
                 # requests the target itself logged in the window (complete ones the client
                 # counted, plus ones cut by the end of a timed run); for upstream-per-request
                 "served_logged": phase["served"].get(target),
                 # the first upstream requests of the run, for diagnosis
                 "upstream_sample": phase["upstream"][:10], "idle_wait_s": phase["idle_wait_s"]}
        entry.update(extra)
        runs.append(entry)
        return entry

    def check(res, what, expect_status=200):
        bad = {k: v for k, v in res["status"].items() if k != str(expect_status)}
        if res["errors"] or bad or res["requests"] == 0 and res["bytes"] == 0:
            log("WARNING %s: errors=%d statuses=%s samples=%s" % (what, res["errors"], res["status"],
                                                                   res["error_samples"]))
            return False
        return True

    blob_url = {n: url[n] + big_path for n in SERVED}
    tag_url = {n: url[n] + "/v2/test/small/manifests/v1" for n in SERVED}
    dig_url = {n: url[n] + "/v2/test/small/manifests/" + small.digest for n in SERVED}
    many_urls = {n: [url[n] + "/v2/test/many/manifests/" + d for d, _ in many] for n in SERVED}

    # --- warm the caches ----------------------------------------------------------------------
    t = time.time()
    warm = {}
    for n in SERVED:
        mon.begin()
        r1 = load([blob_url[n]], 1, requests=1, timeout=600)
        r2 = load([tag_url[n], dig_url[n]], 1, requests=2, headers=[ACCEPT])
        r3 = load(many_urls[n], 8, requests=len(many), headers=[ACCEPT])
        ph = mon.end()
        for r, what in ((r1, "blob"), (r2, "manifest"), (r3, "many manifests")):
            if not check(r, "warming %s %s" % (n, what)):
                raise SystemExit("warming %s failed: %s" % (n, r))
        warm[n] = {"cold_blob_fill": r1,
                   "upstream": upstream_summary(ph["upstream"], big.layer["digest"], own=n == "upstream"),
                   "server": ph["servers"][n]}
        log("warmed %s: 1st %d MiB blob fetch %.2fs, upstream requests %d" % (
            n, big.layer["size"] // MIB, r1["elapsed_s"], len(ph["upstream"])))
    # A second pass must not reach the upstream for blobs or manifests by digest (distribution
    # finishes writing its copy after the response; give it a few tries).
    for n in MIRRORS:
        for attempt in range(5):
            mon.begin()
            load([blob_url[n]], 1, requests=1, timeout=600)
            load([dig_url[n]] + many_urls[n], 8, requests=len(many) + 1, headers=[ACCEPT])
            ph = mon.end(settle=0.5)
            hits = upstream_summary(ph["upstream"])
            if hits["blob_GET"] == 0 and hits["manifest_requests"] == 0:
                break
            log("%s still reaches the upstream after warming (%s), warming again" % (n, hits))
        warm[n]["second_pass_upstream"] = hits
    results["warm"] = warm
    results["meta"]["warm_s"] = round(time.time() - t, 1)

    # --- cached blob throughput, 1..128 clients -------------------------------------------------
    k = 0
    for conns in P["blob_conns"]:
        for rep in range(P["reps"]):
            for n in rotate(SERVED, k):
                mon.begin()
                res = load([blob_url[n]], conns, secs=P["blob_secs"])
                ph = mon.end()
                check(res, "blob %s c=%d" % (n, conns))
                e = record("blob", n, rep, conns, res, ph, blob_digest=big.layer["digest"])
                log("blob    c=%-3d %-12s %8.1f MiB/s  (server cpu %.1fs, rss peak %d MiB, upstream %d)" % (
                    conns, n, res["mib_per_s"], e["server"]["cpu_s"], e["server"]["peak_rss_kib"] // 1024,
                    e["upstream"]["requests"]))
            k += 1

    # --- manifests: one by tag, one by digest, then 1,000 distinct by digest --------------------
    def manifest_runs(kind, urls_of, conns, secs):
        nonlocal k
        for rep in range(P["reps"]):
            for n in rotate(SERVED, k):
                mon.begin()
                if rate_client == "wrk":
                    res = load.wrk(urls_of[n], conns, secs, headers=[ACCEPT])
                else:
                    res = load(urls_of[n], conns, secs=secs, headers=[ACCEPT])
                ph = mon.end()
                check(res, "%s %s c=%d" % (kind, n, conns))
                e = record(kind, n, rep, conns, res, ph)
                log("%-7s c=%-3d %-12s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  (upstream %d)" % (
                    kind, conns, n, res["rps"], res["latency_ms"]["p50"], res["latency_ms"]["p99"],
                    e["upstream"]["requests"]))
            k += 1

    manifest_runs("tag", {n: [tag_url[n]] for n in SERVED}, P["manifest_conns"], P["manifest_secs"])
    manifest_runs("digest", {n: [dig_url[n]] for n in SERVED}, P["manifest_conns"], P["manifest_secs"])
    for conns in P["many_conns"]:
        manifest_runs("many", many_urls, conns, P["many_secs"])

    # --- cold pull of the 200 MiB image: mirrors vs a direct pull from the upstream ------------
    pull_targets = {"direct": reg, "ferry": url["ferry"][7:], "distribution": url["distribution"][7:]}
    for rep in range(P["reps"]):
        img = colds[rep]
        for n in rotate(list(pull_targets), rep):
            dest = os.path.join(W, "pull", "%s-%d" % (n, rep))
            mon.begin()
            t0 = time.monotonic()
            run(skopeo + ["copy", "--src-tls-verify=false",
                          "docker://%s/test/cold%d:v1" % (pull_targets[n], rep), "dir:" + dest], timeout=900)
            secs = time.monotonic() - t0
            ph = mon.end()
            srv = "upstream" if n == "direct" else n
            e = record("cold_pull", n, rep, None, {"seconds": secs}, ph, blob_digest=img.layer["digest"])
            e["server"] = ph["servers"][srv]
            got = os.path.getsize(os.path.join(dest, img.layer["digest"].split(":", 1)[1]))
            if got != img.layer["size"]:
                log("WARNING cold pull %s: layer size %d != %d" % (n, got, img.layer["size"]))
            shutil.rmtree(dest, ignore_errors=True)
            log("cold pull %-12s %6.2fs  upstream: %d requests, %d GETs of the layer" % (
                n, secs, e["upstream"]["requests"], e["upstream"]["this_blob_GET"]))

    # --- 100 concurrent cold requests for one blob ---------------------------------------------
    herd_path = "/v2/test/herd/blobs/" + herd.layer["digest"]
    for n in MIRRORS:
        mon.begin()
        res = load([url[n] + herd_path], P["herd"], requests=P["herd"], timeout=900)
        ph = mon.end(settle=1.0)
        ok = check(res, "herd %s" % n)
        complete = res["bytes"] == P["herd"] * herd.layer["size"]
        e = record("herd", n, 0, P["herd"], res, ph, blob_digest=herd.layer["digest"], complete=complete and ok)
        log("herd    %-12s %d requests -> %d upstream GETs of the blob (%d upstream requests), %.2fs, all bytes: %s" % (
            n, P["herd"], e["upstream"]["this_blob_GET"], e["upstream"]["requests"], res["elapsed_s"], complete))

    time.sleep(2.0)
    results["end_rss_kib"] = mon.rss_now()
    results["overall_peak_rss_kib"] = dict(mon.overall)
    results["meta"]["hwm_reset"] = mon.hwm_resettable
    results["meta"]["loadavg_end"] = os.getloadavg()
    mon.close()
    for n, s in servers.items():
        if not s.alive():
            log("WARNING: %s exited during the run (status %s), see %s" % (n, s.proc.returncode, s.logpath))
    results["summary"] = summarize(results)
    return results


# ---------------------------------------------------------------------------------------------
# Summary and table


def summarize(R):
    runs = R["runs"]

    def pick(kind, target, conns=None):
        return [r for r in runs if r["kind"] == kind and r["target"] == target
                and (conns is None or r["connections"] == conns)]

    S = {"blob_mib_s": {}, "blob_server_cpu_s_per_gib": {}, "blob_peak_rss_kib": {}, "manifest": {},
         "cold_pull_s": {}, "cold_pull_upstream": {}, "herd": {}}
    for r in {x["connections"] for x in runs if x["kind"] == "blob"}:
        S["blob_mib_s"][r] = {t: med([x["load"]["mib_per_s"] for x in pick("blob", t, r)]) for t in SERVED}
        S["blob_server_cpu_s_per_gib"][r] = {
            t: med([x["server"]["cpu_s"] / (x["load"]["bytes"] / 2**30) for x in pick("blob", t, r)
                    if x["load"]["bytes"]]) for t in SERVED}
        S["blob_peak_rss_kib"][r] = {t: max([x["server"]["peak_rss_kib"] for x in pick("blob", t, r)] or [0])
                                     for t in SERVED}
    for kind in ("tag", "digest", "many"):
        S["manifest"][kind] = {}
        for c in sorted({x["connections"] for x in runs if x["kind"] == kind}):
            S["manifest"][kind][c] = {t: {
                "rps": med([x["load"]["rps"] for x in pick(kind, t, c)]),
                "p50_ms": med([x["load"]["latency_ms"]["p50"] for x in pick(kind, t, c)]),
                "p99_ms": med([x["load"]["latency_ms"]["p99"] for x in pick(kind, t, c)]),
                "upstream_per_request": med([
                    x["upstream"]["requests"] / (x.get("served_logged") or x["load"]["requests"])
                    for x in pick(kind, t, c) if x["load"]["requests"]]) if t in MIRRORS else None,
            } for t in SERVED}
    for t in ("direct", "ferry", "distribution"):
        xs = pick("cold_pull", t)
        S["cold_pull_s"][t] = med([x["load"]["seconds"] for x in xs])
        S["cold_pull_upstream"][t] = {
            "layer_GETs": med([x["upstream"]["this_blob_GET"] for x in xs]),
            "requests": med([x["upstream"]["requests"] for x in xs])}
    for t in MIRRORS:
        xs = pick("herd", t)
        if xs:
            x = xs[0]
            S["herd"][t] = {"clients": x["connections"], "upstream_blob_GETs": x["upstream"]["this_blob_GET"],
                            "upstream_requests": x["upstream"]["requests"], "upstream_GETs": x["upstream"]["GET"],
                            "seconds": x["load"]["elapsed_s"],
                            "complete": x["complete"]}
    return S


def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def fx(v):
    return "-" if v is None else "%.2fx" % v


def render(R):
    S, M, P = summarize(R), R["meta"], R["meta"]["params"]
    fix = R["fixtures"]
    out = []
    w = out.append
    w("")
    w("ferry bench (%s profile), %s UTC, %s, %d CPUs, load average %.1f at start / %.1f at end, %.0f s in all" % (
        M["profile"], M["started"].replace("T", " ")[:16], M["host"], M["cpus"], M["loadavg_start"][0],
        M["loadavg_end"][0], M["total_s"]))
    w("  %s | %s | %s" % (M["versions"]["ferry"], M["versions"]["docker-registry"], M["versions"]["nginx"]))
    w("  blob %.0f MiB incompressible, cold images %d MiB, herd blob %d MiB, %d distinct manifests; "
      "median of %d runs" % (
          fix["big_blob"]["size"] / MIB, P["cold_mib"], P["herd_mib"], fix["many_manifests"]["count"], P["reps"]))
    w("  blob client: bench/loadgen (1 MiB reads); request-rate client: %s; cold pulls: skopeo copy to dir:"
      % M["rate_client"])
    w("  ratios are ferry/other (or dist/other): above 1 is better for throughput, below 1 is better for "
      "times, latency, RSS")
    w("")
    head = "%-44s %10s %12s %10s %10s  %10s %10s %10s" % (
        "", "ferry", "distribution", "nginx", "upstream", "ferry/dist", "ferry/ngx", "dist/ngx")
    w(head)
    w("-" * len(head))

    def row(label, vals, spec="%.1f", ratios=True):
        f, d, n, u = (vals.get(t) for t in ("ferry", "distribution", "nginx", "upstream"))
        rs = (fx(ratio(f, d)), fx(ratio(f, n)), fx(ratio(d, n))) if ratios else ("", "", "")
        w(("%-44s %10s %12s %10s %10s  %10s %10s %10s" % (
            (label, fmt(f, spec), fmt(d, spec), fmt(n, spec), fmt(u, spec)) + rs)).rstrip())

    gib = fix["big_blob"]["size"] / 2**30
    blob_name = "1 GiB" if abs(gib - 1) < 0.01 else "%.0f MiB" % (fix["big_blob"]["size"] / MIB)
    for c in (1, 32):
        if c in S["blob_mib_s"]:
            row("cached %s blob, %d client%s (MiB/s)" % (blob_name, c, "s" if c > 1 else ""), S["blob_mib_s"][c])
    mc = P["manifest_conns"]
    for kind, label in (("tag", "by tag"), ("digest", "by digest")):
        m = S["manifest"][kind].get(mc)
        if not m:
            continue
        row("manifest %s, %d conns (req/s)" % (label, mc), {t: v["rps"] for t, v in m.items()}, "%.0f")
        row("   p50 latency (ms)", {t: v["p50_ms"] for t, v in m.items()}, "%.2f")
        row("   p99 latency (ms)", {t: v["p99_ms"] for t, v in m.items()}, "%.2f")
        row("   upstream requests per request", {t: v["upstream_per_request"] for t, v in m.items()}, "%.2f",
            ratios=False)
    if 32 in S["blob_mib_s"]:
        row("peak RSS during 32 x %s downloads (MiB)" % blob_name,
            {t: v / 1024 for t, v in S["blob_peak_rss_kib"][32].items()}, "%.0f")
        row("server CPU per GiB served at 32 clients (s)", S["blob_server_cpu_s_per_gib"][32], "%.2f")
    row("idle RSS after start (MiB)", {t: v / 1024 for t, v in R["idle_rss_kib"].items()}, "%.0f")
    row("peak RSS over the whole run (MiB)", {t: v / 1024 for t, v in R["overall_peak_rss_kib"].items()}, "%.0f")
    row("RSS at the end (MiB)", {t: v / 1024 for t, v in R["end_rss_kib"].items()}, "%.0f")
    w("")
    cp = S["cold_pull_s"]
    head2 = "%-44s %10s %12s %10s  %12s %12s %10s" % ("", "ferry", "distribution", "direct",
                                                       "ferry/direct", "dist/direct", "ferry/dist")
    w(head2)
    w("-" * len(head2))
    w("%-44s %10s %12s %10s  %12s %12s %10s" % (
        "cold pull, %d MiB image, skopeo (s)" % P["cold_mib"], fmt(cp["ferry"], "%.2f"),
        fmt(cp["distribution"], "%.2f"), fmt(cp["direct"], "%.2f"), fx(ratio(cp["ferry"], cp["direct"])),
        fx(ratio(cp["distribution"], cp["direct"])), fx(ratio(cp["ferry"], cp["distribution"]))))
    cu = S["cold_pull_upstream"]
    w("%-44s %10s %12s %10s" % ("   upstream GETs of the layer per pull", fmt(cu["ferry"]["layer_GETs"], "%.0f"),
                                fmt(cu["distribution"]["layer_GETs"], "%.0f"), fmt(cu["direct"]["layer_GETs"], "%.0f")))
    w("%-44s %10s %12s %10s" % ("   upstream requests per pull", fmt(cu["ferry"]["requests"], "%.0f"),
                                fmt(cu["distribution"]["requests"], "%.0f"), fmt(cu["direct"]["requests"], "%.0f")))
    wf = {t: R["warm"][t]["cold_blob_fill"]["elapsed_s"] for t in ("ferry", "distribution", "upstream")}
    w("%-44s %10s %12s %10s  %12s %12s %10s" % (
        "first GET of the %s blob, cold, 1 run (s)" % blob_name, fmt(wf["ferry"], "%.2f"),
        fmt(wf["distribution"], "%.2f"), fmt(wf["upstream"], "%.2f"), fx(ratio(wf["ferry"], wf["upstream"])),
        fx(ratio(wf["distribution"], wf["upstream"])), fx(ratio(wf["ferry"], wf["distribution"]))))
    h = S["herd"]
    if h:
        w("%-44s %10s %12s" % ("%d concurrent cold requests, one %d MiB blob:" % (P["herd"], P["herd_mib"]), "", ""))
        w("%-44s %10s %12s" % ("   upstream GETs of that blob", h["ferry"]["upstream_blob_GETs"],
                               h["distribution"]["upstream_blob_GETs"]))
        w("%-44s %10s %12s" % ("   all upstream GETs", h["ferry"]["upstream_GETs"],
                               h["distribution"]["upstream_GETs"]))
        w("%-44s %10s %12s" % ("   all upstream requests (GET+HEAD)", h["ferry"]["upstream_requests"],
                               h["distribution"]["upstream_requests"]))
        w("%-44s %10s %12s  %12s" % ("   time until all %d complete (s)" % P["herd"], fmt(h["ferry"]["seconds"], "%.2f"),
                                     fmt(h["distribution"]["seconds"], "%.2f"),
                                     fx(ratio(h["ferry"]["seconds"], h["distribution"]["seconds"]))))
        w("%-44s %10s %12s" % ("   every response complete and 200", h["ferry"]["complete"],
                               h["distribution"]["complete"]))
    w("")
    head3 = "%-28s %10s %12s %10s %10s  %10s %10s %10s" % (
        "scaling: cached blob MiB/s", "ferry", "distribution", "nginx", "upstream", "ferry/dist", "ferry/ngx",
        "dist/ngx")
    w(head3)
    w("-" * len(head3))
    for c in sorted(S["blob_mib_s"]):
        v = S["blob_mib_s"][c]
        w("%-28s %10s %12s %10s %10s  %10s %10s %10s" % (
            "  %d client%s" % (c, "s" if c > 1 else ""), fmt(v["ferry"]), fmt(v["distribution"]), fmt(v["nginx"]),
            fmt(v["upstream"]), fx(ratio(v["ferry"], v["distribution"])), fx(ratio(v["ferry"], v["nginx"])),
            fx(ratio(v["distribution"], v["nginx"]))))
    w("")
    head4 = "%-28s %10s %12s %10s %10s  %10s %10s %10s" % (
        "scaling: %d manifests req/s" % fix["many_manifests"]["count"], "ferry", "distribution", "nginx",
        "upstream", "ferry/dist", "ferry/ngx", "dist/ngx")
    w(head4)
    w("-" * len(head4))
    for c, m in sorted(S["manifest"]["many"].items()):
        v = {t: m[t]["rps"] for t in m}
        w("%-28s %10s %12s %10s %10s  %10s %10s %10s" % (
            "  %d connection%s" % (c, "s" if c > 1 else ""), fmt(v["ferry"], "%.0f"), fmt(v["distribution"], "%.0f"),
            fmt(v["nginx"], "%.0f"), fmt(v["upstream"], "%.0f"), fx(ratio(v["ferry"], v["distribution"])),
            fx(ratio(v["ferry"], v["nginx"])), fx(ratio(v["distribution"], v["nginx"]))))
        w("%-28s %10s %12s %10s %10s" % (
            "    p99 latency (ms)", fmt(m["ferry"]["p99_ms"], "%.2f"), fmt(m["distribution"]["p99_ms"], "%.2f"),
            fmt(m["nginx"]["p99_ms"], "%.2f"), fmt(m["upstream"]["p99_ms"], "%.2f")))
    warns = []
    for x in R["runs"]:
        if x["kind"] in ("blob", "digest", "many") and x["target"] in MIRRORS and x["upstream"]["requests"]:
            warns.append("%s %s c=%s rep %d reached the upstream %d times" % (
                x["kind"], x["target"], x["connections"], x["rep"], x["upstream"]["requests"]))
        if x["kind"] not in ("cold_pull",) and x["load"].get("errors"):
            warns.append("%s %s c=%s rep %d: %d client errors" % (
                x["kind"], x["target"], x["connections"], x["rep"], x["load"]["errors"]))
    if warns:
        w("")
        w("warnings:")
        for s in warns[:20]:
            w("  " + s)
    return "\n".join(out)


if __name__ == "__main__":
    main()
