"""The Nix client matrix: two Nix clients against two Nix builders, through
the proxy, over ssh:// and ssh-ng://, every output equal to a local build's.

  clients   the host's Nix (Debian 12: 2.8), and Debian 13's Nix 2.26 from
            the root test/images/nix-client-root.sh made (nix_root.py: a
            mount namespace and chroot, the host's network)
  builders  "test-kubelet": the test kubelet's builder pods, which run
            builder/entrypoint.sh as host processes on the host's Nix
            (2.8); "real-node": the builder image (Debian 13: Nix 2.26,
            OpenSSH 10) in containers on a real node, behind the proxy's
            own pod (the nrbc image: libssh 0.11, libssh2 1.11)

Nix 2.26 is also driven through its new CLI: `nix build --builders`,
`nix store info` (and its old name `nix store ping`), `nix copy --to
ssh-ng://`. The local build every output is compared with is the host's
Nix's, on a store of its own: equal store paths also show that both Nix
versions make the same derivations of the same expressions.

Cost: the real node's stack (about 60 s to start), then a few seconds a
build; the root is made by test/setup (about 40 s once)."""

import json
import os
import subprocess
import uuid

import pytest

from conftest import salt
from nix_root import ChrootNix, root_path
from nix_wire import NixWire
from real_stack import RealStack
from stack import Stack
from test_e2e import closure

# What each builder runs: the test kubelet runs the host's Nix; the real
# node the image's (NRBC_BUILDER_DEBIAN, test/images/build.sh).
IMAGE_NIX = {"12": "2.8.", "13": "2.26."}


def host_nix_version():
    r = subprocess.run(["nix-build", "--version"], stdout=subprocess.PIPE, text=True, check=True)
    return r.stdout.split()[-1]


@pytest.fixture(scope="module")
def nix_root():
    return root_path()


@pytest.fixture(scope="module", params=["test-kubelet", "real-node"])
def builders(request, tmp_path_factory):
    """(name, stack, the builder's Nix version prefix)."""
    d = tmp_path_factory.mktemp("clients-" + request.param)
    if request.param == "test-kubelet":
        s = Stack(request.getfixturevalue("cluster"), request.getfixturevalue("kubelet"),
                  request.getfixturevalue("nrbc_bin"), d)
        want = ".".join(host_nix_version().split(".")[:2]) + "."
    else:
        c = request.getfixturevalue("real_cluster")
        s = RealStack(c, d, c.node.gateway, int(c.server.rsplit(":", 1)[1]))
        want = IMAGE_NIX[os.environ.get("NRBC_BUILDER_DEBIAN", "13")]
    s.install().start()
    try:
        yield request.param, s, want
    finally:
        s.stop()


@pytest.fixture
def new_nix(nix_root, tmp_path):
    c = ChrootNix(nix_root, tmp_path / "chroot")
    assert c.version().startswith("2.26."), c.version()
    return c


def chroot_sshopts(client, stack):
    return client.sshopts(stack.proxy_port, stack.keys[stack.USERS[0]], stack.known_hosts())


def assert_as_local(nix_client, remote_out, read, args, n):
    """remote_out (read with `read`) is what the host's Nix builds locally,
    path and contents, its whole closure too."""
    local = nix_client.build_local("graph.nix", args=args)
    assert remote_out == local.out
    paths = closure(local.store, local.out)
    assert len(paths) == n + 1, paths
    for path in paths:
        assert read(path) == nix_client.read(path, store=local.store), path


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_host_nix_builds_through_the_proxy(builders, nix_client, scheme):
    name, stack, _ = builders
    args = {"salt": salt(), "n": 3}
    remote = nix_client.build("graph.nix", builders=stack.builders(scheme),
                              sshopts=stack.sshopts(), args=args)
    print("Nix %s client, %s builder, %s://: %.2f s" % (host_nix_version(), name, scheme,
                                                        remote.seconds))
    assert len(closure(nix_client.store, remote.out)) == 4
    assert_as_local(nix_client, remote.out, nix_client.read, args, 3)


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_2_26_builds_through_the_proxy(builders, nix_client, new_nix, scheme):
    name, stack, _ = builders
    args = {"salt": salt(), "n": 3}
    remote = new_nix.build("graph.nix", builders=stack.builders(scheme),
                           sshopts=chroot_sshopts(new_nix, stack), args=args)
    print("Nix 2.26 client, %s builder, %s://: %.2f s" % (name, scheme, remote.seconds))
    assert len(new_nix.closure(remote.out)) == 4
    assert_as_local(nix_client, remote.out, new_nix.read, args, 3)


def test_nix_2_26_store_info_names_the_builders_nix(builders, new_nix):
    """`nix store info` over ssh-ng reaches a builder and says which Nix
    it is: the matrix's builders are the ones it claims."""
    name, stack, want = builders
    url = "ssh-ng://nixbld@" + stack.proxy_address
    opts = chroot_sshopts(new_nix, stack)
    r = new_nix.run(["nix", "store", "info", "--json", "--store", url], sshopts=opts,
                    timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # (Nix 2.26 prints the url as "ssh-ng://", without the host.)
    assert info["url"].startswith("ssh-ng://") and info["version"].startswith(want), info
    # The user is the builder's trusted user (what a remote build needs);
    # a Nix 2.8 daemon does not say (worker protocol 1.34; 1.35 does).
    if want == "2.8.":
        assert "trusted" not in info, info
    else:
        assert info["trusted"] in (1, True), info
    # Its old name, which scripts and nrbc client-config --check use.
    r = new_nix.run(["nix", "store", "ping", "--store", url], sshopts=opts, timeout=120)
    assert r.returncode == 0, r.stderr
    # (It prints to stderr.)
    assert "Version: " + want in r.stdout + r.stderr, r.stderr


def test_nix_2_26_new_cli_build(builders, nix_client, new_nix):
    """`nix build --builders ... --max-jobs 0`: every derivation remote."""
    name, stack, _ = builders
    args = {"salt": salt(), "n": 3}
    argv = ["nix", "build", "--no-link", "--print-out-paths", "--max-jobs", "0",
            "--store", "/work/client-store", "--builders", stack.builders("ssh-ng"),
            "--option", "builders-use-substitutes", "false",
            "-f", "/exprs/graph.nix", "--argstr", "salt", args["salt"], "--arg", "n", "3"]
    r = new_nix.run(argv, sshopts=chroot_sshopts(new_nix, stack))
    assert r.returncode == 0, r.stderr
    (out,) = r.stdout.split()
    assert len(new_nix.closure(out)) == 4
    assert_as_local(nix_client, out, new_nix.read, args, 3)


def test_nix_2_26_copy_to_the_builder(builders, new_nix):
    """`nix copy --to ssh-ng://` puts a path of the client's store on the
    key's builder, byte for byte (the same NAR hash there)."""
    name, stack, _ = builders
    f = os.path.join(new_nix.dir, "payload")
    with open(f, "wb") as fh:
        fh.write(os.urandom(1 << 20) + uuid.uuid4().hex.encode())
    store = ["--store", "/work/client-store"]
    r = new_nix.run(["nix", "store", "add", "--mode", "flat"] + store + [new_nix.inside(f)])
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert path.startswith("/nix/store/"), r.stdout
    r = new_nix.run(["nix", "path-info", "--json"] + store + [path])
    assert r.returncode == 0, r.stderr
    local = _path_info(r.stdout, path)

    url = "ssh-ng://nixbld@" + stack.proxy_address
    opts = chroot_sshopts(new_nix, stack)
    # A session held open makes its builder the key's fullest, which is the
    # one the key's next sessions join: the copy and the look-up after it
    # reach the same builder even if the key holds others from earlier
    # tests.
    held = NixWire(["ssh"] + stack.sshopts().split() + [
        "nixbld@" + stack.proxy_address, "nix-daemon", "--stdio"])
    try:
        r = new_nix.run(["nix", "copy", "--to", url] + store + [path], sshopts=opts,
                        timeout=120)
        assert r.returncode == 0, r.stderr
        r = new_nix.run(["nix", "path-info", "--json", "--store", url, path], sshopts=opts,
                        timeout=120)
        assert r.returncode == 0, (r.stderr, [(b["metadata"]["name"], b.get("status"))
                                              for b in stack.nixbuilders()])
    finally:
        held.close()
    remote = _path_info(r.stdout, path)
    assert remote["narHash"] == local["narHash"] and remote["narSize"] == local["narSize"], \
        (remote, local)


def _path_info(text, path):
    """One path's entry of `nix path-info --json` (a list before Nix 2.19,
    an object keyed by path after)."""
    info = json.loads(text)
    if isinstance(info, dict):
        return info[path]
    (entry,) = [e for e in info if e["path"] == path]
    return entry


def test_nix_2_26_remote_program_and_remote_store(builders, new_nix):
    """What current clients send when users set remote-program (an absolute
    path) and remote-store (`nix-daemon --stdio --store daemon`) goes
    through; another store is refused with one line saying why."""
    name, stack, want = builders
    opts = chroot_sshopts(new_nix, stack)
    base = "ssh-ng://nixbld@" + stack.proxy_address
    # The test kubelet's builders run the host's Nix, in /usr/bin; the
    # image also has an installer's profile path.
    programs = ["/usr/bin/nix-daemon"]
    if name == "real-node":
        programs.append("/nix/var/nix/profiles/default/bin/nix-daemon")
    for program in programs:
        url = base + "?remote-program=%s&remote-store=daemon" % program
        r = new_nix.run(["nix", "store", "info", "--json", "--store", url], sshopts=opts,
                        timeout=120)
        assert r.returncode == 0, (url, r.stderr)
        assert json.loads(r.stdout)["version"].startswith(want), r.stdout
    r = new_nix.run(["nix", "store", "info", "--store",
                     base + "?remote-store=/home/nixbld/store"], sshopts=opts, timeout=120)
    assert r.returncode != 0, r.stdout
    assert "remote-store may be daemon or auto" in r.stderr, r.stderr
    r = new_nix.run(["nix", "store", "info", "--store",
                     base + "?remote-program=/tmp/nix-daemon"], sshopts=opts, timeout=120)
    assert r.returncode != 0, r.stdout
    assert "remote-program may name them only bare" in r.stderr, r.stderr
