"""A key's scale-out builders substitute from its other builders (through
the proxy, logged in with their own host keys) instead of receiving the
client's inputs again: a wide build over one client-built input, with a
maxJobs that spreads it over several builders, sends the input up from the
client about once. Every test-kubelet pod has a store of its own, as a
builder container has. And a builder's host key reaches only builders of
its own key."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from cluster import wait_for
from conftest import salt
from stack import NAMESPACE, PROXY_ADDRESS, Stack

MIB = 1024 * 1024
SIZE = 32 * MIB
SQLITE_BUSY = re.compile(r"^\s*warning: error: SQLite database '[^']+' is busy\s*$")


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    # No warm pool: the key's first builder is made for it, as its others.
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("siblings"),
              controller_args=["--warm-pool-size=0"])
    s.install().start()
    yield s
    s.stop()


def proxy_metric(stack, prefix):
    url = "http://%s:%d/metrics" % (PROXY_ADDRESS, stack.proxy.health_port)
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
    return 0.0


def sandbox_paths(nix_client):
    return nix_client.local_sandbox_paths() + " /usr/bin"


def test_scale_out_builders_substitute_from_each_other(stack, nix_client):
    # Each user holds its slot 5 s, far longer than --builder-scale-out-wait
    # (250 ms): sessions beyond the first builder's slots get builders of their own.
    args = {"salt": salt(), "n": 12, "size": SIZE, "seconds": 5}
    # The client builds the input itself: no cache has it.
    nix_client.build("closure.nix", args=args, max_jobs=1,
                     extra=["-A", "big", "--option", "sandbox-paths", sandbox_paths(nix_client)])
    served, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            for r in stack.requests():
                b = (r.get("status") or {}).get("builder")
                if b:
                    served.add(b)
            time.sleep(0.1)
    t = threading.Thread(target=watch)
    up0 = proxy_metric(stack, 'nrbc_proxy_bytes_total{direction="up"}')
    t.start()
    try:
        # maxJobs 16, as client-config writes; builders-use-substitutes, as
        # it writes too.
        b = nix_client.build("closure.nix", builders=stack.builders("ssh-ng", max_jobs=16),
                             sshopts=stack.sshopts(), args=args, timeout=600,
                             extra=["--option", "builders-use-substitutes", "true"])
    finally:
        stop.set()
        t.join()
    up = proxy_metric(stack, 'nrbc_proxy_bytes_total{direction="up"}') - up0
    lines = nix_client.read(b.out).decode().splitlines()
    assert len(lines) == 12 and all(" %d " % SIZE in l for l in lines), lines
    assert len(served) >= 2, served
    # Lookups on a sibling that lacks a path (or on itself) print nothing.
    # Nix's own SQLite retry is not one: with a dozen copies at once a
    # store's write transaction can meet SQLITE_BUSY, which Nix logs once
    # ("warning: error: SQLite database ... is busy") and retries.
    noise = [l for l in b.stderr.splitlines()
             if ("error" in l or "warning" in l) and not SQLITE_BUSY.search(l)]
    assert not noise, "\n".join(noise[-20:])
    log = stack.proxy.log()
    assert "bridged to its sibling" in log, log[-3000:]
    print("builders %d, up %.1f MiB for a %d MiB input" % (len(served), up / MIB, SIZE // MIB))
    assert up <= 1.2 * SIZE, "%.1f MiB up for a %d MiB input over %d builders" % (
        up / MIB, SIZE // MIB, len(served))
    stack.wait_clean()


def test_a_builder_host_key_reaches_only_its_own_keys_builders(stack, tmp_path):
    # The first test's builders (its key is user 0's) must be gone, whether
    # it passed or not: else user 0's builder has a sibling.
    stack.wait_clean()
    wait_for(lambda: not stack.nixbuilders(), 60, what="no NixBuilder left")
    # One builder each for two keys, held by sessions.
    procs = []
    try:
        for user in (0, 1):
            argv = ["ssh"] + stack.sshopts(user).split() + [
                "nixbld@" + PROXY_ADDRESS, "nix-store", "--serve", "--write"]
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: len([r for r in stack.requests()
                              if (r.get("status") or {}).get("phase") == "Running"]) == 2,
                 60, what="both sessions Running")
        builders = {b["spec"]["identity"]: b for b in stack.nixbuilders()}
        assert len(builders) == 2
        # A key that is some builder's host key... from outside: the
        # proxy's view is that it is that builder, so we use a key that is
        # none: a fresh one is refused as a sibling.
        stranger = str(tmp_path / "stranger")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger],
                       check=True)
        argv = ["ssh"] + stack.sshopts(0).split()
        argv[argv.index("-i") + 1] = stranger
        r = subprocess.run(argv + ["nrbc-sibling@" + PROXY_ADDRESS, "nix-daemon", "--stdio"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        assert r.returncode == 255 and "Permission denied" in r.stderr, r
        assert "not the host key of a builder" in stack.proxy.log()
        # The only builder of a key is its own sibling, never the other
        # key's builder (the pod's key is in the test kubelet's pod
        # directory).
        mark = len(stack.proxy.log())   # builder names recur: the first test's
        for b in builders.values():
            name = b["metadata"]["name"]
            key = find_host_key(stack, b)
            argv[argv.index("-i") + 1] = key
            r = subprocess.run(argv + ["nrbc-sibling@" + PROXY_ADDRESS, "nix-daemon",
                                       "--stdio"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=60)
            assert r.returncode != 255, r
            wait_for(lambda: "builder %s logged in with its host key" % name in
                     stack.proxy.log()[mark:], 10, what="the sibling login in the proxy's log")
            lines = [l for l in stack.proxy.log()[mark:].splitlines()
                     if "builder %s logged in with its host key" % name in l]
            assert lines and all(l.endswith("bridged to its sibling %s" % name)
                                 for l in lines), lines
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=30)
    stack.wait_clean()


def find_host_key(stack, builder):
    """The private host key the controller made for builder, as its pod
    has it (the test kubelet materialises Secret volumes under its dir)."""
    pod = "nix-builder-" + builder["metadata"]["name"]
    st, body = stack.cluster.api("GET", "/api/v1/namespaces/%s/pods/%s" % (NAMESPACE, pod))
    assert st == 200, body
    uid = body["metadata"]["uid"]
    path = os.path.join(stack.kubelet.dir, "pods", uid, "root", "run", "nrbc", "ssh_host_key")
    assert os.path.exists(path), path
    out = os.path.join(stack.dir, pod + "-key")
    with open(path) as src, open(out, "w") as dst:
        dst.write(src.read())
    os.chmod(out, 0o600)
    return out
