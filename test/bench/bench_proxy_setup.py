#!/usr/bin/python3
"""P2 and P4 for `nrbc proxy`, each beside a baseline from the same run:

  P2  session setup with the builder already running: ssh connect -> first
      byte of `echo` output, direct to the builder sshd vs through the proxy
      (the proxy adds its own SSH handshake towards the builder). p50 / p90
      over --runs runs, interleaved; "added" is the p50 difference. Twice:
      with OpenSSH's default key exchange (9.2: sntrup761x25519, which
      libssh 0.10 on the proxy's client side does not offer, so the proxy
      path negotiates curve25519) and with curve25519-sha256 forced on
      both paths (like for like).
  P4  proxy RSS: idle after start, idle after the runs, and per bridged
      session: --sessions ssh clients each running `sleep`, RSS delta / N
      (each session holds a client connection, a builder connection and
      one channel on each).

Usage: test/bench/bench_proxy_setup.py [--nrbc build/src/nrbc] [--runs 30]
       [--sessions 50]
"""

import argparse
import statistics
import subprocess
import sys
import time

import proxy_bench_common as common


def first_byte_ms(setup, via_proxy, kex=None):
    t0 = time.monotonic()
    p = subprocess.Popen(setup.ssh(via_proxy, "echo x", kex=kex), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    took = (time.monotonic() - t0) * 1000
    p.stdout.read()
    if p.wait() != 0 or first != b"x":
        sys.exit("ssh failed (%s): %s" % ("proxy" if via_proxy else "direct",
                                          p.stderr.read().decode(errors="replace")))
    return took


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nrbc", default=common.default_nrbc())
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=50)
    args = ap.parse_args()
    setup = common.Setup(args.nrbc)
    clients = []
    try:
        time.sleep(0.5)
        rss_start = setup.proxy_rss_kib()
        pss_start = common.pss_kib(setup.proxy.pid)
        first_byte_ms(setup, False)
        first_byte_ms(setup, True)
        for kex, label in ((None, "OpenSSH default key exchange"),
                           ("curve25519-sha256", "curve25519-sha256 on both paths")):
            direct, proxy = [], []
            for _ in range(args.runs):
                direct.append(first_byte_ms(setup, False, kex))
                proxy.append(first_byte_ms(setup, True, kex))
            d50, p50 = statistics.median(direct), statistics.median(proxy)
            print("P2 connect -> first byte of `echo`, %d runs each, %s" % (args.runs, label))
            print("  direct  p50 %6.1f ms  p90 %6.1f ms" % (d50, pct(direct, 0.9)))
            print("  proxy   p50 %6.1f ms  p90 %6.1f ms" % (p50, pct(proxy, 0.9)))
            print("  added   p50 %+6.1f ms" % (p50 - d50))
        time.sleep(0.5)
        rss_idle = setup.proxy_rss_kib()
        pss_idle = common.pss_kib(setup.proxy.pid)
        priv_idle = setup.proxy_private_kib()
        # In waves of 8, as these figures were first measured (the builder
        # sshd's MaxStartups was then sshd's default, 10); a real
        # builder pod serves one session.
        t0 = time.monotonic()
        for first in range(0, args.sessions, 8):
            wave = [subprocess.Popen(setup.ssh(True, "echo up; exec sleep 600"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
                    for _ in range(min(8, args.sessions - first))]
            clients.extend(wave)
            for c in wave:
                if c.stdout.readline() != b"up\n":
                    sys.exit("a session did not come up: " + c.stderr.read().decode())
        alive = sum(1 for c in clients if c.poll() is None)
        print("P5 %d bridged sessions held at once (set up in %.1f s), %d errors"
              % (alive, time.monotonic() - t0, args.sessions - alive))
        time.sleep(0.5)
        rss_busy = setup.proxy_rss_kib()
        priv_busy = setup.proxy_private_kib()
        print("P4 proxy RSS")
        print("  idle after start       %6d KiB (PSS %d KiB)" % (rss_start, pss_start))
        print("  idle after %3d setups  %6d KiB (PSS %d KiB, private dirty %d KiB; the rest "
              "is shared library pages)" % (4 * args.runs + 2, rss_idle, pss_idle, priv_idle))
        print("  %d bridged sessions   %6d KiB  -> %.1f KiB per session (private dirty "
              "%.1f KiB per session)" %
              (args.sessions, rss_busy, (rss_busy - rss_idle) / args.sessions,
               (priv_busy - priv_idle) / args.sessions))
    finally:
        for c in clients:
            c.kill()
            c.wait()
        setup.close()


if __name__ == "__main__":
    main()
