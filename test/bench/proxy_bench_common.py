"""Shared set-up of the proxy benchmarks: keys, one builder (sshd started by
builder/entrypoint.sh on a private loopback address) and `nrbc proxy
--builder-address` in front of it, plus ssh argv for both paths (direct to
the builder, and through the proxy), so that each figure has its baseline
measured in the same run against the same sshd."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))
sys.path.insert(0, os.path.join(REPO, "test", "cluster"))
from procmem import private_dirty_kib, pss_kib, rss_kib  # noqa: E402,F401
from cluster import free_port, wait_for  # noqa: E402,F401  (one copy, shared)
ENTRYPOINT = os.path.join(REPO, "builder", "entrypoint.sh")
NET = "127.82.%d" % (20 + os.getpid() % 200)
CIPHER = "aes128-gcm@openssh.com"


class Setup:
    """Keys, builder and proxy in a temporary directory; close() stops all."""

    def __init__(self, nrbc, proxy_cpus=None, builder_cpus=None, proxy_args=()):
        self.dir = tempfile.mkdtemp(prefix="nrbc-bench-proxy-")
        os.chmod(self.dir, 0o755)  # sshd reads authorized_keys as nixbld
        self.procs = []
        self.builder_cpus = builder_cpus
        for name in ("client", "upstream", "host"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                            os.path.join(self.dir, name)], check=True)
        self.client = os.path.join(self.dir, "client")
        self.upstream = os.path.join(self.dir, "upstream")
        self.host = os.path.join(self.dir, "host")
        # builder
        root = os.path.join(self.dir, "builder")
        ssh_dir = os.path.join(root, "etc", "nrbc", "ssh")
        os.makedirs(ssh_dir)
        shutil.copy(self.upstream + ".pub", os.path.join(ssh_dir, "public"))
        shutil.copy(self.host, os.path.join(ssh_dir, "host-key"))
        self.builder_ip, self.proxy_ip = NET + ".2", NET + ".10"
        self.builder_port = free_port(self.builder_ip)
        env = dict(os.environ, NRBC_BUILDER_ROOT=root, NRBC_BUILDER_NIX_DAEMON="external",
                   NRBC_BUILDER_LISTEN_ADDRESS=self.builder_ip,
                   NRBC_BUILDER_PORT=str(self.builder_port), NRBC_BUILDER_LOG_LEVEL="ERROR")
        self.builder = self._spawn(self.pin(["sh", ENTRYPOINT], builder_cpus), env,
                                   os.path.join(self.dir, "builder.log"))

        def builder_up():
            try:
                socket.create_connection((self.builder_ip, self.builder_port), 1).close()
                return True
            except OSError:
                return False
        wait_for(builder_up, 30, what="builder sshd")
        # proxy
        self.proxy_log = os.path.join(self.dir, "proxy.log")
        argv = [nrbc, "proxy", "--listen-address", self.proxy_ip, "--port", "0",
                "--health-port", "-1", "--builder-address",
                "%s:%d" % (self.builder_ip, self.builder_port), "--host-key", self.host,
                "--authorized-keys", self.client + ".pub", "--private-key", self.upstream,
                "--allow-any-command", "--log-level", "warn", "--idle-timeout", "0",
                # one key plays every client (P5 holds 1,000 sessions)
                "--max-sessions-per-key", "0"]
        argv += list(proxy_args)
        self.proxy = self._spawn(self.pin(argv, proxy_cpus), dict(os.environ), self.proxy_log)
        # The port is in the info line; at warn level ask the kernel instead.
        self.proxy_port = wait_for(self._proxy_port, 15, what="proxy listening")
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            pub = open(self.host + ".pub").read()
            f.write("[%s]:%d %s" % (self.builder_ip, self.builder_port, pub))
            f.write("[%s]:%d %s" % (self.proxy_ip, self.proxy_port, pub))

    @staticmethod
    def pin(argv, cpus):
        return (["taskset", "-c", cpus] + argv) if cpus else argv

    def _spawn(self, argv, env, log_path):
        log = open(log_path, "wb")
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def _proxy_port(self):
        if self.proxy.poll() is not None:
            raise SystemExit("proxy exited:\n" + open(self.proxy_log).read())
        out = subprocess.run(["ss", "-Hltnp", "src", self.proxy_ip], stdout=subprocess.PIPE,
                             text=True).stdout
        m = re.search(r":(\d+)\s.*pid=%d," % self.proxy.pid, out)
        return m and int(m.group(1))

    def ssh(self, via_proxy, cmd, cpus=None, kex=None):
        """argv of one ssh command, direct to the builder or via the proxy."""
        ip, port, key = ((self.proxy_ip, self.proxy_port, self.client) if via_proxy else
                         (self.builder_ip, self.builder_port, self.upstream))
        argv = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", key, "-c", CIPHER,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=" + os.path.join(self.dir, "known_hosts"),
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"]
        if kex:
            argv += ["-o", "KexAlgorithms=" + kex]
        argv += ["nixbld@" + ip, cmd]
        return self.pin(argv, cpus)

    def proxy_log_tail(self, n=30):
        with open(self.proxy_log, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def proxy_rss_kib(self):
        return rss_kib(self.proxy.pid)

    def proxy_private_kib(self):
        return private_dirty_kib(self.proxy.pid)

    def proxy_cpu_seconds(self):
        f = open("/proc/%d/stat" % self.proxy.pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def default_nrbc():
    return os.environ.get("NRBC_BIN") or os.path.join(REPO, "build", "src", "nrbc")
