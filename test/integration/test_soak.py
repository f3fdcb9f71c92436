"""Soak: many sessions through `nrbc proxy` at once while clients vanish at
random moments and the builder loses connections or stops answering (see
soak.py). Runs in the suite (a few hundred sessions, about a minute) and,
with NRBC_BIN pointing at an AddressSanitizer build, as the sanitizer soak:

    CC=clang meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
    ninja -C build-asan src/nrbc
    NRBC_BIN=build-asan/src/nrbc python3 -m pytest test/integration/test_soak.py

NRBC_SOAK_SESSIONS / NRBC_SOAK_WORKERS / NRBC_SOAK_SEED change the size and
the draw (the seed is printed on failure)."""

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import wait_for
from procmem import rss_kib
from soak import STREAM, Soak, check_proxy, failure_line
from test_proxy_ssh import Builder, Keys, Proxy

NET = "127.83.%d" % (20 + os.getpid() % 200)
SESSIONS = int(os.environ.get("NRBC_SOAK_SESSIONS", 300))
WORKERS = int(os.environ.get("NRBC_SOAK_WORKERS", 24))
SEED = int(os.environ.get("NRBC_SOAK_SEED", random.randrange(1 << 30)))
# The proxy's RSS after the soak, once idle, against its RSS after a warm-up
# of the same kinds of sessions. Sanitizer builds keep freed memory in
# quarantine: a higher bound there.
RSS_GROWTH_KIB = int(os.environ.get("NRBC_TEST_SOAK_RSS_GROWTH_KIB", 8 * 1024))
# A sanitizer build reports leaks at exit; libssh2's own (see lsan.supp) is
# not the proxy's.
os.environ.setdefault("LSAN_OPTIONS", "suppressions=" + os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "lsan.supp"))


@pytest.fixture(scope="module")
def soak_world(nrbc_bin, tmp_path_factory):
    d = tempfile.mkdtemp(prefix="nrbc-soak-")
    os.chmod(d, 0o755)  # the builder's sshd reads authorized_keys as nixbld
    keys = Keys(str(tmp_path_factory.mktemp("soak-keys")))
    builder = Builder(os.path.join(d, "builder"), NET + ".2", keys.upstream + ".pub", keys.host)
    w = type("World", (), {})()
    w.dir, w.keys, w.builder, w.nrbc = d, keys, builder, nrbc_bin
    try:
        yield w
    finally:
        builder.stop()
        shutil.rmtree(d, ignore_errors=True)


def health_port(p):
    return int(wait_for(lambda: (re.search(r"health server listening on \S+ port (\d+)",
                                           p.log()) or [None, None])[1], 10,
                        what="health port"))


def test_soak_static_builder(soak_world):
    w = soak_world
    # One key plays every client here: no per-key session limit.
    p = Proxy(w.nrbc, w.dir, w.keys, w.builder, "--allow-any-command", "--health-port", "0",
              "--builder-timeout", "20s", "--log-level", "info",
              "--max-sessions-per-key", "0", ip=NET + ".10")
    try:
        health = (p.ip, health_port(p))
        argv = p.ssh_argv()
        # Warm-up: the same kinds of sessions, nothing disrupted; its RSS is
        # the baseline.
        warm = Soak(argv, 2 * WORKERS, WORKERS, SEED, kill_share=0.0, stop_share=0.0).run()
        assert warm.summary() == {"completed ok": 2 * WORKERS}, [
            (r.command, r.rc, r.stderr[-300:]) for r in warm.results if not r.ok]
        wait_for(lambda: check_proxy(p.proc, p.log(), health, 2 * WORKERS)[1]
                 .get("nrbc_proxy_sessions") == 0, 30, what="warm-up sessions closed")
        warm_rss = rss_kib(p.proc.pid)

        # Clients that vanish mid-stream, many at once: the proxy is busy
        # writing to them when their kernels reset the connections.
        burst = Soak(argv, 4 * WORKERS, 2 * WORKERS, SEED, kill_share=1.0, stop_share=0.0,
                     kill_after=(0.3, 2.5), commands=[STREAM]).run()
        assert p.proc.poll() is None, "proxy died (%s) with clients vanishing mid-stream:\n%s" % (
            p.proc.returncode, p.log()[-3000:])
        assert burst.summary() == {"kill": 4 * WORKERS}
        # The memory baseline: after the most sessions at once this test
        # runs (the heap keeps its high-water mark of concurrent streams).
        wait_for(lambda: check_proxy(p.proc, p.log(), health, 6 * WORKERS)[1]
                 .get("nrbc_proxy_sessions") == 0, 30, what="burst sessions closed")
        base = rss_kib(p.proc.pid)

        s = Soak(argv, SESSIONS, WORKERS, SEED, builder_pgid=w.builder.proc.pid).run()
        log = p.log()
        problems, m = check_proxy(p.proc, log, health, SESSIONS + 6 * WORKERS)
        summary = s.summary()
        print("seed %d: %d sessions in %.1fs: %s; builder: %s; proxy metrics: %s" % (
            SEED, SESSIONS, s.seconds, summary, s.disruptions,
            {k: v for k, v in m.items() if k.startswith("nrbc_proxy_sessions")}))
        assert not problems, "seed %d: %s" % (SEED, problems)
        # Something was actually exercised: clients vanished, sessions
        # failed because of the builder, and most that could finish did.
        assert summary.get("kill", 0) > 0 and summary.get("stop", 0) > 0, summary
        assert summary.get("completed ok", 0) > SESSIONS * 0.3, summary
        assert sum(s.disruptions.values()) > 0, s.disruptions
        bad = s.unexplained()
        assert not bad, "seed %d: sessions failed without an nrbc: line: %s" % (
            SEED, [(r.command, r.rc, r.stderr[-300:]) for r in bad[:5]])

        # Back near the baseline once idle.
        after = rss_kib(p.proc.pid)
        print("proxy RSS: %d KiB after warm-up, %d KiB after the burst, %d KiB after the "
              "soak" % (warm_rss, base, after))
        assert after - base < RSS_GROWTH_KIB, (base, after)
        # Still serving, and a clean exit.
        r = p.ssh("echo", "still here")
        assert r.returncode == 0 and r.stdout == b"still here\n", r.stderr
    finally:
        code = p.stop()
    log = p.log()
    assert code == 0, log[-3000:]
    assert not [m for m in ("ERROR: AddressSanitizer", "runtime error:",
                            "ERROR: LeakSanitizer") if m in log], log[-5000:]


# ---- with the Kubernetes backend ---------------------------------------------------

K8S_SESSIONS = int(os.environ.get("NRBC_SOAK_K8S_SESSIONS", 16))


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    from stack import Stack
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-soak"))
    s.install().start()
    yield s
    s.stop()


def test_soak_kubernetes_backend(stack):
    """Sessions through the manifests' proxy and controller, several at
    once: clients that leave while their builder is being made, builders
    deleted under bridged sessions, sessions that end normally. Nothing is
    left behind: no NixBuildRequest, no builder pod."""
    import struct
    import threading

    from stack import NAMESPACE, PROXY_ADDRESS
    rng = random.Random(SEED)
    argv = ["ssh", "-F", "/dev/null", "-p", str(stack.proxy_port),
            "-i", stack.keys["user-key"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "UserKnownHostsFile=" + stack.known_hosts(),
            "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=20",
            "nixbld@" + PROXY_ADDRESS, "nix-store", "--serve", "--write"]
    plans = [(rng.choice(["leave", "complete", "a pod deleted"]), rng.uniform(0.1, 3.0))
             for _ in range(K8S_SESSIONS)]
    outcomes = []
    lock = threading.Lock()

    def hello(p):
        """False when the session ends first (another client's random pod
        deletion may hit this one): it must then say why."""
        try:
            p.stdin.write(struct.pack("<QQ", 0x390c9deb, 0x205))
            p.stdin.flush()
        except BrokenPipeError:
            return False
        got = p.stdout.read(8)
        return len(got) == 8 and struct.unpack("<Q", got)[0] == 0x5452eecb

    def one(fate, delay):
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        result = None
        try:
            if fate == "leave":
                time.sleep(delay)
                p.kill()
                p.communicate(timeout=30)
                result = "left"
            else:
                ok = hello(p)
                if fate == "a pod deleted":
                    # Some builder pod (this session's or another's) goes: a
                    # session hit this way must say why.
                    pods = stack.builder_pods()
                    if pods:
                        victim = rng.choice(pods)["metadata"]["name"]
                        stack.cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (
                            NAMESPACE, victim))
                    out, err = p.communicate(timeout=120)
                else:
                    try:
                        p.stdin.close()
                    except BrokenPipeError:
                        pass
                    p.wait(60)
                    err = p.stderr.read()
                if ok and p.returncode == 0:
                    result = "ok"
                elif failure_line(err):
                    result = "failed with a reason"
                else:
                    result = "failed without a reason: rc %s %r" % (p.returncode, err[-300:])
        except Exception as e:  # noqa: BLE001 - recorded, asserted below
            result = "error: %r" % (e,)
            p.kill()
        with lock:
            outcomes.append((fate, result))

    threads = []
    for fate, delay in plans:
        t = threading.Thread(target=one, args=(fate, delay))
        t.start()
        threads.append(t)
        time.sleep(rng.uniform(0.0, 0.5))
    for t in threads:
        t.join(300)
    print("kubernetes soak: %s" % sorted(outcomes))
    assert len(outcomes) == len(plans)
    bad = [o for o in outcomes if o[1].startswith(("failed without", "error"))]
    assert not bad, bad
    assert any(r == "ok" for _, r in outcomes), outcomes
    stack.wait_clean(90)
    problems, m = check_proxy(stack.proxy.proc, stack.proxy.log(),
                              (PROXY_ADDRESS, stack.proxy.health_port), len(plans))
    assert not problems, problems
    assert stack.controller.proc.poll() is None
