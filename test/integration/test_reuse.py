"""Builder reuse end to end: real Nix clients with different keys build
through the proxy at once; each key's sessions share that key's builders
and never anyone else's. The stack is the shipped manifests (warm pool of
2, 4 slots), with a short idle timeout so clean-up can be seen."""

import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import NixClient, salt, wait_for
from nix_wire import NixWire
from stack import PROXY_ADDRESS, Stack


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-reuse"))
    s.install().start()
    yield s
    s.stop()


class Sampler:
    """Samples the requests while builds run: identity -> builders seen."""

    def __init__(self, stack):
        self.stack = stack
        self.by_identity = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for r in self.stack.requests():
                b = (r.get("status") or {}).get("builder")
                if b:
                    self.by_identity.setdefault(r["spec"]["identity"], set()).add(b)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def build_all(stack, clients, expr, args, scheme="ssh-ng"):
    """One nix-build per client at once; returns their results."""
    results, errors = {}, []

    def one(i, client):
        try:
            results[i] = client.build(expr, builders=stack.builders(scheme),
                                      sshopts=stack.sshopts(user=i), args=args[i])
        except Exception as e:  # reported below, with the others
            errors.append("client %d: %s" % (i, e))
    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors)
    return results


def test_two_identities_never_share_a_builder(stack, tmp_path):
    clients = [NixClient(tmp_path / ("c%d" % i)) for i in range(2)]
    for c in clients:
        (tmp_path / c.dir).mkdir(exist_ok=True)
    args = [{"salt": salt(), "n": 6} for _ in clients]
    with Sampler(stack) as seen:
        results = build_all(stack, clients, "graph.nix", args)
    local = clients[0].build_local("graph.nix", args=args[0])
    assert results[0].out == local.out
    assert len(seen.by_identity) == 2, seen.by_identity
    a, b = seen.by_identity.values()
    assert not (a & b), seen.by_identity
    # Each identity's builders are its own in the API too.
    for nbd in stack.nixbuilders():
        ident = nbd["spec"]["identity"]
        if nbd["metadata"]["name"] in a | b:
            assert nbd["metadata"]["name"] in seen.by_identity[ident], nbd["metadata"]
    # A third key, while the first two's builders sit idle: it is not kept
    # waiting by them; its first session takes a warm pool builder.
    third = NixClient(tmp_path / "c2")
    (tmp_path / "c2").mkdir()
    with Sampler(stack) as seen3:
        third.build("graph.nix", builders=stack.builders("ssh-ng"),
                    sshopts=stack.sshopts(user=2), args={"salt": salt(), "n": 2})
    mine = [v for k, v in seen3.by_identity.items() if k not in seen.by_identity]
    assert len(mine) == 1, seen3.by_identity
    mine = mine[0]
    assert not (mine & (a | b)), seen3.by_identity
    assert any(n.startswith("nb-pool-") for n in mine), mine
    stack.wait_clean()


def test_parallel_builds_with_the_pool_every_session_served(stack, tmp_path):
    """Three keys build at once, ten rounds: every session is served (a lost
    request would hang a build for the whole --builder-timeout)."""
    clients = [NixClient(tmp_path / ("c%d" % i)) for i in range(3)]
    for c in clients:
        (tmp_path / c.dir).mkdir(exist_ok=True)
    rounds = 10
    worst = 0.0
    for r in range(rounds):
        args = [{"salt": salt(), "n": 3} for _ in clients]
        t0 = time.monotonic()
        results = build_all(stack, clients, "graph.nix", args)
        worst = max(worst, time.monotonic() - t0)
        assert len(results) == 3
    print("%d rounds of 3 parallel builds; slowest round %.1f s" % (rounds, worst))
    m = stack.controller_metrics()
    # Three identities, each served from the first round on by its builder.
    assert m['nrbc_controller_binds_total{builder="existing"}'] >= rounds * 3 * 4 - 3 * 4, m
    stack.wait_clean()


def test_shared_input_crosses_the_proxy_once_per_builder(stack, tmp_path):
    """The realistic shape: ten derivations that all need one 32 MiB input
    the client built itself. Every builder pod has a store of its own (as a
    container does), so what a builder lacks must come up through the
    proxy; with reuse that is once per builder used, not once per
    derivation."""
    size = 32 * 1024 * 1024
    args = {"salt": salt(), "n": 10, "size": size}
    sandbox = NixClient.local_sandbox_paths() + " /usr/bin"
    client = NixClient(tmp_path / "closure")
    (tmp_path / "closure").mkdir()
    client.build("closure.nix", args=args, max_jobs=1,
                 extra=["-A", "big", "--option", "sandbox-paths", sandbox])
    up0 = stack.proxy_metrics()['nrbc_proxy_bytes_total{direction="up"}']
    with Sampler(stack) as seen:
        remote = client.build("closure.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args=args)
    up = stack.proxy_metrics()['nrbc_proxy_bytes_total{direction="up"}'] - up0
    used = set().union(*seen.by_identity.values()) if seen.by_identity else set()
    print("closure build: %d builder(s) used, %.1f MiB up through the proxy for a %d MiB "
          "input" % (len(used), up / 2**20, size // 2**20))
    assert 1 <= len(used) <= 3, seen.by_identity
    assert up >= size, up  # it did go up: the builders' stores are their own
    assert up <= len(used) * size * 1.1 + 4 * 2**20, (up, used)
    local = client.build("closure.nix", args=args, max_jobs=1,
                         store=os.path.join(client.dir, "local-store"),
                         extra=["--option", "sandbox-paths", sandbox])
    assert remote.out == local.out
    assert client.read(remote.out) == client.read(local.out, store=local.store)
    stack.wait_clean()


def kubelet_sshd_sessions(kubelet):
    """Pids of the sshd processes under the test kubelet that hold one
    connection each ("sshd: nixbld ..."), not the builders' listeners."""
    parent = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                parent[int(pid), "cmd"] = f.read().decode(errors="replace")
        except OSError:
            continue

    def under_kubelet(pid):
        while pid > 1:
            if pid == kubelet.proc.pid:
                return True
            pid = parent.get(pid, 1)
        return False
    return [p for p in parent if isinstance(p, int) and
            parent.get((p, "cmd"), "").startswith("sshd: nixbld") and under_kubelet(p)]


def spares(stack):
    m = stack.proxy.metrics()
    return (m.get('nrbc_proxy_builder_spares_total{outcome="made"}', 0),
            m.get('nrbc_proxy_builder_spares_total{outcome="taken"}', 0))


def one_session(stack):
    """One ssh-ng session that the builder's nix-daemon answers (the
    handshake done: NixWire asserts it), then ends."""
    argv = ["ssh"] + stack.sshopts(0).split() + ["nixbld@" + PROXY_ADDRESS,
                                                 "nix-daemon", "--stdio"]
    w = NixWire(argv)
    w.close()
    assert w.p.returncode == 0, w.p.stderr.read()


def test_a_burst_of_sessions_takes_builder_connections_made_ahead(stack):
    # Sessions one after another, as Nix's build hook opens them: from the
    # second on the proxy keeps an authenticated connection to the builder
    # ready, and the next session takes it instead of connecting.
    made0, taken0 = spares(stack)
    mark = len(stack.proxy.log())
    for _ in range(4):
        one_session(stack)
    made, taken = spares(stack)
    assert made - made0 >= 2 and taken - taken0 >= 2, (made0, made, taken0, taken)
    assert "connected to the builder (a connection made ahead)" in stack.proxy.log()[mark:]
    # A spare the builder closed while nobody read it (here: its sshd
    # killed) is never handed out: the next session connects afresh.
    time.sleep(0.5)
    pids = kubelet_sshd_sessions(stack.kubelet)
    assert pids, "no spare connection's sshd under the test kubelet"
    for p in pids:
        os.kill(p, signal.SIGTERM)
    time.sleep(0.5)
    made1, taken1 = spares(stack)
    one_session(stack)
    assert spares(stack)[1] == taken1, "a closed spare was taken"
    # Unused, spares go after their lifetime (5 s), and their sshd with them.
    wait_for(lambda: not kubelet_sshd_sessions(stack.kubelet), 20,
             what="the spare connections closed after their lifetime")
