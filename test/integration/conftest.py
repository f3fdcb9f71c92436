"""pytest fixtures for nrbc's integration and end-to-end tests.

Everything here is real: a kube-apiserver + etcd + controller-manager built
from the official Go modules (test/cluster/), a test kubelet that runs
builder/entrypoint.sh for each builder pod (test/kubelet/), OpenSSH and Nix.

Fixtures
  cluster     (session)  test/cluster/cluster.py Cluster, started in a tmp dir
  real_cluster (module)  a second Cluster with a real node (kubelet, containerd:
                         test/cluster/node.py), the images of test/images/build.sh
                         loaded into its containerd
  two_node_cluster (module)  the same with two real nodes; the second labelled
                         nrbc.test/pool=big and tainted nrbc.test/pool=big:NoSchedule
  host_nix    (session)  HostNix: nix.conf, nix-daemon and user nixbld ready
  kubelet     (session)  KubeletProc: the test kubelet, Node Ready
  ssh_keys    (function) SSHKeys: client + host ed25519 key pairs, Secret helper
  namespace   (function) name of a fresh namespace, deleted afterwards
  nrbc_bin    (session)  path of the nrbc binary (NRBC_BIN or build/src/nrbc)
  nix_client  (function) NixClient: nix-build on a private client store
Helpers (import from conftest): builder_pod(), nix_conf_configmap(),
  wait_for(), wait_pod(), pod_ready()
"""

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "test", "cluster"))
sys.path.insert(0, os.path.join(REPO, "test", "kubelet"))

import cluster as cluster_mod  # noqa: E402
from cluster import free_port, wait_for  # noqa: E402,F401  (one copy, shared)
import kubelet as kubelet_mod  # noqa: E402

NIX_DIR = os.path.join(REPO, "test", "integration", "nix")
BUILDER_LABEL = "app.kubernetes.io/name=nrbc-builder"
NODE_NAME = kubelet_mod.NODE_NAME
NIX_SYSTEM = "x86_64-linux"


def relay(a, b):
    """Copies socket a to socket b until a ends, then ends b's sending side
    (a TCP relay: run one per direction)."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# ---- cluster ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    bindir = os.environ.get("NRBC_CLUSTER_BIN") or cluster_mod.build_binaries()
    c = cluster_mod.Cluster(bindir)
    try:
        c.start(str(tmp_path_factory.mktemp("cluster")))
        yield c
    finally:
        c.stop()


IMAGES_BUILD = os.path.join(REPO, "test", "images", "build.sh")


def image_archives():
    """The OCI archives test/images/build.sh made (test/setup runs it), as
    {"nrbc": path, "nrbc-builder": path}; fails if they are missing or stale."""
    r = subprocess.run([IMAGES_BUILD, "--check"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, "images missing or stale: run test/setup\n" + r.stderr
    d = r.stdout.strip().splitlines()[-1]
    return {n: os.path.join(d, n + ".tar") for n in ("nrbc", "nrbc-builder")}


def load_images(cluster, archives=None):
    """What a registry pull would do: the images into every real node's
    containerd."""
    for node in cluster.nodes:
        for path in (archives or image_archives()).values():
            subprocess.run(["ctr", "--address", node.sock, "-n", "k8s.io", "images",
                            "import", path], check=True, stdout=subprocess.DEVNULL)


def _real_cluster(extra_nodes=()):
    archives = image_archives()
    bindir = os.environ.get("NRBC_CLUSTER_BIN") or cluster_mod.build_binaries()
    c = cluster_mod.Cluster(bindir, real_node=True, extra_nodes=extra_nodes)
    try:
        # Short: containerd's socket path must fit a unix socket address.
        c.start(tempfile.mkdtemp(prefix="nrbc-rn-", dir="/tmp"))
        load_images(c, archives)
        yield c
    finally:
        c.stop()
        if c.workdir:
            shutil.rmtree(c.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    yield from _real_cluster()


# The second node of two_node_cluster: a separate pool, as a cloud's
# node group of big machines would be.
POOL_LABEL = "nrbc.test/pool"
POOL = "big"
# Node 2 also stands for an arm64 pool (its label; the builds on it run as
# x86_64 with aarch64-linux in extra-platforms: the routing is what counts).
ARCH_LABEL = "nrbc.test/arch"
ARCH = "arm64"


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A Cluster with two real nodes: nodes[0] as real_cluster's, and
    nodes[1] labelled nrbc.test/pool=big and nrbc.test/arch=arm64 and tainted
    nrbc.test/pool=big:NoSchedule; the images in both."""
    yield from _real_cluster([{"labels": {POOL_LABEL: POOL, ARCH_LABEL: ARCH},
                               "taints": ["%s=%s:NoSchedule" % (POOL_LABEL, POOL)]}])


# ---- host Nix --------------------------------------------------------------------

NIX_CONF = "/etc/nix/nix.conf"
NIX_SETTINGS = {
    "trusted-users": "root nixbld",
    "substituters": "",
    "sandbox": "false",
    "experimental-features": "nix-command",
}
DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket"


class HostNix:
    """The host's Nix set up as the remote builders' store: one nix-daemon
    serves every local builder "pod" (NRBC_BUILDER_NIX_DAEMON=external).
    nix.conf keeps the settings afterwards (they are what a builder needs);
    the daemon is left running, since other test runs may share it."""
    user = "nixbld"
    group = "nix-users"

    def __init__(self):
        self.started_daemon = None
        self.changed_conf = False

    @staticmethod
    def _lock():
        f = open("/run/lock/nrbc-host-nix.lock" if os.path.isdir("/run/lock")
                 else "/tmp/nrbc-host-nix.lock", "w")
        fcntl.flock(f, fcntl.LOCK_EX)
        return f

    def prepare(self):
        with self._lock():
            self._conf()
            self._user()
            self._daemon()
        return self

    def _conf(self):
        try:
            text = open(NIX_CONF).read()
        except FileNotFoundError:
            text = ""
        lines = text.splitlines()
        done = set()
        out = []
        for line in lines:
            m = re.match(r"\s*([A-Za-z0-9-]+)\s*=", line)
            if m and m.group(1) in NIX_SETTINGS:
                k = m.group(1)
                if k in done:
                    continue
                done.add(k)
                out.append(("%s = %s" % (k, NIX_SETTINGS[k])).rstrip())
            else:
                out.append(line)
        missing = [k for k in NIX_SETTINGS if k not in done]
        if missing:
            out.append("# added by nrbc's tests (test/integration/conftest.py)")
            out += [("%s = %s" % (k, NIX_SETTINGS[k])).rstrip() for k in missing]
        new = "\n".join(out) + "\n"
        if new != text:
            os.makedirs(os.path.dirname(NIX_CONF), exist_ok=True)
            if text and not os.path.exists(NIX_CONF + ".before-nrbc-tests"):
                shutil.copy2(NIX_CONF, NIX_CONF + ".before-nrbc-tests")
            with open(NIX_CONF + ".tmp", "w") as f:
                f.write(new)
            os.rename(NIX_CONF + ".tmp", NIX_CONF)
            self.changed_conf = True

    def _user(self):
        if subprocess.run(["getent", "group", self.group], stdout=subprocess.DEVNULL).returncode:
            subprocess.run(["groupadd", self.group], check=True)
        if subprocess.run(["id", self.user], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode:
            subprocess.run(["useradd", "-m", "-g", self.group, "-s", "/bin/sh", self.user],
                           check=True)
        shadow = subprocess.run(["getent", "shadow", self.user], stdout=subprocess.PIPE,
                                text=True).stdout.split(":")
        if len(shadow) > 1 and shadow[1].startswith("!"):
            subprocess.run(["usermod", "-p", "*", self.user], check=True)
        groups = subprocess.run(["id", "-Gn", self.user], stdout=subprocess.PIPE,
                                text=True, check=True).stdout.split()
        assert self.group in groups, "%s is not in group %s" % (self.user, self.group)

    @staticmethod
    def daemon_pids():
        out = subprocess.run(["pgrep", "-x", "nix-daemon"], stdout=subprocess.PIPE, text=True)
        return [int(p) for p in out.stdout.split()]

    def _daemon(self):
        pids = self.daemon_pids()
        if pids and self.changed_conf:
            # It read the old nix.conf; only the listener (whose parent is
            # not a nix-daemon) needs to go, connections end on their own.
            for pid in pids:
                ppid = int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])
                if ppid not in pids:
                    os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not [p for p in self.daemon_pids()
                                  if kubelet_mod.alive(p)], 10, what="old nix-daemon to exit")
            pids = []
        if not pids:
            log = open(os.path.join(tempfile.gettempdir(), "nrbc-nix-daemon.log"), "ab")
            p = subprocess.Popen(["nix-daemon"], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self.started_daemon = p

        def answering():
            r = subprocess.run(["nix-store", "--store", "daemon", "-q", "--hash",
                                "/nix/store/00000000000000000000000000000000-none"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            return os.path.exists(DAEMON_SOCKET) and "cannot connect" not in r.stderr \
                and "Connection refused" not in r.stderr
        wait_for(answering, 10, what="nix-daemon to answer")

    def stop(self):
        if self.started_daemon is not None and os.environ.get("NRBC_STOP_NIX_DAEMON") == "1":
            self.started_daemon.terminate()
            self.started_daemon.wait(10)


@pytest.fixture(scope="session")
def host_nix():
    h = HostNix().prepare()
    yield h
    h.stop()


# ---- test kubelet ----------------------------------------------------------------

class KubeletProc:
    """The test kubelet (test/kubelet/kubelet.py) as a subprocess."""
    node = NODE_NAME

    def __init__(self, cluster):
        self.cluster = cluster
        # Pod dirs are read by user nixbld (authorized_keys, nix.conf):
        # not under pytest's 0700 tmp dirs.
        self.dir = tempfile.mkdtemp(prefix="nrbc-kubelet-")
        os.chmod(self.dir, 0o755)
        self.log_path = os.path.join(self.dir, "kubelet.log")
        self.proc = None

    def start(self, timeout=30):
        # Grace periods (the controller's --builder-drain-timeout, 10 min)
        # are cut to 10 s: long enough for a drain test's session to end
        # on a loaded machine, short enough for a test to wait out.
        argv = [sys.executable, os.path.join(REPO, "test", "kubelet", "kubelet.py"),
                "--kubeconfig", self.cluster.kubeconfig, "--dir", self.dir,
                "--grace-cap", os.environ.get("NRBC_TEST_GRACE_CAP", "10")]
        if os.path.exists("/usr/bin/setpriv"):
            # If pytest itself is killed, the kubelet still cleans up.
            argv = ["/usr/bin/setpriv", "--pdeathsig", "TERM"] + argv
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def node_ready():
            if self.proc.poll() is not None:
                raise AssertionError("kubelet exited: %s\n%s" % (self.proc.returncode,
                                                                 self.log_tail()))
            st, node = self.cluster.api("GET", "/api/v1/nodes/" + self.node)
            if st != 200:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in node.get("status", {}).get("conditions") or [])
        wait_for(node_ready, timeout, what="node %s Ready" % self.node)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        kubelet_mod.kill_leftovers(self.dir)
        if os.environ.get("NRBC_KEEP_KUBELET_DIR") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=60):
        try:
            return "".join(open(self.log_path, errors="replace").readlines()[-n:])
        except OSError:
            return ""

    # -- per pod
    def pod_dir(self, uid):
        return os.path.join(self.dir, "pods", uid)

    def pod_pid(self, uid):
        """(pid, starttime) of the pod's entrypoint/sshd process, or None."""
        return kubelet_mod.read_pidfile(os.path.join(self.pod_dir(uid), "pid"))

    def pod_log(self, uid):
        try:
            return open(os.path.join(self.pod_dir(uid), "log"), errors="replace").read()
        except OSError:
            return ""

    @staticmethod
    def alive(pid_start):
        return pid_start is not None and kubelet_mod.alive(*pid_start)


@pytest.fixture(scope="session")
def kubelet(cluster, host_nix):
    k = KubeletProc(cluster)
    try:
        k.start()
        yield k
    finally:
        k.stop()


# ---- SSH keys --------------------------------------------------------------------

class SSHKeys:
    """An ed25519 client key pair (`private`/`public`) and a host key pair
    (`host_private`/`host_public`), as files and as text."""

    def __init__(self, d):
        self.dir = str(d)
        self.private = os.path.join(self.dir, "client")
        self.host_private = os.path.join(self.dir, "host")
        for path, comment in ((self.private, "nrbc-test-client"),
                              (self.host_private, "nrbc-test-host")):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", path], check=True)
        self.public = self.private + ".pub"
        self.host_public = self.host_private + ".pub"
        self.private_text = open(self.private).read()
        self.public_text = open(self.public).read()
        self.host_private_text = open(self.host_private).read()
        self.host_public_text = open(self.host_public).read()

    def known_hosts(self, host, port=22, path=None, host_key=None):
        """A known_hosts file that trusts our host key for host:port, or
        host_key ("type base64": a NixBuilder's own) when given."""
        path = path or os.path.join(self.dir, "known_hosts-%s-%d" % (host, port))
        name = host if port == 22 else "[%s]:%d" % (host, port)
        with open(path, "w") as f:
            f.write("%s %s\n" % (name, (host_key or self.host_public_text).strip()))
        return path

    def ssh_argv(self, host, port=22, user="nixbld", known_hosts=None, host_key=None):
        """ssh argv prefix that logs in with our client key and verifies our
        host key (or host_key) strictly."""
        kh = known_hosts or self.known_hosts(host, port, host_key=host_key)
        return ["ssh", "-F", "/dev/null", "-p", str(port), "-i", self.private,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=10", "%s@%s" % (user, host)]

    def secret(self, name, namespace, authorized_keys=None, host_key=True):
        data = {"private": self.private_text, "public": self.public_text}
        if host_key:
            data["host-key"] = self.host_private_text
        if authorized_keys is not None:
            data["authorized-keys"] = authorized_keys
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque", "stringData": data}

    def create_secret(self, cluster, namespace, name="nrbc-ssh", authorized_keys=None,
                      host_key=True):
        cluster.apply(json.dumps(self.secret(name, namespace, authorized_keys, host_key)))
        return name


@pytest.fixture
def ssh_keys(tmp_path):
    d = tmp_path / "ssh"
    d.mkdir()
    return SSHKeys(d)


# ---- namespace -------------------------------------------------------------------

@pytest.fixture
def namespace(cluster, request):
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = "%s-%s" % (base or "t", uuid.uuid4().hex[:6])
    st, body = cluster.api("POST", "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name}})
    assert st == 201, body
    yield name
    cluster.api("DELETE", "/api/v1/namespaces/" + name)


# ---- nrbc binary -----------------------------------------------------------------

@pytest.fixture(scope="session")
def nrbc_bin():
    path = os.environ.get("NRBC_BIN")
    if path:
        assert os.access(path, os.X_OK), "NRBC_BIN=%s is not executable" % path
        return path
    build = os.path.join(REPO, "build")
    path = os.path.join(build, "src", "nrbc")
    with open(os.path.join(tempfile.gettempdir(), "nrbc-meson-build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        steps = [["ninja", "-C", build, "-j2", "src/nrbc"]]
        if not os.path.exists(os.path.join(build, "build.ninja")):
            steps.insert(0, ["meson", "setup", build])
        for argv in steps:
            r = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                pytest.fail("building nrbc failed: %s\n%s" % (
                    " ".join(argv), "\n".join(r.stdout.splitlines()[-40:])), pytrace=False)
    assert os.access(path, os.X_OK), "no nrbc binary at %s" % path
    return path


# ---- Nix client ------------------------------------------------------------------

class NixBuild:
    def __init__(self, proc, store, seconds):
        self.proc = proc
        self.store = store
        self.seconds = seconds
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.out_paths = [line for line in proc.stdout.split() if line.startswith("/nix/store/")]

    @property
    def out(self):
        assert self.out_paths, "no output path; stderr:\n" + self.stderr
        return self.out_paths[0]


class NixClient:
    """A Nix client on its own store (a directory), so that anything it has
    was built locally or copied from a remote builder -- never shared with
    the host store the builders use."""

    def __init__(self, d):
        self.dir = str(d)
        self.store = os.path.join(self.dir, "client-store")

    @staticmethod
    def builders(host, scheme="ssh", user="nixbld", max_jobs=4, system=NIX_SYSTEM,
                 features=None, mandatory=None):
        """One machine of Nix's builders setting; features and mandatory:
        comma-separated system features."""
        line = "%s://%s@%s %s - %d" % (scheme, user, host, system, max_jobs)
        if features or mandatory:
            line += " 1 %s %s" % (features or mandatory, mandatory or "-")
        return line

    @staticmethod
    def sshopts(port, key, known_hosts):
        return ("-F /dev/null -p %d -i %s -o IdentitiesOnly=yes -o BatchMode=yes "
                "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=20"
                % (port, key, known_hosts))

    @staticmethod
    def local_sandbox_paths():
        """A store in a directory builds in a sandbox (chroot) even with
        sandbox = false: give it the host's /bin/sh and its libraries."""
        paths = ["/bin/sh=" + os.path.realpath("/bin/sh")]
        paths += [d for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64") if os.path.exists(d)]
        return " ".join(paths)

    def build_local(self, expr, args=None, store=None, **kw):
        """The same build done locally, on a separate store (default
        <dir>/local-store), to compare a remote build with."""
        return self.build(expr, args=args, store=store or os.path.join(self.dir, "local-store"),
                          max_jobs=1, extra=["--option", "sandbox-paths",
                                             self.local_sandbox_paths()], **kw)

    def build(self, expr, builders=None, sshopts=None, args=None, store=None, max_jobs=0,
              check=True, timeout=600, extra=()):
        """nix-build `expr` (a file under test/integration/nix/ or a path)
        on the client store; with max_jobs=0 every build must go to
        `builders`. args: {name: str or int} (--argstr / --arg)."""
        path = expr if os.path.isabs(expr) else os.path.join(NIX_DIR, expr)
        argv = ["nix-build", path, "--no-out-link", "--store", store or self.store,
                "--max-jobs", str(max_jobs), "--option", "substituters", "",
                "--option", "builders-use-substitutes", "false",
                "--builders", builders or ""]
        for k, v in (args or {}).items():
            if isinstance(v, int):
                argv += ["--arg", k, str(v)]
            else:
                argv += ["--argstr", k, str(v)]
        argv += list(extra)
        env = dict(os.environ)
        env.pop("NIX_REMOTE", None)
        if sshopts is not None:
            env["NIX_SSHOPTS"] = sshopts
        t0 = time.monotonic()
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
        b = NixBuild(p, store or self.store, time.monotonic() - t0)
        if check:
            assert p.returncode == 0, "nix-build failed (%d):\n%s" % (p.returncode, p.stderr)
        return b

    def nar_hash(self, path, store=None):
        r = subprocess.run(["nix-store", "--store", store or self.store, "-q", "--hash", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def has(self, path, store=None):
        return subprocess.run(["nix-store", "--store", store or self.store,
                               "--check-validity", path],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                              ).returncode == 0

    def read(self, path, store=None):
        """Contents of a (file) output in the client store, via the store's
        real location on disk."""
        return open(os.path.join(store or self.store, path.lstrip("/")), "rb").read()


@pytest.fixture
def nix_client(tmp_path, host_nix):
    d = tmp_path / "nix"
    d.mkdir()
    return NixClient(d)


def salt():
    return uuid.uuid4().hex


# ---- builder pod helpers ---------------------------------------------------------

def nix_conf_configmap(name, namespace, extra=""):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"nix.conf": "sandbox = false\nsubstituters =\n"
                                 "trusted-users = root nixbld\n" + extra}}


def builder_pod(name, namespace, secret="nrbc-ssh", configmap="nix-conf", port=22,
                image="docker.io/nixos/nix:2.8.0", node_selector=None, labels=None,
                deadline=None, extra_spec=None):
    """A builder pod like the controller makes: Secret at /etc/nrbc/ssh,
    nix.conf ConfigMap at /etc/nix, TCP readiness probe on the SSH port."""
    lab = {"app.kubernetes.io/name": "nrbc-builder"}
    lab.update(labels or {})
    spec = {
        "restartPolicy": "Never",
        "containers": [{
            "name": "builder",
            "image": image,
            "ports": [{"name": "ssh", "containerPort": port}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            "volumeMounts": [
                {"name": "ssh", "mountPath": "/etc/nrbc/ssh", "readOnly": True},
                {"name": "nix-conf", "mountPath": "/etc/nix", "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "ssh", "secret": {"secretName": secret, "defaultMode": 0o400,
                                       "items": [{"key": "public", "path": "public"},
                                                 {"key": "host-key", "path": "host-key"}]}},
            {"name": "nix-conf", "configMap": {"name": configmap}},
        ],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    spec.update(extra_spec or {})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": lab},
            "spec": spec}


def get_pod(cluster, namespace, name):
    st, pod = cluster.api("GET", "/api/v1/namespaces/%s/pods/%s" % (namespace, name))
    return pod if st == 200 else None


def pod_ready(pod):
    return pod is not None and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or [])


def wait_pod(cluster, namespace, name, pred, timeout=60, what=None):
    """Wait until pred(pod) is true; returns the pod."""
    box = {}

    def check():
        box["pod"] = get_pod(cluster, namespace, name)
        return box["pod"] is not None and pred(box["pod"])
    try:
        wait_for(check, timeout, what=what or "pod %s/%s" % (namespace, name))
    except AssertionError as e:
        raise AssertionError("%s; last seen: %s" % (
            e, json.dumps((box.get("pod") or {}).get("status"), indent=1)))
    return box["pod"]
