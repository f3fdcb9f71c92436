"""nrbc proxy's SSH heart against real OpenSSH: an sshd "builder" started by
builder/entrypoint.sh on a private loopback address, `nrbc proxy
--builder-address` in front of it, and the OpenSSH client `ssh` as the Nix
user. No Kubernetes here: the static builder backend hands every session the
same builder.

Roles and keys: the *client* key is the Nix user's (in the proxy's authorized
keys), the *upstream* key is the proxy's own towards builders (the Secret's
private/public: the builder's authorized key), the *host* key is shared by
the proxy and its builders (the Secret's host-key)."""

import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

import procmem

from conftest import REPO, NixClient, free_port, relay, salt, wait_for

ENTRYPOINT = os.path.join(REPO, "builder", "entrypoint.sh")
# Private loopback addresses for this module; the octet varies with the pid
# so concurrent runs do not meet.
NET = "127.81.%d" % (20 + os.getpid() % 200)
BUILDER_IP = NET + ".2"
OTHER_BUILDER_IP = NET + ".3"
PROXY_IP = NET + ".10"
MIB = 1024 * 1024
BIG = 256 * MIB
# Sanitizer builds (ASan's shadow memory and quarantine) need a higher bound
# for the proxy's RSS; the bytes are checked all the same.
RSS_LIMIT_KIB = int(os.environ.get("NRBC_TEST_PROXY_RSS_LIMIT_KIB", 50 * 1024))


def keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True)
    return path


def sha256_file(path, limit=None):
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(MIB if left is None else min(MIB, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


class Keys:
    def __init__(self, d):
        self.dir = d
        self.client = keygen(os.path.join(d, "client"), "nix-user")
        self.stranger = keygen(os.path.join(d, "stranger"), "not-allowed")
        self.upstream = keygen(os.path.join(d, "upstream"), "nrbc-proxy")
        self.host = keygen(os.path.join(d, "host"), "nrbc-host")
        self.other_host = keygen(os.path.join(d, "other-host"), "impostor-host")

    def known_hosts(self, ip, port, host_pub=None):
        path = os.path.join(self.dir, "known_hosts-%s-%d" % (ip, port))
        with open(path, "w") as f:
            f.write("[%s]:%d %s" % (ip, port, open(host_pub or self.host + ".pub").read()))
        return path


class Builder:
    """builder/entrypoint.sh as a local process: sshd on ip:port."""

    def __init__(self, root, ip, authorized_pub, host_key):
        self.root, self.ip = root, ip
        self.port = free_port(ip)
        ssh_dir = os.path.join(root, "etc", "nrbc", "ssh")
        os.makedirs(ssh_dir)
        shutil.copy(authorized_pub, os.path.join(ssh_dir, "public"))
        shutil.copy(host_key, os.path.join(ssh_dir, "host-key"))
        env = dict(os.environ, NRBC_BUILDER_ROOT=root, NRBC_BUILDER_NIX_DAEMON="external",
                   NRBC_BUILDER_LISTEN_ADDRESS=ip, NRBC_BUILDER_PORT=str(self.port))
        self.log_path = os.path.join(root, "builder.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["sh", ENTRYPOINT], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(self._listening, 30, what="builder sshd on %s:%d" % (ip, self.port))

    def _listening(self):
        assert self.proc.poll() is None, "builder exited:\n" + open(self.log_path).read()
        try:
            socket.create_connection((self.ip, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Proxy:
    """nrbc proxy as a subprocess; the port is read from its log."""

    def __init__(self, nrbc, d, keys, builder, *extra, ip=PROXY_IP):
        self.ip = ip
        self.log_path = os.path.join(d, "proxy-%d.log" % time.monotonic_ns())
        health = [] if "--health-port" in extra else ["--health-port", "-1"]
        argv = [nrbc, "proxy", "--listen-address", ip, "--port", "0"] + health + [
                "--builder-address", "%s:%d" % (builder.ip, builder.port),
                "--host-key", keys.host, "--authorized-keys", keys.client + ".pub",
                "--private-key", keys.upstream, "--log-level", "debug"] + list(extra)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.port = int(wait_for(self._port, 15, what="proxy listening"))
        self.keys = keys
        self.known_hosts = keys.known_hosts(ip, self.port)

    def _port(self):
        assert self.proc.poll() is None, "proxy exited:\n" + self.log()
        m = re.search(r"listening on \S+ port (\d+) \(host key", self.log())
        return m and m.group(1)

    def log(self):
        return open(self.log_path, errors="replace").read()

    def rss_kib(self):
        return procmem.rss_kib(self.proc.pid)
        raise AssertionError("no VmRSS")

    def ssh_argv(self, key=None, extra=()):
        return ["ssh", "-F", "/dev/null", "-p", str(self.port), "-i", key or self.keys.client,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20",
                "-o", "LogLevel=ERROR"] + list(extra) + ["nixbld@" + self.ip]

    def ssh(self, *cmd, key=None, extra=(), input=None, timeout=120):
        return subprocess.run(self.ssh_argv(key, extra) + list(cmd), input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)

    def stop(self):
        """SIGTERM; a healthy proxy drains and exits 0."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("proxy did not exit after SIGTERM:\n" + self.log()[-3000:])


def stop_world(proxies, builder):
    """Stops every proxy (SIGTERM) and the builder; returns the proxies that
    did not exit 0, with their log's tail (a sanitizer build also exits
    non-zero on leaks or errors)."""
    codes = []
    try:
        for p in proxies:
            codes.append((p.stop(), p.log_path))
    finally:
        builder.stop()
    return [(c, open(path, errors="replace").read()[-2000:]) for c, path in codes if c != 0]


@pytest.fixture(scope="module")
def world(nrbc_bin, tmp_path_factory):
    """Keys, a builder, a proxy that lets any command through (tests need
    cat, sh, head), and a test data file the builder can read."""
    # The builder's sshd reads authorized_keys as nixbld: not under pytest's
    # 0700 directories.
    d = tempfile.mkdtemp(prefix="nrbc-proxy-test-")
    os.chmod(d, 0o755)
    keys = Keys(str(tmp_path_factory.mktemp("proxy-keys")))
    builder = Builder(os.path.join(d, "builder"), BUILDER_IP, keys.upstream + ".pub", keys.host)
    data = os.path.join(d, "data")
    with open(data, "wb") as f:
        for _ in range(BIG // MIB):
            f.write(os.urandom(MIB))
    os.chmod(data, 0o644)
    w = type("World", (), {})()
    w.dir, w.keys, w.builder, w.data, w.nrbc = d, keys, builder, data, nrbc_bin
    w.data_sha = sha256_file(data)
    w.proxies = []

    def proxy(*extra, **kw):
        p = Proxy(nrbc_bin, d, keys, kw.pop("builder", builder), *extra, **kw)
        w.proxies.append(p)
        return p
    w.proxy = proxy
    w.main = proxy("--allow-any-command")
    try:
        yield w
    finally:
        bad = stop_world(w.proxies, builder)
    shutil.rmtree(d, ignore_errors=True)
    assert not bad, bad


def direct_ssh(w, *cmd, input=None):
    """The same command straight to the builder, for comparison."""
    kh = w.keys.known_hosts(w.builder.ip, w.builder.port)
    argv = ["ssh", "-F", "/dev/null", "-p", str(w.builder.port), "-i", w.keys.upstream,
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + kh,
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            "nixbld@" + w.builder.ip] + list(cmd)
    return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)


# ---- the basics -------------------------------------------------------------------

def test_echo(world):
    r = world.main.ssh("echo", "hello through nrbc")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello through nrbc\n"


@pytest.mark.parametrize("cmd", ["exit 0", "exit 1", "exit 137", "kill -9 $$", "kill -TERM $$"])
def test_exit_status_and_signal_reach_the_client(world, cmd):
    direct = direct_ssh(world, cmd)
    r = world.main.ssh(cmd)
    assert r.returncode == direct.returncode, (r.returncode, direct.returncode, r.stderr)
    assert r.returncode in (0, 1, 137, 255)


def test_exit_status_survives_a_client_that_closes_on_eof(world):
    """OpenSSH closes a channel as soon as EOF went both ways; the exit
    status, which the builder sends after its EOF, must still arrive (a
    race seen with connection sharing, and with empty stdin)."""
    p = world.main
    for i in range(15):
        r = p.ssh("exit 7", input=b"")
        assert r.returncode == 7, (i, r.returncode, r.stderr)
    sock = os.path.join(world.dir, "eof-%d" % os.getpid())
    master = subprocess.Popen(p.ssh_argv(extra=["-o", "ControlMaster=yes",
                                                "-o", "ControlPath=" + sock, "-N"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(sock), 20, what="control socket")
        mux = ["-o", "ControlMaster=no", "-o", "ControlPath=" + sock]
        for i in range(15):
            r = p.ssh("echo -n x; exit 7", extra=mux, input=b"")
            assert (r.returncode, r.stdout) == (7, b"x"), (i, r.returncode, r.stderr)
    finally:
        master.terminate()
        master.wait(10)


def test_stderr_is_kept_apart_from_stdout(world):
    r = world.main.ssh("echo to-stdout; echo to-stderr >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == b"to-stdout\n"
    assert b"to-stderr\n" in r.stderr
    assert b"to-stdout" not in r.stderr


def test_eof_is_honoured(world):
    r = world.main.ssh("cat; echo done", input=b"line one\nline two")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"line one\nline twodone\n"


def test_empty_stdin_and_no_output(world):
    r = world.main.ssh("cat", input=b"")
    assert (r.returncode, r.stdout) == (0, b"")


def test_env_requests_are_refused_once_logged(world):
    """The builder gets a fixed environment: env requests are refused (the
    OpenSSH client carries on), logged once a session, never replayed."""
    env = dict(os.environ, LC_NRBC_TEST="xyz", LC_NRBC_OTHER="abc")
    r = subprocess.run(world.main.ssh_argv(extra=["-o", "SendEnv=LC_NRBC_TEST LC_NRBC_OTHER"]) +
                       ["echo ${LC_NRBC_TEST:-unset}"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert (r.returncode, r.stdout) == (0, b"unset\n"), r.stderr
    log = world.main.log()
    assert 'refused env request(s) (first: "LC_NRBC_TEST")' in log
    assert "builder refused env" not in log


def test_bulk_upload_exact(world):
    with open(world.data, "rb") as f:
        p = subprocess.run(world.main.ssh_argv() + ["sha256sum"], stdin=f,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0].decode() == world.data_sha


def test_bulk_download_exact(world):
    p = subprocess.Popen(world.main.ssh_argv() + ["cat", world.data], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = p.stdout.read(MIB)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    assert p.wait(300) == 0, p.stderr.read()
    assert n == BIG
    assert h.hexdigest() == world.data_sha


def test_both_directions_at_once(world):
    """cat echoes 64 MiB back while it is still being sent."""
    size = 64 * MIB
    p = subprocess.Popen(world.main.ssh_argv() + ["cat"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent = hashlib.sha256()

    def feed():
        with open(world.data, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(MIB, left))
                sent.update(chunk)
                p.stdin.write(chunk)
                left -= len(chunk)
        p.stdin.close()
    t = threading.Thread(target=feed)
    t.start()
    got = hashlib.sha256()
    n = 0
    while True:
        chunk = p.stdout.read(MIB)
        if not chunk:
            break
        got.update(chunk)
        n += len(chunk)
    t.join()
    assert p.wait(120) == 0, p.stderr.read()
    assert n == size and got.hexdigest() == sent.hexdigest()


def test_two_channels_on_one_connection(world):
    """OpenSSH connection sharing: a master connection, then two commands at
    once through it; one proxy session, two builder channels."""
    p = world.main
    sock = os.path.join(world.dir, "cm-%d" % os.getpid())
    before = p.log().count("authenticated user")
    master = subprocess.Popen(p.ssh_argv(extra=["-o", "ControlMaster=yes",
                                                "-o", "ControlPath=" + sock, "-N"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(sock), 20, what="control socket")
        mux = ["-o", "ControlMaster=no", "-o", "ControlPath=" + sock]
        procs = [subprocess.Popen(p.ssh_argv(extra=mux) + ["sleep 1; echo channel-%d" % i],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(2)]
        outs = [q.communicate(timeout=60) for q in procs]
        for i, (q, (out, err)) in enumerate(zip(procs, outs)):
            assert q.returncode == 0, err
            assert out == b"channel-%d\n" % i
        r = subprocess.run(p.ssh_argv(extra=mux) + ["exit 5"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 5
        assert p.log().count("authenticated user") == before + 1
    finally:
        master.terminate()
        master.wait(10)


# ---- refusals ---------------------------------------------------------------------

def test_unknown_key_is_refused(world):
    r = world.main.ssh("echo", "should not run", key=world.keys.stranger)
    assert r.returncode == 255
    assert b"Permission denied" in r.stderr
    assert b"should not run" not in r.stdout


def test_builder_with_wrong_host_key_is_refused(world):
    impostor = Builder(os.path.join(world.dir, "impostor"), OTHER_BUILDER_IP,
                       world.keys.upstream + ".pub", world.keys.other_host)
    try:
        p = world.proxy("--allow-any-command", builder=impostor)
        r = p.ssh("echo", "must not run")
        assert r.returncode != 0
        assert b"must not run" not in r.stdout
        assert b"nrbc:" in r.stderr and b"host key" in r.stderr, r.stderr
        assert re.search(r"presented host key SHA256:\S+, expected ssh-ed25519", p.log())
    finally:
        impostor.stop()


@pytest.fixture(scope="module")
def strict(world):
    """A proxy with the default command policy."""
    return world.proxy()


@pytest.mark.parametrize("cmd", ["sh -c id", "nix-store --serve; sh", "/tmp/nix-store --serve",
                                 "nix-daemon --stdio --store daemon; sh"])
def test_default_policy_refuses_other_commands(strict, cmd):
    r = strict.ssh(cmd)
    assert r.returncode == 1
    assert b"nrbc: refused" in r.stderr, r.stderr
    assert b"only runs the commands Nix uses" in r.stderr
    assert r.stdout == b""


@pytest.mark.parametrize("cmd", ["nix-daemon --stdio --store /tmp/x",
                                 "nix-store --serve --write --store 'local?root=/tmp/x'"])
def test_default_policy_refuses_another_store(strict, cmd):
    """A client's remote-store other than the builder's own daemon."""
    r = strict.ssh(cmd)
    assert r.returncode == 1
    assert b"nrbc: refused" in r.stderr, r.stderr
    assert b"remote-store may be daemon or auto" in r.stderr, r.stderr
    assert r.stdout == b""


def test_default_policy_lets_nix_through(strict):
    r = strict.ssh("nix-store --serve --write", input=b"")
    assert b"nrbc: refused" not in r.stderr, r.stderr
    r = strict.ssh("nix-daemon  --stdio", input=b"")
    assert b"nrbc: refused" not in r.stderr, r.stderr
    # A client's remote-program and remote-store (the builder's own).
    r = strict.ssh("/usr/bin/nix-daemon --stdio --store 'daemon'", input=b"")
    assert b"nrbc: refused" not in r.stderr, r.stderr


def test_shell_is_refused(strict):
    r = strict.ssh(input=b"id\nexit\n")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert b"interactive shells are not available" in r.stderr
    assert b"uid=" not in r.stdout


def test_pty_is_refused(strict):
    # With -tt a refused pty is fatal for OpenSSH's client.
    r = strict.ssh("nix-store --serve", extra=["-tt"], input=b"")
    assert r.returncode == 255
    assert b"PTY allocation request failed" in r.stderr
    assert "refused a pty" in strict.log()


def test_subsystem_is_refused(strict):
    r = strict.ssh("sftp", extra=["-s"], input=b"")
    assert r.returncode == 1
    assert b'subsystem "sftp" is not available' in r.stderr, r.stderr


def test_port_forwarding_is_refused(strict):
    r = strict.ssh(extra=["-W", "%s:%d" % (BUILDER_IP, 22)], input=b"", timeout=30)
    assert r.returncode == 255
    assert (b"open failed" in r.stderr or b"prohibited" in r.stderr or
            b"stdio forwarding failed" in r.stderr), r.stderr


def test_session_limit(world):
    p = world.proxy("--allow-any-command", "--max-sessions", "1")
    master_sock = os.path.join(world.dir, "limit-%d" % os.getpid())
    hold = subprocess.Popen(p.ssh_argv(extra=["-o", "ControlMaster=yes",
                                              "-o", "ControlPath=" + master_sock, "-N"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(master_sock), 20, what="first session")
        r = p.ssh("echo", "second")
        assert r.returncode == 255
        assert b"second" not in r.stdout
        assert "refused a connection" in p.log()
    finally:
        hold.terminate()
        hold.wait(10)
    wait_for(lambda: p.ssh("echo", "again").returncode == 0, 20, what="slot freed")


class FakeBuilder:
    """Just an address: nothing listening, or a listener that never speaks."""

    def __init__(self, ip, listen):
        self.ip = ip
        self.sock = None
        if listen:
            self.sock = socket.socket()
            self.sock.bind((ip, 0))
            self.sock.listen(16)
            self.port = self.sock.getsockname()[1]
        else:
            self.port = free_port(ip)

    def close(self):
        if self.sock:
            self.sock.close()


def test_unreachable_builder_fails_the_session_with_a_message(world):
    dead = FakeBuilder(OTHER_BUILDER_IP, listen=False)
    p = world.proxy("--allow-any-command", builder=dead)
    r = p.ssh("echo", "never")
    assert r.returncode == 1
    assert b"nrbc: cannot connect to builder" in r.stderr, r.stderr
    assert b"refused" in r.stderr


def test_builder_timeout(world):
    """A builder that accepts TCP and never answers: --builder-timeout ends
    the wait with a message."""
    mute = FakeBuilder(OTHER_BUILDER_IP, listen=True)
    try:
        p = world.proxy("--allow-any-command", "--builder-timeout", "1s", builder=mute)
        t0 = time.monotonic()
        r = p.ssh("echo", "never")
        assert r.returncode == 1
        assert b"nrbc: gave up waiting for a builder after 1s" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 15
    finally:
        mute.close()


class SheddingBuilder:
    """A front for the real builder that closes the first `drop` connections
    before the SSH banner, as sshd does past MaxStartups (reset=True: with a
    TCP reset), and relays the rest to the builder."""

    def __init__(self, ip, target, drop, reset=False):
        self.ip, self.target, self.drop, self.reset = ip, target, drop, reset
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind((ip, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                if self.reset:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
                continue
            up = socket.create_connection((self.target.ip, self.target.port))
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=relay, args=(a, b), daemon=True).start()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_handshake_dropped_before_the_banner_is_tried_again(world, reset):
    """sshd past MaxStartups closes new connections before its banner: the
    proxy connects again (three attempts in all) instead of failing the
    session."""
    front = SheddingBuilder(OTHER_BUILDER_IP, world.builder, drop=2, reset=reset)
    try:
        p = world.proxy("--allow-any-command", "--log-level", "info", builder=front)
        r = p.ssh("echo", "third time")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"third time\n"
        assert front.accepted == 3
        assert len(re.findall(r"ended the SSH handshake .*trying again", p.log())) == 2, p.log()
    finally:
        front.close()


def test_handshake_dropped_every_time_fails_with_a_message(world):
    front = SheddingBuilder(OTHER_BUILDER_IP, world.builder, drop=1000)
    try:
        p = world.proxy("--allow-any-command", builder=front)
        r = p.ssh("echo", "never")
        assert r.returncode == 1
        assert b"nrbc: SSH handshake with builder" in r.stderr, r.stderr
        assert b"(3 attempts)" in r.stderr, r.stderr
        # Three attempts per builder; a builder that takes no connection is
        # given back and another asked for, twice (the static backend hands
        # out the same address again).
        assert front.accepted == 3 * 3
    finally:
        front.close()


def test_idle_timeout(world):
    p = world.proxy("--allow-any-command", "--idle-timeout", "1s")
    t0 = time.monotonic()
    r = p.ssh("sleep 4; echo late")
    # The user is told why, on the channel's stderr, with exit status 1.
    assert r.returncode == 1, r.stderr
    assert b"nrbc: idle for 1s: closed (--idle-timeout)\n" in r.stderr, r.stderr
    assert b"late" not in r.stdout
    assert time.monotonic() - t0 < 4
    wait_for(lambda: "idle for 1s" in p.log(), 5, what="idle log line")
    # Output keeps a session alive.
    r = p.ssh("for i in 1 2 3 4; do echo $i; sleep 0.5; done")
    assert (r.returncode, r.stdout) == (0, b"1\n2\n3\n4\n")


# ---- misbehaving clients ----------------------------------------------------------

def test_garbage_before_the_banner(world):
    p = world.main
    s = socket.create_connection((p.ip, p.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
    s.settimeout(10)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    # The banner may or may not have left before the garbage was read.
    assert data == b"" or data.startswith(b"SSH-2.0-"), data[:100]
    assert p.ssh("echo", "still fine").stdout == b"still fine\n"


def test_silent_client_is_dropped_after_login_grace_time(world):
    p = world.proxy("--allow-any-command", "--login-grace-time", "1s")
    s = socket.create_connection((p.ip, p.port), timeout=10)
    t0 = time.monotonic()
    s.settimeout(10)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    took = time.monotonic() - t0
    s.close()
    assert data.startswith(b"SSH-2.0-")
    assert 0.8 <= took < 8, took
    wait_for(lambda: "not authenticated within 1s" in p.log(), 5, what="log line")


def test_many_unauthenticated_connections_do_not_block_a_real_session(world):
    p = world.main
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection((p.ip, p.port), timeout=10)
            socks.append(s)
        # Half of them start talking SSH and then stall.
        for s in socks[::2]:
            s.sendall(b"SSH-2.0-stalled\r\n")
        t0 = time.monotonic()
        r = p.ssh("echo", "real session")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"real session\n"
        assert time.monotonic() - t0 < 30
        assert p.proc.poll() is None
    finally:
        for s in socks:
            s.close()


def test_auth_failures_are_limited(world):
    """Ten refused keys: the proxy hangs up after --max-auth-tries (6)."""
    p = world.main
    before = p.log().count("too many authentication failures")
    keys = [world.keys.stranger] + [keygen(os.path.join(world.dir, "k%d" % i), "k")
                                    for i in range(9)]
    extra = []
    for k in keys[1:]:
        extra += ["-i", k]
    r = p.ssh("echo", "x", key=keys[0], extra=extra)
    assert r.returncode == 255
    wait_for(lambda: p.log().count("too many authentication failures (6)") > before, 10,
             what="auth failure limit")
    assert "(7/6)" not in p.log()


# ---- flow control -----------------------------------------------------------------

def test_client_that_stops_reading_keeps_memory_bounded(world):
    """200 MiB toward a client that reads nothing for a while: the proxy
    must hold back (SSH windows), not buffer; then every byte arrives."""
    p = world.main
    size = 200 * MIB
    base = p.rss_kib()
    proc = subprocess.Popen(p.ssh_argv() + ["head -c %d %s" % (size, world.data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    for _ in range(30):
        time.sleep(0.1)
        peak = max(peak, p.rss_kib())
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = proc.stdout.read(MIB)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    assert proc.wait(120) == 0
    assert n == size
    assert h.hexdigest() == sha256_file(world.data, size)
    assert peak < RSS_LIMIT_KIB, "proxy RSS %d KiB while the client did not read" % peak
    print("proxy RSS: %d KiB before, peak %d KiB while stalled" % (base, peak))


def test_builder_that_stops_reading_keeps_memory_bounded(world):
    p = world.main
    size = 200 * MIB
    proc = subprocess.Popen(p.ssh_argv() + ["sleep 3; sha256sum"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, p.rss_kib())
            time.sleep(0.05)
    t = threading.Thread(target=watch)
    t.start()
    try:
        with open(world.data, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(MIB, left))
                proc.stdin.write(chunk)
                left -= len(chunk)
        proc.stdin.close()
        out = proc.stdout.read()
        assert proc.wait(120) == 0
    finally:
        stop.set()
        t.join()
    assert out.split()[0].decode() == sha256_file(world.data, size)
    assert peak < RSS_LIMIT_KIB, "proxy RSS %d KiB while the builder did not read" % peak


# ---- Nix through the proxy --------------------------------------------------------

@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_remote_build_through_the_proxy(strict, host_nix, nix_client, scheme):
    s = salt()
    sshopts = NixClient.sshopts(strict.port, strict.keys.client, strict.known_hosts)
    remote = nix_client.build("simple.nix", builders=NixClient.builders(strict.ip, scheme),
                              sshopts=sshopts, args={"salt": s})
    assert nix_client.read(remote.out) == ("hello from a remote builder %s\n" % s).encode()
    assert "nrbc: refused" not in remote.stderr


def http_get(ip, port, path):
    import http.client
    c = http.client.HTTPConnection(ip, port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def test_health_and_metrics(world):
    p = world.proxy("--allow-any-command", "--health-port", "0")
    port = int(wait_for(lambda: (re.search(r"health server listening on \S+ port (\d+)", p.log()) or
                                 [None, None])[1], 10, what="health port"))
    assert http_get(p.ip, port, "/healthz")[0] == 200
    assert http_get(p.ip, port, "/readyz")[0] == 200
    r = p.ssh("head -c 1000 >/dev/null; head -c 3000 /dev/zero", input=b"u" * 1000)
    assert r.returncode == 0 and len(r.stdout) == 3000
    assert p.ssh("echo", "x", key=world.keys.stranger).returncode == 255

    def counted():
        st, body = http_get(p.ip, port, "/metrics")
        return (st == 200 and 'nrbc_proxy_sessions_total{outcome="ok"} 1' in body and
                'nrbc_proxy_sessions_total{outcome="unauthenticated"} 1' in body and
                "nrbc_proxy_connections_accepted_total 2" in body and body)
    body = wait_for(counted, 10, what="session metrics")
    assert "nrbc_proxy_sessions 0" in body
    assert 'nrbc_proxy_bytes_total{direction="up"} 1000' in body, body
    assert 'nrbc_proxy_bytes_total{direction="down"} 3000' in body, body
    # The stranger's key was refused at least once (OpenSSH may offer it twice).
    assert re.search(r"^nrbc_proxy_auth_failures_total [1-9]", body, re.M), body
    # One builder wait, observed (static builder: well under a second).
    assert "nrbc_proxy_builder_wait_seconds_count 1" in body, body
    assert 'nrbc_proxy_builder_wait_seconds_bucket{le="1"} 1' in body, body


# ---- shutdown ---------------------------------------------------------------------

def test_sigterm_drains_live_sessions(world):
    p = world.proxy("--allow-any-command", "--shutdown-timeout", "20s")
    proc = subprocess.Popen(p.ssh_argv() + ["sleep 2; echo finished"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for(lambda: "RUNNING" in p.log(), 20, what="command running")
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # No new connections while draining ...
    r = p.ssh("echo", "late", timeout=20)
    assert r.returncode == 255
    # ... but the live one finishes.
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == b"finished\n"
    assert p.proc.wait(20) == 0
