#!/usr/bin/env python3
"""A minimal client of Nix's serve protocol (nix-store --serve), for tests/e2e/test_farm.sh.

Speaks the protocol version given (2.4 by default, Hydra's old queue runner), over a command
such as "ssh ... root@node" whose stdin/stdout reach a server. Sends the closure of PATH (valid
in the local /nix/store) the legacy way (ImportPaths with `nix-store --export`), then checks what
the server says back against the local Nix: QueryValidPaths, QueryPathInfos (NAR hash, size,
references), DumpStorePath and ExportPaths (the NAR bytes equal `nix-store --dump`).
Exits 0 when everything agrees, 1 with the difference otherwise.
"""
import argparse
import shlex
import struct
import subprocess
import sys

MAGIC_1, MAGIC_2, EXPORT_MAGIC = 0x390C9DEB, 0x5452EECB, 0x4558494E
QUERY_VALID_PATHS, QUERY_PATH_INFOS, DUMP_STORE_PATH, IMPORT_PATHS, EXPORT_PATHS = 1, 2, 3, 4, 5


class Conn:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, *items):
        for item in items:
            if isinstance(item, int):
                self.proc.stdin.write(struct.pack("<Q", item))
            elif isinstance(item, (bytes, str)):
                data = item.encode() if isinstance(item, str) else item
                self.proc.stdin.write(struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8))
            else:  # a list of strings
                self.send(len(item), *item)
        self.proc.stdin.flush()

    def raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_exact(self, n):
        data = self.proc.stdout.read(n)
        if len(data) != n:
            sys.exit(f"server closed the stream ({len(data)} of {n} bytes)")
        return data

    def u64(self):
        return struct.unpack("<Q", self.read_exact(8))[0]

    def string(self):
        n = self.u64()
        data = self.read_exact(n + (-n % 8))
        return data[:n].decode()

    def strings(self):
        return [self.string() for _ in range(self.u64())]


def nix(*args):
    return subprocess.run(["nix-store", *args], check=True, capture_output=True).stdout


def check(what, ours, theirs):
    if ours != theirs:
        sys.exit(f"{what}: the server says {ours!r}, Nix says {theirs!r}")
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", type=int, default=4, help="protocol minor version")
    ap.add_argument("--ssh", required=True, help="command reaching the server")
    ap.add_argument("path")
    args = ap.parse_args()
    closure = nix("-q", "--requisites", args.path).decode().split()

    conn = Conn(shlex.split(args.ssh))
    conn.send(MAGIC_1, 0x200 | args.version)
    check("server magic", conn.u64(), MAGIC_2)
    version = conn.u64()
    check("server major version", version >> 8, 2)

    conn.send(IMPORT_PATHS)
    conn.raw(nix("--export", *closure))
    check("ImportPaths reply", conn.u64(), 1)

    conn.send(QUERY_VALID_PATHS, 0, 0, sorted(closure))
    check("QueryValidPaths after the import", conn.strings(), sorted(closure))

    conn.send(QUERY_PATH_INFOS, [args.path])
    path, deriver, refs = conn.string(), conn.string(), conn.strings()
    download_size, nar_size = conn.u64(), conn.u64()
    nar_hash, ca, sigs = conn.string(), conn.string(), conn.strings()
    check("QueryPathInfos ends after one path", conn.string(), "")
    check("path", path, args.path)
    check("references", refs, sorted(nix("-q", "--references", args.path).decode().split()))
    check("narSize", nar_size, int(nix("-q", "--size", args.path)))
    check("downloadSize", download_size, nar_size)
    check("narHash", nar_hash, nix("-q", "--hash", args.path).decode().strip())
    print(f"deriver {deriver!r} ca {ca!r} sigs {sigs!r}")

    nar = nix("--dump", args.path)
    conn.send(DUMP_STORE_PATH, args.path)
    check("DumpStorePath NAR", conn.read_exact(nar_size), nar)

    conn.send(EXPORT_PATHS, 0, [args.path])
    check("ExportPaths: a path follows", conn.u64(), 1)
    check("ExportPaths NAR", conn.read_exact(nar_size), nar)
    check("ExportPaths magic", conn.u64(), EXPORT_MAGIC)
    check("ExportPaths path", conn.string(), args.path)
    check("ExportPaths references", conn.strings(), refs)
    conn.string()  # deriver
    check("ExportPaths: no signature", conn.u64(), 0)
    check("ExportPaths: the end", conn.u64(), 0)

    conn.proc.stdin.close()
    check("the server's exit status after the client closed", conn.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    main()
