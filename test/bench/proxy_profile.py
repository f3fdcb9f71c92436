"""Where the proxy's CPU goes during one bulk transfer: `perf record` with
DWARF call graphs (Debian's libssh, libssh2 and libcrypto have no frame
pointers, so `-g` alone loses the callers of libcrypto), then each sample is
put on a leg and a category:

  leg       the first SSH library on its stack: libssh2 (the builder leg)
            or libssh (the client leg); "other" is nrbc and libuv alone
  category  what the leaf is: AES (EVP_Cipher / EVP_*cryptUpdate), HMAC /
            SHA, RAND (padding), the kernel under a named libc call
            (sendto, recvfrom, poll), memcpy, or the library's own code

Used by bench_proxy_throughput.py --profile."""

import collections
import os
import re
import signal
import subprocess
import time

FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
LIBCRYPTO_GROUPS = [
    ("AES (libssh2: one 16-byte block per call)", ("EVP_Cipher",)),
    ("AES-GCM / AES (libssh)", ("EVP_EncryptUpdate", "EVP_DecryptUpdate",
                                "EVP_CIPHER_CTX_ctrl", "EVP_EncryptFinal_ex",
                                "EVP_DecryptFinal_ex")),
    ("HMAC-SHA2 (libssh2)", ("SHA256_Update", "SHA256_Final", "HMAC_Init_ex", "HMAC_Update",
                             "HMAC_Final", "HMAC_CTX_free", "HMAC_CTX_new", "HMAC_CTX_reset")),
    ("RAND (packet padding)", ("RAND_bytes_ex", "RAND_bytes", "EVP_RAND_generate")),
]


def record(pid, data, run):
    """perf record the process pid while run() runs; returns run()'s value."""
    rec = subprocess.Popen(["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf,16384",
                            "-o", data, "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first byte
    try:
        return run()
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait()


def stacks(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    for sample in out.split("\n\n"):
        frames = []
        for line in sample.splitlines():
            m = FRAME.match(line)
            if m:
                frames.append((m.group(2), os.path.basename(m.group(3))))
        if frames:
            yield frames


def leg(frames):
    for _, dso in frames:
        if dso.startswith("libssh2"):
            return "libssh2 (builder leg)"
        if dso.startswith("libssh.so"):
            return "libssh (client leg)"
    return "other (nrbc, libuv)"


def category(frames):
    sym = frames[0][0]
    # perf names an inlined leaf's dso "inlined": the caller's is the one
    dso = next((d for _, d in frames if d != "inlined"), "?")
    if dso.startswith("[kernel"):
        for s, _ in frames:
            m = re.match(r"__(?:x64|se)_sys_(\w+)", s)
            if m:
                return "kernel, " + m.group(1)
        return "kernel, interrupts and scheduling"
    if dso == "libcrypto.so.3":
        named = {s for s, d in frames if d == "libcrypto.so.3"}
        for name, syms in LIBCRYPTO_GROUPS:
            if named & set(syms):
                return name
        return "libcrypto, other"
    if re.search(r"mem(cpy|move)", sym):
        return "memcpy"
    if dso == "libc.so.6":
        return "libc, other"
    return dso.split(".so")[0] + " itself"


def summary(data, top=12):
    """Lines: share of samples by leg, then by leg and category."""
    legs, cats = collections.Counter(), collections.Counter()
    for frames in stacks(data):
        legs[leg(frames)] += 1
        cats[(leg(frames), category(frames))] += 1
    n = sum(legs.values()) or 1
    lines = ["%5.1f%%  %s" % (100.0 * v / n, k) for k, v in legs.most_common()]
    lines.append("by leg and what the CPU did (%d samples):" % n)
    lines += ["%5.1f%%  %-22s %s" % (100.0 * v / n, k[0], k[1])
              for k, v in cats.most_common(top)]
    return lines
