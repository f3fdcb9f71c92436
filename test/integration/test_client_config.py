"""The kubeconfigs people have, and `nrbc client-config`, against the real
test cluster.

  * exec credential plugins (test/integration/exec_plugin.sh hands out a
    ServiceAccount token made with TokenRequest): the token is used (RBAC
    shows whose it is), KUBERNETES_EXEC_INFO is passed, the plugin runs
    again after a 401 and after expirationTimestamp, and a missing or
    failing plugin is a clear error;
  * $KUBECONFIG lists merged as kubectl merges them; tls-server-name;
    proxy-url through a small CONNECT proxy on loopback;
  * `nrbc client-config` as a user runs it, with only the nrbc-client Role
    (through an exec plugin), on the whole stack: it prints, writes,
    refuses to replace a different entry, --check tells a host key
    mismatch and a refused key from a working setup, and Nix builds with
    exactly the files it wrote.
"""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import relay, salt
from stack import NAMESPACE, PROXY_ADDRESS, Stack
from test_kube import Tool, find_kubetool, run

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.join(HERE, "exec_plugin.sh")
V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"

READER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: %(ns)s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: %(ns)s}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: %(ns)s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: %(ns)s}
"""


@pytest.fixture(scope="module")
def kubetool():
    return find_kubetool()


class Plugin:
    """exec_plugin.sh's files and the kubeconfig `user:` that runs it."""

    def __init__(self, d, token):
        self.dir = str(d)
        self.token_file = os.path.join(self.dir, "token")
        self.runs_file = os.path.join(self.dir, "runs")
        self.info_file = os.path.join(self.dir, "info")
        with open(self.token_file, "w") as f:
            f.write(token)

    def runs(self):
        try:
            return len(open(self.runs_file).read().splitlines())
        except FileNotFoundError:
            return 0

    def info(self):
        return json.loads(open(self.info_file).read())

    def user(self, api_version=V1, command=PLUGIN, args=(), **env):
        env = dict(env, TOKEN_FILE=self.token_file, RUNS_FILE=self.runs_file,
                   INFO_FILE=self.info_file)
        lines = ["    exec:",
                 "      apiVersion: %s" % api_version,
                 "      command: %s" % command,
                 "      installHint: 'install the plugin with: apt install example-login'",
                 "      provideClusterInfo: true",
                 "      args: %s" % json.dumps(list(args)),
                 "      env:"]
        for k, v in env.items():
            lines.append("      - {name: %s, value: %s}" % (k, json.dumps(str(v))))
        return "\n".join(lines) + "\n"


def kubeconfig(path, cluster, user_body, cluster_extra="", namespace="default"):
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                "clusters:\n- name: k\n  cluster:\n    server: %s\n"
                "    certificate-authority: %s\n%s"
                "contexts:\n- name: c\n  context: {cluster: k, user: u, namespace: %s}\n"
                "users:\n- name: u\n  user:\n%s"
                % (cluster.server, cluster.ca_file, cluster_extra, namespace, user_body))
    return str(path)


def admin_user(cluster):
    return ("    client-certificate: %s\n    client-key: %s\n"
            % (cluster.client_cert, cluster.client_key))


@pytest.fixture
def reader(cluster, namespace, tmp_path):
    """A ServiceAccount that may only get ConfigMaps, one ConfigMap to get,
    and an exec plugin that hands out the account's token."""
    cluster.apply(READER_RBAC % {"ns": namespace})
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "cm", "namespace": namespace},
                              "data": {"k": "v"}}))
    d = tmp_path / "plugin"
    d.mkdir()
    return Plugin(d, cluster.token("reader", namespace))


def test_exec_plugin_serviceaccount_token(cluster, namespace, reader, kubetool, tmp_path):
    kc = kubeconfig(tmp_path / "kc", cluster, reader.user(), namespace=namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 0, err
    assert body["data"] == {"k": "v"}
    # RBAC is real: the token in use is the reader's, which may not read Secrets.
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "secrets", namespace, "x"])
    assert rc == 103, (rc, body, err)
    info = reader.info()
    assert info["apiVersion"] == V1 and info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == cluster.server
    assert "certificate-authority-data" in info["spec"]["cluster"]

    kc = kubeconfig(tmp_path / "kc-beta", cluster,
                    reader.user(V1BETA1, API_VERSION=V1BETA1), namespace=namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 0, err
    assert reader.info()["apiVersion"] == V1BETA1


def test_exec_plugin_runs_again_after_401_and_expiry(cluster, namespace, reader, kubetool,
                                                     tmp_path):
    kc = kubeconfig(tmp_path / "kc", cluster, reader.user(FIRST_TOKEN_BAD=1, TTL=5),
                    namespace=namespace)
    t = Tool([kubetool, "--kubeconfig", kc, "shell"], stdin=True)
    try:
        t.send(["get", "configmaps", namespace, "cm"])   # the bad token: 401
        t.wait(lambda ls: len(ls) >= 1)
        t.send(["get", "configmaps", namespace, "cm"])   # run 2: a good token
        t.wait(lambda ls: len(ls) >= 2)
        runs_before_expiry = reader.runs()
        t.send(["get", "configmaps", namespace, "cm"])   # cached
        t.wait(lambda ls: len(ls) >= 3)
        assert reader.runs() == runs_before_expiry
        time.sleep(6)
        t.send(["get", "configmaps", namespace, "cm"])   # expired: run 3
        t.wait(lambda ls: len(ls) >= 4)
    finally:
        t.p.stdin.close()
        t.stop()
    assert [e["status"] for e in t.events()][:4] == [401, 200, 200, 200], \
        (t.events(), t.stderr())
    assert runs_before_expiry == 2
    assert reader.runs() == 3
    assert "refused the exec credential" in t.stderr()
    assert "exec credential expired" in t.stderr()


@pytest.mark.parametrize("case", ["missing", "fails", "garbage", "wrong-version"])
def test_exec_plugin_errors_are_clear(cluster, namespace, reader, kubetool, tmp_path, case):
    user = {
        "missing": reader.user(command="nrbc-test-no-such-plugin"),
        "fails": reader.user(FAIL_MESSAGE="not logged in: run example-login first"),
        "garbage": reader.user(command="/bin/echo", args=["this is not json"]),
        "wrong-version": reader.user(V1, API_VERSION=V1BETA1),
    }[case]
    want = {
        "missing": ["exec plugin \"nrbc-test-no-such-plugin\" not found",
                    "apt install example-login"],
        "fails": ["exited with status 1", "not logged in: run example-login first"],
        "garbage": ["/bin/echo", "output is not JSON"],
        "wrong-version": ["apiVersion \"%s\"" % V1BETA1, "asks for \"%s\"" % V1],
    }[case]
    kc = kubeconfig(tmp_path / "kc", cluster, user, namespace=namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 3, (rc, body, err)
    for w in want:
        assert w in err, err
    assert kc in err


def test_kubeconfig_list_merged_as_kubectl_does(cluster, namespace, reader, kubetool,
                                                tmp_path):
    # first: current-context, the context and the (exec) user; second: the
    # cluster, and a user of the same name that must lose to the first's.
    first = tmp_path / "first"
    first.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                     "contexts:\n- name: c\n  context: {cluster: k, user: u, namespace: %s}\n"
                     "users:\n- name: u\n  user:\n%s" % (namespace, reader.user()))
    second = tmp_path / "second"
    second.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nope\n"
                      "clusters:\n- name: k\n  cluster:\n    server: %s\n"
                      "    certificate-authority: %s\n"
                      "users:\n- name: u\n  user: {token: not-a-valid-token}\n"
                      % (cluster.server, cluster.ca_file))
    env = dict(os.environ, KUBECONFIG="%s/missing:%s:%s" % (tmp_path, first, second))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    rc, body, err = run([kubetool, "get", "configmaps", namespace, "cm"], env=env)
    assert rc == 0, err
    assert reader.runs() >= 1
    # The other order: the token user wins and is refused.
    env["KUBECONFIG"] = "%s:%s" % (second, first)
    rc, body, err = run([kubetool, "--context", "c", "get", "configmaps", namespace, "cm"],
                        env=env)
    assert rc == 101, (rc, err)


def test_tls_server_name(cluster, namespace, reader, kubetool, tmp_path):
    # The serving certificate names 127.0.0.1, localhost, kubernetes.default.svc.
    kc = kubeconfig(tmp_path / "kc", cluster, admin_user(cluster),
                    "    tls-server-name: kubernetes.default.svc\n", namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 0, err
    kc = kubeconfig(tmp_path / "kc-wrong", cluster, admin_user(cluster),
                    "    tls-server-name: wrong.example\n", namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 1, (rc, err)
    assert "wrong.example" in err, err


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that records what it tunnels to."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.targets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                c.close()
                return
            head += chunk
        method, target = head.split(b" ")[:2]
        self.targets.append(target.decode())
        host, port = target.decode().rsplit(":", 1)
        if method != b"CONNECT":
            c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            c.close()
            return
        up = socket.create_connection((host, int(port)))
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        threading.Thread(target=relay, args=(up, c), daemon=True).start()
        relay(c, up)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.sock.close()


def test_proxy_url(cluster, namespace, reader, kubetool, tmp_path):
    proxy = ConnectProxy()
    try:
        kc = kubeconfig(tmp_path / "kc", cluster, admin_user(cluster),
                        "    proxy-url: http://127.0.0.1:%d\n" % proxy.port, namespace)
        # no_proxy must not bypass an explicit proxy-url (client-go's rule).
        env = dict(os.environ, no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1")
        rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace,
                             "cm"], env=env)
        assert rc == 0, err
        assert proxy.targets == [cluster.server.split("://", 1)[1]], proxy.targets
    finally:
        proxy.close()
    # A proxy that is not there: the request fails, it does not go direct.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    kc = kubeconfig(tmp_path / "kc-closed", cluster, admin_user(cluster),
                    "    proxy-url: http://127.0.0.1:%d\n" % closed_port, namespace)
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "configmaps", namespace, "cm"])
    assert rc == 1, (rc, err)
    assert str(closed_port) in err or "proxy" in err.lower(), err


# ---- nrbc client-config on the whole stack ------------------------------------

CLIENT_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: %(name)s, namespace: nrbc}
"""
CLIENT_BINDING = """
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %(name)s, namespace: nrbc}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: nrbc-client}
subjects:
- {kind: ServiceAccount, name: %(name)s, namespace: nrbc}
"""


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack"))
    s.install().start()
    yield s
    s.stop()


class User:
    """A person with a HOME of their own and a kubeconfig whose exec plugin
    hands out the token of a ServiceAccount (bound to nrbc-client or not)."""

    def __init__(self, cluster, nrbc_bin, d, name, bound=True):
        cluster.apply(CLIENT_RBAC % {"name": name})
        if bound:
            cluster.apply(CLIENT_BINDING % {"name": name})
        self.nrbc = nrbc_bin
        self.home = os.path.join(str(d), "home")
        os.makedirs(self.home)
        pd = os.path.join(str(d), "plugin")
        os.makedirs(pd)
        self.plugin = Plugin(pd, cluster.token(name, NAMESPACE))
        self.kubeconfig = kubeconfig(os.path.join(str(d), "kubeconfig"), cluster,
                                     self.plugin.user(), namespace=NAMESPACE)

    def run(self, *args):
        env = {"PATH": os.environ["PATH"], "HOME": self.home, "KUBECONFIG": self.kubeconfig}
        p = subprocess.run([self.nrbc, "client-config", *args], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
        return p.returncode, p.stdout, p.stderr

    def path(self, rel):
        return os.path.join(self.home, rel)

    def read(self, rel):
        return open(self.path(rel)).read()


def test_client_config_end_to_end(cluster, stack, nrbc_bin, nix_client, tmp_path):
    u = User(cluster, nrbc_bin, tmp_path, "alice")
    key = stack.keys["user-key"]
    host_pub = open(stack.keys["host-key"] + ".pub").read().split()
    hk_line = "[%s]:%d %s %s" % (PROXY_ADDRESS, stack.proxy_port, host_pub[0], host_pub[1])
    # maxJobs 16: builder-slots 4 x builders-per-key 4 (the shipped ConfigMap).
    builders = "ssh-ng://nixbld@%s x86_64-linux %s 16 1 - - -" % (PROXY_ADDRESS, key)

    # Printed, nothing written.
    rc, out, err = u.run("--identity", key)
    assert rc == 0, (out, err)
    assert "builders = %s\n" % builders in out
    assert "builders-use-substitutes = true\n" in out
    assert hk_line + "\n" in out
    assert "Host %s\n" % PROXY_ADDRESS in out and "  Port %d\n" % stack.proxy_port in out
    assert not os.path.exists(u.path(".ssh"))
    assert u.plugin.runs() == 1

    # Written, and checked through the proxy.
    rc, out, err = u.run("--identity", key, "--write", "--check")
    assert rc == 0, (out, err)
    assert out.count(": added\n") == 4, out
    assert "ok nixbld\n" in out, out
    assert "builders = %s\n" % builders in u.read(".config/nix/nix.conf")
    assert u.read(".ssh/known_hosts") == hk_line + "\n"
    assert "IdentityFile %s\n" % key in u.read(".ssh/config")

    # Nix builds with exactly what was written.
    conf = dict(line.split(" = ", 1) for line in
                u.read(".config/nix/nix.conf").splitlines() if " = " in line)
    b = nix_client.build("simple.nix", builders=conf["builders"],
                         sshopts="-F %s" % u.path(".ssh/config"), args={"salt": salt()})
    assert nix_client.has(b.out)

    # Again: nothing to do.
    rc, out, err = u.run("--identity", key, "--write")
    assert rc == 0, (out, err)
    assert out.count("already there, unchanged") == 4, out

    # A stale host key in known_hosts: not replaced without --force, and the
    # check says what is wrong.
    other = open(stack.keys["builder-key"] + ".pub").read().split()
    stale = "[%s]:%d %s %s\n" % (PROXY_ADDRESS, stack.proxy_port, other[0], other[1])
    with open(u.path(".ssh/known_hosts"), "w") as f:
        f.write("example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n" + stale)
    rc, out, err = u.run("--identity", key, "--write", "--check")
    assert rc == 1, (out, err)
    assert "known_hosts entry: NOT CHANGED, a different entry is there" in out, out
    assert "FAILED nixbld: host key mismatch" in out, out
    assert u.read(".ssh/known_hosts").endswith(stale)
    rc, out, err = u.run("--identity", key, "--write", "--force", "--check")
    assert rc == 0, (out, err)
    assert "known_hosts entry: replaced" in out and "ok nixbld\n" in out, out
    assert u.read(".ssh/known_hosts") == (
        "example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n" + hk_line + "\n")

    # A key the proxy does not know.
    stranger = os.path.join(str(tmp_path), "stranger")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    rc, out, err = u.run("--identity", stranger, "--check")
    assert rc == 1, (out, err)
    assert "FAILED nixbld: key refused" in out, out

    # --address overrides the Service; nothing listens there: unreachable.
    s = socket.socket()
    s.bind((PROXY_ADDRESS, 0))
    closed = s.getsockname()[1]
    s.close()
    rc, out, err = u.run("--identity", key, "--address", "%s:%d" % (PROXY_ADDRESS, closed),
                         "--check")
    assert rc == 1, (out, err)
    assert "  Port %d\n" % closed in out, out
    assert "FAILED nixbld: unreachable" in out, out

    # --system writes /etc's files (under --etc-dir here).
    etc = os.path.join(str(tmp_path), "etc")
    rc, out, err = u.run("--identity", key, "--system", "--etc-dir", etc, "--write")
    assert rc == 0, (out, err)
    assert "builders = %s\n" % builders in open(os.path.join(etc, "nix/nix.conf")).read()
    assert open(os.path.join(etc, "ssh/ssh_known_hosts")).read() == hk_line + "\n"
    assert "Port %d" % stack.proxy_port in open(
        os.path.join(etc, "ssh/ssh_config.d/nrbc.conf")).read()
    stack.wait_clean()


def test_client_config_writes_a_line_per_class(cluster, stack, nrbc_bin, nix_client, tmp_path):
    """With two NixBuilderClasses, the written builders setting has three
    machines (default, big, arm), --check pings each, and one nix-build with
    exactly what was written sends each derivation to the class that can
    build it."""
    classes = {"big": {"supportedFeatures": ["big-parallel"],
                       "mandatoryFeatures": ["big-parallel"], "speedFactor": 2, "slots": 2,
                       "maxBuildersPerIdentity": 3},
               "arm": {"systems": ["aarch64-linux"]}}
    for name, spec in classes.items():
        cluster.apply(json.dumps({"apiVersion": "nix.io/v1alpha1", "kind": "NixBuilderClass",
                                  "metadata": {"name": name, "namespace": NAMESPACE},
                                  "spec": spec}))
    try:
        u = User(cluster, nrbc_bin, tmp_path, "carol")
        key = stack.keys["user-key"]
        rc, out, err = u.run("--identity", key, "--write", "--check")
        assert rc == 0, (out, err)
        for name in ("nixbld", "big", "arm"):
            assert "ok %s\n" % name in out, out
        conf = dict(line.split(" = ", 1) for line in
                    u.read(".config/nix/nix.conf").splitlines() if " = " in line)
        machines = [m.split() for m in conf["builders"].split(" ; ")]
        by_user = {m[0].split("://", 1)[1].split("@", 1)[0]: m for m in machines}
        assert set(by_user) == {"nixbld", "big", "arm"}, machines
        # maxJobs: slots x builders per key; features with the mandatory ones.
        assert by_user["big"][3:7] == ["6", "2", "big-parallel", "big-parallel"], by_user
        assert by_user["arm"][1] == "aarch64-linux" and by_user["arm"][3] == "16", by_user
        s = salt()
        b = nix_client.build("classes.nix", builders=conf["builders"],
                             sshopts="-F %s" % u.path(".ssh/config"), args={"salt": s})
        assert nix_client.read(b.out).decode().split() == [
            "plain-" + s, "big-" + s, "arm-" + s]
        # Only big may be used by this key: the other lines are left out.
        rc, out, err = u.run("--identity", key, "--classes", "big")
        assert rc == 0, (out, err)
        assert "ssh-ng://big@" in out and "ssh-ng://nixbld@" not in out, out
        rc, out, err = u.run("--identity", key, "--classes", "nixbld,huge")
        assert rc == 2 and "huge" in err, (out, err)
        # This host's Nix (2.8) takes no port in a store URI: with auto (as
        # above) the URIs have none; a Nix 2.31 / Lix 2.93 gets it there.
        assert all("@%s " % stack.proxy_address in "%s " % m[0] for m in machines), machines
        rc, out, err = u.run("--identity", key, "--store-port", "yes")
        assert rc == 0, (out, err)
        assert "ssh-ng://big@%s:%d " % (stack.proxy_address, stack.proxy_port) in out, out
        rc, out, err = u.run("--identity", key, "--store-port", "maybe")
        assert rc == 2 and "--store-port must be auto, yes or no" in err, (out, err)
    finally:
        for name in classes:
            cluster.kubectl("-n", NAMESPACE, "delete", "nixbuilderclass", name, check=False)
    stack.wait_clean()


def test_client_config_needs_the_role(cluster, stack, nrbc_bin, tmp_path):
    u = User(cluster, nrbc_bin, tmp_path, "mallory", bound=False)
    rc, out, err = u.run("--identity", stack.keys["user-key"])
    assert rc == 1, (out, err)
    assert "not allowed to get" in err and "nrbc-client" in err, err
    assert "builders" not in out
