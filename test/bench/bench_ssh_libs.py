#!/usr/bin/python3
"""P1 background: the ceiling of each SSH client library nrbc links, against
the same builder sshd, beside OpenSSH's ssh in the same run.

The proxy's leg to the builder is libssh2 (1.10 on Debian 12: no AES-GCM,
no chacha20-poly1305, no encrypt-then-MAC); its client-facing leg is
libssh's server side. This measures one channel of bulk bytes with
test/tools/sshpush: libssh2 with aes128-ctr (with hmac-sha2-256, and with
hmac-sha1) and aes256-ctr, its other secure choices; libssh (0.10) with aes128-ctr,
aes128-gcm and chacha20-poly1305, and OpenSSH's ssh with aes128-gcm, both
directions, median of --runs, interleaved. A library that cannot reach the
rate asked of the proxy bounds the proxy, whatever the bridging code does.

Usage: test/bench/bench_ssh_libs.py [--size-mib 512] [--runs 3]
       [--sshpush build/test/tools/sshpush]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import proxy_bench_common as common

CLIENTS = [
    ("libssh2", "aes128-ctr"),
    # the other secure choices libssh2 1.10 has for the proxy's builder leg
    ("libssh2", "aes128-ctr/hmac-sha1"),
    ("libssh2", "aes256-ctr"),
    ("libssh", "aes128-ctr"),
    ("libssh", "aes128-gcm@openssh.com"),
    ("libssh", "chacha20-poly1305@openssh.com"),
    ("openssh", "aes128-gcm@openssh.com"),
]


def run_sshpush(tool, setup, lib, cipher, direction, mib):
    out = subprocess.run([tool, lib, setup.builder_ip, str(setup.builder_port), "nixbld",
                          setup.upstream, cipher, direction, str(mib)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=600)
    if out.returncode != 0:
        sys.exit("sshpush %s %s failed: %s" % (lib, cipher, out.stderr))
    f = out.stdout.split()
    return float(f[5]), float(f[6]), f[2]


def run_openssh(setup, cipher, direction, mib):
    size = mib << 20
    argv = setup.ssh(False, "cat >/dev/null" if direction == "up" else
                     "head -c %d /dev/zero" % size)
    argv[argv.index("-c") + 1] = cipher
    t0 = time.monotonic()
    r0 = os.times()
    if direction == "up":
        src = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        subprocess.run(argv, stdin=src.stdout, check=True)
        src.wait()
    else:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    r1 = os.times()
    return (time.monotonic() - t0,
            (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system),
            "(openssh)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=common.default_nrbc())
    ap.add_argument("--sshpush", default=os.path.join(common.REPO, "build", "test", "tools",
                                                      "sshpush"))
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    setup = common.Setup(args.nrbc)
    try:
        results = {}
        for _ in range(args.runs):
            for direction in ("up", "down"):
                for lib, cipher in CLIENTS:
                    if lib == "openssh":
                        secs, cpu, mac = run_openssh(setup, cipher, direction, args.size_mib)
                    else:
                        secs, cpu, mac = run_sshpush(args.sshpush, setup, lib, cipher,
                                                     direction, args.size_mib)
                    results.setdefault((lib, cipher, direction), []).append((secs, cpu, mac))
        print("one SSH channel, %d MiB each way, median of %d, same builder sshd:"
              % (args.size_mib, args.runs))
        for direction in ("up", "down"):
            base = statistics.median(s for s, _, _ in results[("openssh", CLIENTS[-1][1],
                                                               direction)])
            for lib, cipher in CLIENTS:
                rs = results[(lib, cipher, direction)]
                secs = statistics.median(s for s, _, _ in rs)
                cpu = statistics.median(c for _, c, _ in rs)
                print("  %-4s %-8s %-30s %-14s %7.1f MiB/s  %.2fx OpenSSH  client CPU %.2f s/GiB"
                      % (direction, lib, cipher, rs[0][2], args.size_mib / secs, base / secs,
                         cpu * 1024.0 / args.size_mib))
    finally:
        setup.close()


if __name__ == "__main__":
    sys.exit(main())
