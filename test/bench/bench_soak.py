#!/usr/bin/python3
"""S1: the proxy soak at length (test/integration/soak.py, the driver of
test_soak.py): thousands of OpenSSH sessions through `nrbc proxy`, --workers
at a time, while clients vanish at random moments (handshake, builder
connect, mid-stream, stopped) and the builder's per-connection sshd
processes are killed or the builder stops answering for a moment.

Printed, each beside a baseline from the same run:
  - sessions per second without the drill, straight to the builder sshd
    and through the proxy (same commands, same clients), then through the
    proxy with the drill;
  - proxy CPU per 1,000 sessions;
  - proxy RSS: after a warm-up (baseline), at the end once idle, and the
    ratio;
  - outcomes, and what check_proxy() finds wrong (nothing, or the run
    fails): every accepted session ended in the metrics and the log, no
    sanitizer report, the proxy alive and exiting 0 on SIGTERM.

Usage: test/bench/bench_soak.py [--nrbc build/src/nrbc] [--sessions 3000]
       [--workers 32] [--seed N]
With an AddressSanitizer build (--nrbc build-asan/src/nrbc) the RSS figures
mean little (quarantine); the point there is the sanitizer's silence.
"""

import argparse
import os
import random
import re
import sys
import time

import proxy_bench_common as common

sys.path.insert(0, os.path.join(common.REPO, "test", "integration"))
import soak  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nrbc", default=common.default_nrbc())
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = ap.parse_args()
    os.environ.setdefault("LSAN_OPTIONS", "suppressions=" + os.path.join(
        common.REPO, "test", "integration", "lsan.supp"))
    health = common.free_port(common.NET + ".10")
    setup = common.Setup(args.nrbc, proxy_args=["--health-port", str(health),
                                                "--log-level", "info",
                                                "--builder-timeout", "20s"])
    code = None
    try:
        # The health server listens on the same address: take the SSH
        # port from the proxy's log rather than from the socket list.
        m = common.wait_for(lambda: re.search(r"listening on \S+ port (\d+) \(host key",
                                              open(setup.proxy_log).read()), 15, what="proxy port")
        setup.proxy_port = int(m.group(1))
        with open(os.path.join(setup.dir, "known_hosts"), "w") as f:
            pub = open(setup.host + ".pub").read()
            f.write("[%s]:%d %s" % (setup.builder_ip, setup.builder_port, pub))
            f.write("[%s]:%d %s" % (setup.proxy_ip, setup.proxy_port, pub))
        # Both paths with curve25519 (OpenSSH's default sntrup761 is several
        # times as costly and libssh, the proxy's side, does not offer it).
        kex = "curve25519-sha256"
        direct = setup.ssh(False, "", kex=kex)[:-1]
        via = setup.ssh(True, "", kex=kex)[:-1]
        # Baseline: the completing commands straight to the builder, and the
        # same through the proxy without the drill (also the warm-up: its
        # RSS is the memory baseline). 8 clients at a time, as S1 was first
        # measured (when the builder sshd kept MaxStartups' default of 10).
        n_base = max(args.workers * 4, args.sessions // 10)
        base_workers = min(args.workers, 8)
        base = soak.Soak(direct, n_base, base_workers, args.seed, kill_share=0.0,
                         stop_share=0.0).run()
        assert base.summary() == {"completed ok": n_base}, base.summary()
        warm = soak.Soak(via, n_base, base_workers, args.seed, kill_share=0.0,
                         stop_share=0.0).run()
        assert warm.summary() == {"completed ok": n_base}, warm.summary()
        # The memory baseline: after as many clients at once as the drill
        # runs (the heap keeps its high-water mark of concurrent sessions).
        peak = soak.Soak(via, n_base, args.workers, args.seed, kill_share=0.0,
                         stop_share=0.0).run()
        assert peak.summary() == {"completed ok": n_base}, peak.summary()
        time.sleep(1)
        rss_warm = setup.proxy_rss_kib()
        cpu0 = setup.proxy_cpu_seconds()
        run = soak.Soak(via, args.sessions, args.workers, args.seed,
                        builder_pgid=setup.builder.pid).run()
        cpu = setup.proxy_cpu_seconds() - cpu0
        log = open(setup.proxy_log, errors="replace").read()
        problems, m = soak.check_proxy(setup.proxy, log, (common.NET + ".10", health),
                                       args.sessions + 2 * n_base)
        time.sleep(2)
        rss_end = setup.proxy_rss_kib() if setup.proxy.poll() is None else 0
        bad = run.unexplained()
        print("S1 proxy soak, seed %d, %d workers, %s" % (args.seed, args.workers, args.nrbc))
        print("  no drill, %d clients at a time, completing commands only: direct %.1f "
              "sessions/s, through the proxy %.1f sessions/s (%.2fx)" % (
                  base_workers, n_base / base.seconds, n_base / warm.seconds,
                  base.seconds / warm.seconds))
        print("  with the drill, %d clients at a time: %d sessions in %.1f s = %.1f "
              "sessions/s" % (args.workers, args.sessions, run.seconds,
                              args.sessions / run.seconds))
        print("  outcomes: %s" % run.summary())
        print("  builder drill: %s" % run.disruptions)
        print("  proxy metrics: %s" % {k: int(v) for k, v in m.items()
                                       if k.startswith(("nrbc_proxy_sessions",
                                                        "nrbc_proxy_connections"))})
        print("  proxy CPU during the drill: %.1f s, %.1f ms per session" % (
            cpu, cpu * 1000 / args.sessions))
        print("  proxy RSS: %d KiB after a warm-up at %d clients, %d KiB idle after the "
              "soak (%.2fx)" % (
            rss_warm, args.workers, rss_end, rss_end / rss_warm if rss_warm else 0))
        print("  sessions ended without their output and without an nrbc: line: %d" % len(bad))
        print("  problems: %s" % (problems or "none"))
    finally:
        if setup.proxy.poll() is None:
            setup.proxy.send_signal(15)
            code = setup.proxy.wait(30)
        else:
            code = setup.proxy.returncode
        log = open(setup.proxy_log, errors="replace").read()
        setup.close()
    print("  proxy exit status after SIGTERM: %s" % code)
    for mark in soak.SANITIZER_MARKS:
        if mark in log:
            print(log[log.index(mark) - 200:][:4000])
            sys.exit("sanitizer report in the proxy's log")
    if problems or bad or code != 0:
        sys.exit("the soak found problems")


if __name__ == "__main__":
    main()
