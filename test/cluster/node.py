"""An optional real node for the local test cluster (test code, stdlib only).

containerd 2 and runc built by runtime.sh (Debian 12's containerd 1.6
cannot run user-namespaced pods) + kubelet and kube-scheduler built by
build.sh from the pinned Kubernetes module, so pods really run. Used by
cluster.py's Cluster(real_node=True); everything lives under
<cluster workdir>/node and is torn down by stop().

Only loopback addresses (tests may use nothing else):
  - the gateway G (127.203.N.1, the first N free on this machine) is the
    host side of every pod's veth (cni/nrbc-loopback); the API server binds
    G so pods reach it, and the kubelet serves on G:<free port>;
  - the node's name and InternalIP are G: kubelet refuses a loopback
    --node-ip (validateNodeIP) but takes an IP given as --hostname-override
    as the InternalIP unchecked (pkg/kubelet/nodestatus/setters.go);
  - pods get G's /24 (.2-.254); containerd's stream server is 127.0.0.1.
Private to this node: containerd's root, state, sockets, runc root, CNI
config and plugin dir; the kubelet's root dir and pod logs. Not private:
containerd's shim sockets (/run/containerd/s/<hash>, removed as shims exit)
and the kubelet's /var/log/containers links (removed in stop()).

Attributes for tests: name (the Node's name), gateway, subnet (pods' /24),
image (the locally made test image, also the sandbox image: image/tool.c),
sock (containerd's socket, for `ctr --address SOCK -n k8s.io ...`), dir,
kubelet_port, ready_seconds (start until Ready and schedulable).

Runtime choices forced by this kind of VM (hybrid cgroup v1/v2): runc with
the cgroupfs driver, no QoS cgroups / node allocatable enforcement.

NetworkPolicy is enforced (the CNI plugin enforces nothing): the node runs
kube-network-policies v0.8.0 (netpol/, built by netpol/build.sh into
.cache/netpol/<key>) with the admin kubeconfig. It judges each new
connection's first packet in userspace, read from an NFQUEUE. Its own
steering into the queue is an nftables `queue` rule, which this machine's
kernel cannot load (built without CONFIG_NFT_QUEUE; the rules fail as one
batch and nothing is installed), so the node steers with the xtables
NFQUEUE target instead (iptables-legacy, chain NRBC-NETPOL-<N>, queue
100+N for subnet 127.203.N, so nodes of parallel runs do not meet): new
connections from or to the node's pods in FORWARD, and from its pods to
the node itself in INPUT. The last is more than kube-network-policies does
on a real node (its postrouting hook never sees a pod's connection to its
own node's addresses): here the API server and everything else "outside"
the pod network are the node's own addresses, so without it no egress
rule towards them could be tested. Traffic the host makes to pods
(kubelet probes, the tests' clients) is not judged, as there (root's
traffic is accepted). Unlike kube-network-policies' default (fail
closed), the queue is bypassed while no enforcer listens: rules a killed
run left behind must not drop the traffic of the next run (of older code,
say) that claims the subnet; the cluster's liveness check sees a dead
enforcer, and tests of denials fail without one. clean_stale() removes
the chains of subnets nobody claims. Attribute netpol_queue.

More nodes (Cluster(real_node=True, extra_nodes=[...])): node i >= 2 is
another RealNode with its own subnet 127.203.M (claimed as the first's),
dir <workdir>/node-<i>, containerd, kubelet (own client and serving certs,
pki/node-<i>-kubelet*), enforcer (queue 100+M, chain NRBC-NETPOL-M) and
process names node-<i>-*; labels and taints given are registered by its
kubelet (--node-labels, --register-with-taints). Shared by all nodes: the
API server (on the first node's gateway: pods route the pods' /16 and
everything else to their own gateway, and every 127/8 address is local to
the host, so a second node's pods reach it as the first's do), the
kube-scheduler (started and stopped by the first node), the image cache,
and the kubelet seccomp directory: node-<i>/kubelet/seccomp is a symlink
to the first node's, so the seccomp DaemonSet's one hostPath serves every
node, as /var/lib/kubelet/seccomp is one path on each node of a real
cluster. A connection between pods of two nodes is judged by one enforcer
(whichever node's FORWARD jump comes first); kube-network-policies looks
both pods up cluster-wide, so the sender's egress and the receiver's
ingress policies are both applied, as two enforcers would. Pods of all
nodes share the host's processes, CPUs and memory: each node reports the
whole machine as its capacity.
"""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "image"))
import image  # noqa: E402

CNI_PLUGIN = os.path.join(HERE, "cni", "nrbc-loopback")
NETPOL_BUILD = os.path.join(HERE, "netpol", "build.sh")
IPTABLES = "iptables-legacy"      # the xtables NFQUEUE target (see the module comment)
SYSTEM_CNI = "/usr/lib/cni"
IMAGE_CACHE = os.path.join(REPO, ".cache", "node-images")
# kubelet's hard-coded link directory (kubelet.ContainerLogsDir)
CONTAINER_LOG_LINKS = "/var/log/containers"


# User-namespaced pods (hostUsers: false) and their unmasked /proc, which
# sandboxed builders use: on by default from Kubernetes 1.33.
FEATURE_GATES = "UserNamespacesSupport=true,ProcMountType=true"


class NodeError(Exception):
    pass


def runtime_dir():
    """containerd 2, its runc shim and runc, built by runtime.sh (cached;
    test/setup builds them first, so this is a lookup)."""
    p = subprocess.run([os.path.join(HERE, "runtime.sh")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise NodeError("test/cluster/runtime.sh failed: " + p.stderr.strip()[-2000:])
    return p.stdout.strip()


class RealNode:
    def __init__(self, cluster, subnet=None, index=1, labels=None, taints=None):
        """subnet: the first three octets of the pods' /24 (127.x.y); .1 is
        the gateway. Default: the first free 127.203.N (see _claim_subnet),
        so test runs on one machine at the same time do not clash.
        index: 1 for the cluster's first node (dir node/, process names
        node-*, the kube-scheduler), 2.. for the others (node-<i>/,
        node-<i>-*, files node-<i>-kubelet* in the pki); see "More nodes".
        labels: {key: value} and taints: ["key=value:Effect" or {"key",
        "value", "effect"}]: the kubelet registers its Node with them
        (--node-labels, --register-with-taints)."""
        self.cluster = cluster
        self._claim = None
        self.index = index
        self.labels = dict(labels or {})
        self.taints = [_taint_arg(t) for t in taints or ()]
        self.prefix = "node" if index == 1 else "node-%d" % index
        if subnet is None:
            subnet = self._claim_subnet()
        self.gateway = subnet + ".1"
        self.subnet = subnet + ".0/24"
        self.name = self.gateway          # see the module comment
        self.dir = None
        self.sock = None
        self.image = None                 # name of the test image (also the sandbox)
        self.runtime = None               # containerd, shim and runc (runtime.sh)
        self.kubelet_port = None
        self.ready_seconds = None
        n = int(subnet.rsplit(".", 1)[1])
        self.netpol_queue = 100 + n
        self.netpol_chain = "NRBC-NETPOL-%d" % n

    def _claim_subnet(self):
        """Holds an abstract unix socket named after the subnet while this
        object lives: the kernel frees the name when the process dies, so a
        crashed run leaves no stale claim (and no file) behind."""
        for n in range(256):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind("\0nrbc-real-node-127.203.%d" % n)
            except OSError:
                s.close()
                continue
            self._claim = s
            return "127.203.%d" % n
        raise NodeError("no free 127.203.N subnet")

    # ---- called by Cluster ------------------------------------------------

    def make_pki(self, pki):
        """Kubelet client (system:node:<name>) and serving certs, this
        node's own, and (first node only) the API server's client cert for
        the kubelets. After cluster.make_pki."""
        import cluster as cm
        self.kubelet_pki = "kubelet" if self.index == 1 else self.prefix + "-kubelet"
        cm.make_leaf(pki, self.kubelet_pki, "/O=system:nodes/CN=system:node:" + self.name,
                     cm.CLIENT_EXT)
        cm.make_leaf(pki, self.kubelet_pki + "-serving", "/CN=" + self.name,
                     cm.server_ext("IP:" + self.gateway))
        if self.index == 1:
            cm.make_leaf(pki, "apiserver-kubelet-client",
                         "/O=system:masters/CN=kube-apiserver-kubelet-client", cm.CLIENT_EXT)
        self.pki = pki

    def apiserver_args(self):
        p = self.pki
        return ["--kubelet-client-certificate", os.path.join(p, "apiserver-kubelet-client.crt"),
                "--kubelet-client-key", os.path.join(p, "apiserver-kubelet-client.key"),
                "--kubelet-certificate-authority", os.path.join(p, "ca.crt"),
                "--kubelet-preferred-address-types", "InternalIP",
                "--feature-gates", FEATURE_GATES]

    def start(self, deadline):
        t0 = time.monotonic()
        c = self.cluster
        self.dir = os.path.join(c.workdir, self.prefix)
        if self.index == 1:
            for d in clean_stale():
                c._log("cleaned up after a killed real node in %s" % d)
        for sub in ("containerd", "cni/bin", "cni/net.d", "cni/state", "kubelet", "pod-logs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        if self.index != 1:
            # One seccomp directory for all nodes (see "More nodes").
            first = os.path.join(c.workdir, "node", "kubelet", "seccomp")
            os.makedirs(first, exist_ok=True)
            link = os.path.join(self.dir, "kubelet", "seccomp")
            if not os.path.lexists(link):
                os.symlink(first, link)
        # A user-namespaced pod's root is nobody on the node: runc, already
        # in the pod's namespace, must still walk down to its rootfs under
        # containerd's state (a workdir from mkdtemp is 0700).
        for d in (c.workdir, self.dir, os.path.join(self.dir, "containerd")):
            os.chmod(d, os.stat(d).st_mode | 0o111)
        path, self.image = image.build(IMAGE_CACHE)
        self.runtime = runtime_dir()
        self._write_containerd_config()
        # The shim is looked up on PATH.
        env = dict(os.environ, PATH=self.runtime + os.pathsep + os.environ.get("PATH", ""))
        c._spawn(self.prefix + "-containerd", [os.path.join(self.runtime, "containerd"), "--config",
                                     os.path.join(self.dir, "containerd.toml")], env=env)
        while self._ctr("version", check=False).returncode != 0:
            c._check_alive()
            if time.monotonic() > deadline:
                raise NodeError("containerd did not start")
            time.sleep(0.1)
        self._ctr("-n", "k8s.io", "images", "import", path)
        self._start_netpol(deadline)

        self._write_kubelet_files()
        register = []
        if self.labels:
            register += ["--node-labels", ",".join(
                "%s=%s" % kv for kv in sorted(self.labels.items()))]
        if self.taints:
            register += ["--register-with-taints", ",".join(self.taints)]
        c._spawn(self.prefix + "-kubelet", [
            os.path.join(c.bindir, "kubelet"),
            "--config", os.path.join(self.dir, "kubelet.yaml"),
            "--kubeconfig", os.path.join(self.dir, "kubelet.kubeconfig"),
            "--hostname-override", self.name,
            "--root-dir", os.path.join(self.dir, "kubelet"),
            "--cert-dir", os.path.join(self.dir, "kubelet", "pki"),
            "--v", "1",
        ] + register)
        if self.index == 1:
            # One scheduler for the cluster, whatever the number of nodes.
            c._spawn("kube-scheduler", [
                os.path.join(c.bindir, "kube-scheduler"),
                "--kubeconfig", c.kubeconfig,
                "--leader-elect=false",
                "--bind-address", "127.0.0.1",
                "--secure-port", "0",
            ])
        while not self.ready():
            c._check_alive()
            if time.monotonic() > deadline:
                raise NodeError("node %s not Ready in time" % self.name)
            time.sleep(0.2)
        self.ready_seconds = time.monotonic() - t0

    def ready(self):
        st, node = self.cluster.api("GET", "/api/v1/nodes/" + self.name)
        if st != 200:
            return False
        conds = node.get("status", {}).get("conditions", [])
        # The kubelet registers the node with a not-ready taint, which the
        # node-lifecycle-controller removes; until then nothing schedules.
        taints = [t for t in node.get("spec", {}).get("taints", [])
                  if t.get("key") == "node.kubernetes.io/not-ready"]
        return not taints and any(x["type"] == "Ready" and x["status"] == "True"
                                  for x in conds)

    # ---- NetworkPolicy ------------------------------------------------------

    def _start_netpol(self, deadline):
        """kube-network-policies, then the steering into its queue (pods start
        only later, with the kubelet, so none runs unjudged)."""
        c = self.cluster
        out = subprocess.run([NETPOL_BUILD], check=True, stdout=subprocess.PIPE, text=True)
        binary = os.path.join(out.stdout.strip().splitlines()[-1], "kube-network-policies")
        self._steer(False)      # a killed run's rules for this subnet
        c._spawn(self.prefix + "-netpol", [
            binary, "--kubeconfig", c.kubeconfig, "--hostname-override", self.name,
            "--nfqueue-id", str(self.netpol_queue),
            "--nftables-table", "nrbc-netpol-%d" % (self.netpol_queue - 100), "--v", "1"])
        # Listening on the queue once this file lists it (nfnetlink_queue:
        # queue number first on each line).
        while not self._queue_bound():
            c._check_alive()
            if time.monotonic() > deadline:
                raise NodeError("kube-network-policies did not bind queue %d"
                                % self.netpol_queue)
            time.sleep(0.1)
        self._steer(True)

    def _queue_bound(self):
        try:
            with open("/proc/net/netfilter/nfnetlink_queue") as f:
                return any(line.split()[:1] == [str(self.netpol_queue)] for line in f)
        except OSError:
            return False

    def _steer_rules(self):
        return _steer_rules(self.netpol_chain, self.subnet)

    def _steer(self, on):
        """on: the chain that queues to the enforcer and the jumps into it;
        off: removes both, whatever of them exists."""
        if not on:
            _unsteer(self.netpol_chain, self.subnet)
            return
        for args in (["-N", self.netpol_chain],
                     ["-A", self.netpol_chain, "-j", "NFQUEUE",
                      "--queue-num", str(self.netpol_queue), "--queue-bypass"]):
            p = _ipt(*args)
            if p.returncode != 0:
                raise NodeError("%s %s: %s" % (IPTABLES, " ".join(args), p.stderr.strip()))
        for chain, rule in self._steer_rules():
            p = _ipt("-I", chain, "1", *rule)
            if p.returncode != 0:
                raise NodeError("%s -I %s: %s" % (IPTABLES, chain, p.stderr.strip()))

    # ---- files -------------------------------------------------------------

    def _write_containerd_config(self):
        d = os.path.join(self.dir, "containerd")
        self.sock = os.path.join(d, "containerd.sock")
        if len(self.sock + ".ttrpc") >= 108:     # sun_path
            raise NodeError("workdir too long for containerd's socket: " + self.sock)
        bindir = os.path.join(self.dir, "cni", "bin")
        # containerd's CRI adds a loopback network itself (plugin "loopback").
        for name, target in (("loopback", os.path.join(SYSTEM_CNI, "loopback")),
                             ("nrbc-loopback", CNI_PLUGIN)):
            link = os.path.join(bindir, name)
            if not os.path.lexists(link):
                os.symlink(target, link)
        with open(os.path.join(self.dir, "cni", "net.d", "10-nrbc.conflist"), "w") as f:
            f.write('{"cniVersion": "1.0.0", "name": "nrbc-loopback", "plugins": '
                    '[{"type": "nrbc-loopback", "subnet": "%s", "gateway": "%s", '
                    '"stateDir": "%s"}]}\n' % (self.subnet, self.gateway,
                                               os.path.join(self.dir, "cni", "state")))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        with open(os.path.join(self.dir, "containerd.toml"), "w") as f:
            f.write("""version = 2
root = "{d}/root"
state = "{d}/state"
# opt would install into /opt/containerd; the others are unusable here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[{cri}]
  sandbox_image = "{image}"
  # pod network namespaces under state, not /var/run/netns
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_tcp_service = true
  # Without CAP_SYS_RESOURCE in this sandbox, runc may not lower
  # oom_score_adj below our own (the sandbox asks for -998).
  restrict_oom_score_adj = true
  # would need apparmor_parser and a loaded profile wherever AppArmor is on
  disable_apparmor = true
  [{cri}.cni]
    bin_dir = "{cnibin}"
    conf_dir = "{cniconf}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
        BinaryName = "{runc}"
""".format(d=d, sock=self.sock, cri=cri, image=self.image,
           runc=os.path.join(self.runtime, "runc"),
           cnibin=bindir, cniconf=os.path.join(self.dir, "cni", "net.d")))

    def _write_kubelet_files(self):
        import cluster as cm
        c, p, k = self.cluster, self.pki, self.kubelet_pki
        cm.write_kubeconfig(os.path.join(self.dir, "kubelet.kubeconfig"), c.server,
                            c.ca_file, {"client-certificate": os.path.join(p, k + ".crt"),
                                        "client-key": os.path.join(p, k + ".key")})
        resolv = os.path.join(self.dir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("# nrbc test node: pods have no DNS\n")
        self.kubelet_port = cm.free_port(self.gateway)
        with open(os.path.join(self.dir, "kubelet.yaml"), "w") as f:
            f.write("""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {gw}
port: {port}
readOnlyPort: 0
healthzPort: 0
tlsCertFile: {p}/{k}-serving.crt
tlsPrivateKeyFile: {p}/{k}-serving.key
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {p}/ca.crt}}
# Only holders of a cluster-CA certificate get here (the API server).
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{sock}
imageServiceEndpoint: unix://{sock}
cgroupDriver: cgroupfs
# This kind of VM has cgroup v1 (hybrid); Kubernetes 1.35 refuses it unless told.
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
hairpinMode: none
resolvConf: {resolv}
podLogsDir: {dir}/pod-logs
# A nearly full disk must not evict the test pods or their image.
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
nodeStatusReportFrequency: 10s
featureGates: {{{gates}}}
""".format(gw=self.gateway, port=self.kubelet_port, p=p, k=k, sock=self.sock,
           resolv=resolv, dir=self.dir,
           gates=", ".join("%s: true" % g.split("=")[0] for g in FEATURE_GATES.split(","))))

    def _ctr(self, *args, check=True):
        p = subprocess.run(["ctr", "--address", self.sock, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        if check and p.returncode != 0:
            raise NodeError("ctr %s: %s" % (" ".join(args), p.stderr.strip()))
        return p

    # ---- teardown -----------------------------------------------------------

    def stop(self):
        """Leaves nothing behind, also after a failed start: kubelet first
        (so it restarts nothing), then every container through containerd,
        then containerd; then whatever survived is killed by its root
        directory, mounts under the node dir are undone and recorded veths
        deleted. Then the subnet is free for another run."""
        try:
            if self.dir is not None:
                self._teardown()
        finally:
            if self._claim is not None:
                self._claim.close()
                self._claim = None

    def _teardown(self):
        c, n = self.cluster, self.prefix
        c._stop_proc(n + "-kubelet", grace=5)
        if self.index == 1:
            c._stop_proc("kube-scheduler", grace=1)
        if c.procs.get(n + "-containerd") is not None and self.sock:
            self._remove_containers()
        c._stop_proc(n + "-containerd", grace=5)
        clean_dir(self.dir)
        self._steer(False)
        c._stop_proc(n + "-netpol", grace=3)

    def _remove_containers(self):
        ns = ("-n", "k8s.io")
        try:
            tasks = self._ctr(*ns, "tasks", "ls", "-q", check=False).stdout.split()
            for t in tasks:
                self._ctr(*ns, "tasks", "kill", "-a", "-s", "SIGKILL", t, check=False)
            for t in tasks:
                self._ctr(*ns, "tasks", "delete", "-f", t, check=False)
            ids = self._ctr(*ns, "containers", "ls", "-q", check=False).stdout.split()
            if ids:
                self._ctr(*ns, "containers", "delete", *ids, check=False)
        except (subprocess.TimeoutExpired, OSError):
            pass


def _taint_arg(t):
    """"key=value:Effect" (the kubelet's --register-with-taints form) of a
    taint given as that string or as {"key", "value", "effect"}."""
    if isinstance(t, str):
        return t
    return "%s%s:%s" % (t["key"], "=" + t["value"] if t.get("value") else "", t["effect"])


# ---- the enforcer's steering (RealNode._steer) --------------------------------

def _ipt(*args):
    try:
        return subprocess.run([IPTABLES, "-w", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", IPTABLES + " not found")


def _steer_rules(chain, subnet):
    new = ["-m", "conntrack", "--ctstate", "NEW", "-j", chain]
    return [("FORWARD", ["-s", subnet] + new),
            ("FORWARD", ["-d", subnet] + new),
            ("INPUT", ["!", "-i", "lo", "-s", subnet] + new)]


def _unsteer(chain, subnet):
    for hook, rule in _steer_rules(chain, subnet):
        while _ipt("-D", hook, *rule).returncode == 0:
            pass
    _ipt("-F", chain)
    _ipt("-X", chain)


def _clean_stale_steering():
    """Removes NRBC-NETPOL-N chains (and their jumps) of subnets 127.203.N
    that no live node claims (RealNode._claim_subnet)."""
    p = _ipt("-S")
    for line in p.stdout.splitlines():
        if not line.startswith("-N NRBC-NETPOL-"):
            continue
        chain = line.split()[1]
        n = chain.rsplit("-", 1)[1]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind("\0nrbc-real-node-127.203.%s" % n)
        except OSError:
            continue        # claimed: a live node's
        else:
            _unsteer(chain, "127.203.%s.0/24" % n)
        finally:
            s.close()


# ---- what a node leaves when its containerd is gone ----------------------------

def _node_sock(node_dir):
    return os.path.join(node_dir, "containerd", "containerd.sock")


def clean_dir(node_dir):
    """Kills what survives containerd (its shims, named by their -address,
    and container processes, named by their cgroup: runc puts each in
    .../<container id>, and the ids are the task dirs under state/),
    unmounts everything under node_dir (overlay rootfs, netns bind mounts,
    the kubelet's rshared root dir, volumes; deepest first, lazily if busy),
    deletes the veths still recorded and the kubelet's log links."""
    sock = _node_sock(node_dir).encode()
    tasks = os.path.join(node_dir, "containerd", "state", "io.containerd.runtime.v2.task")
    ids = [os.path.basename(t) for t in glob.glob(os.path.join(tasks, "*", "*"))]
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % e, "rb") as f:
                mine = sock in f.read().split(b"\0")
            if not mine and ids:
                with open("/proc/%s/cgroup" % e) as f:
                    cg = f.read()
                mine = any("/" + i + "\n" in cg for i in ids)
            if mine:
                os.kill(int(e), signal.SIGKILL)
        except OSError:
            pass
    for _ in range(5):
        mounts = set()
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == node_dir or mp.startswith(node_dir + "/"):
                    mounts.add(mp)
        if not mounts:
            break
        for mp in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if os.path.isdir(os.path.join(node_dir, "cni", "state")):
        subprocess.run([CNI_PLUGIN, "cleanup", os.path.join(node_dir, "cni", "state")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = os.path.join(node_dir, "pod-logs") + "/"
    for link in glob.glob(os.path.join(CONTAINER_LOG_LINKS, "*.log")):
        try:
            if os.readlink(link).startswith(logs):
                os.unlink(link)
        except OSError:
            pass


def _alive(sock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock)
        return True
    except OSError:
        return False
    finally:
        s.close()


def clean_stale():
    """What a run killed with SIGKILL left: its containerd and kubelet died
    with it (PDEATHSIG), but shims, containers, mounts and veths do not.
    Found by the paths this module uses (shims' -address .../node/containerd/
    containerd.sock, mounts under .../node/{containerd,kubelet}) whose
    containerd no longer answers. Returns the node dirs cleaned."""
    dirs = set()
    sock_re = re.compile(r"^(.*/node(?:-\d+)?)/containerd/containerd\.sock$")
    mount_re = re.compile(r"^(.*?/node(?:-\d+)?)/(?:containerd/|kubelet)")
    for e in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % e, "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("containerd-shim-runc-v2") and "-address" in argv:
            a = argv[argv.index("-address") + 1:][:1]
            m = sock_re.match(a[0]) if a else None
            if m:
                dirs.add(m.group(1))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            m = mount_re.match(line.split()[4])
            if m:
                dirs.add(m.group(1))
    stale = sorted(d for d in dirs if not _alive(_node_sock(d)))
    for d in stale:
        clean_dir(d)
    _clean_stale_steering()
    return stale
