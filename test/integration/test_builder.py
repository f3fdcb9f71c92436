"""The builder (builder/entrypoint.sh) run as pods by the test kubelet:
real sshd, real Nix remote builds over ssh:// and ssh-ng://, pod lifecycle
and the kubelet's failure simulations."""

import ipaddress
import json
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

from conftest import (REPO, SSHKeys, builder_pod, get_pod, nix_conf_configmap, pod_ready,
                      salt, wait_for, wait_pod)


def create_pod(cluster, namespace, keys, name="builder", **kw):
    keys.create_secret(cluster, namespace)
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    cluster.apply(json.dumps(builder_pod(name, namespace, **kw)))


def refused(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def ssh(keys, ip, *cmd, timeout=30):
    return subprocess.run(keys.ssh_argv(ip) + list(cmd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def in_pod_store(builder, path, keys=None):
    """Whether the pod's nix-daemon has path valid (asked over SSH, as Nix
    does)."""
    r = ssh(keys or builder["keys"], builder["ip"], "nix-store", "--check-validity", path)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


def sandbox_paths_with_usr_bin():
    """closure.nix uses /usr/bin tools: a local (sandboxed) build needs them."""
    from conftest import NixClient
    return NixClient.local_sandbox_paths() + " /usr/bin"


@pytest.fixture(scope="module")
def builder(cluster, kubelet, tmp_path_factory):
    """One running builder pod shared by this module's build tests."""
    ns = "builder-" + uuid.uuid4().hex[:6]
    st, body = cluster.api("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    assert st == 201, body
    keys = SSHKeys(tmp_path_factory.mktemp("builder-ssh"))
    try:
        t0 = time.monotonic()
        create_pod(cluster, ns, keys)
        pod = wait_pod(cluster, ns, "builder", pod_ready, 60, "builder pod Ready")
        print("builder pod Ready %.2f s after creation" % (time.monotonic() - t0))
        yield {"namespace": ns, "pod": pod, "ip": pod["status"]["podIP"], "keys": keys}
    finally:
        cluster.api("DELETE", "/api/v1/namespaces/" + ns)


def test_pod_runs_and_becomes_ready(cluster, kubelet, builder):
    pod = builder["pod"]
    st = pod["status"]
    assert pod["spec"]["nodeName"] == kubelet.node
    assert st["phase"] == "Running"
    ip = ipaddress.ip_address(st["podIP"])
    assert ip in ipaddress.ip_network("127.0.0.0/8") and ip.packed[2] >= 1, ip
    assert st["podIPs"] == [{"ip": st["podIP"]}]
    assert st["hostIP"] == "127.0.0.1"
    assert st["startTime"]
    cs = st["containerStatuses"][0]
    assert cs["ready"] is True and "running" in cs["state"], cs
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["PodScheduled"] == conds["Ready"] == conds["ContainersReady"] == "True"
    # The Secret and the ConfigMap were materialised where the entrypoint reads them.
    root = os.path.join(kubelet.pod_dir(pod["metadata"]["uid"]), "root")
    assert open(os.path.join(root, "etc/nrbc/ssh/public")).read() == \
        builder["keys"].public_text
    assert oct(os.stat(os.path.join(root, "etc/nrbc/ssh/host-key")).st_mode & 0o777) == "0o400"
    assert "trusted-users" in open(os.path.join(root, "etc/nix/nix.conf")).read()
    assert not os.path.exists(os.path.join(root, "etc/nrbc/ssh/private"))  # not in items


def test_ssh_login_with_verified_host_key(builder):
    keys, ip = builder["keys"], builder["ip"]
    r = ssh(keys, ip, "echo", "hello-from-builder")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello-from-builder"
    r = ssh(keys, ip, "id -un; id -Gn; echo $NIX_CONF_DIR")
    user, groups, conf = r.stdout.splitlines()
    assert user == "nixbld" and "nix-users" in groups.split()
    assert conf.endswith("/root/etc/nix"), conf
    # A client expecting another host key refuses the builder.
    bad_kh = os.path.join(keys.dir, "bad_known_hosts")
    with open(bad_kh, "w") as f:
        f.write("%s %s" % (ip, open(keys.public).read()))  # a key that is not the host's
    r = subprocess.run(keys.ssh_argv(ip, known_hosts=bad_kh) + ["true"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in r.stderr, r.stderr


def test_ssh_refuses_unknown_client_key(builder, tmp_path):
    ip = builder["ip"]
    stranger = SSHKeys(tmp_path)
    # stranger.private is not authorized; the host key check still uses ours.
    kh = builder["keys"].known_hosts(ip)
    r = subprocess.run(stranger.ssh_argv(ip, known_hosts=kh) + ["true"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr
    r = subprocess.run(builder["keys"].ssh_argv(ip, user="root") + ["true"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr
    argv = builder["keys"].ssh_argv(ip)
    r = subprocess.run(argv[:1] + ["-tt"] + argv[1:] + ["true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert "PTY allocation request failed" in r.stderr, r.stderr



def test_many_pending_handshakes_do_not_shed_logins(builder):
    """Every connection to a builder comes from the proxy, which rations
    unauthenticated clients itself: the builder's sshd must not drop the
    proxy's handshakes when many sessions start at once. With sshd's default
    MaxStartups (10:30:100) 60 pending connections drop each new one with
    probability 0.69, so five logins in a row would almost surely see one."""
    held = [socket.create_connection((builder["ip"], 22), timeout=5) for _ in range(60)]
    try:
        for i in range(5):
            r = ssh(builder["keys"], builder["ip"], "echo", "login-%d" % i)
            assert r.returncode == 0, r.stderr
    finally:
        for c in held:
            c.close()

@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_remote_build_matches_local_build(builder, nix_client, scheme):
    keys, ip = builder["keys"], builder["ip"]
    s = salt()
    remote = nix_client.build("simple.nix", builders=nix_client.builders(ip, scheme),
                              sshopts=nix_client.sshopts(22, keys.private,
                                                         keys.known_hosts(ip)),
                              args={"salt": s})
    print("%s:// remote build of one derivation: %.2f s" % (scheme, remote.seconds))
    out = remote.out
    assert nix_client.has(out)
    assert nix_client.read(out) == ("hello from a remote builder %s\n" % s).encode()
    # It was built on the builder, in the pod's own store, not the host's.
    assert in_pod_store(builder, out)
    assert not os.path.exists(out)

    local = nix_client.build_local("simple.nix", args={"salt": s})
    assert local.out == out
    assert nix_client.nar_hash(local.out, store=local.store) == nix_client.nar_hash(out)


def test_remote_build_fails_without_builder(nix_client):
    r = nix_client.build("simple.nix", args={"salt": salt()}, check=False)
    assert r.returncode != 0
    assert "max-jobs" in r.stderr or "remote builds" in r.stderr, r.stderr


def test_remote_build_of_a_graph(builder, nix_client):
    keys, ip = builder["keys"], builder["ip"]
    s = salt()
    r = nix_client.build("graph.nix", builders=nix_client.builders(ip, "ssh-ng"),
                         sshopts=nix_client.sshopts(22, keys.private, keys.known_hosts(ip)),
                         args={"salt": s, "n": 10}, timeout=300)
    print("ssh-ng:// remote build of 11 derivations: %.2f s" % r.seconds)
    lines = nix_client.read(r.out).decode().splitlines()
    assert lines[0] == "10 nodes %s" % s and len(lines) == 11, lines
    refs = subprocess.run(["nix-store", "--store", nix_client.store, "-qR", r.out],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    assert len([p for p in refs if re.search(r"-nrbc-graph-\d+$", p)]) == 10, refs
    local = nix_client.build_local("graph.nix", args={"salt": s, "n": 10})
    assert local.out == r.out
    for p in refs:
        assert nix_client.nar_hash(p) == nix_client.nar_hash(p, store=local.store), p


def test_remote_build_of_a_large_output(builder, nix_client):
    keys, ip = builder["keys"], builder["ip"]
    size = 8 * 1024 * 1024
    r = nix_client.build("size.nix", builders=nix_client.builders(ip, "ssh"),
                         sshopts=nix_client.sshopts(22, keys.private, keys.known_hosts(ip)),
                         args={"salt": salt(), "size": size})
    print("ssh:// remote build with an 8 MiB output: %.2f s" % r.seconds)
    assert len(nix_client.read(r.out)) == size


def test_delete_pod_stops_every_process(cluster, kubelet, namespace, ssh_keys):
    create_pod(cluster, namespace, ssh_keys, name="doomed")
    pod = wait_pod(cluster, namespace, "doomed", pod_ready, 60, "pod Ready")
    ip, uid = pod["status"]["podIP"], pod["metadata"]["uid"]
    pid = kubelet.pod_pid(uid)
    assert kubelet.alive(pid), pid
    # A live SSH session: sshd forks it into its own session (setsid), out
    # of the pod's process group -- it must die with the pod all the same.
    session = subprocess.Popen(ssh_keys.ssh_argv(ip) + ["echo started; sleep 300"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert session.stdout.readline().strip() == "started"
        sleepers = subprocess.run(["pgrep", "-u", "nixbld", "-f", "sleep 300"],
                                  stdout=subprocess.PIPE, text=True).stdout.split()
        assert sleepers

        t0 = time.monotonic()
        cluster.kubectl("delete", "pod", "doomed", "-n", namespace, "--wait=false")
        wait_for(lambda: get_pod(cluster, namespace, "doomed") is None, 60,
                 what="the kubelet to confirm the deletion")
        print("pod gone %.2f s after delete" % (time.monotonic() - t0))
        assert not kubelet.alive(pid)
        assert refused(ip, 22)
        assert session.wait(10) != 0
        for p in sleepers:
            assert not os.path.exists("/proc/%s" % p) or \
                open("/proc/%s/stat" % p).read().split(") ")[1][0] == "Z"
        assert not os.path.exists(kubelet.pod_dir(uid))
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


def test_many_pods_start_at_once(cluster, kubelet, namespace, ssh_keys):
    """Concurrent entrypoints (user creation under a lock) all come up, each
    on its own address."""
    ssh_keys.create_secret(cluster, namespace)
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    names = ["b%d" % i for i in range(5)]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List",
                              "items": [builder_pod(n, namespace) for n in names]}))
    ips = set()
    for n in names:
        pod = wait_pod(cluster, namespace, n, pod_ready, 90, "pod %s Ready" % n)
        ips.add(pod["status"]["podIP"])
    assert len(ips) == len(names)
    for ip in ips:
        r = ssh(ssh_keys, ip, "echo", "ok")
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_without_host_key_an_ephemeral_one_is_generated_loudly(cluster, kubelet, namespace,
                                                               ssh_keys):
    ssh_keys.create_secret(cluster, namespace, host_key=False)
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    pod = builder_pod("ephemeral", namespace)
    pod["spec"]["volumes"][0]["secret"]["items"] = [{"key": "public", "path": "public"}]
    cluster.apply(json.dumps(pod))
    pod = wait_pod(cluster, namespace, "ephemeral", pod_ready, 60)
    log = kubelet.pod_log(pod["metadata"]["uid"])
    assert "WARNING: generated an EPHEMERAL host key" in log, log
    # Our known host key does not match: a strict client refuses it.
    r = ssh(ssh_keys, pod["status"]["podIP"], "true")
    assert r.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in r.stderr, r.stderr


# ---- failure simulations ---------------------------------------------------------

def waiting_reason(pod):
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        w = cs.get("state", {}).get("waiting")
        if w:
            return w.get("reason")
    return None


def test_unmatched_node_selector_is_unschedulable(cluster, kubelet, namespace, ssh_keys):
    create_pod(cluster, namespace, ssh_keys, name="nowhere",
               node_selector={"nrbc.test/pool": "gpu"})

    def unschedulable(pod):
        return any(c["type"] == "PodScheduled" and c["status"] == "False"
                   and c.get("reason") == "Unschedulable"
                   for c in pod["status"].get("conditions") or [])
    pod = wait_pod(cluster, namespace, "nowhere", unschedulable, 60)
    cond = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"][0]
    assert "didn't match Pod's node affinity/selector" in cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")
    def failed_scheduling():
        st, events = cluster.api("GET", "/api/v1/namespaces/%s/events?fieldSelector="
                                 "involvedObject.name%%3Dnowhere" % namespace)
        assert st == 200
        return [e for e in events["items"] if e["reason"] == "FailedScheduling"
                and e["type"] == "Warning"]
    # The kubelet posts the Event after the status: it may lag a little.
    wait_for(failed_scheduling, 10, what="a FailedScheduling Event")
    # An unbound pod goes away at once on delete.
    cluster.kubectl("delete", "pod", "nowhere", "-n", namespace, "--wait=true", "--timeout=20s")


def test_insufficient_resources_is_unschedulable(cluster, kubelet, namespace, ssh_keys):
    pod = builder_pod("huge", namespace)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1000"}}
    cluster.apply(json.dumps(pod))
    pod = wait_pod(cluster, namespace, "huge", lambda p: any(
        c.get("reason") == "Unschedulable" for c in p["status"].get("conditions") or []), 60)
    assert "Insufficient cpu" in json.dumps(pod["status"]["conditions"])


def test_missing_image_shows_errimagepull(cluster, kubelet, namespace, ssh_keys):
    create_pod(cluster, namespace, ssh_keys, name="noimage",
               image="registry.invalid/nrbc/does-not-exist:1")
    seen = set()

    def pull_error(pod):
        r = waiting_reason(pod)
        if r:
            seen.add(r)
        return {"ErrImagePull", "ImagePullBackOff"} <= seen
    pod = wait_pod(cluster, namespace, "noimage", pull_error, 60)
    assert pod["status"]["phase"] == "Pending"
    assert pod["spec"]["nodeName"] == kubelet.node
    assert kubelet.pod_pid(pod["metadata"]["uid"]) is None   # never started
    cluster.kubectl("delete", "pod", "noimage", "-n", namespace, "--wait=true", "--timeout=20s")


def test_missing_secret_is_a_config_error(cluster, kubelet, namespace):
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    cluster.apply(json.dumps(builder_pod("nosecret", namespace, secret="absent")))
    pod = wait_pod(cluster, namespace, "nosecret",
                   lambda p: waiting_reason(p) == "CreateContainerConfigError", 60)
    msg = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert 'secret "absent" not found' in msg
    assert pod["status"]["phase"] == "Pending"


def test_entrypoint_failure_fails_the_pod(cluster, kubelet, namespace, ssh_keys):
    """A Secret without the `public` key: the entrypoint refuses to start
    sshd (nobody could log in) and the pod fails with its exit code."""
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "nrbc-ssh", "namespace": namespace},
                              "stringData": {"host-key": ssh_keys.host_private_text}}))
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    pod = builder_pod("nokey", namespace)
    pod["spec"]["volumes"][0]["secret"].pop("items")
    cluster.apply(json.dumps(pod))
    pod = wait_pod(cluster, namespace, "nokey", lambda p: p["status"].get("phase") == "Failed", 60)
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error", term
    assert "no public key" in kubelet.pod_log(pod["metadata"]["uid"])


def test_active_deadline_exceeded(cluster, kubelet, namespace, ssh_keys):
    create_pod(cluster, namespace, ssh_keys, name="shortlived", deadline=10)
    pod = wait_pod(cluster, namespace, "shortlived",
                   lambda p: p["status"].get("phase") in ("Running", "Failed"), 60)
    uid = pod["metadata"]["uid"]
    pod = wait_pod(cluster, namespace, "shortlived",
                   lambda p: p["status"].get("reason") == "DeadlineExceeded", 60)
    st = pod["status"]
    assert st["phase"] == "Failed", st
    assert "deadline" in st["message"]
    assert "terminated" in st["containerStatuses"][0]["state"], st
    ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False"
    pid = kubelet.pod_pid(uid)
    assert pid is not None         # it did run
    assert not kubelet.alive(pid)
    assert refused(st["podIP"], 22)


def containerfile_lines(path):
    """Instructions of a Containerfile, continuation lines joined, comments
    dropped; every keyword must be one we know (no hadolint here)."""
    joined = re.sub(r"\\\n\s*", " ", open(path).read())
    lines = [ln.strip() for ln in joined.splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    known = {"FROM", "RUN", "COPY", "EXPOSE", "ENTRYPOINT", "ENV", "LABEL", "WORKDIR",
             "ARG", "USER", "CMD"}
    for ln in lines:
        assert ln.split()[0] in known, ln
    return lines


@pytest.mark.parametrize("name,base", [
    # Debian 13 by default; NRBC_BUILDER_DEBIAN=12 (test/images/build.sh)
    # builds the Debian 12 one from the same file.
    ("Containerfile", r"debian:\$\{DEBIAN\}-slim"),
    ("Containerfile.nixos", r"\S*nixos/nix:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?"),
])
def test_builder_containerfile_structure(name, base):
    lines = containerfile_lines(os.path.join(REPO, "builder", name))
    from_ = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(from_) == 1
    assert re.fullmatch(r"FROM\s+" + base, from_[0]), from_[0]
    if "DEBIAN" in base:
        assert "ARG DEBIAN=13" in lines, [ln for ln in lines if ln.startswith("ARG")]
    assert any(re.fullmatch(r"COPY\s+(--chmod=\d+\s+)?entrypoint\.sh\s+\S+", ln) for ln in lines)
    assert "EXPOSE 22" in lines
    entry = [ln for ln in lines if ln.startswith("ENTRYPOINT")]
    assert len(entry) == 1 and json.loads(entry[0][len("ENTRYPOINT"):].strip())
    for ln in lines:
        if ln.startswith("RUN") and "apt-get install" in ln:
            # Small and without stale package lists.
            assert "--no-install-recommends" in ln and "rm -rf /var/lib/apt/lists/" in ln, ln


def test_nrbc_containerfile_structure():
    lines = containerfile_lines(os.path.join(REPO, "Containerfile"))
    from_ = [line for line in lines if line.upper().startswith("FROM ")]
    assert from_ == ["FROM debian:13-slim AS build", "FROM debian:13-slim"], from_
    # The final stage runs as the non-root uid the manifests expect.
    assert lines[-2:] == ["USER 65532:65532", 'ENTRYPOINT ["/usr/local/bin/nrbc"]'], lines[-2:]
    for ln in lines:
        if ln.startswith("RUN") and "apt-get install" in ln:
            assert "--no-install-recommends" in ln and "rm -rf /var/lib/apt/lists/" in ln, ln


def test_entrypoint_is_posix_sh():
    path = os.path.join(REPO, "builder", "entrypoint.sh")
    assert open(path).readline().strip() == "#!/bin/sh"
    for sh in ("dash", "sh"):
        r = subprocess.run([sh, "-n", path], stderr=subprocess.PIPE, text=True)
        assert r.returncode == 0, r.stderr
    assert os.access(path, os.X_OK)


# ---- private stores ----------------------------------------------------------------

def nix_daemon_homes():
    """HOME of every nix-daemon process on the machine."""
    homes = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open("/proc/%s/comm" % pid).read().strip() != "nix-daemon":
                continue
            env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
        except OSError:
            continue
        homes.update(e[5:].decode() for e in env if e.startswith(b"HOME="))
    return homes


def test_pods_have_separate_stores(cluster, kubelet, namespace, ssh_keys, nix_client):
    """Each pod has its own empty store and nix-daemon, as a container has:
    an input the client uploads to one pod is in that pod's store only --
    not in another pod's, not in the host's."""
    create_pod(cluster, namespace, ssh_keys, name="store-a")
    cluster.apply(json.dumps(builder_pod("store-b", namespace)))
    a = wait_pod(cluster, namespace, "store-a", pod_ready, 60, "pod store-a Ready")
    b = wait_pod(cluster, namespace, "store-b", pod_ready, 60, "pod store-b Ready")
    pa = {"ip": a["status"]["podIP"], "keys": ssh_keys}
    pb = {"ip": b["status"]["podIP"], "keys": ssh_keys}
    args = {"salt": salt(), "n": 1, "size": 1024 * 1024}
    # The shared input, built by the client itself: it must travel.
    big = nix_client.build("closure.nix", args=args, max_jobs=1,
                           extra=["-A", "big", "--option", "sandbox-paths",
                                  sandbox_paths_with_usr_bin()]).out
    assert not in_pod_store(pa, big) and not in_pod_store(pb, big)
    r = nix_client.build("closure.nix", args=args,
                         builders=nix_client.builders(pa["ip"], "ssh-ng"),
                         sshopts=nix_client.sshopts(22, ssh_keys.private,
                                                    ssh_keys.known_hosts(pa["ip"])))
    assert in_pod_store(pa, big) and in_pod_store(pa, r.out)
    assert not in_pod_store(pb, big) and not in_pod_store(pb, r.out)
    # On disk: in A's own directory, nowhere else.
    base = os.path.basename(big)
    a_dir, b_dir = (kubelet.pod_dir(p["metadata"]["uid"]) for p in (a, b))
    a_copy = os.path.join(a_dir, "root", "nix", "store", base)
    assert os.path.getsize(a_copy) == 1024 * 1024
    assert not os.path.exists(os.path.join(b_dir, "root", "nix", "store", base))
    assert not os.path.exists(big)
    r2 = subprocess.run(["nix-store", "--check-validity", big], stderr=subprocess.PIPE)
    assert r2.returncode != 0      # the host's own store (daemon) lacks it too
    # Its own HOME too: a daemon keeps its binary-cache lookups (negative
    # ones for an hour) in ~/.cache/nix, which must be the pod's.
    homes = nix_daemon_homes()
    for d in (a_dir, b_dir):
        assert os.path.join(d, "root", "root") in homes, homes
    # Deleting a pod removes its store, read-only paths and all.
    assert os.stat(a_copy).st_mode & 0o222 == 0    # read-only, as store paths are
    cluster.kubectl("delete", "pod", "store-a", "-n", namespace, "--wait=false")
    wait_for(lambda: get_pod(cluster, namespace, "store-a") is None, 60,
             what="the kubelet to confirm the deletion")
    assert not os.path.exists(a_dir)
    assert in_pod_store(pb, r.out) is False          # B is unaffected and answers


WHOAMI_NIX = """{ salt }:
derivation {
  name = "nrbc-whoami";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/usr/bin/id -un > $out" ];
  inherit salt;
}
"""


def test_pod_builds_run_as_build_users_of_their_own(builder, nix_client, tmp_path):
    """A pod's nix-daemon builds as nrbc-pod-bld*, not as the host
    daemon's nixbld1..N, whose processes the host daemon kills (from the
    host's PID namespace, so in every pod too) before each of its builds."""
    expr = tmp_path / "whoami.nix"
    expr.write_text(WHOAMI_NIX)
    keys, ip = builder["keys"], builder["ip"]
    r = nix_client.build(str(expr), builders=nix_client.builders(ip, "ssh-ng"),
                         sshopts=nix_client.sshopts(22, keys.private, keys.known_hosts(ip)),
                         args={"salt": salt()})
    user = nix_client.read(r.out).decode().strip()
    assert user.startswith("nrbc-pod-bld"), user


def test_pod_with_host_store_annotation_uses_the_host_store(cluster, kubelet, namespace,
                                                            ssh_keys, nix_client):
    """The opt-in (annotation nrbc.test/host-nix-store=true): builds land in
    the host's store, through the host's nix-daemon."""
    ssh_keys.create_secret(cluster, namespace)
    cluster.apply(json.dumps(nix_conf_configmap("nix-conf", namespace)))
    pod = builder_pod("shared", namespace)
    pod["metadata"]["annotations"] = {"nrbc.test/host-nix-store": "true"}
    cluster.apply(json.dumps(pod))
    pod = wait_pod(cluster, namespace, "shared", pod_ready, 60)
    ip = pod["status"]["podIP"]
    r = nix_client.build("simple.nix", args={"salt": salt()},
                         builders=nix_client.builders(ip, "ssh"),
                         sshopts=nix_client.sshopts(22, ssh_keys.private,
                                                    ssh_keys.known_hosts(ip)))
    assert subprocess.run(["nix-store", "--check-validity", r.out]).returncode == 0
    assert not os.path.exists(os.path.join(kubelet.pod_dir(pod["metadata"]["uid"]),
                                           "root", "nix", "store"))


# ---- the kubelet's process bookkeeping ------------------------------------------

PID_REUSE_SCRIPT = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import kubelet as K

assert os.getpid() == 1, "not in a fresh PID namespace"
children = K.Children()

def spawn(argv):
    # As the kubelet does: a new session per pod.
    return children.add(os.posix_spawn(argv[0], argv, dict(os.environ), setsid=True))

def reaped(child):
    while child.code is None:
        children.reap()
        time.sleep(0.01)
    return child.code

old = spawn(["/bin/sh", "-c", "exit 0"])
assert reaped(old) == 0
time.sleep(0.05)              # a later clock tick: a different start time
# Hand the old pod's pid to the next process, as PID wrap-around does.
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(old.pid - 1))
new = spawn(["/bin/sleep", "60"])
assert new.pid == old.pid, (new.pid, old.pid)
assert new.start != old.start, (new, old)
children.reap()
print("new pod running, exit code:", new.code)
assert new.code is None, "a running process was reported exited %r" % new.code
assert K.alive(new.pid, new.start) and not K.alive(old.pid, old.start)
# Killing what is left of the old pod (its session, by number) must not
# touch the new one, which now leads a session of the same number.
K.kill_tree({old.pid: old.start}, 0)
assert K.alive(new.pid, new.start), "kill_tree of the old pod killed the new one"
K.kill_tree({new.pid: new.start}, 1)
assert reaped(new) == 128 + signal.SIGTERM, new
assert len(children) == 0
print("ok")
"""


def test_exit_codes_survive_pid_reuse():
    """Issue 11: a pid reused by a new pod must not inherit the old pod's
    exit code (the kubelet reported the new pod "exited 0" at once), nor
    be killed along with the old pod's leftovers. Real processes in a
    fresh PID namespace, where ns_last_pid makes the kernel reuse a pid."""
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "/usr/bin/python3", "-c",
                        PID_REUSE_SCRIPT, os.path.join(REPO, "test", "kubelet")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout
