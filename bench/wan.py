#!/usr/bin/env python3
"""A small WAN emulator for loopback benchmarks (this kernel has no tc netem).

A TCP proxy: every accepted connection is relayed to TARGET, with
  - each connection's download (target -> client) capped at RATE bytes/s, the share of a
    long lossy link one TCP stream gets (loss and delay cap each stream, not the link), and
  - every burst of request bytes (client -> target) held back by RTT before it is forwarded,
    as a request head crossing a long link and the answer's first byte coming back would be.

Usage: wan.py --listen 127.0.0.1:7001 --target 127.0.0.1:5000 [--rate 8MiB] [--rtt 150ms]
Runs until killed. Loopback only.
"""

import argparse
import asyncio
import time


def parse_size(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "": 1}
    for u in ("KiB", "MiB", "GiB"):
        if s.endswith(u):
            return int(float(s[: -len(u)]) * units[u])
    return int(s)


def parse_ms(s):
    return float(s[:-2]) / 1000 if s.endswith("ms") else float(s.rstrip("s"))


async def upstream_pump(reader, writer, rtt):
    """Client -> target: each read is forwarded RTT later (order kept)."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await asyncio.sleep(rtt)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def downstream_pump(reader, writer, rate):
    """Target -> client: at most RATE bytes/s (a token bucket of 50 ms)."""
    chunk = max(4096, rate // 20)
    start = time.monotonic()
    sent = 0
    try:
        while True:
            data = await reader.read(chunk)
            if not data:
                break
            sent += len(data)
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_r, client_w, target, rate, rtt):
    host, port = target
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(
        upstream_pump(client_r, up_w, rtt),
        downstream_pump(up_r, client_w, rate),
    )


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--rate", default="8MiB")
    ap.add_argument("--rtt", default="150ms")
    a = ap.parse_args()
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.target.rsplit(":", 1)
    for h in (lh, th):
        assert h.startswith("127.") or h == "::1", "loopback only"
    rate, rtt = parse_size(a.rate), parse_ms(a.rtt)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (th, int(tp)), rate, rtt), lh, int(lp)
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
