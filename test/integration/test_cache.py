"""Inputs from a binary cache (issue 14), end to end: the shipped manifests,
with the builders' nix.conf trusting a signed binary cache served over HTTP
on the loopback test network (never the public one). A closure-shaped build
whose shared input (a chain of store paths) is in that cache, with the
client's `builders-use-substitutes = true`: the builder fetches the input
from the cache and the client uploads almost nothing through the proxy;
with the cache unreachable the build still works, by uploading."""

import os
import subprocess

import pytest

from binary_cache import NIXOS_CACHE, NIXOS_CACHE_KEY, BinaryCache, nix_conf_settings
from conftest import REPO, NixClient, salt
from stack import NAMESPACE, Stack

MIB = 1024 * 1024
SIZE = 16 * MIB        # the shared input's closure: 4 store paths of 4 MiB
PARTS = 4
UP = 'nrbc_proxy_bytes_total{direction="up"}'


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = BinaryCache(tmp_path_factory.mktemp("cache"))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory, cache):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-cache"), cache=cache)
    s.install().start()
    yield s
    s.stop()


def sandbox():
    return NixClient.local_sandbox_paths() + " /usr/bin"


def closure_args():
    return {"salt": salt(), "n": 10, "size": SIZE, "parts": PARTS}


def build_input(client, args):
    """The client builds the shared input (its whole chain) itself, locally."""
    b = client.build("closure.nix", args=args, max_jobs=1,
                     extra=["-A", "big", "--option", "sandbox-paths", sandbox()])
    closure = subprocess.run(
        ["nix-store", "--store", client.store, "-qR", b.out], stdout=subprocess.PIPE, text=True,
        check=True).stdout.split()
    assert len(closure) == PARTS, closure
    return b.out, closure


def publish(cache, tmp_path, args):
    """Someone (CI, say) built the same input and pushed it to the cache."""
    pub = NixClient(tmp_path / "publisher")
    os.makedirs(pub.dir, exist_ok=True)
    top, closure = build_input(pub, args)
    cache.add(pub.store, [top])
    return closure


USE_SUBS = ["--option", "builders-use-substitutes", "true"]


def client_options(cache_url, key):
    """A client configured as the README says (builders-use-substitutes),
    whose own substituters list the same cache as the builders'."""
    return ["--option", "builders-use-substitutes", "true",
            "--option", "substituters", cache_url,
            "--option", "trusted-public-keys", key]


def builder_logs(stack):
    """The logs of the builder pods serving clients (for failure messages)."""
    return "\n".join("--- pod %s\n%s" % (p["metadata"]["name"],
                                         stack.kubelet.pod_log(p["metadata"]["uid"])[-6000:])
                     for p in stack.builder_pods())


def remote_build(stack, client, args, extra, scheme="ssh-ng"):
    up0 = stack.proxy_metrics()[UP]
    b = client.build("closure.nix", builders=stack.builders(scheme), sshopts=stack.sshopts(),
                     args=args, extra=extra, check=False)
    assert b.returncode == 0, "nix-build failed (%d):\n%s\nbuilders:\n%s" % (
        b.returncode, b.stderr[-6000:], builder_logs(stack))
    return b, stack.proxy_metrics()[UP] - up0


def same_as_local(client, remote, args):
    local = client.build("closure.nix", args=args, max_jobs=1,
                         store=os.path.join(client.dir, "local-store"),
                         extra=["--option", "sandbox-paths", sandbox()])
    assert remote.out == local.out
    assert client.read(remote.out) == client.read(local.out, store=local.store)


def test_shipped_builders_substitute_from_the_public_cache_tests_never(stack, cache):
    shipped = nix_conf_settings(open(os.path.join(REPO, "manifests", "nix-config.yaml")).read()
                                .split("nix.conf: |", 1)[1])
    assert shipped["substituters"] == NIXOS_CACHE, shipped
    assert shipped["trusted-public-keys"] == NIXOS_CACHE_KEY, shipped
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "builders-use-substitutes = true" in readme
    # What the test builders get instead: the loopback cache only.
    st, cm = stack.cluster.api("GET", "/api/v1/namespaces/%s/configmaps/nix-config" % NAMESPACE)
    assert st == 200, cm
    got = nix_conf_settings(cm["data"]["nix.conf"])
    assert got["substituters"] == cache.url, got
    assert cache.url.startswith("http://127."), cache.url
    assert got["trusted-public-keys"] == cache.public_key, got
    assert "cache.nixos.org" not in cm["data"]["nix.conf"]
    assert got["trusted-users"] == "root nixbld" and got["sandbox"] == "false", got


# client_subs "none": the client lists no substituters of its own (the
# tests' default `--option substituters ""`), the builders' nix.conf alone
# names the cache; "cache": the client lists the same cache (and its key).
@pytest.mark.parametrize("scheme,client_subs", [("ssh-ng", "none"), ("ssh", "none"),
                                                ("ssh-ng", "cache")])
def test_input_in_the_cache_does_not_cross_the_proxy(stack, cache, tmp_path, scheme, client_subs):
    args = closure_args()
    closure = publish(cache, tmp_path, args)
    client = NixClient(tmp_path / "client")
    os.makedirs(client.dir)
    build_input(client, args)
    served0 = len(cache.served("/nar/"))
    opts = client_options(cache.url, cache.public_key) if client_subs == "cache" else USE_SUBS
    remote, up = remote_build(stack, client, args, opts, scheme)
    fetched = len(cache.served("/nar/")) - served0
    print("%s: %.2f MiB up through the proxy for a %d MiB input in the cache; "
          "%d NARs fetched from the cache" % (scheme, up / MIB, SIZE // MIB, fetched))
    # The builder fetched the whole chain from the cache ...
    assert fetched >= PARTS, cache.served("/nar/")
    # ... and the client sent none of it (what goes up: drvs, protocol).
    assert up < SIZE / PARTS / 4, up
    same_as_local(client, remote, args)
    stack.wait_clean()


def fresh_builders(stack, cache):
    """The builders' nix.conf names `cache`; builders made before (pool ones
    included) go, so the next session's builder reads it."""
    stack.set_builder_substituters(cache)
    stack.delete_builders()
    stack.wait_clean()


def test_cache_unreachable_the_build_uploads(stack, cache, tmp_path):
    """The builders' cache is down (nothing listens on its port: connections
    are refused). The builders cannot substitute, so the client uploads the
    input as it would without a cache, and the build succeeds.

    The cache is down from the builder's start: its nix-daemon then drops
    it from the substituters. A cache that goes down while a builder is
    using it can crash the builder's nix-daemon worker in Nix 2.8 (see
    docs/operations.md, "Binary caches"); that is Nix's to fix."""
    args = closure_args()
    publish(cache, tmp_path, args)
    client = NixClient(tmp_path / "client")
    os.makedirs(client.dir)
    build_input(client, args)
    down = cache.unreachable()
    fresh_builders(stack, down)
    try:
        served0 = len(cache.served("/nar/"))
        remote, up = remote_build(stack, client, args, USE_SUBS)
        assert len(cache.served("/nar/")) == served0
    finally:
        fresh_builders(stack, cache)
    print("cache down: %.2f MiB up through the proxy for a %d MiB input" % (up / MIB,
                                                                           SIZE // MIB))
    assert SIZE <= up <= SIZE * 1.1 + 4 * MIB, up
    same_as_local(client, remote, args)
    stack.wait_clean()
