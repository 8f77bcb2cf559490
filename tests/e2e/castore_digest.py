#!/usr/bin/python3
"""Independent castore digest of a filesystem path (castore.md), for the e2e tests.

Shares no code with ocibuild: BLAKE3 comes from the b3sum tool and the Directory messages are
encoded by hand here (fields in number order, proto3 defaults omitted, minimal varints).
Prints the root Node in protobuf's JSON mapping, one line, like `ocibuild store import`.

usage: castore_digest.py PATH [NAME]
"""
import base64
import json
import os
import stat
import subprocess
import sys


def b3(data=None, path=None):
    if path is not None:
        out = subprocess.run(["b3sum", "--no-names", "--", path], check=True, capture_output=True)
    else:
        out = subprocess.run(["b3sum", "--no-names"], input=data, check=True, capture_output=True)
    return bytes.fromhex(out.stdout.decode().strip())


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number, value):
    if not value:
        return b""
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_varint(number, value):
    if not value:
        return b""
    return varint(number << 3 | 0) + varint(value)


def ingest(path):
    """Returns (kind, fields) for path; fields hold digest/size/executable/target."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "symlink", {"target": os.readlink(path)}
    if stat.S_ISREG(st.st_mode):
        return "file", {"digest": b3(path=path), "size": st.st_size,
                        "executable": bool(st.st_mode & 0o100)}
    if stat.S_ISDIR(st.st_mode):
        dirs, files, links = b"", b"", b""
        size = 0
        for name in sorted(os.listdir(path)):  # bytes names: bytewise order
            kind, f = ingest(os.path.join(path, name))
            size += 1
            if kind == "directory":
                size += f["size"]
                dirs += field_bytes(1, field_bytes(1, name) + field_bytes(2, f["digest"])
                                    + field_varint(3, f["size"]))
            elif kind == "file":
                files += field_bytes(2, field_bytes(1, name) + field_bytes(2, f["digest"])
                                     + field_varint(3, f["size"])
                                     + field_varint(4, 1 if f["executable"] else 0))
            else:
                links += field_bytes(3, field_bytes(1, name) + field_bytes(2, f["target"]))
        return "directory", {"digest": b3(data=dirs + files + links), "size": min(size, 2**64 - 1)}
    raise SystemExit("castore_digest.py: %s: unsupported file type" % path.decode(errors="replace"))


def main():
    path = os.fsencode(sys.argv[1])
    name = os.fsencode(sys.argv[2]) if len(sys.argv) > 2 else os.path.basename(path.rstrip(b"/"))
    kind, f = ingest(path)
    b64 = lambda b: base64.b64encode(b).decode()
    node = {"name": b64(name)}
    if kind == "symlink":
        node["target"] = b64(f["target"])
    else:
        node["digest"] = b64(f["digest"])
        if f["size"]:
            node["size"] = str(f["size"])
        if f.get("executable"):
            node["executable"] = True
    print(json.dumps({kind: node}, separators=(",", ":")))


if __name__ == "__main__":
    main()
