"""A minimal client of Nix's worker protocol (what `nix-daemon --stdio`
speaks, over ssh-ng://), for what Nix's own ssh-ng client does not send:
Nix 2.8's SSHStore sends no wopSetOptions at all, so a trusted user's
settings (`--option ...`) never reach the builder through it. This one does.

Protocol 1.19: old enough that the daemon sends log lines and errors as
plain strings (no activities, no structured errors), new enough for
setting overrides (1.12) and build modes (1.15)."""

import struct
import subprocess

WORKER_MAGIC_1, WORKER_MAGIC_2 = 0x6e697863, 0x6478696f
STDERR_NEXT, STDERR_LAST, STDERR_ERROR = 0x6f6c6d67, 0x616c7473, 0x63787470
WOP_ADD_TEXT_TO_STORE, WOP_BUILD_PATHS, WOP_SET_OPTIONS = 8, 9, 19
VERSION = (1 << 8) | 19


class NixWire:
    def __init__(self, argv, env=None):
        """argv: a command whose stdin/stdout is a daemon connection (ssh
        ... nix-daemon --stdio)."""
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.log = []
        self._u64(WORKER_MAGIC_1)
        self._flush()
        assert self._ru64() == WORKER_MAGIC_2, "not a Nix daemon"
        self.server_version = self._ru64()
        self._u64(VERSION)
        self._u64(0)    # no CPU affinity
        self._u64(0)    # reserveSpace (obsolete)
        self._flush()
        self._messages()

    def _u64(self, n):
        self.p.stdin.write(struct.pack("<Q", n))

    def _str(self, s):
        b = s.encode() if isinstance(s, str) else s
        self._u64(len(b))
        self.p.stdin.write(b + b"\0" * (-len(b) % 8))

    def _flush(self):
        self.p.stdin.flush()

    def _read(self, n):
        b = self.p.stdout.read(n)
        if len(b) != n:
            self.p.kill()
            raise EOFError("the daemon connection ended: %s"
                           % self.p.stderr.read().decode(errors="replace"))
        return b

    def _ru64(self):
        return struct.unpack("<Q", self._read(8))[0]

    def _rstr(self):
        n = self._ru64()
        return self._read(n + (-n % 8))[:n].decode(errors="replace")

    def _messages(self):
        """The daemon's log lines up to the end of the reply's preamble."""
        while True:
            m = self._ru64()
            if m == STDERR_LAST:
                return
            if m == STDERR_NEXT:
                self.log.append(self._rstr())
            elif m == STDERR_ERROR:
                msg = self._rstr()
                self._ru64()
                raise RuntimeError("daemon: " + msg)
            else:
                raise RuntimeError("unexpected daemon message %#x" % m)

    def set_options(self, overrides):
        """wopSetOptions: the fixed fields (one local build job, no
        substitutes), then `overrides` (name -> value), which the daemon
        applies for a trusted user."""
        self._u64(WOP_SET_OPTIONS)
        # keepFailed keepGoing tryFallback verbosity maxBuildJobs
        # maxSilentTime useBuildHook buildVerbosity logType printBuildTrace
        # buildCores useSubstitutes
        for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0):
            self._u64(v)
        self._u64(len(overrides))
        for k, v in overrides.items():
            self._str(k)
            self._str(v)
        self._flush()
        self._messages()

    def add_text(self, name, text, refs=()):
        """wopAddTextToStore (a .drv, say); returns its store path."""
        self._u64(WOP_ADD_TEXT_TO_STORE)
        self._str(name)
        self._str(text)
        self._u64(len(refs))
        for r in refs:
            self._str(r)
        self._flush()
        self._messages()
        return self._rstr()

    def build(self, paths):
        """wopBuildPaths ("drv!out" ...), normal mode."""
        self._u64(WOP_BUILD_PATHS)
        self._u64(len(paths))
        for p in paths:
            self._str(p)
        self._u64(0)
        self._flush()
        self._messages()
        return self._ru64()

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
