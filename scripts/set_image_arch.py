"""Rewrite the architecture recorded in a local image's config.

`docker import` on Docker 20.10 records the engine's architecture whatever the rootfs
holds; this saves the image, fixes `architecture` (and `variant`), and loads it back
under the same tag. Standard library only: it runs before the project's venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

DOCKER = os.environ.get("DOCKER_CLI", "/usr/bin/docker")  # on DOCKER_HOST: the setup's own engine


def set_arch(image: str, arch: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.tar")
        subprocess.run([DOCKER, "save", "-o", src, image], check=True)
        with tarfile.open(src) as tar:
            # Extraction filters (PEP 706) came in 3.11.4; Debian 12's python3 is 3.11.2,
            # which this runs on before the venv exists. The tarball is the engine's own.
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(os.path.join(tmp, "x"), filter="tar")
            else:
                tar.extractall(os.path.join(tmp, "x"))
        root = os.path.join(tmp, "x")
        manifest_path = os.path.join(root, "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        old_name = manifest[0]["Config"]
        with open(os.path.join(root, old_name)) as f:
            config = json.load(f)
        config["architecture"] = arch
        if arch == "arm64":
            config["variant"] = "v8"
        else:
            config.pop("variant", None)
        data = json.dumps(config, separators=(",", ":")).encode()
        new_name = hashlib.sha256(data).hexdigest() + ".json"
        os.remove(os.path.join(root, old_name))
        with open(os.path.join(root, new_name), "wb") as f:
            f.write(data)
        manifest[0]["Config"] = new_name
        manifest[0]["RepoTags"] = [image]
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        out = os.path.join(tmp, "out.tar")
        with tarfile.open(out, "w") as tar:
            for name in sorted(os.listdir(root)):
                tar.add(os.path.join(root, name), arcname=name)
        subprocess.run([DOCKER, "rmi", "-f", image], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([DOCKER, "load", "-q", "-i", out], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    set_arch(sys.argv[1], sys.argv[2])
