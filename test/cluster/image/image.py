"""The real node's one container image, made locally (test code, stdlib only).

No registry is reachable from the tests, so the pod sandbox ("pause") image
and the test pods' image are one tiny image written by hand in the OCI
image layout: a single uncompressed layer holding the static binary built
from tool.c (at /tool, and /pause for the sandbox). Its default command is
`/tool pause`, so it serves as containerd's sandbox_image; test pods give
`command: [/tool, serve, 8080]` and the like.

    path, name = build(cache_dir)   # OCI archive (cached by source hash)
                                    # and its image name nrbc.test/tool:<hash>
Load it with `ctr -n k8s.io images import PATH` (node.py does).
"""

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "tool.c")


def _source_key():
    h = hashlib.sha256()
    for p in (SOURCE, os.path.abspath(__file__)):
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def _tar(files):
    """Deterministic tar (fixed mtimes, owners) of {name: (mode, bytes)}:
    the same source gives the same digests."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(files):
            mode, data = files[name]
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, mode
                t.addfile(ti)
            else:
                ti.mode, ti.size = mode, len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _blob(blobs, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def build(cache_dir):
    key = _source_key()
    name = "nrbc.test/tool:" + key
    out = os.path.join(cache_dir, "tool-%s.oci.tar" % key)
    if os.path.exists(out):
        return out, name
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        binary = os.path.join(tmp, "tool")
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", binary, SOURCE],
                       check=True)
        with open(binary, "rb") as f:
            tool = f.read()
    layer = _tar({"tool": (0o755, tool), "pause": (0o755, tool),
                  "tmp": (0o1777, None), "etc": (0o755, None)})
    blobs = {}
    layer_desc = _blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/tool"], "Cmd": ["pause"], "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = _blob(blobs, json.dumps(config, sort_keys=True).encode(),
                        "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode(),
                          "application/vnd.oci.image.manifest.v1+json")
    # containerd's importer names the image after io.containerd.image.name.
    manifest_desc["annotations"] = {"io.containerd.image.name": name,
                                    "org.opencontainers.image.ref.name": key}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    files = {"oci-layout": (0o644, b'{"imageLayoutVersion":"1.0.0"}'),
             "index.json": (0o644, json.dumps(index, sort_keys=True).encode()),
             "blobs": (0o755, None), "blobs/sha256": (0o755, None)}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":", 1)[1]] = (0o644, data)
    with open(out + ".tmp", "wb") as f:
        f.write(_tar(files))
    os.rename(out + ".tmp", out)
    return out, name
