"""The container images built by test/images/build.sh (test/setup runs it),
run from their OCI archives in a throwaway containerd -- the archives, not
the build's storage, are what a node imports. The builder container gets
what the controller's pod template gives it (Secret at /etc/nrbc/ssh,
nix.conf ConfigMap at /etc/nix, NRBC_BUILDER_PORT, the pod's capabilities)
plus a loopback listen address, with the host's network: real Nix remote
builds over ssh and ssh-ng reach its sshd and nix-daemon.

Cost: about 25 s, mostly the two imports (~270 MB); three container starts."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import REPO, NixClient, SSHKeys, free_port, salt, wait_for

BUILD = os.path.join(REPO, "test", "images", "build.sh")
# The pod template's capabilities (src/controller/controller_pod.c) are the
# OCI default set that ctr gives minus these.
DROP = ["CAP_FSETID", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
# Nix in the builder image by Debian release (test/images/build.sh).
BUILDER_NIX = {"12": "2.8.", "13": "2.26."}
POD_CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6,
            "SETUID": 7, "SYS_CHROOT": 18}


@pytest.fixture(scope="module")
def archives():
    r = subprocess.run([BUILD, "--check"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    assert r.returncode == 0, "images missing or stale: run test/setup\n" + r.stderr
    d = r.stdout.strip().splitlines()[-1]
    paths = {n: os.path.join(d, n + ".tar") for n in ("nrbc", "nrbc-builder")}
    for p in paths.values():
        assert os.path.getsize(p) > 10 << 20, p
    return paths


class Containerd:
    """containerd with its own root, state and socket under a temporary
    directory; the CRI plugin is off (not needed to import and run)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nrbc-containerd-", dir="/var/tmp")
        self.sock = os.path.join(self.dir, "containerd.sock")
        conf = os.path.join(self.dir, "config.toml")
        with open(conf, "w") as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    % (self.dir, self.dir, self.sock, self.sock))
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "-c", conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.ctr("version", check=False).returncode == 0, 20,
                 what="containerd up")
        self.running = []
        self.tag = uuid.uuid4().hex[:8]

    def exec(self, name, *argv):
        return self.ctr("task", "exec", "--exec-id", "x" + uuid.uuid4().hex[:8],
                        "%s-%s" % (name, self.tag), *argv)

    def ctr(self, *args, check=True, timeout=120):
        r = subprocess.run(["ctr", "-a", self.sock, "-n", "k8s.io"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, "ctr %s: %s" % (" ".join(args), r.stderr)
        return r

    def run(self, image, name, *args, opts=(), detach=False):
        # ctr names the container's cgroup after it (/k8s.io/<name>), which
        # is machine-wide: unique names let two runs coexist.
        name = "%s-%s" % (name, self.tag)
        if detach:
            self.running.append(name)
            return self.ctr("run", "-d", *opts, image, name, *args)
        return self.ctr("run", "--rm", *opts, image, name, *args)

    def stop(self):
        for name in self.running:
            self.ctr("task", "kill", "-s", "KILL", name, check=False)
            wait_for(lambda: "STOPPED" in self.ctr("task", "ls", check=False).stdout
                     or name not in self.ctr("task", "ls", check=False).stdout, 10,
                     what="task %s stopped" % name)
            self.ctr("task", "rm", "-f", name, check=False)
            self.ctr("container", "rm", name, check=False)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # Snapshots of stopped tasks are unmounted; anything left would make
        # rmtree fail on a busy mount, so look before deleting.
        with open("/proc/self/mounts") as f:
            left = [ln.split()[1] for ln in f if self.dir in ln.split()[1]]
        for m in reversed(left):
            subprocess.run(["umount", "-l", m])
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def containerd(archives):
    c = Containerd()
    try:
        for n, p in archives.items():
            c.ctr("images", "import", p)
        yield c
    finally:
        c.stop()


def test_archives_import_under_their_names(containerd):
    refs = containerd.ctr("images", "ls", "-q").stdout.split()
    assert "localhost/nrbc:dev" in refs and "localhost/nrbc-builder:dev" in refs, refs


def test_nrbc_image_runs_as_non_root(containerd):
    r = containerd.run("localhost/nrbc:dev", "nrbc-version", "/usr/local/bin/nrbc", "--version")
    assert r.stdout.startswith("nrbc "), r.stdout
    r = containerd.run("localhost/nrbc:dev", "nrbc-id", "id")
    assert r.stdout.split()[:2] == ["uid=65532", "gid=65532"], r.stdout


@pytest.fixture(scope="module")
def builder(containerd, tmp_path_factory):
    """The builder image as a pod would run it, sshd on 127.0.0.1 only."""
    d = tmp_path_factory.mktemp("image-builder")
    keys = SSHKeys(d)
    ssh_dir, nix_dir = d / "secret", d / "configmap"
    ssh_dir.mkdir()
    nix_dir.mkdir()
    for name, src in (("public", keys.public), ("host-key", keys.host_private)):
        shutil.copy(src, ssh_dir / name)
        os.chmod(ssh_dir / name, 0o400)
    (nix_dir / "nix.conf").write_text("sandbox = false\nsubstituters =\n"
                                      "trusted-users = root nixbld\n")
    host = "127.0.0.1"
    port = free_port(host)
    opts = ["--net-host",
            "--mount", "type=bind,src=%s,dst=/etc/nrbc/ssh,options=rbind:ro" % ssh_dir,
            "--mount", "type=bind,src=%s,dst=/etc/nix,options=rbind:ro" % nix_dir,
            "--env", "NRBC_BUILDER_PORT=%d" % port,
            "--env", "NRBC_BUILDER_LISTEN_ADDRESS=" + host]
    for cap in DROP:
        opts += ["--cap-drop", cap]
    t0 = time.monotonic()
    containerd.run("localhost/nrbc-builder:dev", "builder", opts=opts, detach=True)

    def listening():
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 30, what="builder sshd listening")
    print("builder container listening %.2f s after ctr run" % (time.monotonic() - t0))
    return {"host": host, "port": port, "keys": keys}


def test_builder_runs_with_the_pods_capabilities_only(containerd, builder):
    r = containerd.exec("builder", "grep", "^CapEff", "/proc/1/status")
    eff = int(r.stdout.split()[1], 16)
    assert eff == sum(1 << b for b in POD_CAPS.values()), hex(eff)


def test_builder_listens_on_loopback_only(builder):
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % builder["port"]],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    assert [ln.split()[3] for ln in out.splitlines()] == ["127.0.0.1:%d" % builder["port"]]


def test_builder_ssh_login_and_store_ping(builder):
    keys, host, port = builder["keys"], builder["host"], builder["port"]
    kh = keys.known_hosts(host, port)
    r = subprocess.run(keys.ssh_argv(host, port, known_hosts=kh) + ["nix-store", "--version"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0 and "Nix" in r.stdout, r.stderr
    # The image's Nix is the Debian release's (build.sh, NRBC_BUILDER_DEBIAN).
    want = BUILDER_NIX[os.environ.get("NRBC_BUILDER_DEBIAN", "13")]
    assert r.stdout.split()[-1].startswith(want), (want, r.stdout)
    env = dict(os.environ, NIX_SSHOPTS=NixClient.sshopts(port, keys.private, kh))
    env.pop("NIX_REMOTE", None)
    # Nix 2.8 store URIs take no port: it comes from NIX_SSHOPTS.
    r = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store", "ping",
                        "--store", "ssh-ng://nixbld@" + host], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_builder_image_builds_remotely(builder, tmp_path, scheme):
    keys, host, port = builder["keys"], builder["host"], builder["port"]
    client = NixClient(tmp_path)
    s = salt()
    b = client.build("simple.nix", builders=client.builders(host, scheme),
                     sshopts=client.sshopts(port, keys.private, keys.known_hosts(host, port)),
                     args={"salt": s}, timeout=120)
    print("%s:// remote build in the builder image: %.2f s" % (scheme, b.seconds))
    assert client.read(b.out) == ("hello from a remote builder %s\n" % s).encode()
