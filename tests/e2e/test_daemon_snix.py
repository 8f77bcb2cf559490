#!/usr/bin/python3
# Both protocol generations on one daemon (docs/rpc.md "Generations"), with Python clients
# generated from the project's own proto/tvix and proto/snix files: every castore RPC under
# tvix.castore.v1 and snix.castore.v1, DoBuild under tvix.build.v1 and snix.build.v1 with their
# two reply shapes (real runc builds when root), and the PathInfoService of both store
# generations (Put, Get by digest, List, CalculateNAR checked against a NAR written here), over
# a unix socket and over TCP with mutual TLS. Then what PathInfo Put refuses, naming the field,
# and the CLI's grpc+ clients speaking either generation (?api=). Real daemons, real gRPC;
# every call has a deadline, every daemon is killed at the end. Prints TAP lines.
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_e2e import (OCIBUILD, Env, Tap, can_build_with_runc, import_busybox,  # noqa: E402
                      make_pki, read_log, wait_for_port, wait_for_socket)

t = Tap()
env = Env("obi-e2e-daemon-snix.")
why = env.load_stubs()
if why:
    t.skip("both generations end-to-end", why)
    env.close()
    t.done()
grpc = env.grpc
from google.protobuf import json_format  # noqa: E402
import snix.build.v1.build_pb2 as snix_build  # noqa: E402
import snix.castore.v1.castore_pb2 as snix_castore  # noqa: E402
import snix.castore.v1.rpc_blobstore_pb2 as snix_blob  # noqa: E402
import snix.castore.v1.rpc_directory_pb2 as snix_dir  # noqa: E402
import snix.store.v1.pathinfo_pb2 as snix_pathinfo  # noqa: E402
import snix.store.v1.rpc_pathinfo_pb2 as snix_rpc_pathinfo  # noqa: E402
import tvix.build.v1.build_pb2 as tvix_build  # noqa: E402
import tvix.castore.v1.castore_pb2 as tvix_castore  # noqa: E402
import tvix.castore.v1.rpc_blobstore_pb2 as tvix_blob  # noqa: E402
import tvix.castore.v1.rpc_directory_pb2 as tvix_dir  # noqa: E402
import tvix.store.v1.pathinfo_pb2 as tvix_pathinfo  # noqa: E402
import tvix.store.v1.rpc_pathinfo_pb2 as tvix_rpc_pathinfo  # noqa: E402

tmp = env.tmp
T = 30  # seconds: every call's deadline

# One generation's messages: (package, castore, blob, directory, build, pathinfo, rpc_pathinfo,
# name of PathInfo's entry field, name of the Node/Entry message).
GENERATIONS = {
    "tvix": ("tvix", tvix_castore, tvix_blob, tvix_dir, tvix_build, tvix_pathinfo,
             tvix_rpc_pathinfo, "node", "Node"),
    "snix": ("snix", snix_castore, snix_blob, snix_dir, snix_build, snix_pathinfo,
             snix_rpc_pathinfo, "entry", "Entry"),
}


def code_of(fn):
    try:
        return grpc.StatusCode.OK, fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def call(chan, path, request, reply_cls, stream_reply=False, stream_request=False):
    """Calls path with request (an iterable when stream_request) and decodes replies."""
    ser = lambda m: m.SerializeToString()  # noqa: E731
    de = reply_cls.FromString
    if stream_request:
        return chan.stream_unary(path, request_serializer=ser, response_deserializer=de)(
            iter(request), timeout=T)
    if stream_reply:
        return list(chan.unary_stream(path, request_serializer=ser, response_deserializer=de)(
            request, timeout=T))
    return chan.unary_unary(path, request_serializer=ser, response_deserializer=de)(
        request, timeout=T)


# ---- an independent NAR writer (Nix's format, ../shared/spec/nix.md), for CalculateNAR ----

def nar_str(b):
    return len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8)


def nar_of(path):
    def node(p):
        st = os.lstat(p)
        out = nar_str(b"(")
        if stat.S_ISLNK(st.st_mode):
            out += nar_str(b"type") + nar_str(b"symlink") + nar_str(b"target")
            out += nar_str(os.fsencode(os.readlink(p)))
        elif stat.S_ISDIR(st.st_mode):
            out += nar_str(b"type") + nar_str(b"directory")
            for name in sorted(os.listdir(os.fsencode(p))):
                out += nar_str(b"entry") + nar_str(b"(") + nar_str(b"name") + nar_str(name)
                out += nar_str(b"node") + node(os.path.join(os.fsencode(p), name)) + nar_str(b")")
        else:
            out += nar_str(b"type") + nar_str(b"regular")
            if st.st_mode & 0o100:
                out += nar_str(b"executable") + nar_str(b"")
            out += nar_str(b"contents") + nar_str(open(p, "rb").read())
        return out + nar_str(b")")
    return nar_str(b"nix-archive-1") + node(path)


# ---- store paths: nixbase32 ----

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(data):
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        b = i * 5
        c = (data[b // 8] >> (b % 8))
        if b // 8 + 1 < len(data):
            c |= data[b // 8 + 1] << (8 - b % 8)
        out.append(NIX32[c & 0x1f])
    return "".join(out)


def store_basename(seed, name):
    digest = hashlib.sha256(seed.encode()).digest()[:20]
    return digest, f"{nix32(digest)}-{name}"


# ---- the tree every generation puts and reads ----

TREE = os.path.join(tmp, "tree")
os.makedirs(os.path.join(TREE, "bin"))
with open(os.path.join(TREE, "bin", "hello"), "wb") as f:
    f.write(b"#!/bin/sh\necho hello\n" * 50)
os.chmod(os.path.join(TREE, "bin", "hello"), 0o755)
with open(os.path.join(TREE, "README"), "wb") as f:
    f.write(os.urandom(70_000))
os.symlink("bin/hello", os.path.join(TREE, "run"))
NAR = nar_of(TREE)


def import_tree(store_url):
    """The tree as a root Node JSON, imported with the CLI into a store."""
    r = subprocess.run([OCIBUILD, "store", "import", "--store", store_url, "--name", "x", TREE],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def castore_round_trip(chan, gen, where):
    pkg, cpb, bpb, dpb = GENERATIONS[gen][:4]
    data = os.urandom(2_500_000)  # three chunks
    digest = call(chan, f"/{pkg}.castore.v1.BlobService/Put",
                  [bpb.BlobChunk(data=data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20)],
                  bpb.PutBlobResponse, stream_request=True).digest
    code, _ = code_of(lambda: call(chan, f"/{pkg}.castore.v1.BlobService/Stat",
                                   bpb.StatBlobRequest(digest=digest), bpb.StatBlobResponse))
    chunks = call(chan, f"/{pkg}.castore.v1.BlobService/Read", bpb.ReadBlobRequest(digest=digest),
                  bpb.BlobChunk, stream_reply=True)
    t.check(f"{gen} over {where}: BlobService Put, Stat, Read",
            code == grpc.StatusCode.OK and b"".join(c.data for c in chunks) == data
            and len(digest) == 32, code)

    leaf = cpb.Directory(files=[cpb.FileEntry(name=b"f", digest=digest, size=len(data))]
                         if gen == "snix" else
                         [cpb.FileNode(name=b"f", digest=digest, size=len(data))])
    leaf_digest_resp = call(chan, f"/{pkg}.castore.v1.DirectoryService/Put", [leaf],
                            dpb.PutDirectoryResponse, stream_request=True)
    child = (cpb.DirectoryEntry if gen == "snix" else cpb.DirectoryNode)(
        name=b"sub", digest=leaf_digest_resp.root_digest, size=1)
    root = cpb.Directory(directories=[child])
    root_digest = call(chan, f"/{pkg}.castore.v1.DirectoryService/Put", [leaf, root],
                       dpb.PutDirectoryResponse, stream_request=True).root_digest
    got = call(chan, f"/{pkg}.castore.v1.DirectoryService/Get",
               dpb.GetDirectoryRequest(digest=root_digest, recursive=True), cpb.Directory,
               stream_reply=True)
    t.check(f"{gen} over {where}: DirectoryService Put, Get recursive", got == [root, leaf], got)


def pathinfo_round_trip(chan, gen, where, tree_json):
    pkg, cpb, _, _, _, ppb, rpb, field, node_msg = GENERATIONS[gen]
    svc = f"/{pkg}.store.v1.PathInfoService"
    ref_digest, ref_base = store_basename(f"ref-{gen}-{where}", "dep")
    own_digest, own_base = store_basename(f"own-{gen}-{where}", "hello-1.0")
    node = json_format.Parse(tree_json, getattr(cpb, node_msg)())
    node.directory.name = own_base.encode()
    nar_sha = hashlib.sha256(NAR).digest()
    info = ppb.PathInfo(references=[ref_digest], narinfo=ppb.NARInfo(
        nar_size=len(NAR), nar_sha256=nar_sha, reference_names=[ref_base]))
    getattr(info, field).CopyFrom(node)
    put = call(chan, f"{svc}/Put", info, ppb.PathInfo)
    got = call(chan, f"{svc}/Get", rpb.GetPathInfoRequest(by_output_hash=own_digest), ppb.PathInfo)
    t.check(f"{gen} over {where}: PathInfoService Put, then Get by the output hash",
            put == info and got == info, (put, got))
    listed = call(chan, f"{svc}/List", rpb.ListPathInfoRequest(), ppb.PathInfo, stream_reply=True)
    names = [getattr(m, field).directory.name for m in listed]
    t.check(f"{gen} over {where}: PathInfoService List streams every record, sorted",
            info in listed and names == sorted(names), names)
    anon = getattr(cpb, node_msg)()
    anon.CopyFrom(node)
    nar = call(chan, f"{svc}/CalculateNAR", anon, rpb.CalculateNARResponse)
    t.check(f"{gen} over {where}: CalculateNAR equals the NAR written independently",
            nar.nar_size == len(NAR) and nar.nar_sha256 == nar_sha,
            (nar.nar_size, len(NAR)))
    code, detail = code_of(lambda: call(chan, f"{svc}/Get", rpb.GetPathInfoRequest(
        by_output_hash=store_basename("nobody", "x")[0]), ppb.PathInfo))
    t.check(f"{gen} over {where}: Get of an unknown path is NOT_FOUND",
            code == grpc.StatusCode.NOT_FOUND, (code, detail))
    return info


def pathinfo_put_refusals(chan, gen, good):
    pkg, _, _, _, _, ppb, rpb, field, _ = GENERATIONS[gen]
    svc = f"/{pkg}.store.v1.PathInfoService"
    d1, b1 = store_basename("r1", "a")

    def variant(edit):
        m = ppb.PathInfo()
        m.CopyFrom(good)
        edit(m)
        return m

    lo, hi = sorted([store_basename("r-lo", "a"), store_basename("r-hi", "b")],
                    key=lambda db: db[1])

    def references(pairs):
        def edit(m):
            del m.references[:]
            del m.narinfo.reference_names[:]
            m.references.extend(d for d, _ in pairs)
            m.narinfo.reference_names.extend(b for _, b in pairs)
        return edit

    cases = [
        ("with references out of order", references([hi, lo]), "reference_names[1]"),
        ("with a reference twice", references([lo, lo]), "twice"),
        ("without narinfo", lambda m: m.ClearField("narinfo"), "narinfo"),
        ("with a 19-byte reference", lambda m: m.references.__setitem__(0, b"\1" * 19),
         "references[0]"),
        ("with a reference name of another digest",
         lambda m: m.narinfo.reference_names.__setitem__(0, b1), "references[0]"),
        ("with more references than names", lambda m: m.references.append(d1),
         "reference names"),
        ("with an entry not named by a store path basename",
         lambda m: setattr(getattr(m, field).directory, "name", b"hello"), "not a store path"),
        ("without an entry", lambda m: m.ClearField(field), "missing"),
        ("with a 31-byte nar_sha256", lambda m: setattr(m.narinfo, "nar_sha256", b"\0" * 31),
         "nar_sha256"),
    ]
    for name, edit, want in cases:
        code, detail = code_of(lambda: call(chan, f"{svc}/Put", variant(edit), ppb.PathInfo))
        t.check(f"{gen}: PathInfo Put {name} is INVALID_ARGUMENT naming {want}",
                code == grpc.StatusCode.INVALID_ARGUMENT and want in detail, (code, detail))
    code, detail = code_of(lambda: call(chan, f"{svc}/Put", variant(references([lo, hi])),
                                        ppb.PathInfo))
    t.check(f"{gen}: PathInfo Put with references sorted by store path is taken",
            code == grpc.StatusCode.OK, (code, detail))
    code, detail = code_of(lambda: call(chan, f"{svc}/Get",
                                        rpb.GetPathInfoRequest(by_output_hash=b"\0" * 19),
                                        ppb.PathInfo))
    t.check(f"{gen}: Get by a 19-byte hash is INVALID_ARGUMENT",
            code == grpc.StatusCode.INVALID_ARGUMENT and "by_output_hash" in detail,
            (code, detail))


# A client running as another user: only grpc, raw bytes in and out (no stubs to reach).
PUT_AS_OTHER_USER = """
import sys, grpc
chan = grpc.insecure_channel("unix:" + sys.argv[1])
put = chan.unary_unary("/snix.store.v1.PathInfoService/Put")
try:
    put(open(sys.argv[2], "rb").read(), timeout=30)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""


def pathinfo_put_trust(sock, store_dir, good):
    """Put is for trusted clients only (docs/security.md "Trusted clients"): a user let in by
    --socket-group and a loopback TCP client are refused, a --trusted-user is taken."""
    names = ["a unix-socket client of another user (let in by --socket-group) may not Put:"
             " PERMISSION_DENIED naming its uid",
             "that user's Put is taken once the daemon names it with --trusted-user"]
    record = os.path.join(tmp, "put-record.bin")
    with open(record, "wb") as f:
        f.write(good.SerializeToString())
    os.chmod(record, 0o644)
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        for n in names:
            t.skip(n, "needs root and setpriv to connect as another user")
    else:
        def put_as_nobody(path):
            r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                "/usr/bin/python3", "-c", PUT_AS_OTHER_USER, path, record],
                               capture_output=True, text=True, timeout=60)
            return (r.stdout + r.stderr).strip()
        nobody = str(__import__("pwd").getpwnam("nobody").pw_uid)
        out = put_as_nobody(sock)
        t.check(names[0], out.startswith("PERMISSION_DENIED") and f"uid {nobody}" in out, out)
        sock2 = os.path.join(tmp, "trusted.sock")
        d2 = env.start_daemon("trusted", "--listen", f"unix:{sock2}", "--socket-group", "nogroup",
                              "--trusted-user", "nobody", "--store", store_dir, "--path-info",
                              os.path.join(tmp, "path-info-2"))
        out = put_as_nobody(sock2) if wait_for_socket(sock2, d2) else read_log(d2)
        t.check(names[1], out == "OK", out)
    sock3 = os.path.join(tmp, "tcp.sock")
    d3 = env.start_daemon("tcp", "--listen", f"unix:{sock3}", "--listen", "127.0.0.1:0",
                          "--store", store_dir, "--path-info", os.path.join(tmp, "path-info-3"))
    port = wait_for_port(d3)
    if not port:
        t.not_ok("a daemon on loopback TCP starts", read_log(d3))
        return
    svc = "/snix.store.v1.PathInfoService/Put"
    tcp = grpc.insecure_channel(f"127.0.0.1:{port}")
    code, detail = code_of(lambda: call(tcp, svc, good, snix_pathinfo.PathInfo))
    t.check("a plain loopback TCP client (any local user) may not Put: PERMISSION_DENIED",
            code == grpc.StatusCode.PERMISSION_DENIED and "127.0.0.1" in detail, (code, detail))
    code, got = code_of(lambda: call(tcp, "/snix.store.v1.PathInfoService/CalculateNAR",
                                     good.entry, snix_rpc_pathinfo.CalculateNARResponse))
    t.check("the same client still reads: CalculateNAR answers", code == grpc.StatusCode.OK,
            (code, got))
    tcp.close()
    uds = grpc.insecure_channel(f"unix:{sock3}")
    code, got = code_of(lambda: call(uds, svc, good, snix_pathinfo.PathInfo))
    t.check("the daemon's own user over its unix socket may Put", code == grpc.StatusCode.OK,
            (code, got))
    uds.close()


def upstream_behaviours(chan):
    """What snix's clients depend on (issue 13 item 4), under both generations."""
    for gen in ("tvix", "snix"):
        pkg, cpb, _, dpb = GENERATIONS[gen][:4]
        svc = f"/{pkg}.castore.v1.DirectoryService"
        code, got = code_of(lambda: call(chan, f"{svc}/Get", dpb.GetDirectoryRequest(
            digest=b"\x07" * 32, recursive=True), cpb.Directory, stream_reply=True))
        t.check(f"{gen}: recursive Get of an unknown root is OK with no message",
                code == grpc.StatusCode.OK and got == [], (code, got))
        code, got = code_of(lambda: call(chan, f"{svc}/Get", dpb.GetDirectoryRequest(
            digest=b"\x07" * 32), cpb.Directory, stream_reply=True))
        t.check(f"{gen}: Get of an unknown directory (not recursive) stays NOT_FOUND",
                code == grpc.StatusCode.NOT_FOUND, (code, got))
        entry = cpb.FileEntry if gen == "snix" else cpb.FileNode
        dentry = cpb.DirectoryEntry if gen == "snix" else cpb.DirectoryNode
        a = cpb.Directory(files=[entry(name=b"a", digest=b"\1" * 32, size=1)])
        c = cpb.Directory(files=[entry(name=b"c", digest=b"\2" * 32, size=1)])
        a_digest = call(chan, f"{svc}/Put", [a], dpb.PutDirectoryResponse,
                        stream_request=True).root_digest
        b = cpb.Directory(directories=[dentry(name=b"a", digest=a_digest, size=1)])
        c_b3 = "b3:" + base64.b64encode(blake3_digest(c.SerializeToString())).decode()
        code, detail = code_of(lambda: call(chan, f"{svc}/Put", [a, c, b],
                                            dpb.PutDirectoryResponse, stream_request=True))
        t.check(f"{gen}: Put of A, C, B with root B (C unreachable) is INVALID_ARGUMENT naming C",
                code == grpc.StatusCode.INVALID_ARGUMENT and "directories[1]" in detail
                and "not reachable" in detail and c_b3 in detail,
                (code, detail, c_b3))


def blake3_digest(data):
    """BLAKE3 of data, with the CLI (`ocibuild hash` of a temp file)."""
    path = os.path.join(tmp, "b3-input")
    with open(path, "wb") as f:
        f.write(data)
    r = subprocess.run([OCIBUILD, "hash", path], capture_output=True, text=True, check=True)
    return bytes.fromhex(r.stdout.split()[0])


def build_both_shapes(sock, store_dir):
    names = ["tvix.build.v1 DoBuild answers a tvix Build (outputs in field 2)",
             "snix.build.v1 DoBuild answers a snix BuildResponse (outputs[].output, needles)"]
    why = can_build_with_runc()
    if why:
        for n in names:
            t.skip(n, why)
        return
    busybox = import_busybox(store_dir)
    chan = grpc.insecure_channel(f"unix:{sock}")
    for gen, name in zip(("tvix", "snix"), names):
        pkg, cpb, _, _, bpb = GENERATIONS[gen][:5]
        node = json_format.Parse(busybox, getattr(cpb, GENERATIONS[gen][8])())
        req = bpb.BuildRequest(
            inputs=[node], command_args=["/nix/store/busybox", "sh", "-c",
                                         "echo built > /nix/store/out; echo /nix/store/busybox"
                                         " >> /nix/store/out"],
            working_dir="build", scratch_paths=["build", "nix/store"], inputs_dir="nix/store",
            outputs=["nix/store/out"], refscan_needles=["busybox", "nothere"])
        reply_cls = bpb.Build if gen == "tvix" else bpb.BuildResponse
        code, reply = code_of(lambda: call(chan, f"/{pkg}.build.v1.BuildService/DoBuild", req,
                                           reply_cls))
        if gen == "tvix":
            ok = (code == grpc.StatusCode.OK and len(reply.outputs) == 1
                  and reply.outputs[0].file.size > 0 and list(reply.outputs_needles[0].needles) == [0])
        else:
            ok = (code == grpc.StatusCode.OK and len(reply.outputs) == 1
                  and reply.outputs[0].output.file.size > 0 and reply.outputs[0].output.file.name == b""
                  and list(reply.outputs[0].needles) == [0])
        t.check(name, ok, (code, reply))
    chan.close()


def build_events(sock, store_dir):
    names = ["streamed DoBuild: started, then log lines while the build runs, refscan, completed",
             "streamed DoBuild of a failing build ends with failed, its exit code and status OK",
             "without the metadata, snix DoBuild of a failing build stays unary: ABORTED"]
    why = can_build_with_runc()
    if why:
        for n in names:
            t.skip(n, why)
        return
    import time
    busybox = import_busybox(store_dir)
    chan = grpc.insecure_channel(f"unix:{sock}")
    node = json_format.Parse(busybox, snix_castore.Entry())

    def request(script):
        return snix_build.BuildRequest(
            inputs=[node], command_args=["/nix/store/busybox", "sh", "-c", script],
            working_dir="build", scratch_paths=["build", "nix/store"], inputs_dir="nix/store",
            outputs=["nix/store/out"], refscan_needles=["busybox"])

    stream = chan.unary_stream("/snix.build.v1.BuildService/DoBuild",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=snix_build.BuildEvent.FromString)

    def events_of(script):
        got = []
        try:
            for ev in stream(request(script), metadata=(("ocibuild-build-events", "1"),),
                             timeout=60):
                got.append((time.monotonic(), ev))
            return grpc.StatusCode.OK, got
        except grpc.RpcError as e:
            return e.code(), got + [(time.monotonic(), e.details())]

    code, got = events_of("echo first line; sleep 2; echo second line;"
                          " echo /nix/store/busybox > /nix/store/out")
    kinds = [ev.WhichOneof("event") for _, ev in got if not isinstance(ev, str)]
    logs = [(at, ev.log.data) for at, ev in got if not isinstance(ev, str) and ev.HasField("log")]
    first = next((at for at, data in logs if b"first line" in data), None)
    end = got[-1][0] if got else None
    last = got[-1][1] if got else None
    t.check(names[0], code == grpc.StatusCode.OK and kinds[:1] == ["started"]
            and kinds[-2:] == ["refscan", "completed"] and first is not None
            and end - first > 1.5 and any(b"second line" in d for _, d in logs)
            and list(got[-2][1].refscan.found_needles) == [0]
            and last.completed.outputs[0].output.file.size > 0,
            (code, kinds, [d for _, d in logs], first and end - first))
    code, got = events_of("echo oops; exit 3")
    last = got[-1][1] if got else None
    t.check(names[1], code == grpc.StatusCode.OK and not isinstance(last, str)
            and last.WhichOneof("event") == "failed" and last.failed.HasField("exit_code")
            and last.failed.exit_code == 3 and "oops" in last.failed.message, (code, got))
    code, detail = code_of(lambda: call(chan, "/snix.build.v1.BuildService/DoBuild",
                                        request("echo oops; exit 3"), snix_build.BuildResponse))
    t.check(names[2], code == grpc.StatusCode.ABORTED and "exit code 3" in detail,
            (code, detail))
    chan.close()


def build_events_by_default(store_dir):
    """A daemon with --snix-build-events serves the client of snix's build-streaming branch,
    which calls /snix.build.v1.BuildService/DoBuild as a server stream and sends no metadata."""
    names = ["--snix-build-events: a snix DoBuild without metadata (the build-streaming client)"
             " gets started, log, refscan, completed",
             "--snix-build-events: a failing build ends with failed and its exit code, status OK",
             "--snix-build-events: ocibuild-build-events: 0 and the tvix path stay unary",
             "--snix-build-events: the CLI's snix client without a log callback still builds"]
    why = can_build_with_runc()
    if why:
        for n in names:
            t.skip(n, why)
        return
    sock = os.path.join(tmp, "events.sock")
    d = env.start_daemon("events", "--listen", f"unix:{sock}", "--store", store_dir,
                         "--snix-build-events", "--path-info", os.path.join(tmp, "pi-events"),
                         "--build-service", f"oci://{os.path.join(tmp, 'bundles-events')}")
    if not wait_for_socket(sock, d):
        t.not_ok("a daemon with --snix-build-events starts", read_log(d))
        return
    busybox = import_busybox(store_dir)
    chan = grpc.insecure_channel(f"unix:{sock}")

    def request(gen, script):
        cpb, bpb = GENERATIONS[gen][1], GENERATIONS[gen][4]
        return bpb.BuildRequest(
            inputs=[json_format.Parse(busybox, getattr(cpb, GENERATIONS[gen][8])())],
            command_args=["/nix/store/busybox", "sh", "-c", script],
            working_dir="build", scratch_paths=["build", "nix/store"], inputs_dir="nix/store",
            outputs=["nix/store/out"], refscan_needles=["busybox"])

    stream = chan.unary_stream("/snix.build.v1.BuildService/DoBuild",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=snix_build.BuildEvent.FromString)
    ok_script = "echo hello events; echo /nix/store/busybox > /nix/store/out"
    code, got = code_of(lambda: list(stream(request("snix", ok_script), timeout=60)))
    kinds = [ev.WhichOneof("event") for ev in got] if code == grpc.StatusCode.OK else got
    t.check(names[0], code == grpc.StatusCode.OK and kinds[0] == "started"
            and kinds[-2:] == ["refscan", "completed"]
            and any(b"hello events" in ev.log.data for ev in got if ev.HasField("log"))
            and got[-1].completed.outputs[0].output.file.size > 0, (code, kinds))
    code, got = code_of(lambda: list(stream(request("snix", "echo oops; exit 4"), timeout=60)))
    t.check(names[1], code == grpc.StatusCode.OK and got[-1].WhichOneof("event") == "failed"
            and got[-1].failed.exit_code == 4 and "oops" in got[-1].failed.message, (code, got))
    unary = chan.unary_unary("/snix.build.v1.BuildService/DoBuild",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=snix_build.BuildResponse.FromString)
    code, reply = code_of(lambda: unary(request("snix", ok_script), timeout=60,
                                        metadata=(("ocibuild-build-events", "0"),)))
    code2, reply2 = code_of(lambda: call(chan, "/tvix.build.v1.BuildService/DoBuild",
                                         request("tvix", ok_script), tvix_build.Build))
    t.check(names[2], code == grpc.StatusCode.OK and reply.outputs[0].output.file.size > 0
            and code2 == grpc.StatusCode.OK and reply2.outputs[0].file.size > 0,
            (code, reply, code2, reply2))
    chan.close()
    req = os.path.join(tmp, "events-cli.json")
    with open(req, "w") as f:
        __import__("json").dump({"inputs": {"busybox": "/bin/busybox"},
                                 "command_args": ["/nix/store/busybox", "sh", "-c", ok_script],
                                 "working_dir": "build", "scratch_paths": ["build", "nix/store"],
                                 "inputs_dir": "nix/store", "outputs": ["nix/store/out"]}, f)
    url = f"grpc+unix://{sock}?api=snix"
    r = subprocess.run([OCIBUILD, "build", "-q", "--build-service", url, req],
                       capture_output=True, text=True, timeout=120)
    t.check(names[3], r.returncode == 0 and '"outputs"' in r.stdout, (r.returncode, r.stderr))


def cli_live_log(sock):
    names = ["the CLI against a daemon (?api=snix) prints the build's log while it runs",
             "the CLI against a daemon (tvix) prints the log live too, and a failing build's"
             " exit code"]
    why = can_build_with_runc()
    if why:
        for n in names:
            t.skip(n, why)
        return
    import json
    import time

    def request(name, script):
        path = os.path.join(tmp, f"{name}.json")
        with open(path, "w") as f:
            json.dump({"inputs": {"busybox": "/bin/busybox"},
                       "command_args": ["/nix/store/busybox", "sh", "-c", script],
                       "working_dir": "build", "scratch_paths": ["build", "nix/store"],
                       "inputs_dir": "nix/store", "outputs": ["nix/store/out"]}, f)
        return path

    def run(url, path):
        p = subprocess.Popen([OCIBUILD, "build", "--store", url, "--build-service", url, path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = None
        err = b""
        for line in iter(p.stderr.readline, b""):
            err += line
            if b"live line one" in line and seen is None:
                seen = time.monotonic()
        out = p.stdout.read()
        p.wait(timeout=120)
        return p.returncode, out, err, (time.monotonic() - seen) if seen else None

    script = "echo live line one; sleep 2; echo line two; echo x > /nix/store/out"
    rc, out, err, gap = run(f"grpc+unix://{sock}?api=snix", request("live-snix", script))
    t.check(names[0], rc == 0 and b'"outputs"' in out and b"line two" in err
            and gap is not None and gap > 1.5, (rc, out[-300:], err[-500:], gap))
    rc, out, err, gap = run(f"grpc+unix://{sock}", request("live-tvix", script))
    rc2, _, err2, _ = run(f"grpc+unix://{sock}", request("fail", "echo live line one; exit 7"))
    t.check(names[1], rc == 0 and gap is not None and gap > 1.5 and rc2 != 0
            and b"exit code 7" in err2, (rc, err[-300:], gap, rc2, err2[-300:]))


def cli_generations(sock, daemon):
    blob = os.path.join(tmp, "cli-blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(5_000_000))
    url = f"grpc+unix://{sock}?api=snix"
    r = subprocess.run([OCIBUILD, "store", "import", "--store", url, blob], capture_output=True,
                       text=True, timeout=60)
    h = subprocess.run([OCIBUILD, "hash", blob], capture_output=True, text=True).stdout.split()[0]
    back = subprocess.run([OCIBUILD, "store", "cat", "--store", url, h], capture_output=True,
                          timeout=60)
    log = read_log(daemon)
    t.check("the CLI stores and reads with ?api=snix, over snix.castore.v1",
            r.returncode == 0 and back.stdout == open(blob, "rb").read()
            and "/snix.castore.v1.BlobService/Put " in log
            and "/snix.castore.v1.BlobService/Read " in log, (r.stderr, back.stderr[-300:]))
    bad = subprocess.run([OCIBUILD, "store", "cat", "--store", f"grpc+unix://{sock}?api=nix", h],
                         capture_output=True, text=True, timeout=60)
    t.check("?api=nix is refused naming the parameter and the choices",
            bad.returncode != 0 and "api=nix" in bad.stderr and "tvix or snix" in bad.stderr,
            bad.stderr)


def main():
    store_dir = os.path.join(tmp, "store")
    pki = None
    if shutil.which("openssl"):
        pki = make_pki(os.path.join(tmp, "pki"))
    sock = os.path.join(tmp, "d.sock")
    # As root, the group nogroup may connect too: a user of another uid (pathinfo_put_trust).
    group = ["--socket-group", "nogroup"] if os.geteuid() == 0 else []
    args = ["--listen", f"unix:{sock}", *group, "--store", store_dir, "--path-info",
            os.path.join(tmp, "path-info"),
            "--build-service", f"oci://{os.path.join(tmp, 'bundles')}"]
    if pki:
        args += ["--listen", "127.0.0.1:0", "--tls-cert", pki("server.pem"), "--tls-key",
                 pki("server.key"), "--tls-client-ca", pki("ca.pem")]
    d = env.start_daemon("d", *args)
    if not wait_for_socket(sock, d) or (pki and not wait_for_port(d)):
        t.not_ok("the daemon starts", read_log(d))
        return
    tree_json = import_tree(store_dir)
    chans = [("a unix socket", grpc.insecure_channel(f"unix:{sock}"))]
    if pki:
        read = lambda name: open(pki(name), "rb").read()  # noqa: E731
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                             private_key=read("client.key"),
                                             certificate_chain=read("client.pem"))
        chans.append(("TCP with mutual TLS",
                      grpc.secure_channel(f"127.0.0.1:{wait_for_port(d)}", creds)))
    else:
        t.skip("both generations over TCP with mutual TLS", "openssl missing")
    good = {}
    for where, chan in chans:
        for gen in ("tvix", "snix"):
            castore_round_trip(chan, gen, where)
            good[gen] = pathinfo_round_trip(chan, gen, where, tree_json)
    chan = chans[0][1]
    for gen in ("tvix", "snix"):
        pathinfo_put_refusals(chan, gen, good[gen])
    pathinfo_put_trust(sock, store_dir, good["snix"])
    upstream_behaviours(chan)
    for _, c in chans:
        c.close()
    build_both_shapes(sock, store_dir)
    build_events(sock, store_dir)
    build_events_by_default(store_dir)
    cli_live_log(sock)
    cli_generations(sock, d)


try:
    main()
except Exception as e:  # a crash is a failure, with its traceback
    import traceback
    t.not_ok("test_daemon_snix ran to the end", traceback.format_exc())
finally:
    env.close()
t.done()
