#!/usr/bin/python3
"""TEST CODE ONLY -- a minimal stand-in for kube-scheduler + kubelet.

Not part of nrbc. The local test cluster (test/cluster/) has no scheduler and
no kubelet; this program plays both for builder pods so that nrbc can be
tested against a real kube-apiserver:

- registers Node `nrbc-test-node` (Ready, linux/amd64) and keeps it Ready;
- list+watches pods matching --selector (all namespaces);
- "schedules": nodeSelector and resource requests against the node, else
  PodScheduled=False/Unschedulable; binds with the pods/binding subresource;
- "pulls": an image containing `does-not-exist` gives ErrImagePull /
  ImagePullBackOff and never starts;
- gives each pod its own loopback address 127.0.X.Y (X >= 1) as podIP;
- materialises Secret/ConfigMap/emptyDir volumes as files under
  <dir>/pods/<uid>/root<mountPath> (missing ones: CreateContainerConfigError);
- runs builder/entrypoint.sh (not the image!) as a local process group with
  the container's env plus NRBC_BUILDER_ROOT/LISTEN_ADDRESS/PORT/NIX_DAEMON,
  in a mount and a PID namespace of its own where <root>/nix is /nix: each
  pod starts with an empty Nix store and runs its own nix-daemon
  (NRBC_BUILDER_NIX_DAEMON=start), as a builder container does, so clients
  upload inputs to every pod; the annotation nrbc.test/host-nix-store=true
  opts a pod out (host's /nix and nix-daemon, NRBC_BUILDER_NIX_DAEMON=external);
- reports status (Pending -> Running, Ready after the tcpSocket readiness
  probe, Succeeded/Failed on exit, DeadlineExceeded) via pods/status;
- on deletion kills every process of the pod (the whole process tree, also
  sshd sessions that left the process group), removes its directory (and
  store) and confirms with DELETE gracePeriodSeconds=0, as a real kubelet
  does.

Run as root:  kubelet.py --kubeconfig admin.kubeconfig --dir DIR
State: DIR/pods/<uid>/{root/,root/nix/,log,pid}, DIR/logs/ (logs of deleted
pods); pid holds "PID STARTTIME" of
the pod's root process (`unshare`, parent of the pod's PID 1).
"""

import argparse
import base64
import ctypes
import fcntl
import grp
import http.client
import json
import os
import pwd
import queue
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ENTRYPOINT = os.path.join(REPO, "builder", "entrypoint.sh")

NODE_NAME = "nrbc-test-node"
DEFAULT_SELECTOR = "app.kubernetes.io/name=nrbc-builder"
HOST_IP = "127.0.0.1"
HOST_STORE_ANNOTATION = "nrbc.test/host-nix-store"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        t = time.time()
        sys.stderr.write("%s.%03d kubelet: %s\n" % (time.strftime("%H:%M:%S", time.localtime(t)),
                                                  int(t * 1000) % 1000, msg))
        sys.stderr.flush()


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_time(s):
    return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


# ---- minimal API client ------------------------------------------------------

def read_kubeconfig(path):
    """Just what cluster.py writes: server, CA, client cert/key (paths)."""
    text = open(path).read()
    out = {}
    for key in ("server", "certificate-authority", "client-certificate", "client-key"):
        m = re.search(r"^\s*%s:\s*(\S+)\s*$" % re.escape(key), text, re.M)
        if not m:
            raise SystemExit("kubelet: %s: no %s (only file paths are supported)" % (path, key))
        out[key] = m.group(1).strip("\"'")
    return out


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %s: %s" % (status, body))
        self.status = status
        self.body = body


class Api:
    def __init__(self, kubeconfig):
        kc = read_kubeconfig(kubeconfig)
        self.server = kc["server"]
        ctx = ssl.create_default_context(cafile=kc["certificate-authority"])
        ctx.load_cert_chain(kc["client-certificate"], kc["client-key"])
        self.ctx = ctx

    def request(self, method, path, body=None, content_type="application/json",
                timeout=30, ok=(200, 201)):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if status not in ok:
            raise ApiError(status, parsed)
        return parsed

    def stream(self, path, timeout):
        req = urllib.request.Request(self.server + path,
                                     headers={"Accept": "application/json"})
        return urllib.request.urlopen(req, context=self.ctx, timeout=timeout)


# ---- quantities ------------------------------------------------------------------

_SUFFIX = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40,
    "Pi": 2.0 ** 50, "Ei": 2.0 ** 60,
}


def parse_quantity(q):
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError("bad quantity %r" % (q,))
    return float(m.group(1)) * _SUFFIX[m.group(2)]


# ---- process trees ----------------------------------------------------------------

def proc_stat(pid):
    """(ppid, state, starttime, session) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), rest[0], int(rest[19]), int(rest[3])


def alive(pid, starttime=None):
    st = proc_stat(pid)
    if st is None or st[1] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


def descendants(roots, sessions=None):
    """Live processes among roots, their descendants and the members of
    the given sessions, as {pid: starttime}. roots and sessions are
    {pid: starttime}; a session counts only while no other process holds
    its leader's pid: once that pid went to a new process, the old
    session is empty (its members hold the pid until they are gone), and
    a session with that number belongs to someone else -- after PID
    wrap-around, often another pod."""
    children = {}
    starts = {}
    members = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st is None or st[1] in ("Z", "X"):
            continue
        children.setdefault(st[0], []).append(int(d))
        starts[int(d)] = st[2]
        members.setdefault(st[3], []).append(int(d))
    todo = []
    for sid, t in (sessions or {}).items():
        if starts.get(sid, t) == t:
            todo += members.get(sid, [])
    out = {}
    todo += [p for p, t in roots.items() if starts.get(p) == t]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out[p] = starts[p]
        todo.extend(children.get(p, []))
    return out


def _signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def children_of(pid, starttime):
    """{pid: starttime} of the live children of a live pid."""
    if not alive(pid, starttime):
        return {}
    out = {}
    for d in os.listdir("/proc"):
        st = proc_stat(int(d)) if d.isdigit() else None
        if st is not None and st[0] == pid and st[1] not in ("Z", "X"):
            out[int(d)] = st[2]
    return out


def kill_tree(roots, grace, main=None):
    """SIGTERM the container's main process, then after `grace` seconds --
    or as soon as the main process is gone -- freeze and SIGKILL whatever is
    left (including what was forked in the meantime). roots: {pid:
    starttime}; each root is also the leader of its own session (setsid),
    whose members -- even orphaned ones -- die too. main: {pid: starttime}
    of the process a container runtime signals (the container's PID 1),
    default the roots. Only it gets the SIGTERM, as with containerd: what it
    does with its children (drain them, or let them die with it) is its
    business. Returns once all are gone."""
    sessions = dict(roots)
    known = descendants(roots, sessions)
    main = dict(main if main is not None else roots)
    # Grace 0 is a forced deletion: SIGKILL at once, as a kubelet does (a
    # SIGTERM first would let a process see its peers go and end "cleanly").
    if grace > 0:
        _signal_all(main, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        known = {p: t for p, t in known.items() if alive(p, t)}
        if not known or not any(alive(p, t) for p, t in main.items()):
            break
        time.sleep(0.05)
    for _ in range(50):
        known = descendants(known, sessions)
        if not known:
            return
        # Stopped processes cannot fork: the second walk then is complete.
        _signal_all(known, signal.SIGSTOP)
        known = descendants(known, sessions)
        _signal_all(known, signal.SIGKILL)
        time.sleep(0.05)


def remove_tree(path):
    """rm -rf, also of a Nix store: its directories are read-only (0555)
    and a non-root kubelet (or a filesystem that honours modes for root)
    could not unlink their entries. Returns True if path is gone."""
    if not os.path.lexists(path):
        return True
    for top, dirs, _files in os.walk(path):
        for d in [top] + [os.path.join(top, x) for x in dirs]:
            try:
                st = os.lstat(d)
                if not (st.st_mode & 0o200) and not os.path.islink(d):
                    os.chmod(d, (st.st_mode & 0o7777) | 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log("could not remove %s" % path)
        return False
    return True


# A pod's processes see what a container's would: their own mount namespace
# in which the pod's <root>/nix is /nix (an empty store, filled by the
# pod's own nix-daemon), and their own PID namespace, so that Nix's
# "kill every process of this build user" before a build (kill(-1) as
# nixbld1..N) cannot hit another pod's builds, and so that whatever the
# pod leaves behind dies with its PID 1. `unshare --fork` stays in the
# host's PID namespace as the pod's root process and exits with PID 1's
# status; the bind mount fails closed (no entrypoint on the host's /nix).
POD_INIT = 'mount --bind "$1" /nix || exit 125; shift; exec "$@"'


# Build users of the pods' nix-daemons. A container has its own; here all
# share the host's uids, and the host's nix-daemon (other test runs,
# host-store pods) runs builds as nixbld1..N and, before each build, kills
# every process of its build user (kill(-1) as that uid, which reaches
# into every pod's PID namespace from the host's). Pods' builds with those
# same uids died with signal 9 whenever another run built something on the
# host. So pods' daemons use build users of their own (NIX_CONFIG overrides
# build-users-group of the ConfigMap's nix.conf); among pods the PID
# namespaces keep them apart.
POD_BUILD_GROUP = "nrbc-pod-builders"
POD_BUILD_USERS = ["nrbc-pod-bld%d" % i for i in range(1, 9)]


def ensure_pod_build_users():
    """Create POD_BUILD_GROUP and its member users (idempotent; several
    kubelets may start at once)."""
    lockdir = "/run/lock" if os.path.isdir("/run/lock") else "/tmp"
    with open(os.path.join(lockdir, "nrbc-pod-build-users.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            grp.getgrnam(POD_BUILD_GROUP)
        except KeyError:
            subprocess.run(["groupadd", "--system", POD_BUILD_GROUP], check=True)
        for u in POD_BUILD_USERS:
            try:
                pwd.getpwnam(u)
            except KeyError:
                # Nix takes the group's *member list*: -G as well as -g.
                subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                                "/var/empty", "--shell", "/usr/sbin/nologin", "-g",
                                POD_BUILD_GROUP, "-G", POD_BUILD_GROUP, "-c",
                                "nrbc test kubelet, builds of pods", u], check=True)
        members = set(grp.getgrnam(POD_BUILD_GROUP).gr_mem)
        missing = [u for u in POD_BUILD_USERS if u not in members]
        if missing:
            raise SystemExit("kubelet: %s not in the member list of group %s" % (
                ", ".join(missing), POD_BUILD_GROUP))


def in_pod_namespaces(nix_dir, argv):
    # --kill-child: if unshare dies (SIGKILL: it ignores SIGTERM while it
    # waits), so does the pod's PID 1 and with it the whole namespace --
    # also when the kubelet itself is killed (setpriv --pdeathsig).
    return ["/usr/bin/unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child", "--mount-proc", "/bin/sh", "-c", POD_INIT, "pod-init", nix_dir] + list(argv)


def read_pidfile(path):
    try:
        pid, start = open(path).read().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


class Child:
    """One process the kubelet spawned: pid and start time (clock ticks
    after boot, /proc/PID/stat field 22), and its exit code once reaped."""

    def __init__(self, pid, start):
        self.pid = pid
        self.start = start
        self.code = None

    def __repr__(self):
        return "Child(%d, start=%d, code=%r)" % (self.pid, self.start, self.code)


class Children:
    """Exit codes of the kubelet's own children.

    A pid names a process only until it is reaped: afterwards the kernel
    hands the same number to the next process (PID wrap-around, quick on a
    busy test machine with pid_max 32768 or 4 million). So a pid is the key
    only while the child is unreaped -- and then it is unambiguous, since
    the kernel cannot reuse it before we reap -- and the exit code is given
    to the Child object the spawner holds, never kept by pid. (Keeping a
    {pid: exit code} map forever made a new pod that drew an old pod's pid
    "exit 0" at once.)"""

    def __init__(self):
        self.cv = threading.Condition()
        self.live = {}      # pid -> Child, unreaped children only

    def add(self, pid):
        """Record a child just spawned (not reaped yet: /proc has it, at
        worst as a zombie, so its start time is its own)."""
        st = proc_stat(pid)
        child = Child(pid, st[2] if st else 0)
        with self.cv:
            self.live[pid] = child
        return child

    def reaped(self, pid, status):
        """waitpid() returned (pid, status). Other processes (orphans
        adopted as subreaper) are not ours and are forgotten at once."""
        with self.cv:
            child = self.live.pop(pid, None)
            if child is None:
                return None
            code = os.waitstatus_to_exitcode(status)
            child.code = code if code >= 0 else 128 - code  # signal: as a shell says
            self.cv.notify_all()
            return child

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped(pid, status)

    def wait(self, child, timeout=5):
        """Until `child` is reaped (by another thread's reap()) or timeout."""
        with self.cv:
            return self.cv.wait_for(lambda: child.code is not None, timeout)

    def __len__(self):
        with self.cv:
            return len(self.live)


# ---- the kubelet ------------------------------------------------------------------

class IPAllocator:
    """127.0.X.Y with X in 1..254, Y in 1..254, handed out round robin so a
    freed address is not reused at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.used = set()
        # Other kubelets (parallel test runs) and leftovers of crashed runs
        # may hold addresses too: start at a random place and skip any
        # address something already listens on.
        self.next = random.randrange(254 * 254)

    @staticmethod
    def listening():
        """Addresses with a listening TCP socket (from /proc/net/tcp)."""
        found = set()
        try:
            with open("/proc/net/tcp") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ip = int(fields[1].split(":")[0], 16)
                        found.add(socket.inet_ntoa(struct.pack("<I", ip)))
        except OSError:
            pass
        return found

    def _addr(self, n):
        return "127.0.%d.%d" % (1 + n // 254, 1 + n % 254)

    def allocate(self):
        busy = self.listening()
        with self.lock:
            for i in range(254 * 254):
                n = (self.next + i) % (254 * 254)
                a = self._addr(n)
                if a not in self.used and a not in busy:
                    self.used.add(a)
                    self.next = n + 1
                    return a
        raise RuntimeError("out of pod addresses")

    def reserve(self, a):
        with self.lock:
            self.used.add(a)

    def release(self, a):
        with self.lock:
            self.used.discard(a)


class Stop(Exception):
    """The worker must stop: pod deleted or kubelet shutting down."""


class ConfigError(Exception):
    pass


class PodWorker(threading.Thread):
    def __init__(self, kubelet, pod):
        super().__init__(daemon=True, name="pod-" + pod["metadata"]["name"])
        self.k = kubelet
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.changed = threading.Event()
        self.gone = False
        self.lock = threading.Lock()
        self.dir = os.path.join(kubelet.dir, "pods", self.uid)
        self.child = None        # Child: the pod's root process
        self.pid = None
        self.pid_start = None
        # Opt-in for tests that need builds to land in the host's store
        # (one shared nix-daemon, the old behaviour): no namespaces, no
        # store of the pod's own. Nothing uploads twice then, so figures
        # made that way flatter nrbc; the default is a private store.
        self.host_store = (pod["metadata"].get("annotations") or {}).get(
            HOST_STORE_ANNOTATION) == "true"
        self.ip = None
        self.bound = False
        self.counted = False     # holds resources on the node
        self.requests = {}
        self.status = {}
        self.pushed = None
        self.conditions = {}
        self.start_time = None
        self.container_started = None
        self.events_sent = set()

    # -- events from the watch
    def update(self, pod):
        with self.lock:
            self.pod = pod
        self.changed.set()

    def deleted(self):
        self.gone = True
        self.changed.set()

    def latest(self):
        with self.lock:
            return self.pod

    def terminating(self):
        return self.gone or self.k.stopping.is_set() or \
            self.latest()["metadata"].get("deletionTimestamp") is not None

    def wait(self, seconds):
        """Sleep up to `seconds`, waking on pod changes; raises Stop when
        the pod is being deleted."""
        if self.terminating():
            raise Stop()
        self.changed.wait(seconds)
        self.changed.clear()
        if self.terminating():
            raise Stop()
        self.check_deadline()

    def path(self, sub):
        return "/api/v1/namespaces/%s/pods/%s%s" % (self.ns, self.name, sub)

    def event(self, etype, reason, message, component="kubelet"):
        """A core/v1 Event on the pod, as the scheduler or kubelet posts
        them (kubectl describe shows them); once per reason and message."""
        key = (reason, message)
        if key in self.events_sent:
            return
        self.events_sent.add(key)
        t = now()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": self.name + ".", "namespace": self.ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": self.ns,
                                   "name": self.name, "uid": self.uid},
                "reason": reason, "message": message, "type": etype,
                "source": {"component": component,
                           "host": self.k.node if component == "kubelet" else ""},
                "reportingComponent": component, "reportingInstance": self.k.node,
                "firstTimestamp": t, "lastTimestamp": t, "count": 1}
        try:
            self.k.api.request("POST", "/api/v1/namespaces/%s/events" % self.ns, body)
        except (ApiError, OSError) as e:
            log("%s/%s: event %s not posted: %s" % (self.ns, self.name, reason, e))

    # -- status
    def set_condition(self, ctype, status, reason=None, message=None):
        c = self.conditions.get(ctype)
        if c is None or c["status"] != status:
            c = {"type": ctype, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": now()}
        else:
            c = dict(c)
        for k, v in (("reason", reason), ("message", message)):
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        self.conditions[ctype] = c

    def container_status(self, state, ready=False, started=False):
        c = self.container()
        cs = {"name": c.get("name", "builder"), "image": c.get("image", ""),
              "imageID": "", "ready": ready, "restartCount": 0, "started": started,
              "state": state}
        if self.pid is not None:
            cs["containerID"] = "nrbc-test://%s-%d" % (self.uid, self.pid)
        return cs

    def push(self, phase, cstate=None, ready=False, started=False, reason=None,
             message=None):
        st = {"phase": phase, "reason": reason, "message": message}
        if self.bound:
            st["hostIP"] = HOST_IP
            st["hostIPs"] = [{"ip": HOST_IP}]
        if self.start_time:
            st["startTime"] = self.start_time
        if self.ip:
            st["podIP"] = self.ip
            st["podIPs"] = [{"ip": self.ip}]
        if cstate is not None:
            st["containerStatuses"] = [self.container_status(cstate, ready, started)]
        order = ["PodReadyToStartContainers", "Initialized", "Ready",
                 "ContainersReady", "PodScheduled"]
        st["conditions"] = [self.conditions[t] for t in order if t in self.conditions]
        if st == self.pushed:
            return
        try:
            self.k.api.request("PATCH", self.path("/status"), {"status": st},
                               content_type="application/merge-patch+json")
            self.pushed = st
        except ApiError as e:
            if e.status == 404:
                raise Stop()
            log("%s/%s: status update failed: %s" % (self.ns, self.name, e))
        except OSError as e:
            log("%s/%s: status update failed: %s" % (self.ns, self.name, e))

    def container(self):
        cs = self.latest()["spec"].get("containers") or [{}]
        return cs[0]

    def check_deadline(self):
        ads = self.latest()["spec"].get("activeDeadlineSeconds")
        if ads is None or self.start_time is None:
            return
        if time.time() >= parse_time(self.start_time) + int(ads):
            raise DeadlineExceeded()

    # -- main
    def run(self):
        try:
            self.lifecycle()
        except Stop:
            pass
        except Exception:
            tb = traceback.format_exc()
            log("%s/%s: worker crashed:\n%s" % (self.ns, self.name, tb))
            try:
                self.kill()
                self.push("Failed", reason="TestKubeletError",
                          message="test kubelet: " + tb.strip().splitlines()[-1])
                self.idle_until_deleted()
            except Exception:
                pass
        finally:
            try:
                self.teardown()
            except Exception:
                log("%s/%s: teardown failed:\n%s" % (self.ns, self.name,
                                                      traceback.format_exc()))
            self.k.worker_done(self)

    def lifecycle(self):
        pod = self.latest()
        if self.terminating():
            self.bound = bool(pod["spec"].get("nodeName"))
            raise Stop()
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            self.bound = bool(pod["spec"].get("nodeName"))
            self.idle_until_deleted()
            return
        for c in pod.get("status", {}).get("conditions") or []:
            self.conditions[c["type"]] = c
        if not pod["spec"].get("nodeName"):
            self.schedule()
        else:
            self.bound = True
            self.requests = self.k.pod_requests(pod)
            self.k.hold(self)
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.set_condition("PodScheduled", "True")
        try:
            self.run_pod()
        except DeadlineExceeded:
            self.kill()
            self.set_condition("Ready", "False", "PodFailed")
            self.set_condition("ContainersReady", "False", "PodFailed")
            self.push("Failed", self.terminated_state(137, "DeadlineExceeded"),
                      reason="DeadlineExceeded",
                      message="Pod was active on the node longer than the specified deadline")
            log("%s/%s: deadline exceeded" % (self.ns, self.name))
            self.event("Normal", "DeadlineExceeded",
                       "Pod was active on the node longer than the specified deadline")
            self.release_resources()
            self.idle_until_deleted()

    def idle_until_deleted(self):
        while True:
            self.changed.wait(5)
            self.changed.clear()
            if self.terminating():
                raise Stop()

    def schedule(self):
        while True:
            pod = self.latest()
            why = self.k.unschedulable_reason(pod)
            if why is None:
                self.requests = self.k.pod_requests(pod)
                if self.k.hold(self):
                    break
                why = self.k.unschedulable_reason(pod, ignore_self=False) or \
                    "1 Insufficient resources"
            msg = ("0/1 nodes are available: %s. preemption: 0/1 nodes are available: "
                   "1 Preemption is not helpful for scheduling." % why)
            self.set_condition("PodScheduled", "False", "Unschedulable", msg)
            self.push("Pending")
            if ("FailedScheduling", msg) not in self.events_sent:
                log("%s/%s: unschedulable: %s" % (self.ns, self.name, why))
            self.event("Warning", "FailedScheduling", msg, "default-scheduler")
            # Node labels never change here; resources may free up.
            self.wait(5)
        try:
            self.k.api.request("POST", self.path("/binding"), {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": self.name, "uid": self.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.k.node}})
        except ApiError as e:
            if e.status in (404, 409):
                log("%s/%s: binding refused: %s" % (self.ns, self.name, e))
                raise Stop()
            raise
        self.bound = True
        log("%s/%s: bound to %s" % (self.ns, self.name, self.k.node))
        self.event("Normal", "Scheduled", "Successfully assigned %s/%s to %s" % (
            self.ns, self.name, self.k.node), "default-scheduler")

    def run_pod(self):
        self.ip = self.latest().get("status", {}).get("podIP")
        if self.ip and self.ip.startswith("127.0.") and not self.ip.startswith("127.0.0."):
            self.k.ips.reserve(self.ip)
        else:
            self.ip = self.k.ips.allocate()
        self.set_condition("PodReadyToStartContainers", "True")
        self.set_condition("Initialized", "True")
        self.set_condition("Ready", "False", "ContainersNotReady",
                           "containers with unready status: [%s]" % self.container().get("name"))
        self.set_condition("ContainersReady", "False", "ContainersNotReady",
                           "containers with unready status: [%s]" % self.container().get("name"))
        self.push("Pending", {"waiting": {"reason": "ContainerCreating"}})

        image = self.container().get("image", "")
        if "does-not-exist" in image:
            self.pull_fails(image)

        while True:
            try:
                env = self.materialise()
                break
            except ConfigError as e:
                self.push("Pending", {"waiting": {"reason": "CreateContainerConfigError",
                                                  "message": str(e)}})
                if ("Failed", "Error: " + str(e)) not in self.events_sent:
                    log("%s/%s: CreateContainerConfigError: %s" % (self.ns, self.name, e))
                self.event("Warning", "Failed", "Error: " + str(e))
                self.wait(2)

        self.spawn(env)
        self.container_started = now()
        running = {"running": {"startedAt": self.container_started}}
        self.push("Running", running, started=True)
        log("%s/%s: running pid %d on %s" % (self.ns, self.name, self.pid, self.ip))
        self.event("Normal", "Started", "Started container %s" % self.container().get("name"))
        self.monitor(running)

    def pull_fails(self, image):
        msg = ('rpc error: code = NotFound desc = failed to pull and unpack image "%s": '
               'failed to resolve reference "%s": %s: not found' % (image, image, image))
        backoff = 5
        self.event("Normal", "Pulling", 'Pulling image "%s"' % image)
        self.event("Warning", "Failed", 'Failed to pull image "%s": %s' % (image, msg))
        self.event("Warning", "Failed", "Error: ErrImagePull")
        while True:
            self.push("Pending", {"waiting": {"reason": "ErrImagePull", "message": msg}})
            end = time.monotonic() + 3
            while time.monotonic() < end:
                self.wait(end - time.monotonic())
            self.push("Pending", {"waiting": {"reason": "ImagePullBackOff",
                                              "message": 'Back-off pulling image "%s"' % image}})
            self.event("Normal", "BackOff", 'Back-off pulling image "%s"' % image)
            end = time.monotonic() + backoff
            while time.monotonic() < end:
                self.wait(end - time.monotonic())
            backoff = min(backoff * 2, 60)

    # -- volumes and env
    def fetch(self, kind, name):
        path = "/api/v1/namespaces/%s/%s/%s" % (self.ns, kind, name)
        try:
            return self.k.api.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def source_items(self, kind, src, optional):
        """{key: bytes} of a Secret or ConfigMap volume/projection source."""
        name = src.get("secretName") if kind == "secrets" else src.get("name")
        obj = self.fetch(kind, name)
        label = "secret" if kind == "secrets" else "configmap"
        if obj is None:
            if optional:
                return {}
            raise ConfigError('%s "%s" not found' % (label, name))
        data = {}
        if kind == "secrets":
            for k, v in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                data[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
        items = src.get("items")
        if not items:
            return {k: (v, None) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if optional:
                    continue
                raise ConfigError("couldn't find key %s in %s %s/%s" % (
                    it["key"], "Secret" if kind == "secrets" else "ConfigMap",
                    self.ns, name))
            out[it.get("path", it["key"])] = (data[it["key"]], it.get("mode"))
        return out

    def volume_files(self, vol):
        """{relative path: (bytes, mode)} for a volume, or None for a dir."""
        if "secret" in vol:
            s = vol["secret"]
            files = self.source_items("secrets", s, s.get("optional", False))
            return files, s.get("defaultMode", 0o644)
        if "configMap" in vol:
            s = vol["configMap"]
            files = self.source_items("configmaps", s, s.get("optional", False))
            return files, s.get("defaultMode", 0o644)
        if "projected" in vol:
            files = {}
            for src in vol["projected"].get("sources") or []:
                if "secret" in src:
                    files.update(self.source_items("secrets", {**src["secret"], "secretName": src["secret"].get("name")},
                                                   src["secret"].get("optional", False)))
                elif "configMap" in src:
                    files.update(self.source_items("configmaps", src["configMap"],
                                                   src["configMap"].get("optional", False)))
            return files, vol["projected"].get("defaultMode", 0o644)
        if "emptyDir" in vol:
            return None, None
        raise ConfigError("volume %s: unsupported type (test kubelet)" % vol.get("name"))

    def materialise(self):
        root = os.path.join(self.dir, "root")
        if not remove_tree(root):
            raise RuntimeError("cannot clear %s" % root)
        os.makedirs(root, mode=0o755)
        os.chmod(self.dir, 0o755)
        os.chmod(root, 0o755)
        c = self.container()
        vols = {v["name"]: v for v in self.latest()["spec"].get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            vol = vols.get(m["name"])
            if vol is None:
                raise ConfigError("volume %s not found in pod spec" % m["name"])
            files, default_mode = self.volume_files(vol)
            target = os.path.join(root, m["mountPath"].lstrip("/"))
            if files is None:
                os.makedirs(target, mode=0o755, exist_ok=True)
                continue
            if m.get("subPath"):
                files = {os.path.basename(target): files[m["subPath"]]} \
                    if m["subPath"] in files else {}
                target = os.path.dirname(target)
            os.makedirs(target, mode=0o755, exist_ok=True)
            for rel, (data, mode) in files.items():
                p = os.path.join(target, rel)
                os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                os.chmod(p, mode if mode is not None else default_mode)
        return self.environment(c)

    def environment(self, c):
        pod = self.latest()
        # A container's /root is its own: the pod's nix-daemon keeps its
        # binary-cache lookups (negative ones for an hour) in $HOME/.cache,
        # which must not be the host's or another pod's.
        home = "/root"
        if not self.host_store:
            home = os.path.join(self.dir, "root", "root")
            os.makedirs(home, mode=0o700, exist_ok=True)
        env = {"PATH": BASE_PATH, "HOME": home, "HOSTNAME": self.name}
        fields = {
            "metadata.name": self.name, "metadata.namespace": self.ns,
            "metadata.uid": self.uid, "spec.nodeName": self.k.node,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self.ip, "status.hostIP": HOST_IP,
        }
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if key in ef:
                    src = ef[key]
                    obj = self.fetch(kind, src["name"])
                    if obj is None:
                        if src.get("optional"):
                            continue
                        raise ConfigError('%s "%s" not found' % (
                            "secret" if kind == "secrets" else "configmap", src["name"]))
                    for k, v in (obj.get("data") or {}).items():
                        env[prefix + k] = base64.b64decode(v).decode() \
                            if kind == "secrets" else v
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            vf = e.get("valueFrom") or {}
            if "fieldRef" in vf:
                env[e["name"]] = fields.get(vf["fieldRef"]["fieldPath"], "")
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind, ref = ("secrets", vf["secretKeyRef"]) if "secretKeyRef" in vf \
                    else ("configmaps", vf["configMapKeyRef"])
                obj = self.fetch(kind, ref["name"])
                label = "secret" if kind == "secrets" else "configmap"
                if obj is None or ref["key"] not in (obj.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    if obj is None:
                        raise ConfigError('%s "%s" not found' % (label, ref["name"]))
                    raise ConfigError("couldn't find key %s in %s %s/%s" % (
                        ref["key"], label, self.ns, ref["name"]))
                v = obj["data"][ref["key"]]
                env[e["name"]] = base64.b64decode(v).decode() if kind == "secrets" else v
        port = self.container_port()
        env.update({
            "NRBC_BUILDER_ROOT": os.path.join(self.dir, "root"),
            "NRBC_BUILDER_LISTEN_ADDRESS": self.ip,
            "NRBC_BUILDER_PORT": str(port),
            "NRBC_BUILDER_NIX_DAEMON": "external" if self.host_store else "start",
        })
        if not self.host_store:
            env["NIX_CONFIG"] = "build-users-group = %s" % POD_BUILD_GROUP
        return env

    def container_port(self, ref=None):
        ports = self.container().get("ports") or []
        if ref is not None:
            if isinstance(ref, int) or str(ref).isdigit():
                return int(ref)
            for p in ports:
                if p.get("name") == ref:
                    return int(p["containerPort"])
            return None
        return int(ports[0]["containerPort"]) if ports else 22

    # -- process
    def spawn(self, env):
        log_path = os.path.join(self.dir, "log")
        argv = [self.k.entrypoint]
        if not self.host_store:
            nix = os.path.join(self.dir, "root", "nix")
            os.makedirs(nix, mode=0o755, exist_ok=True)
            argv = in_pod_namespaces(nix, argv)
        self.child = self.k.spawn(argv, env, self.dir, log_path)
        self.pid, self.pid_start = self.child.pid, self.child.start
        with open(os.path.join(self.dir, "pid.tmp"), "w") as f:
            f.write("%d %d\n" % (self.pid, self.pid_start))
        os.rename(os.path.join(self.dir, "pid.tmp"), os.path.join(self.dir, "pid"))

    def exit_status(self):
        return self.child.code if self.child is not None else None

    def terminated_state(self, code, reason):
        return {"terminated": {"exitCode": code, "reason": reason,
                               "startedAt": self.container_started or now(),
                               "finishedAt": now(),
                               "containerID": "nrbc-test://%s-%d" % (self.uid, self.pid or 0)}}

    def probe_ok(self, probe):
        tcp = probe.get("tcpSocket")
        if tcp is None:
            return True     # only tcpSocket probes are simulated
        port = self.container_port(tcp.get("port"))
        host = tcp.get("host") or self.ip
        try:
            with socket.create_connection((host, port), timeout=probe.get("timeoutSeconds", 1)):
                return True
        except OSError:
            return False

    def monitor(self, running):
        probe = self.container().get("readinessProbe")
        ready = probe is None
        next_probe = time.monotonic() + (probe or {}).get("initialDelaySeconds", 0)
        period = (probe or {}).get("periodSeconds", 10)
        succ_needed = (probe or {}).get("successThreshold", 1)
        fail_needed = (probe or {}).get("failureThreshold", 3)
        succ = fail = 0
        if ready:
            self.set_ready(True)
        while True:
            code = self.exit_status()
            if code is not None:
                self.pid_exited(code)
                return
            if probe is not None and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + period
                if self.probe_ok(probe):
                    succ, fail = succ + 1, 0
                    if not ready and succ >= succ_needed:
                        ready = True
                        log("%s/%s: ready" % (self.ns, self.name))
                else:
                    succ, fail = 0, fail + 1
                    if ready and fail >= fail_needed:
                        ready = False
                        log("%s/%s: not ready" % (self.ns, self.name))
            self.set_ready(ready)
            self.push("Running", running, ready=ready, started=True)
            self.wait(0.1 if not ready else 0.5)

    def set_ready(self, ready):
        name = self.container().get("name")
        if ready:
            self.set_condition("Ready", "True")
            self.set_condition("ContainersReady", "True")
        else:
            msg = "containers with unready status: [%s]" % name
            self.set_condition("Ready", "False", "ContainersNotReady", msg)
            self.set_condition("ContainersReady", "False", "ContainersNotReady", msg)

    def pid_exited(self, code):
        # Whatever the entrypoint left behind dies with the "container".
        self.kill()
        self.set_condition("Ready", "False", "PodCompleted")
        self.set_condition("ContainersReady", "False", "PodCompleted")
        if code == 0:
            self.push("Succeeded", self.terminated_state(0, "Completed"))
        else:
            self.push("Failed", self.terminated_state(code, "Error"))
        log("%s/%s: exited with %d" % (self.ns, self.name, code))
        self.release_resources()
        self.idle_until_deleted()

    def kill(self):
        if self.pid is None:
            return
        pod = self.latest()
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(0.0, min(float(grace), self.k.grace_cap))
        # In its namespaces the pod's PID 1 is unshare's child (the
        # entrypoint); unshare itself only waits for it.
        main = None if self.host_store else children_of(self.pid, self.pid_start)
        kill_tree({self.pid: self.pid_start}, grace, main or None)
        self.k.children.wait(self.child)

    def release_resources(self):
        self.k.release(self)

    def teardown(self):
        if self.pid is not None and alive(self.pid, self.pid_start) and not self.gone \
                and not self.k.stopping.is_set():
            self.event("Normal", "Killing", "Stopping container %s" % self.container().get("name"))
        self.kill()
        self.release_resources()
        if self.k.stopping.is_set() and not self.gone:
            return     # the kubelet stops; the pod object stays as it is
        if self.ip:
            self.k.ips.release(self.ip)
        # The pod's log outlives it (as `kubectl logs` does for a while):
        # DIR/logs/<namespace>_<name>_<uid>.log.
        try:
            os.makedirs(os.path.join(self.k.dir, "logs"), exist_ok=True)
            shutil.copyfile(os.path.join(self.dir, "log"), os.path.join(
                self.k.dir, "logs", "%s_%s_%s.log" % (self.ns, self.name, self.uid)))
        except OSError:
            pass
        remove_tree(self.dir)
        if self.gone or not self.bound or not self.terminating():
            return
        # Confirm the deletion, as a real kubelet does once the pod's
        # containers are gone: without it a bound pod stays forever.
        try:
            self.k.api.request("DELETE", self.path(""), {
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}})
            log("%s/%s: deleted" % (self.ns, self.name))
        except ApiError as e:
            if e.status not in (404, 409):
                log("%s/%s: final delete failed: %s" % (self.ns, self.name, e))


class DeadlineExceeded(Exception):
    pass


class Kubelet:
    def __init__(self, args):
        self.api = Api(args.kubeconfig)
        self.dir = os.path.abspath(args.dir)
        self.node = args.node_name
        self.selector = args.selector
        self.entrypoint = os.path.abspath(args.entrypoint)
        self.grace_cap = args.grace_cap
        self.capacity = {"cpu": args.cpu, "memory": args.memory, "pods": str(args.max_pods)}
        self.labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64"}
        for kv in args.label or []:
            k, _, v = kv.partition("=")
            self.labels[k] = v
        self.stopping = threading.Event()
        self.workers = {}
        self.finished = {}  # uid -> when its worker ended
        self.wlock = threading.Lock()
        self.ips = IPAllocator()
        self.held = {}      # uid -> requests
        self.spawn_q = queue.Queue()
        self.children = Children()
        os.makedirs(os.path.join(self.dir, "pods"), exist_ok=True)
        # The mount point of each pod's own store (an empty directory on a
        # host without Nix; the host's store otherwise, hidden in pods).
        os.makedirs("/nix", mode=0o755, exist_ok=True)
        ensure_pod_build_users()
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.join(self.dir, "pods"), 0o755)

    # -- scheduling arithmetic
    def pod_requests(self, pod):
        total = {"cpu": 0.0, "memory": 0.0}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            req = dict(res.get("limits") or {})
            req.update(res.get("requests") or {})
            for k in total:
                if k in req:
                    total[k] += parse_quantity(req[k])
        return total

    def unschedulable_reason(self, pod, ignore_self=True):
        sel = pod["spec"].get("nodeSelector") or {}
        if any(self.labels.get(k) != v for k, v in sel.items()):
            return "1 node(s) didn't match Pod's node affinity/selector"
        req = self.pod_requests(pod)
        with self.wlock:
            used = {"cpu": 0.0, "memory": 0.0}
            for uid, r in self.held.items():
                if ignore_self and uid == pod["metadata"]["uid"]:
                    continue
                for k in used:
                    used[k] += r[k]
            npods = len(self.held)
        short = [k for k in ("cpu", "memory")
                 if used[k] + req[k] > parse_quantity(self.capacity[k])]
        if npods >= int(self.capacity["pods"]):
            short.insert(0, "pods")
        if short:
            return ", ".join("1 Insufficient %s" % k if k != "pods" else "1 Too many pods"
                             for k in short)
        return None

    def hold(self, w):
        with self.wlock:
            self.held[w.uid] = w.requests
        w.counted = True
        return True

    def release(self, w):
        with self.wlock:
            self.held.pop(w.uid, None)
        w.counted = False

    # -- processes: spawned and reaped on the main thread (parent-death
    # signals fire when the *thread* that forked a child ends)
    def spawn(self, argv, env, cwd, log_path):
        """Start argv as a new session; returns its Child."""
        done = threading.Event()
        box = {}
        self.spawn_q.put((argv, env, cwd, log_path, done, box))
        while not done.wait(0.5):
            if self.stopping.is_set():
                raise Stop()
        if "error" in box:
            raise box["error"]
        return box["child"]

    def _do_spawn(self, argv, env, cwd, log_path):
        pre = ["/usr/bin/setpriv", "--pdeathsig", "KILL"] \
            if os.path.exists("/usr/bin/setpriv") else []
        fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
              (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
              (os.POSIX_SPAWN_DUP2, 1, 2)]
        old = os.getcwd()
        os.chdir(cwd)
        try:
            argv = pre + argv
            pid = os.posix_spawn(argv[0], argv, env, file_actions=fa, setsid=True)
        finally:
            os.chdir(old)
        # Not reaped yet (reaping happens on this thread): the pid is ours.
        return self.children.add(pid)

    def reap(self):
        self.children.reap()

    # -- node
    # -- node
    def node_status(self):
        t = now()
        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.capacity),
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status (nrbc test kubelet)",
                 "lastHeartbeatTime": t, "lastTransitionTime": self.ready_since},
            ],
            "addresses": [{"type": "InternalIP", "address": HOST_IP},
                          {"type": "Hostname", "address": self.node}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "",
                         "kernelVersion": os.uname().release,
                         "osImage": "nrbc test kubelet", "containerRuntimeVersion":
                         "nrbc-test://1", "kubeletVersion": "v1.35.4",
                         "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }

    def register_node(self):
        self.ready_since = now()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": self.labels}}
        try:
            self.api.request("POST", "/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            self.api.request("PATCH", "/api/v1/nodes/" + self.node,
                             {"metadata": {"labels": self.labels},
                              "spec": {"unschedulable": False}},
                             content_type="application/merge-patch+json")
        self.heartbeat()
        log("node %s registered, Ready" % self.node)

    def heartbeat(self):
        self.api.request("PATCH", "/api/v1/nodes/%s/status" % self.node,
                         {"status": self.node_status()},
                         content_type="application/strategic-merge-patch+json")

    # -- pods
    def worker_done(self, w):
        with self.wlock:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]
            # Late events about a pod already torn down must not revive it.
            if not self.stopping.is_set():
                self.finished[w.uid] = time.monotonic()
                old = [u for u, t in self.finished.items() if t < time.monotonic() - 600]
                for u in old:
                    del self.finished[u]

    def observe(self, etype, pod):
        if pod["spec"].get("nodeName") not in (None, "", self.node):
            return
        uid = pod["metadata"]["uid"]
        with self.wlock:
            w = self.workers.get(uid)
            if w is None and etype != "DELETED" and not self.stopping.is_set():
                if uid in self.finished:
                    return
                w = PodWorker(self, pod)
                self.workers[uid] = w
                w.start()
                return
        if w is None:
            return
        if etype == "DELETED":
            w.deleted()
        else:
            w.update(pod)

    def watch_loop(self):
        sel = urllib.parse.quote(self.selector)
        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    lst = self.api.request("GET", "/api/v1/pods?labelSelector=" + sel)
                    rv = lst["metadata"]["resourceVersion"]
                    seen = set()
                    for pod in lst.get("items") or []:
                        seen.add(pod["metadata"]["uid"])
                        self.observe("ADDED", pod)
                    with self.wlock:
                        vanished = [w for u, w in self.workers.items() if u not in seen]
                    for w in vanished:
                        w.deleted()
                path = ("/api/v1/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=240"
                        "&labelSelector=%s&resourceVersion=%s" % (sel, rv))
                with self.api.stream(path, timeout=300) as r:
                    for line in r:
                        if self.stopping.is_set():
                            return
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev["type"] == "ERROR":
                            if obj.get("code") == 410:
                                log("watch expired (410): relisting")
                                rv = None
                            else:
                                log("watch error: %s" % obj)
                                time.sleep(0.5)
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev["type"] == "BOOKMARK":
                            continue
                        self.observe(ev["type"], obj)
            except ApiError as e:
                log("list/watch failed: %s" % e)
                if e.status == 410:
                    rv = None
                time.sleep(0.5)
            except (OSError, ValueError, urllib.error.URLError,
                    http.client.HTTPException) as e:
                # HTTPException: a stream cut mid-chunk (IncompleteRead) when
                # the API server goes away, as in an outage drill.
                if self.stopping.is_set():
                    return
                log("watch disconnected: %s; resuming" % e)
                time.sleep(0.5)

    def run(self):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        # Orphaned sshd sessions come back to us, to be reaped here.
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.register_node()
        threading.Thread(target=self.watch_loop, daemon=True, name="watch").start()
        next_beat = time.monotonic() + 10
        while not self.stopping.is_set():
            try:
                req = self.spawn_q.get(timeout=0.1)
            except queue.Empty:
                req = None
            if req is not None:
                argv, env, cwd, log_path, done, box = req
                try:
                    box["child"] = self._do_spawn(argv, env, cwd, log_path)
                except Exception as e:
                    box["error"] = e
                done.set()
            self.reap()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + 10
                try:
                    self.heartbeat()
                except (ApiError, OSError) as e:
                    log("heartbeat failed: %s" % e)
        self.shutdown()

    def shutdown(self):
        log("stopping: killing all pod processes")
        with self.wlock:
            workers = list(self.workers.values())
        for w in workers:
            w.changed.set()
        deadline = time.monotonic() + self.grace_cap + 5
        for w in workers:
            while w.is_alive() and time.monotonic() < deadline:
                self.reap()
                w.join(0.05)
        # Anything a crashed worker left behind.
        pods = os.path.join(self.dir, "pods")
        for uid in os.listdir(pods):
            p = read_pidfile(os.path.join(pods, uid, "pid"))
            if p and alive(*p):
                kill_tree({p[0]: p[1]}, 0)
        self.reap()
        log("stopped")


def kill_leftovers(state_dir):
    """For test fixtures: kill every pod process tree recorded under
    state_dir (after the kubelet itself is gone)."""
    pods = os.path.join(state_dir, "pods")
    killed = 0
    if not os.path.isdir(pods):
        return 0
    for uid in os.listdir(pods):
        p = read_pidfile(os.path.join(pods, uid, "pid"))
        if p and alive(*p):
            kill_tree({p[0]: p[1]}, 0)
            killed += 1
    return killed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--dir", required=True, help="state directory (pods live here)")
    ap.add_argument("--node-name", default=NODE_NAME)
    ap.add_argument("--selector", default=DEFAULT_SELECTOR)
    ap.add_argument("--entrypoint", default=ENTRYPOINT)
    ap.add_argument("--grace-cap", type=float, default=3.0,
                    help="cap on the termination grace period, seconds")
    ap.add_argument("--cpu", default="64")
    ap.add_argument("--memory", default="256Gi")
    ap.add_argument("--max-pods", type=int, default=250)
    ap.add_argument("--label", action="append", help="extra node label k=v")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("kubelet: must run as root (sshd, users)", file=sys.stderr)
        return 1
    k = Kubelet(args)

    def on_signal(signum, frame):
        k.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    k.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
