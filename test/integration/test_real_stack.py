"""nrbc deployed as it ships, on a real node (real_stack.py): the images
built from the repository's Containerfiles, the controller and proxy as
their Deployments in containers, builder pods as containers with the
securityContext, probes and resources the controller sets, and a real Nix
client building through the proxy's pod."""

import base64
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from binary_cache import BinaryCache
from conftest import NIX_DIR, NixClient, free_port, pod_ready, salt, wait_for
from nix_wire import NixWire
from real_stack import BUILDER_IMAGE, IMAGE, RealStack, containerd_ids
from stack import NAMESPACE, SECRET
from tcp_lb import TcpLoadBalancer

from test_e2e import build_graph


@pytest.fixture(scope="module")
def node_cache(real_cluster, tmp_path_factory):
    """The test binary cache, on the node's address (the one address off
    the pod network that the node's pods reach): the builders' only
    substituter, allowed by the test stack's addition to the egress policy."""
    c = BinaryCache(tmp_path_factory.mktemp("node-cache"), address=real_cluster.node.gateway)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def stack(real_cluster, tmp_path_factory, node_cache):
    c = real_cluster
    api_port = int(c.server.rsplit(":", 1)[1])
    s = RealStack(c, tmp_path_factory.mktemp("real-stack"), c.node.gateway, api_port,
                  cache=node_cache)
    s.install().start()
    yield s
    s.stop()


def builder_pods(stack):
    return stack.pods("nrbc-builder")


def test_deployments_run_as_shipped(stack):
    controllers = stack.pods("nrbc-controller")
    proxies = stack.pods("nrbc-proxy")
    assert len(controllers) == 2 and len(proxies) == 2
    for p in controllers + proxies:
        (c,) = p["spec"]["containers"]
        assert c["image"] == IMAGE
        ids = containerd_ids(p)
        assert ids and all(i.startswith("containerd://") for i in ids), ids
        assert (ipaddress.ip_address(p["status"]["podIP"])
                in ipaddress.ip_network(stack.cluster.node.subnet)), p["status"]
    # Not root, as the manifests and the image say.
    r = stack.exec(proxies[0]["metadata"]["name"], "id", "-u")
    assert r.stdout.strip() == "65532"
    # One leader, one standby, both ready (the standby's caches are synced).
    leader, _ = stack.wait_leader()
    assert leader in {p["metadata"]["name"] for p in controllers}
    for p in controllers:
        cond = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert cond.get("Ready") == "True", p["status"]


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_build_through_the_proxy_pod(stack, nix_client, scheme):
    build_graph(stack, nix_client, scheme, 4)

    served = [b for b in stack.nixbuilders() if b["spec"].get("identity")]
    assert served, stack.nixbuilders()
    pods = {p["metadata"]["name"]: p for p in builder_pods(stack)}
    for b in served:
        pod = pods.get("nix-builder-" + b["metadata"]["name"])
        assert pod is not None, (b["metadata"]["name"], list(pods))
        assert pod["spec"]["containers"][0]["image"] == BUILDER_IMAGE
        assert all(i.startswith("containerd://") for i in containerd_ids(pod))
    stack.wait_clean()


def test_builder_pod_is_the_container_the_controller_asked_for(stack):
    wait_for(lambda: builder_pods(stack) and all(
        (p["status"].get("containerStatuses") or [{}])[0].get("ready")
        for p in builder_pods(stack)), 120, what="ready warm-pool builder pods")
    pod = builder_pods(stack)[0]
    name = pod["metadata"]["name"]
    (spec,) = pod["spec"]["containers"]
    # The readiness probe the controller set is what made it ready.
    assert spec["readinessProbe"]["tcpSocket"]["port"] == 22
    # The capabilities the container really has are the ones asked for
    # (all dropped, a few added back), as the kernel reports them.
    added = set(spec["securityContext"]["capabilities"]["add"])
    status = stack.exec(name, "cat", "/proc/1/status").stdout
    capeff = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("CapEff:")), 16)
    assert bin(capeff).count("1") == len(added), (hex(capeff), added)
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    nnp = next(line.split()[1] for line in status.splitlines()
               if line.startswith("NoNewPrivs:"))
    assert nnp == "1"
    # The memory limit the controller set is the container's cgroup's.
    limit = spec["resources"]["limits"]["memory"]
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    want = int(limit[:-2]) * units[limit[-2:]] if limit[-2:] in units else int(limit)
    r = stack.exec(name, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                   "2>/dev/null || cat /sys/fs/cgroup/memory.max")
    assert int(r.stdout.split()[0]) == want, (r.stdout, limit)


def test_leader_failover(stack, nix_client):
    leader, holder = stack.wait_leader()
    stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")
    new, _ = stack.wait_leader(timeout=90, not_=holder)
    assert new != leader
    # The new leader serves: a session gets a builder and a build works.
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args=args)
    local = nix_client.build_local("simple.nix", args=args)
    assert remote.out == local.out
    # The Deployment replaces the deleted replica.
    wait_for(lambda: len([p for p in stack.pods("nrbc-controller")
                          if p["status"].get("phase") == "Running"]) == 2, 120,
             what="two running controller replicas again")


def test_busy_builder_evicted_mid_build_finishes_the_build(stack, nix_client):
    """An eviction through the Eviction API (what `kubectl drain` and the
    cluster autoscaler send) of the builder serving a build, on the real
    node with the shipped image and manifests: the derivation it runs ends
    there, later ones go to another builder, the build completes with the
    outputs of a local build, and the evicted pod goes once its session
    has ended."""
    args = {"salt": salt(), "n": 3, "seconds": 10}
    seen = {"builders": set(), "evicted": None, "evict_status": None}
    stop = threading.Event()

    def evict_the_busy_builder():
        while not stop.is_set():
            live = [r for r in stack.requests()
                    if (r.get("status") or {}).get("phase") == "Running"]
            for r in live:
                seen["builders"].add(r["status"].get("builder"))
            if live and seen["evicted"] is None:
                pod = live[0]["status"]["podName"]
                time.sleep(2)   # mid-derivation
                st, body = stack.cluster.api(
                    "POST", "/api/v1/namespaces/%s/pods/%s/eviction" % (NAMESPACE, pod),
                    {"apiVersion": "policy/v1", "kind": "Eviction",
                     "metadata": {"name": pod, "namespace": NAMESPACE}})
                seen["evicted"], seen["evict_status"] = pod, st
            time.sleep(0.2)

    t = threading.Thread(target=evict_the_busy_builder)
    t.start()
    try:
        # One job at a time: each derivation is one session of 10 s.
        remote = nix_client.build("parallel.nix", builders=stack.builders("ssh-ng", max_jobs=1),
                                  sshopts=stack.sshopts(), args=args)
    finally:
        stop.set()
        t.join()
    assert seen["evict_status"] == 201, seen
    local = nix_client.build_local("parallel.nix", args=args)
    assert remote.out == local.out
    assert nix_client.read(remote.out) == nix_client.read(local.out, store=local.store)
    # Served by more than the evicted builder.
    assert len(seen["builders"] - {None}) >= 2, seen
    wait_for(lambda: seen["evicted"] not in {p["metadata"]["name"] for p in builder_pods(stack)},
             60, what="the evicted builder pod to go")


def test_build_over_its_memory_limit_fails_and_says_why(stack, nix_client):
    """A derivation that takes memory without end, on a builder with the
    controller's memory limit (1Gi here): the kernel kills it, the build
    fails, the user is told it was killed, and the builder serves on."""
    r = nix_client.build("memory.nix", builders=stack.builders("ssh-ng", max_jobs=1),
                         sshopts=stack.sshopts(), args={"salt": salt()}, check=False,
                         timeout=300)
    print("the user saw:\n%s" % r.stderr[-2000:])
    assert r.returncode != 0
    # Node-dependent: with cgroup v1 (this machine) the kernel kills the
    # build's process, and Nix says "signal 9 (Killed)"; with cgroup v2 and
    # memory.oom.group the whole container goes and nrbc names OOMKilled.
    assert "Killed" in r.stderr or "OOMKilled" in r.stderr, r.stderr[-3000:]
    # The next build of the same key works.
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args=args)
    assert remote.out == nix_client.build_local("simple.nix", args=args).out


# ---- root on one's own builder (issue 21) -------------------------------------------

# Where a builder pod could hold keys, besides its volumes' mount points
# (taken from the pod spec): sshd's usual places, the entrypoint's copies,
# and a service-account token, which must not be there.
KEY_DIRS = ("/etc/ssh", "/etc/nrbc", "/run/nrbc", "/root/.ssh", "/home/nixbld/.ssh",
            "/run/secrets", "/var/run/secrets")
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def identity_of(pub_path):
    """The identity the proxy gives a client key: the first 128 bits of the
    SHA-256 of its public key blob, in hex (proxy_session_auth.c)."""
    blob = base64.b64decode(open(pub_path).read().split()[1])
    return hashlib.sha256(blob).hexdigest()[:32]


def public_of(text, d):
    """The "type base64" public half of a private key (any format ssh-keygen
    reads), or None if `text` is no private key."""
    path = os.path.join(d, "k-%s" % hashlib.sha256(text).hexdigest()[:16])
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(text)
    r = subprocess.run(["ssh-keygen", "-y", "-f", path], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        os.unlink(path)
        return None
    return " ".join(r.stdout.split()[:2]), path


def public_line(pub_path):
    return " ".join(open(pub_path).read().split()[:2])


def held_session(ssh_argv):
    """A session through the proxy that stays open (`nix-store --serve`
    waits for commands), bridged to its builder once the handshake is
    answered: it keeps its key's builder from going idle."""
    p = subprocess.Popen(ssh_argv + ["nix-store", "--serve", "--write"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(struct.pack("<QQ", 0x390c9deb, 0x205))
    p.stdin.flush()
    assert struct.unpack("<Q", p.stdout.read(8))[0] == 0x5452eecb, p.stderr.read()
    p.stdout.read(8)
    return p


def end_session(p):
    p.stdin.close()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def builder_pod_of(stack, identity):
    """The running pod of the one NixBuilder of `identity`."""
    def find():
        bs = [b for b in stack.nixbuilders() if b["spec"].get("identity") == identity
              and not b["metadata"].get("deletionTimestamp")]
        if len(bs) != 1:
            return None
        name = (bs[0].get("status") or {}).get("podName")
        pods = [p for p in builder_pods(stack) if p["metadata"]["name"] == name]
        return pods[0] if pods and pods[0]["status"].get("podIP") else None
    return wait_for(find, 60, what="the builder pod of identity %s" % identity)


def read_keys_dump(text):
    """keys.nix's output: {"uid": int, "pod": name, "dirs": {dir: present},
    "found": paths with a private key header, "files": {path: bytes, or
    None when unreadable}}."""
    lines = text.splitlines()
    assert lines and lines[-1] == "end", text[-2000:]
    dump = {"dirs": {}, "found": set(), "files": {}}
    for line in lines[:-1]:
        kind, _, rest = line.partition(" ")
        if kind == "uid":
            # Empty in Nix's sandbox, which has no /usr/bin/id.
            dump["uid"] = int(rest) if rest else None
        elif kind == "pod":
            dump["pod"] = rest
        elif kind in ("present", "absent"):
            dump["dirs"][rest] = kind == "present"
        elif kind == "found":
            dump["found"].add(rest)
        elif kind == "file":
            path, _, b64 = rest.rpartition(" ")
            dump["files"][path] = base64.b64decode(b64)
        elif kind == "unreadable":
            dump["files"][rest] = None
        else:
            raise AssertionError("unexpected line in the dump: %r" % line)
    return dump


class FakeSshd:
    """OpenSSH's sshd on a loopback port presenting one host key, letting
    in `authorized` as user nixbld (whose commands run on this machine: a
    Nix client's `nix-daemon --stdio` reaches the host's store)."""

    def __init__(self, host_key_text, authorized):
        # Read by sshd as user nixbld (authorized_keys): not under pytest's
        # 0700 tmp dirs.
        self.dir = tempfile.mkdtemp(prefix="nrbc-fake-sshd-")
        os.chmod(self.dir, 0o755)
        key = os.path.join(self.dir, "host_key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(host_key_text)
        ak = os.path.join(self.dir, "authorized_keys")
        with open(ak, "w") as f:
            f.write(authorized)
        os.chmod(ak, 0o644)
        self.port = free_port("127.0.0.1")
        cfg = os.path.join(self.dir, "sshd_config")
        with open(cfg, "w") as f:
            f.write("ListenAddress 127.0.0.1\nPort %d\nHostKey %s\nPidFile %s/pid\n"
                    "AuthorizedKeysFile %s\nAuthenticationMethods publickey\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nPermitRootLogin no\nAllowUsers nixbld\nStrictModes no\n"
                    "LogLevel VERBOSE\n" % (self.port, key, self.dir, ak))
        os.makedirs("/run/sshd", exist_ok=True)
        self.log_path = os.path.join(self.dir, "log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def banner():
            assert self.proc.poll() is None, "fake sshd exited:\n" + self.log()
            try:
                with socket.create_connection(("127.0.0.1", self.port), 2) as s:
                    return s.recv(4).startswith(b"SSH-")
            except OSError:
                return False
        wait_for(banner, 30, what="the fake sshd's banner")

    def log(self):
        return open(self.log_path, errors="replace").read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def nix_store_ping(home, ssh_config, address):
    """What the second client's Nix does to reach `ssh-ng://nixbld@ADDRESS`
    with the files `nrbc client-config --write` gave it."""
    env = dict(os.environ, HOME=home, NIX_SSHOPTS="-F " + ssh_config)
    env.pop("NIX_REMOTE", None)
    return subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store",
                           "ping", "--store", "ssh-ng://nixbld@" + address],
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def ssh_login(ip, known_hosts, key, user):
    """`id -un` over SSH at ip:22 with `key`, the host checked strictly."""
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "UserKnownHostsFile=" + known_hosts, "-o", "StrictHostKeyChecking=yes",
         "-o", "ConnectTimeout=20", "%s@%s" % (user, ip), "id", "-un"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=60)


def test_root_on_own_builder_reads_every_key_and_gets_nothing_else(stack, nix_client, nrbc_bin,
                                                                    tmp_path):
    """An authorized client, as the trusted Nix user of its own builder,
    turns its sandbox and the build users off (`sandbox = false`,
    `build-users-group = ""` in its session's
    wopSetOptions, through the proxy: Nix 2.8's own ssh-ng client sends no
    settings, so nix_wire.py speaks the protocol) and builds a derivation
    that runs as root in the builder pod and reads every file under the
    pod's mounts and key directories, and every private key anywhere in it. With every private
    key it got: it cannot pass for the proxy to a second client set up by
    `nrbc client-config` (that client's Nix refuses the host key), and it
    cannot log in to any other builder's sshd (as nixbld or root). The
    controls: the proxy's real host key served the same way is taken by
    that client, and the proxy's login key gets into every one of those
    builders; without the override the same build runs as a build user and
    reads no key."""
    d = str(tmp_path)
    attacker, victim = stack.USERS[0], stack.USERS[1]
    proxy_host_key = public_line(stack.keys["host-key"] + ".pub")
    proxy_login_key = public_line(stack.keys["builder-key"] + ".pub")

    # The attacker's builder A, kept while the test runs.
    held = [held_session(["ssh"] + shlex.split(stack.sshopts(0)) +
                         ["nixbld@" + stack.proxy_address])]
    try:
        pod_a = builder_pod_of(stack, identity_of(stack.keys[attacker] + ".pub"))
        name_a = pod_a["metadata"]["name"]
        dirs = sorted(set(KEY_DIRS) | {SA_TOKEN_DIR} | {
            m["mountPath"] for c in pod_a["spec"]["containers"]
            for m in c.get("volumeMounts") or []})
        assert "/etc/nrbc/ssh" in dirs, dirs
        assert pod_a["spec"].get("automountServiceAccountToken") is False, pod_a["spec"]

        def read_keys(overrides=None):
            """keys.nix built on A, with `overrides` sent first as the
            session's settings; its output read back with Nix."""
            r = subprocess.run(["nix-instantiate", "--store", nix_client.store,
                                os.path.join(NIX_DIR, "keys.nix"), "--argstr", "salt", salt(),
                                "--argstr", "dirs", " ".join(dirs)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert r.returncode == 0, r.stderr
            drv = r.stdout.strip()
            text = open(os.path.join(nix_client.store, drv.lstrip("/"))).read()
            out = re.match(r'Derive\(\[\("out","([^"]+)"', text).group(1)
            w = NixWire(["ssh"] + shlex.split(stack.sshopts(0)) +
                        ["nixbld@" + stack.proxy_address, "nix-daemon", "--stdio"])
            try:
                if overrides:
                    w.set_options(overrides)
                assert w.add_text(os.path.basename(drv)[33:], text) == drv
                assert w.build([drv + "!out"]) == 1, w.log
            finally:
                w.close()
            env = dict(os.environ, NIX_SSHOPTS=stack.sshopts(0))
            env.pop("NIX_REMOTE", None)
            r = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store",
                                "cat", "--store", "ssh-ng://nixbld@" + stack.proxy_address, out],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            return read_keys_dump(r.stdout)

        def read_keys_as_pod_root():
            """keys.nix's script, run as the builder container's root by
            `kubectl exec`: what the build would do as root."""
            r = subprocess.run(["nix-instantiate", "--store", nix_client.store,
                                os.path.join(NIX_DIR, "keys.nix"), "--argstr", "salt", salt(),
                                "--argstr", "dirs", " ".join(dirs)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert r.returncode == 0, r.stderr
            text = open(os.path.join(nix_client.store, r.stdout.strip().lstrip("/"))).read()
            m = re.search(r'"-c","((?:[^"\\]|\\.)*)"', text)
            script = re.sub(r"\\(.)", lambda c: {"n": "\n", "t": "\t", "r": "\r"}.get(
                c.group(1), c.group(1)), m.group(1))
            r = stack.exec(name_a, "/bin/sh", "-c",
                           'dirs=$1 out=$(mktemp); (%s); cat "$out"; rm -f "$out"' % script,
                           "sh", " ".join(dirs))
            return read_keys_dump(r.stdout)

        # Control: a build user, reading no key. The sandbox is the trusted
        # user's to turn off for its own builds (keys.nix needs the pod's
        # tools, and the sandbox would hide the files the test is about)
        # where the builder's Nix lets the session's settings reach the
        # daemon that builds, as Nix 2.8 does. On Nix 2.26 (Debian 13's
        # builder image) none does, observed with its own client and with
        # nix_wire.py (not sandbox, not build-users-group, not even
        # system): the build stays in the sandbox and reads nothing, and
        # root in the pod is had another way, kubectl exec.
        dump = read_keys({"sandbox": "false"})
        overrides_reach = dump["uid"] is not None
        if overrides_reach:
            assert dump["pod"] == name_a, (dump["pod"], name_a)
            assert dump["uid"] >= 30001, dump["uid"]
            files = dump["files"]
            assert "/etc/nrbc/ssh/host-key" in files, files
            assert files["/etc/nrbc/ssh/host-key"] is None, "a build user read the host key"
            assert not [p for p, v in files.items() if v is not None and public_of(v, d)], \
                "a build user read a private key"
            print("a build user (uid %d) in %s could read %d of %d files, no private key" % (
                dump["uid"], dump["pod"], len([v for v in files.values() if v is not None]),
                len(files)))
        else:
            print("the builder's daemon ignored the session's settings: its sandbox held")
            for attempt in (dump, read_keys({"sandbox": "false", "build-users-group": ""})):
                assert attempt["pod"] == "" and not attempt["found"], attempt
                assert not any(attempt["dirs"].values()), attempt["dirs"]
                assert not [v for v in attempt["files"].values() if v is not None], \
                    attempt["files"]

        # The attack: root, through the trusted user's own settings (or,
        # where they do not reach the daemon, through kubectl exec).
        dump = (read_keys({"sandbox": "false", "build-users-group": ""}) if overrides_reach
                else read_keys_as_pod_root())
        assert dump["uid"] == 0, \
            "the build did not run as root (uid %d): the attack did not run" % dump["uid"]
        assert dump["pod"] == name_a, (dump["pod"], name_a)
        files = dump["files"]
        print("root in %s read %d files:\n  %s" % (dump["pod"], len(files), "\n  ".join(
            "%s (%s)" % (p, "unreadable" if v is None else "%d bytes" % len(v))
            for p, v in sorted(files.items()))))
        unreadable = sorted(p for p, v in files.items() if v is None)
        assert not unreadable, "root could not read: %s" % unreadable
        # The search of the whole pod for private keys ran: it found the
        # entrypoint's copy of the host key.
        assert "/run/nrbc/ssh_host_key" in dump["found"], dump["found"]
        # No Kubernetes credentials in a builder.
        assert dump["dirs"][SA_TOKEN_DIR] is False, dump["dirs"]
        assert not [p for p in files if "/secrets/" in p], files
        # Every private key: the builder's own host key (its Secret, and the
        # entrypoint's copy for sshd), and nothing worth more.
        keys = {}
        for p, v in sorted(files.items()):
            got = public_of(v, d) if v is not None else None
            if got:
                keys.setdefault(got[0], (got[1], []))[1].append(p)
        print("private keys found:\n  %s" % "\n  ".join(
            "%s: %s" % (pub[:40], paths) for pub, (_, paths) in keys.items()))
        own_key = pod_a["metadata"]["annotations"]["nix.io/host-key"]
        assert own_key in keys, (own_key, list(keys))
        assert "/etc/nrbc/ssh/host-key" in keys[own_key][1], keys[own_key]
        assert proxy_host_key not in keys, "the proxy's host key is in a builder"
        assert proxy_login_key not in keys, "the proxy's login key is in a builder"

        # A second client, set up as the README says.
        home = os.path.join(d, "home")
        os.makedirs(home)
        r = subprocess.run([nrbc_bin, "client-config", "--kubeconfig", stack.cluster.kubeconfig,
                            "--identity", stack.keys[victim], "--write"],
                           env=dict(os.environ, HOME=home), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0, r.stdout
        ssh_config = os.path.join(home, ".ssh", "config")
        known = open(os.path.join(home, ".ssh", "known_hosts")).read()
        assert proxy_host_key in known, known
        alias = "[%s]:%d" % (stack.proxy_address, stack.proxy_port)
        assert known.startswith(alias + " "), known
        # It reaches the real proxy (and so gets a builder of its own, B).
        r = nix_store_ping(home, ssh_config, stack.proxy_address)
        assert r.returncode == 0, r.stderr

        # (a) The attacker in the network path between that client and the
        # proxy: the client's connection lands on the attacker's sshd,
        # which presents a key it read; the client checks it against the
        # proxy's entry in its known_hosts.
        def impostor(host_key_text):
            with FakeSshd(host_key_text, open(stack.keys[victim] + ".pub").read()) as fake:
                cfg = os.path.join(d, "ssh_config_impostor")
                with open(cfg, "w") as f:
                    # The first value of an option wins: the address is the
                    # attacker's, the rest (known_hosts, strict checking,
                    # identity) the client's own.
                    f.write("Host %s\n  HostName 127.0.0.1\n  Port %d\n  HostKeyAlias %s\n\n"
                            % (stack.proxy_address, fake.port, alias))
                    f.write(open(ssh_config).read())
                return nix_store_ping(home, cfg, stack.proxy_address), fake.log()

        r, log = impostor(open(stack.keys["host-key"], "rb").read())
        assert r.returncode == 0, "control: the proxy's own key did not pass:\n%s\n%s" % (
            r.stderr, log)
        assert "Accepted publickey for nixbld" in log, log
        for pub, (path, found_at) in keys.items():
            r, log = impostor(open(path, "rb").read())
            print("impostor with the key at %s: %s" % (found_at[0], r.stderr.strip()[-300:]))
            assert r.returncode != 0, "the client took %s for the proxy" % found_at
            assert "Host key verification failed" in r.stderr, r.stderr
            assert "Accepted publickey" not in log, log

        # (b) Every other builder: B (the second client's, held open) and
        # the unclaimed pool builders. Each is checked against its own host
        # key, so what refuses is its sshd's authentication.
        held.append(held_session(["ssh", "-F", ssh_config, "nixbld@" + stack.proxy_address]))
        pod_b = builder_pod_of(stack, identity_of(stack.keys[victim] + ".pub"))
        others = [p for p in builder_pods(stack)
                  if p["metadata"]["name"] != name_a and p["status"].get("podIP")
                  and pod_ready(p)]
        assert pod_b["metadata"]["name"] in {p["metadata"]["name"] for p in others}, others
        for p in others:
            ip = p["status"]["podIP"]
            kh = os.path.join(d, "known_hosts-" + ip)
            with open(kh, "w") as f:
                f.write("%s %s\n" % (ip, p["metadata"]["annotations"]["nix.io/host-key"]))
            r = ssh_login(ip, kh, stack.keys["builder-key"], "nixbld")
            assert r.returncode == 0 and r.stdout.strip() == "nixbld", \
                "control: the proxy's login key did not get into %s: %s" % (
                    p["metadata"]["name"], r.stderr)
            for pub, (path, found_at) in keys.items():
                for user in ("nixbld", "root"):
                    r = ssh_login(ip, kh, path, user)
                    assert r.returncode == 255 and "Permission denied" in r.stderr, \
                        "%s@%s with the key at %s: %d %s %s" % (
                            user, p["metadata"]["name"], found_at, r.returncode, r.stdout,
                            r.stderr)
        print("refused by %d other builders: %s" % (
            len(others), [p["metadata"]["name"] for p in others]))
    finally:
        for p in held:
            end_session(p)


class Outside:
    """A network namespace this test makes, standing for what lies beyond
    the pod network, with a TCP listener on port 443 of two addresses that
    exist only inside it: LINK_LOCAL (169.254.77.x, a metadata service's
    kind of address) and PUBLIC (203.0.113.x, TEST-NET-3: an address on the
    internet's side). The host
    reaches them through a veth pair of the test's own (its host side holds
    the node's gateway address, as the CNI plugin's do, and one /32 route
    per address; the routes go with the veth). Each connection accepted is
    answered with one line naming the address."""

    PORT = 443

    def __init__(self, node):
        # One host per node subnet 127.203.N (claimed per machine), so test
        # runs at the same time do not meet.
        host = 1 + int(node.gateway.split(".")[2]) % 254
        self.LINK_LOCAL = "169.254.77.%d" % host
        self.PUBLIC = "203.0.113.%d" % host
        n = os.getpid() % 100000
        self.ns = "nrbc-egress-%d" % n
        self.host_if, self.peer_if = "egrh%05d" % n, "egrp%05d" % n
        self.gateway, self.subnet = node.gateway, node.subnet
        self.proc = None

    def _run(self, *argv):
        subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start(self):
        self.stop()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        self._run("ip", "netns", "add", self.ns)
        self._run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                  self.peer_if)
        self._run("ip", "link", "set", self.peer_if, "netns", self.ns)
        ns = ["ip", "netns", "exec", self.ns]
        self._run(*ns, "sysctl", "-qw", "net.ipv4.conf.%s.route_localnet=1" % self.peer_if)
        for cmd in (["link", "set", "lo", "up"],
                    ["addr", "add", self.LINK_LOCAL + "/32", "dev", self.peer_if],
                    ["addr", "add", self.PUBLIC + "/32", "dev", self.peer_if],
                    ["link", "set", self.peer_if, "up"],
                    # the node's pods are loopback addresses: routed out, not local
                    ["route", "add", self.gateway + "/32", "dev", self.peer_if, "table", "local"],
                    ["route", "add", self.subnet, "via", self.gateway, "dev",
                     self.peer_if, "table", "local"]):
            self._run(*ns, "ip", *cmd)
        for knob in ("route_localnet", "forwarding"):
            with open("/proc/sys/net/ipv4/conf/%s/%s" % (self.host_if, knob), "w") as f:
                f.write("1")
        self._run("ip", "addr", "add", self.gateway + "/32", "dev", self.host_if)
        self._run("ip", "link", "set", self.host_if, "up")
        for a in (self.LINK_LOCAL, self.PUBLIC):
            self._run("ip", "route", "add", a + "/32", "dev", self.host_if, "src", self.gateway)
        server = ("import socket, threading\n"
                  "def serve(addr):\n"
                  "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  "    s.bind((addr, %d)); s.listen(64)\n"
                  "    while True:\n"
                  "        c, _ = s.accept(); c.sendall(b'outside ' + addr.encode() + b'\\n'); c.close()\n"
                  "for a in %r:\n"
                  "    threading.Thread(target=serve, args=(a,)).start()\n"
                  % (self.PORT, [self.LINK_LOCAL, self.PUBLIC]))
        self.proc = subprocess.Popen(ns + [sys.executable, "-c", server],
                                     stdin=subprocess.DEVNULL, start_new_session=True)

        def listening():
            assert self.proc.poll() is None, "the outside listener exited"
            r = subprocess.run(ns + ["ss", "-Htln"], stdout=subprocess.PIPE, text=True)
            return r.stdout.count(":%d " % self.PORT) == 2
        wait_for(listening, 10, what="listeners in " + self.ns)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def outside(stack):
    o = Outside(stack.cluster.node).start()
    yield o
    o.stop()


def reach(stack, pod, host, port, send="", timeout=3):
    """What a TCP client inside `pod` gets from host:port: the answer
    (after sending `send`), or None when no connection came about within
    `timeout` seconds (a policy's drop: the SYN gets no answer)."""
    script = ('exec 3<>/dev/tcp/%s/%d || exit 7; echo connected; printf "%%b" "$1" >&3; '
              'timeout 2 cat <&3; true' % (host, port))
    r = stack.exec(pod, "timeout", str(timeout), "bash", "-c", script, "reach", send,
                   check=False)
    if not r.stdout.startswith("connected"):
        return None
    return r.stdout[len("connected\n"):]


def test_builder_egress_closed_but_for_dns_https_and_the_test_cache(stack, outside, node_cache):
    """With the shipped policy enforced (kube-network-policies on the real
    node), from inside a builder pod: HTTPS to an address outside the
    except ranges and the test cache (the test stack's addition) are
    reached; a listener on a link-local address (port 443 too: only the
    except list stops it), the API server and another builder's sshd are
    not. Positive control: with the builders' policies deleted, the same
    pod reaches all of them; applied again, they are closed again."""
    def ready_pool_builders():
        # Unclaimed (warm-pool) builders: nothing deletes them while no
        # session comes, unlike a served builder after its idle timeout.
        pool = {"nix-builder-" + b["metadata"]["name"] for b in stack.nixbuilders()
                if not b["spec"].get("identity")}
        return [p for p in builder_pods(stack) if p["metadata"]["name"] in pool
                and (p["status"].get("containerStatuses") or [{}])[0].get("ready")]
    wait_for(lambda: len(ready_pool_builders()) >= 2, 120, what="two ready pool builders")
    a, b = ready_pool_builders()[:2]
    pod, other_ip = a["metadata"]["name"], b["status"]["podIP"]
    api = (stack.api_host, stack.api_port)
    cache_get = "GET /nix-cache-info HTTP/1.0\r\n\r\n"

    def cache_answers():
        # The cache's HTTP server answers (with a 404 while nothing is in it).
        got = reach(stack, pod, node_cache.address, node_cache.port, send=cache_get)
        return got is not None and "Server: SimpleHTTP" in got

    closed = {"link-local %s:443" % outside.LINK_LOCAL: (outside.LINK_LOCAL, outside.PORT),
              "the API server %s:%d" % api: api,
              "builder %s's sshd" % b["metadata"]["name"]: (other_ip, 22)}

    def check_enforced():
        # Reached: the cache (the addition) and HTTPS outside.
        wait_for(cache_answers, 30, what="the test cache from " + pod)
        wait_for(lambda: reach(stack, pod, outside.PUBLIC, outside.PORT)
                 == "outside %s\n" % outside.PUBLIC, 30, what="HTTPS outside from " + pod)
        # Not reached, each closed by the policy.
        for what, (host, port) in closed.items():
            assert reach(stack, pod, host, port) is None, "%s reached from %s" % (what, pod)

    check_enforced()

    policies = ("nrbc-builder", stack.TEST_CACHE_POLICY)
    stack.cluster.kubectl("-n", NAMESPACE, "delete", "networkpolicy", *policies)
    try:
        # The positive control: the same destinations, the same pod, no policy.
        wait_for(lambda: reach(stack, pod, outside.LINK_LOCAL, outside.PORT)
                 == "outside %s\n" % outside.LINK_LOCAL, 30,
                 what="link-local listener from %s without the policy" % pod)
        wait_for(lambda: reach(stack, pod, *api) is not None, 30,
                 what="the API server from %s without the policy" % pod)
        wait_for(lambda: (reach(stack, pod, other_ip, 22) or "").startswith("SSH-2.0-"), 30,
                 what="another builder's sshd from %s without the policy" % pod)
        assert cache_answers()
    finally:
        stack.apply_manifests()
    st, body = stack.cluster.api(
        "GET", "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % NAMESPACE)
    assert set(policies) <= {p["metadata"]["name"] for p in body["items"]}, body
    # Closed again once the enforcer has seen the policies come back.
    wait_for(lambda: reach(stack, pod, outside.LINK_LOCAL, outside.PORT, timeout=2) is None,
             30, what="the link-local listener closed again")
    check_enforced()


@pytest.fixture
def cache_file(node_cache):
    """A file made for the test, served by the test binary cache's HTTP
    server on the node's address: what builder pods reach (the test
    stack's egress addition), as a fixed-output fetch from a mirror would."""
    name = "sandbox-fetch-" + salt()
    body = ("nrbc sandbox fetch %s\n" % name).encode()
    path = os.path.join(node_cache.nar_dir, name)
    with open(path, "wb") as f:
        f.write(body)
    try:
        yield {"url": "%s/%s" % (node_cache.url, name), "body": body,
               "hash": hashlib.sha256(body).hexdigest()}
    finally:
        os.remove(path)


def serving_builder(stack, nix_client):
    """A builder pod with an address, made by a build if there is none."""
    pods = [p for p in builder_pods(stack) if p["status"].get("podIP")]
    if not pods:
        nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                         sshopts=stack.sshopts(), args={"salt": salt()})
        pods = [p for p in builder_pods(stack) if p["status"].get("podIP")]
    assert pods, "no builder pod"
    return pods[0]


def test_builds_are_sandboxed(stack, nix_client, cache_file):
    """As shipped, builders build in Nix's sandbox, never without
    (sandbox-fallback = false: a build that ran at all ran sandboxed): an
    ordinary derivation cannot reach a server its builder pod reaches, nor
    see the pod's keys, config or sshd's files, and runs as a build user;
    a fixed-output one fetches from that same server."""
    args = {"salt": salt(), "url": cache_file["url"], "hash": cache_file["hash"]}
    builders = stack.builders("ssh-ng")
    fetched = nix_client.build("sandbox.nix", builders=builders, sshopts=stack.sshopts(),
                               args=args, extra=["-A", "fetched"])
    assert nix_client.read(fetched.out) == cache_file["body"]
    probe = nix_client.build("sandbox.nix", builders=builders, sshopts=stack.sshopts(),
                             args=args, extra=["-A", "probe"])
    seen = nix_client.read(probe.out).decode()
    print("the sandboxed build saw:\n" + seen)
    # Its own network namespace, with only a loopback (where the test
    # network's 127.x addresses lead nowhere): wget ran and could not connect.
    assert "network: unreachable: wget: can't connect to remote host" in seen, seen
    for f in ("/etc/nrbc/ssh/host-key", "/etc/nrbc/ssh/public", "/etc/nix/nix.conf",
              "/run/nrbc/authorized_keys", "/run/nrbc/sshd_config"):
        assert "%s: absent" % f in seen, seen
    # Nix's sandbox maps the build user to uid 1000 of its own namespace.
    assert "uid: 1000" in seen, seen
    # The builder pod that built it: its own user namespace, an unmasked
    # /proc, the Localhost profile; and the pod itself reaches the server,
    # so "unreachable" above is the sandbox's doing, not the network's.
    pod = serving_builder(stack, nix_client)
    spec = pod["spec"]
    assert spec["hostUsers"] is False
    assert spec["securityContext"]["seccompProfile"] == {
        "type": "Localhost", "localhostProfile": "nrbc/builder-sandbox.json"}
    assert spec["containers"][0]["securityContext"]["procMount"] == "Unmasked"
    r = stack.exec(pod["metadata"]["name"], "busybox", "wget", "-q", "-O", "-",
                   cache_file["url"])
    assert r.stdout.encode() == cache_file["body"]
    r = stack.exec(pod["metadata"]["name"], "cat", "/proc/self/uid_map")
    inside, outside, _count = r.stdout.split()
    assert inside == "0" and outside != "0", r.stdout


def test_builder_that_cannot_sandbox_says_so(stack, nix_client):
    """A cluster without user-namespaced pods (an API server or kubelet
    without UserNamespacesSupport drops hostUsers and procMount, so the pod
    runs with the node's users and a masked /proc): such a builder serves
    no unsandboxed build; it exits at start, and its termination message,
    which the NixBuilder's status carries, says why and how to turn
    sandboxing off."""
    spec = serving_builder(stack, nix_client)["spec"]
    spec.pop("hostUsers", None)
    spec["containers"][0]["securityContext"].pop("procMount", None)
    # The shared Secret's public key only: the copy must not depend on the
    # builder's own host-key Secret, which goes when that builder idles out.
    spec["volumes"] = [v if v["name"] != "ssh-keys" else
                       {"name": "ssh-keys", "secret": {
                           "secretName": SECRET, "defaultMode": 0o400,
                           "items": [{"key": "public", "path": "public"}]}}
                       for v in spec["volumes"]]
    name = "nrbc-test-no-userns-" + salt()[:8]
    keep = ("containers", "volumes", "securityContext", "restartPolicy",
            "automountServiceAccountToken", "enableServiceLinks",
            "terminationGracePeriodSeconds")
    stack.cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {k: v for k, v in spec.items() if k in keep}}))
    try:
        def terminated():
            st, p = stack.cluster.api("GET", "/api/v1/namespaces/%s/pods/%s"
                                      % (NAMESPACE, name))
            assert st == 200, p
            for cs in p["status"].get("containerStatuses") or []:
                if cs.get("state", {}).get("terminated"):
                    return cs["state"]["terminated"]
            return None
        t = wait_for(terminated, 120, what="the builder that cannot sandbox to exit")
        print("termination message: %s" % t.get("message"))
        assert t["exitCode"] != 0
        assert "Nix cannot sandbox builds in this pod" in t.get("message", ""), t
        # Nix 2.8 finds out when mounting /proc; Nix 2.26 checks for the
        # namespaces first.
        assert ("mounting /proc" in t["message"]
                or "does not support the kernel namespaces" in t["message"]), t
        assert "--builder-sandbox=false" in t["message"], t
    finally:
        stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", name, "--wait=false",
                              check=False)


def test_proxy_rollout_restart_during_a_build(stack, nix_client):
    """`kubectl rollout restart` of the proxy Deployment while a build runs
    through a load balancer that follows the Service's ready pods: the
    sessions on the old pods finish, new sessions reach the new pods, and
    the build completes with the outputs of a local build. (Last in this
    file: the proxy pods are new afterwards.)"""
    old = {p["metadata"]["name"] for p in stack.pods("nrbc-proxy")}
    args = {"salt": salt(), "n": 4, "seconds": 6}
    with TcpLoadBalancer(stack.cluster, NAMESPACE, "nrbc-proxy", "ssh") as lb:
        wait_for(lambda: len(lb.backends) == 2, 60, what="both proxy replicas behind the LB")
        known_hosts = os.path.join(stack.dir, "known_hosts_lb")
        with open(known_hosts, "w") as f:
            f.write("[%s]:%d %s" % (lb.address, lb.port,
                                    open(stack.keys["host-key"] + ".pub").read()))
        sshopts = NixClient.sshopts(lb.port, stack.keys[stack.USERS[0]], known_hosts)
        result = {}

        def build():
            result["b"] = nix_client.build(
                "parallel.nix", builders=NixClient.builders(lb.address, scheme="ssh-ng",
                                                            max_jobs=1),
                sshopts=sshopts, args=args, check=False)
        t = threading.Thread(target=build)
        t.start()
        # Mid-build: the first derivation's session is running.
        wait_for(lambda: any((r.get("status") or {}).get("phase") == "Running"
                             for r in stack.requests()), 120, what="a session running")
        stack.cluster.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/nrbc-proxy")
        t.join(600)
        assert not t.is_alive(), "the build did not end"
        stack.cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/nrbc-proxy",
                              "--timeout=180s", timeout=190)
        served = dict(lb.served)
    b = result["b"]
    assert b.returncode == 0, "nix-build failed (%d):\n%s" % (b.returncode, b.stderr)
    local = nix_client.build_local("parallel.nix", args=args)
    assert b.out == local.out
    new = {p["metadata"]["name"] for p in stack.pods("nrbc-proxy")}
    assert new and not (new & old), (old, new)
    # Sessions reached more than the two old pods: the new ones served too.
    assert len(served) >= 3, served
    # Later tests talk to a proxy pod that exists.
    stack.proxy_address = stack.pods("nrbc-proxy")[0]["status"]["podIP"]
    stack.publish_service()
