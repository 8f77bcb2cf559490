#!/usr/bin/python3
"""Asks a daemon's PathInfoService (snix.store.v1, stubs generated from proto/) about store
paths, for the e2e tests: Get by each path's 20-byte digest, then CalculateNAR of the entry it
returned. Prints one line per path:

    PATH NARHASH CALCULATED NARSIZE REFERENCE...

with both hashes as Nix prints them (sha256:<nixbase32>), so a shell test can compare them
with `nix-store -q --hash`. A path the daemon does not know prints PATH NOT_FOUND.

usage: pathinfo_query.py SOCKET PATH...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_e2e import Env  # noqa: E402

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32_encode(data):
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        c = data[b // 8] >> (b % 8)
        if b // 8 + 1 < len(data):
            c |= data[b // 8 + 1] << (8 - b % 8)
        out.append(NIX32[c & 0x1f])
    return "".join(out)


def nix32_decode(text, size):
    out = bytearray(size)
    for n, ch in enumerate(reversed(text)):
        digit = NIX32.index(ch)
        b, i = n * 5, (n * 5) // 8
        j = b % 8
        out[i] |= (digit << j) & 0xff
        if i + 1 < size:
            out[i + 1] |= digit >> (8 - j)
    return bytes(out)


def main():
    sock, paths = sys.argv[1], sys.argv[2:]
    env = Env("obi-e2e-pathinfo.")
    try:
        why = env.load_stubs()
        if why:
            print(f"SKIP {why}")
            return 0
        grpc = env.grpc
        import snix.store.v1.pathinfo_pb2 as ppb
        import snix.store.v1.rpc_pathinfo_pb2 as rpb
        chan = grpc.insecure_channel(f"unix:{sock}")
        ser = lambda m: m.SerializeToString()  # noqa: E731
        get = chan.unary_unary("/snix.store.v1.PathInfoService/Get", request_serializer=ser,
                               response_deserializer=ppb.PathInfo.FromString)
        calc = chan.unary_unary("/snix.store.v1.PathInfoService/CalculateNAR",
                                request_serializer=ser,
                                response_deserializer=rpb.CalculateNARResponse.FromString)
        for path in paths:
            digest = nix32_decode(os.path.basename(path)[:32], 20)
            try:
                info = get(rpb.GetPathInfoRequest(by_output_hash=digest), timeout=60)
            except grpc.RpcError as e:
                print(f"{path} {e.code().name}")
                continue
            nar = calc(info.entry, timeout=120)
            print(path, "sha256:" + nix32_encode(info.narinfo.nar_sha256),
                  "sha256:" + nix32_encode(nar.nar_sha256), nar.nar_size,
                  *("/nix/store/" + r for r in info.narinfo.reference_names))
        chan.close()
    finally:
        env.close()
    return 0


sys.exit(main())
