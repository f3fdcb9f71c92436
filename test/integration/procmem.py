"""A process's memory as /proc reports it, in KiB. RSS counts every shared
library page once per process; PSS divides each shared page among the
processes that map it, so two nrbc processes on one node cost about the sum
of their PSS, not of their RSS."""


def _field(path, name):
    with open(path) as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return _field("/proc/%d/status" % pid, "VmRSS:")


def pss_kib(pid):
    return _field("/proc/%d/smaps_rollup" % pid, "Pss:")


def private_dirty_kib(pid):
    """Memory the process itself wrote (heap, stacks, library data)."""
    return _field("/proc/%d/smaps_rollup" % pid, "Private_Dirty:")


def describe(pid):
    """'RSS 10.6 MB, PSS 4.1 MB, private 2.1 MB' for benchmark lines."""
    return "RSS %.1f MB, PSS %.1f MB, private %.1f MB" % (
        rss_kib(pid) / 1024.0, pss_kib(pid) / 1024.0, private_dirty_kib(pid) / 1024.0)
