"""The proxy soak: many OpenSSH sessions through `nrbc proxy` at once, with
clients that vanish at random moments (during the handshake, while the
builder is being connected, mid-transfer, while stopped) and a builder whose
per-connection sshd processes are killed, or which stops answering for a
moment, at random.

Shared by test/integration/test_soak.py (a short run in the suite) and
test/bench/bench_soak.py (thousands of sessions, with figures).

Every client's fate is recorded; check() returns what went wrong: a proxy
that died or printed a sanitizer report, sessions missing from the metrics
or the log, a session that ended by itself without its output and without
an "nrbc: " line telling the user why (a failure line: the progress of a
builder wait does not count)."""

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

COMMANDS = [
    # (command, stdin bytes, expected stdout or None to only check length, length)
    ("echo ok", b"", b"ok\n", 3),
    ("head -c 1048576 /dev/zero", b"", None, 1048576),
    ("cat", os.urandom(256 * 1024), "echo", 256 * 1024),
    ("sleep 0.5; echo slept", b"", b"slept\n", 6),
]
# For clients that vanish: output that streams until they do. Killing a
# client with unread data makes its kernel reset the connection while the
# proxy is writing to it (the case that once aborted the proxy).
STREAM = ("head -c 4000000000 /dev/zero", b"", None, 0)
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "AddressSanitizer:DEADLYSIGNAL")


def http_get(host, port, path):
    with socket.create_connection((host, port), 5) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def metrics(host, port):
    st, body = http_get(host, port, "/metrics")
    assert st == 200, body
    out = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        out[k] = float(v)
    return out


def proc_stats():
    """(pid, command name, the /proc/PID/stat fields after the name) of
    every process that is still there when read."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        yield int(d), stat.split("(", 1)[1].rsplit(")", 1)[0], stat.rsplit(")", 1)[1].split()


def children(pid):
    """Direct children of pid (the builder sshd's per-connection processes)."""
    return [p for p, _, fields in proc_stats() if int(fields[1]) == pid]


def sshd_pid(builder_pgid):
    """The builder's listening sshd: the process group's `sshd` whose parent
    is not an sshd."""
    for p, name, fields in proc_stats():
        if name == "sshd" and int(fields[2]) == builder_pgid:
            try:
                pname = open("/proc/%s/comm" % fields[1]).read().strip()
            except OSError:
                pname = ""
            if pname != "sshd":
                return p
    return None


class Result:
    __slots__ = ("fate", "command", "rc", "ok", "stderr", "disrupted")

    def __init__(self, fate, command):
        self.fate, self.command = fate, command
        self.rc, self.ok, self.stderr, self.disrupted = None, False, b"", False


class Soak:
    """Run `sessions` ssh clients, `workers` at a time, against a proxy.

    ssh_argv: argv prefix up to (not including) the remote command.
    builder_pgid: process group of the builder (entrypoint.sh and its sshd),
    or None to leave the builder alone."""

    def __init__(self, ssh_argv, sessions, workers, seed, builder_pgid=None,
                 kill_share=0.35, stop_share=0.1, builder_every=(1.0, 3.0), kill_after=(0.0, 1.2), commands=None):
        self.ssh_argv = ssh_argv
        self.sessions = sessions
        self.workers = workers
        self.rng = random.Random(seed)
        self.builder_pgid = builder_pgid
        self.kill_share, self.stop_share = kill_share, stop_share
        self.builder_every = builder_every
        self.kill_after = kill_after
        self.commands = commands
        self.results = []
        self.lock = threading.Lock()
        self.next = 0
        self.disruptions = {"builder connection killed": 0, "builder paused": 0}
        self.disrupting = 0.0  # monotonic time of the last builder disruption
        self.done = threading.Event()

    def _plan(self):
        with self.lock:
            if self.next >= self.sessions:
                return None
            self.next += 1
            r = self.rng.random()
            fate = ("kill" if r < self.kill_share else
                    "stop" if r < self.kill_share + self.stop_share else "complete")
            cmds = self.commands or (
                COMMANDS if fate == "complete" else COMMANDS + [STREAM] * len(COMMANDS))
            return (fate, self.rng.choice(cmds), self.rng.uniform(*self.kill_after),
                    self.rng.randrange(1 << 30))

    def _one(self, plan):
        fate, (cmd, data, expect, length), delay, _ = plan
        res = Result(fate, cmd)
        t0 = time.monotonic()
        p = subprocess.Popen(self.ssh_argv + [cmd], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if fate == "complete":
            try:
                out, err = p.communicate(data, timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                res.stderr = b"client timed out after 120s\n" + err
                res.rc = -1
                return res
            res.rc, res.stderr = p.returncode, err
            want = data if expect == "echo" else expect
            res.ok = p.returncode == 0 and (out == want if want is not None
                                            else len(out) == length)
            res.disrupted = self.disrupting >= t0
            return res
        # A client that vanishes: kill -9 at a random moment, after
        # stopping it first (it stops reading: the proxy's writes back up).
        time.sleep(delay)
        if fate == "stop":
            try:
                p.send_signal(signal.SIGSTOP)
            except ProcessLookupError:
                pass
            time.sleep(self.rng.uniform(0.1, 0.8))
        try:
            p.kill()
        except ProcessLookupError:
            pass
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        res.rc = p.returncode
        return res

    def _worker(self):
        while True:
            plan = self._plan()
            if plan is None:
                return
            r = self._one(plan)
            with self.lock:
                self.results.append(r)

    def _disrupt(self):
        rng = random.Random(self.rng.random())
        sshd = sshd_pid(self.builder_pgid)
        while not self.done.wait(rng.uniform(*self.builder_every)):
            if sshd is None:
                sshd = sshd_pid(self.builder_pgid)
                continue
            if rng.random() < 0.8:
                kids = children(sshd)
                if kids:
                    self.disrupting = time.monotonic()
                    try:
                        os.kill(rng.choice(kids), signal.SIGKILL)
                        self.disruptions["builder connection killed"] += 1
                    except ProcessLookupError:
                        pass
            else:
                # New connections to the builder hang for a moment.
                self.disrupting = time.monotonic()
                try:
                    os.kill(sshd, signal.SIGSTOP)
                    time.sleep(rng.uniform(0.5, 2.0))
                finally:
                    os.kill(sshd, signal.SIGCONT)
                self.disrupting = time.monotonic()
                self.disruptions["builder paused"] += 1

    def run(self):
        t0 = time.monotonic()
        threads = [threading.Thread(target=self._worker) for _ in range(self.workers)]
        dis = None
        if self.builder_pgid is not None:
            dis = threading.Thread(target=self._disrupt)
            dis.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.done.set()
        if dis:
            dis.join()
        self.seconds = time.monotonic() - t0
        return self

    def summary(self):
        by = {}
        for r in self.results:
            key = r.fate if r.fate != "complete" else (
                "completed ok" if r.ok else "completed failed")
            by[key] = by.get(key, 0) + 1
        return by

    def unexplained(self):
        """Sessions that ended by themselves, not as expected, with no
        "nrbc: " line telling the user why."""
        return [r for r in self.results if r.fate == "complete" and not r.ok and
                failure_line(r.stderr) is None]


# What the proxy tells a user while a builder is on its way: progress, not a
# reason for a failure.
PROGRESS_LINE = re.compile(rb"^nrbc: (requested a builder |waiting for a builder: |"
                           rb"builder pod \S+: (Pending|Creating|Running)\b)")


def failure_line(stderr):
    """The last "nrbc: " line of a session's stderr if it says why the
    session failed, else None."""
    lines = [l for l in stderr.splitlines() if l.startswith(b"nrbc: ")]
    if not lines or PROGRESS_LINE.match(lines[-1]):
        return None
    return lines[-1]


def check_proxy(proc, log_text, health, sessions_launched):
    """What is wrong with the proxy after a soak (empty list: nothing).
    health: (host, port) of its health server. Waits for every session to
    be closed first."""
    problems = []
    if proc.poll() is not None:
        problems.append("proxy exited with %s" % proc.returncode)
        return problems, {}
    deadline = time.monotonic() + 60
    m = metrics(*health)
    while m.get("nrbc_proxy_sessions", 0) != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        m = metrics(*health)
    if m.get("nrbc_proxy_sessions", 0) != 0:
        problems.append("%d sessions still open" % m["nrbc_proxy_sessions"])
    accepted = m.get("nrbc_proxy_connections_accepted_total", 0)
    ended = sum(m.get('nrbc_proxy_sessions_total{outcome="%s"}' % o, 0)
                for o in ("ok", "failed", "unauthenticated"))
    if accepted != ended:
        problems.append("%d sessions accepted, %d ended in the metrics" % (accepted, ended))
    if accepted > sessions_launched or accepted < sessions_launched * 0.5:
        problems.append("%d sessions accepted for %d clients" % (accepted, sessions_launched))
    closed = len(re.findall(r"session=\d+ closed after", log_text))
    if closed != accepted:
        problems.append("%d sessions accepted, %d closed in the log" % (accepted, closed))
    for mark in SANITIZER_MARKS:
        if mark in log_text:
            i = log_text.index(mark)
            problems.append("sanitizer report: " + log_text[max(0, i - 200):i + 3000])
            break
    return problems, m
