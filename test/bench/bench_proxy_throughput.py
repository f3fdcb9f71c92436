#!/usr/bin/python3
"""P1: bulk bytes through `nrbc proxy` vs direct OpenSSH to the same builder
sshd, both directions, in one run (runs interleaved: direct, proxy, direct,
proxy, ... so that load on the shared machine hits both alike).

  upload    `ssh host 'cat >/dev/null'` fed SIZE bytes from /dev/zero
  download  `ssh host 'head -c SIZE /dev/zero'` read to /dev/null

Both client legs use aes128-gcm@openssh.com; the proxy's leg to the builder
is libssh2 1.10 (aes128-ctr + hmac-sha2-256: it has no AES-GCM). Prints MiB/s
(median of --runs), the ratio proxy/direct, and the proxy's CPU seconds per
GiB. --pinned runs the proxy on CPU 0 and the client and builder on CPU 1
(target P1b). --profile DIR records the proxy with `perf record` (DWARF
call graphs) during one more proxy transfer each way, of --profile-mib, and
prints where its CPU went by leg (libssh2 to the builder, libssh to the
client) and by what it did (proxy_profile.py); DIR keeps perf-up.data and
perf-down.data for `perf report`.

--real-node runs both legs on a real node instead (kubelet, containerd):
the proxy is the shipped Deployment's pod (the nrbc image, its libssh2;
`--allow-any-command` added to its arguments), its builder a pod the
controller made, and the baseline OpenSSH straight to a copy of that
builder pod at its pod IP. The proxy's CPU is its container's cgroup's.

Usage: test/bench/bench_proxy_throughput.py [--nrbc build/src/nrbc]
       [--size-mib 1024] [--runs 3] [--pinned] [--profile DIR [--profile-mib 256]]
       [--real-node]
"""

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import proxy_bench_common as common
import proxy_profile


class RealNodeSetup:
    """The same interface as proxy_bench_common.Setup, on the real node."""

    def __init__(self, nrbc):
        import substrate   # starts nothing until asked
        self.work = tempfile.mkdtemp(prefix="nrbc-bench-p1-")
        os.chmod(self.work, 0o755)
        self.sub = None
        try:
            self.sub = substrate.Substrate(True, nrbc, self.work, builder_idle_timeout="5m",
                                           proxy_args=["--allow-any-command"])
            ip, opts, _ = self.sub.builder_pod("direct-builder")
        except BaseException:
            self.close()
            raise
        stack = self.sub.stack
        self.direct = shlex.split(opts) + ["nixbld@" + ip]
        self.through = shlex.split(stack.sshopts()) + ["nixbld@" + stack.proxy_address]
        (self.proxy_pod,) = [p["metadata"]["name"] for p in stack.pods("nrbc-proxy")
                             if p["status"].get("podIP") == stack.proxy_address]

    def ssh(self, via_proxy, cmd, cpus=None):
        base = self.through if via_proxy else self.direct
        return ["ssh", "-c", common.CIPHER, "-o", "LogLevel=ERROR"] + base + [cmd]

    def proxy_cpu_seconds(self):
        # cgroup v1 (this machine) counts nanoseconds; v2's cpu.stat microseconds.
        r = self.sub.stack.exec(self.proxy_pod, "sh", "-c",
                                "f=/sys/fs/cgroup/cpuacct/cpuacct.usage; if [ -r $f ]; "
                                "then echo ns $(cat $f); else echo us $(sed -n "
                                "'s/^usage_usec //p' /sys/fs/cgroup/cpu.stat); fi")
        unit, v = r.stdout.split()
        return int(v) / (1e9 if unit == "ns" else 1e6)

    def proxy_rss_kib(self):
        r = self.sub.stack.exec(self.proxy_pod, "awk", "/^VmRSS/ { print $2 }", "/proc/1/status")
        return int(r.stdout.strip() or 0)

    def libssh2_version(self):
        r = self.sub.stack.exec(self.proxy_pod, "dpkg-query", "-W", "-f",
                                "${Package} ${Version}, ", "libssh2-1*", "libssh-4*")
        return r.stdout.strip().rstrip(",")

    def proxy_log_tail(self, n=30):
        return "\n".join(self.sub.proxy_log().splitlines()[-n:])

    def close(self):
        if self.sub:
            self.sub.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def transfer(setup, via_proxy, direction, size, cpus):
    if direction == "up":
        argv = setup.ssh(via_proxy, "cat >/dev/null", cpus)
        src = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        t0 = time.monotonic()
        p = subprocess.run(argv, stdin=src.stdout, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        took = time.monotonic() - t0
        src.stdout.close()
        src.wait()
    else:
        argv = setup.ssh(via_proxy, "head -c %d /dev/zero" % size, cpus)
        t0 = time.monotonic()
        p = subprocess.run(argv, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        took = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("ssh failed (%s, %s, %.1f s): %s\nthe proxy's log ends:\n%s"
                 % ("proxy" if via_proxy else "direct", direction, took,
                    p.stderr.decode(errors="replace"), setup.proxy_log_tail()))
    return took


def profile(setup, direction, size, cpus, out_dir):
    """One more proxy transfer under perf; prints where the proxy's CPU went."""
    data = os.path.join(out_dir, "perf-%s.data" % direction)
    took = proxy_profile.record(setup.proxy.pid, data,
                                lambda: transfer(setup, True, direction, size, cpus))
    print("  profile, %s through the proxy (%.1f MiB/s under perf), %s:" %
          (direction, size / 1048576 / took, data))
    for line in proxy_profile.summary(data):
        print("    " + line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nrbc", default=common.default_nrbc())
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pinned", action="store_true",
                    help="proxy on CPU 0, client and builder on CPU 1")
    ap.add_argument("--profile", metavar="DIR",
                    help="perf record the proxy during one more transfer each way")
    ap.add_argument("--profile-mib", type=int, default=256,
                    help="size of the profiled transfers (DWARF stacks are big)")
    ap.add_argument("--real-node", action="store_true",
                    help="the proxy's Deployment and builder pods on a real node")
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    proxy_cpus, other_cpus = ("0", "1") if args.pinned else (None, None)
    if args.real_node and (args.pinned or args.profile):
        sys.exit("--real-node: no --pinned or --profile")
    if args.real_node:
        setup = RealNodeSetup(args.nrbc)
        print("real node: proxy pod %s with %s" % (setup.proxy_pod, setup.libssh2_version()))
    else:
        setup = common.Setup(args.nrbc, proxy_cpus=proxy_cpus, builder_cpus=other_cpus)
    try:
        # Warm-up: first connections pay for key loading and page-ins.
        transfer(setup, False, "down", 16 << 20, other_cpus)
        transfer(setup, True, "down", 16 << 20, other_cpus)
        print("P1 throughput, %d MiB per transfer, %d runs each, %s" %
              (args.size_mib, args.runs,
               "pinned: proxy CPU 0, client+builder CPU 1" if args.pinned else
               "shared CPUs"))
        for direction in ("up", "down"):
            times = {False: [], True: []}
            cpu = []
            for _ in range(args.runs):
                times[False].append(transfer(setup, False, direction, size, other_cpus))
                c0 = setup.proxy_cpu_seconds()
                times[True].append(transfer(setup, True, direction, size, other_cpus))
                cpu.append(setup.proxy_cpu_seconds() - c0)
            d = args.size_mib / statistics.median(times[False])
            p = args.size_mib / statistics.median(times[True])
            print("  %-8s direct %7.1f MiB/s   proxy %7.1f MiB/s   ratio %.2f   "
                  "proxy CPU %.2f s/GiB   (direct runs %s, proxy runs %s)" %
                  ("upload" if direction == "up" else "download", d, p, p / d,
                   statistics.median(cpu) * 1024 / args.size_mib,
                   ", ".join("%.1f" % (args.size_mib / t) for t in times[False]),
                   ", ".join("%.1f" % (args.size_mib / t) for t in times[True])))
        print("  proxy RSS after the runs: %d KiB" % setup.proxy_rss_kib())
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            for direction in ("up", "down"):
                profile(setup, direction, args.profile_mib << 20, other_cpus, args.profile)
    finally:
        setup.close()


if __name__ == "__main__":
    main()
