"""End to end, as a user meets nrbc: `kubectl apply -k manifests`, the
controller and proxy running as the manifests say, and a real Nix client
building through the proxy. Afterwards nothing is left in the cluster."""

import subprocess
import threading
import time

import pytest

from conftest import salt
from stack import Stack


def closure(store, path):
    r = subprocess.run(["nix-store", "--store", store, "-qR", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack"))
    s.install().start()
    yield s
    s.stop()


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_build_through_nrbc(stack, nix_client, scheme):
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders(scheme),
                              sshopts=stack.sshopts(), args=args)
    local = nix_client.build_local("simple.nix", args=args)
    assert remote.out == local.out
    assert nix_client.has(remote.out)
    assert nix_client.read(remote.out) == nix_client.read(local.out, store=local.store)
    stack.wait_clean()


def build_graph(stack, nix_client, scheme, n):
    """graph.nix of n + 1 derivations through `stack`; every path of the
    closure equal to a local build's."""
    args = {"salt": salt(), "n": n}
    remote = nix_client.build("graph.nix", builders=stack.builders(scheme),
                              sshopts=stack.sshopts(), args=args)
    local = nix_client.build_local("graph.nix", args=args)
    assert remote.out == local.out
    paths = closure(nix_client.store, remote.out)
    assert len(paths) == n + 1, paths
    for path in paths:
        assert nix_client.read(path) == nix_client.read(path, store=local.store), path
    return remote


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_graph_of_eleven_derivations(stack, nix_client, scheme):
    build_graph(stack, nix_client, scheme, 10)
    stack.wait_clean()


def test_large_output_arrives_intact(stack, nix_client):
    size = 200 * 1024 * 1024
    remote = nix_client.build("size.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args={"salt": salt(), "size": size})
    assert len(nix_client.read(remote.out)) == size
    # Byte for byte what the builder made: the NAR hash the builder's store
    # recorded for it (checked on import) matches the client's copy.
    r = subprocess.run(["nix-store", "--store", nix_client.store, "--verify-path", remote.out],
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    stack.wait_clean()


def test_parallel_sessions_share_one_builder(stack, nix_client):
    # maxJobs 4 = the shipped --builder-slots: four sessions at once, one
    # request each, all served by the one builder of this client key.
    seen = {"max": 0, "names": set(), "builders": set()}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            live = stack.requests()
            seen["max"] = max(seen["max"], len(live))
            seen["names"].update(r["metadata"]["name"] for r in live)
            seen["builders"].update((r.get("status") or {}).get("builder") for r in live
                                    if (r.get("status") or {}).get("builder"))
            time.sleep(0.1)
    t = threading.Thread(target=watch)
    t.start()
    try:
        # Nix starts the four remote builds one after another, seconds
        # apart, and each session waits for a fresh pod (1-4 s on a loaded
        # machine, each pod with a store of its own): a build must outlast
        # that for four sessions to overlap.
        nix_client.build("parallel.nix", builders=stack.builders("ssh", max_jobs=4),
                         sshopts=stack.sshopts(), args={"salt": salt(), "n": 8, "seconds": 15})
    finally:
        stop.set()
        t.join()
    assert seen["max"] == 4, seen
    assert len(seen["names"]) >= 8, seen
    assert len(seen["builders"]) == 1, seen
    stack.wait_clean()
