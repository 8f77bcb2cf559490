#!/usr/bin/python3
# Load test of `ocibuild daemon` (issue 11): 64 well-behaved clients (4 processes of 16 threads,
# so the client's GIL is not the bottleneck) mix blob Put/Read/Stat, Directory Put/Get and
# trivial DoBuilds (real runc builds when root, else dummy://) for $OBI_LOAD_SECONDS (60 by
# default; CI runs the 60 s) over a unix socket, while 16 streams sit idle until the server's
# idle timeout ends them and, now and then, a client vanishes (SIGKILL) in the middle of a build.
# Passes when no well-behaved call failed, the daemon stayed under RSS_BOUND_MIB, SIGTERM ended it
# cleanly, and nothing was left: no container, no bundle, no blob temp file, and `ocibuild store
# verify` finds the store consistent. Prints throughput and p99 latencies (bench/README.md).
import json
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_e2e import (OCIBUILD, Env, Tap, build_request, can_build_with_runc,  # noqa: E402
                      entries, import_busybox, memory_kib, read_log, runc_containers_under, stop,
                      wait_for_socket)

CLIENT_PROCESSES = 4
THREADS_PER_PROCESS = 16
IDLE_STREAMS = 16
IDLE_TIMEOUT = 10
RSS_BOUND_MIB = 256
OPS = ["put", "read", "stat", "dir_put", "dir_get", "build"]


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# ---- a client process: THREADS_PER_PROCESS threads of well-behaved calls ----

def worker(gen, sock, seconds, seed, request_hex):
    sys.path.insert(0, gen)
    import grpc
    from tvix.build.v1 import build_pb2, rpc_build_pb2_grpc
    from tvix.castore.v1 import castore_pb2 as cpb
    from tvix.castore.v1 import rpc_blobstore_pb2 as bpb, rpc_blobstore_pb2_grpc as bgrpc
    from tvix.castore.v1 import rpc_directory_pb2 as dpb, rpc_directory_pb2_grpc as dgrpc
    build_req = build_pb2.BuildRequest.FromString(bytes.fromhex(request_hex)) if request_hex else \
        build_pb2.BuildRequest(command_args=["/bin/sh", "-c", "true"], scratch_paths=["out"],
                               outputs=["out"], inputs_dir="nix/store")
    expect_build = grpc.StatusCode.OK if request_hex else grpc.StatusCode.UNIMPLEMENTED
    deadline = time.time() + seconds
    lock = threading.Lock()
    latencies = {op: [] for op in OPS}
    errors = []

    def client(index):
        rng = random.Random(seed * 1000 + index)
        chan = grpc.insecure_channel(f"unix:{sock}")
        blobs = bgrpc.BlobServiceStub(chan)
        dirs = dgrpc.DirectoryServiceStub(chan)
        builds = rpc_build_pb2_grpc.BuildServiceStub(chan)
        mine = []  # (digest, data) of blobs this client put
        n = 0
        while time.time() < deadline:
            n += 1
            roll = rng.random()
            op = ("build" if roll < 0.02 else "put" if roll < 0.30 or not mine else
                  "read" if roll < 0.50 else "stat" if roll < 0.80 else "dir")
            t0 = time.time()
            try:
                if op == "put":
                    size = rng.choice([0, 1, 100, 4096, 65536, 300_000, 600_000])
                    data = rng.randbytes(size)
                    chunks = [bpb.BlobChunk(data=data[i:i + 262144])
                              for i in range(0, len(data), 262144)]
                    digest = blobs.Put(iter(chunks), timeout=60).digest
                    mine.append((digest, data))
                elif op == "read":
                    digest, data = rng.choice(mine)
                    back = b"".join(c.data for c in blobs.Read(
                        bpb.ReadBlobRequest(digest=digest), timeout=60))
                    if back != data:
                        raise AssertionError(f"blob {digest.hex()} read back differently")
                elif op == "stat":
                    digest = rng.choice(mine)[0] if mine and rng.random() < 0.7 else rng.randbytes(32)
                    try:
                        blobs.Stat(bpb.StatBlobRequest(digest=digest), timeout=60)
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.NOT_FOUND or any(d == digest for d, _ in mine):
                            raise
                elif op == "dir":
                    digest, data = rng.choice(mine)
                    leaf = cpb.Directory(files=[cpb.FileNode(name=b"blob", digest=digest,
                                                             size=len(data))])
                    leaf_digest = dirs.Put(iter([leaf]), timeout=60).root_digest
                    top = cpb.Directory(directories=[cpb.DirectoryNode(
                        name=b"c%d-%d-%d" % (seed, index, n), digest=leaf_digest, size=1)])
                    root = dirs.Put(iter([leaf, top]), timeout=60).root_digest
                    with lock:
                        latencies["dir_put"].append(time.time() - t0)
                    t0 = time.time()
                    op = "dir_get"
                    back = list(dirs.Get(dpb.GetDirectoryRequest(digest=root, recursive=True),
                                         timeout=60))
                    if back != [top, leaf]:
                        raise AssertionError(f"tree {root.hex()} came back as {back}")
                else:
                    try:
                        builds.DoBuild(build_req, timeout=300)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as e:
                        code = e.code()
                        if code != expect_build:
                            raise
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"{op}: {e!r}"[:300])
                continue
            with lock:
                latencies[op].append(time.time() - t0)
        chan.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS_PER_PROCESS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps({"latencies": latencies, "errors": errors}))


# ---- the test ----

def main():
    t = Tap()
    env = Env("obi-e2e-daemon-load.")
    why = env.load_stubs()
    if why:
        t.skip("daemon load test", why)
        env.close()
        t.done()
    grpc = env.grpc
    from tvix.build.v1 import build_pb2
    from tvix.castore.v1 import castore_pb2 as cpb
    from tvix.castore.v1 import rpc_blobstore_pb2 as bpb, rpc_blobstore_pb2_grpc as bgrpc
    seconds = int(os.environ.get("OBI_LOAD_SECONDS", "60"))
    tmp = env.tmp
    store = os.path.join(tmp, "store")
    bundles = os.path.join(tmp, "bundles")
    sock = os.path.join(tmp, "load.sock")
    no_runc = can_build_with_runc()
    if no_runc:
        t.skip("DoBuild under load runs real runc builds", no_runc)
    build_url = "dummy://" if no_runc else f"oci://{bundles}?runtime=runc"
    d = env.start_daemon("load", "--listen", f"unix:{sock}", "--store", store, "--build-service",
                         build_url, "--idle-timeout", str(IDLE_TIMEOUT), "--log-level", "warn")
    if not wait_for_socket(sock, d):
        t.not_ok("the daemon under load starts", read_log(d))
        env.close()
        t.done()
    request_hex = ""
    endless_hex = ""
    if not no_runc:
        busybox = import_busybox(f"grpc+unix://{sock}")
        request_hex = build_request(build_pb2, cpb, busybox,
                                    "mkdir -p /nix/store/out && echo hi > /nix/store/out/f"
                                    ).SerializeToString().hex()
        endless_hex = build_request(build_pb2, cpb, busybox, "sleep 60").SerializeToString().hex()

    stop_all = threading.Event()
    rss = []

    def sample_rss():
        while not stop_all.is_set() and d.poll() is None:
            rss.append(memory_kib(d.pid, "VmRSS"))
            time.sleep(0.5)

    idle_ended = []

    def idle_stream():
        chan = grpc.insecure_channel(f"unix:{sock}")
        stub = bgrpc.BlobServiceStub(chan)

        def one_chunk():
            yield bpb.BlobChunk(data=b"then silence")
            stop_all.wait(seconds + 60)

        while not stop_all.is_set():
            try:
                stub.Put(one_chunk(), timeout=seconds + 60)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "idle" in (e.details() or ""):
                    idle_ended.append(1)
        chan.close()

    vanished = []

    def vanishing_clients():
        """Every few seconds a client starts a build and is killed in the middle of it."""
        code = f"""
import sys, grpc
sys.path.insert(0, {os.path.join(tmp, 'gen')!r})
from tvix.build.v1 import build_pb2, rpc_build_pb2_grpc
req = build_pb2.BuildRequest.FromString(bytes.fromhex({endless_hex!r}))
rpc_build_pb2_grpc.BuildServiceStub(grpc.insecure_channel('unix:{sock}')).DoBuild(req, timeout=120)
"""
        while not stop_all.wait(5):
            client = subprocess.Popen([sys.executable, "-c", code])
            stop_all.wait(3)
            client.kill()
            client.wait()
            vanished.append(1)

    helpers = [threading.Thread(target=sample_rss)]
    helpers += [threading.Thread(target=idle_stream) for _ in range(IDLE_STREAMS)]
    if endless_hex:
        helpers.append(threading.Thread(target=vanishing_clients))
    for th in helpers:
        th.start()
    t0 = time.time()
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                 os.path.join(tmp, "gen"), sock, str(seconds), str(i), request_hex],
                                stdout=subprocess.PIPE, text=True)
               for i in range(CLIENT_PROCESSES)]
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=seconds + 600)
        results.append(json.loads(out) if w.returncode == 0 and out else
                       {"latencies": {}, "errors": [f"worker exited {w.returncode}"]})
    elapsed = time.time() - t0
    stop_all.set()
    for th in helpers:
        th.join(120)

    latencies = {op: [x for r in results for x in r["latencies"].get(op, [])] for op in OPS}
    errors = [e for r in results for e in r["errors"]]
    calls = sum(len(v) for v in latencies.values())
    t.check(f"{CLIENT_PROCESSES * THREADS_PER_PROCESS} clients, {elapsed:.0f} s: {calls} calls, "
            f"none failed", calls > 0 and not errors, "\n".join(errors[:20]))
    for op in OPS:
        v = latencies[op]
        print(f"# {op:8s} {len(v):6d} calls {len(v) / elapsed:8.1f}/s  p50 "
              f"{percentile(v, 50) * 1000:8.1f} ms  p99 {percentile(v, 99) * 1000:8.1f} ms",
              flush=True)
    t.check(f"every kind of call ran ({', '.join(f'{op} {len(latencies[op])}' for op in OPS)})",
            all(latencies[op] for op in OPS), latencies.keys())
    if seconds > IDLE_TIMEOUT + 2:
        t.check(f"the {IDLE_STREAMS} idle streams were ended by the idle timeout "
                f"({len(idle_ended)} times)", len(idle_ended) >= IDLE_STREAMS, len(idle_ended))
    if endless_hex:
        t.check(f"clients vanished in the middle of builds ({len(vanished)} times)",
                len(vanished) > 0, vanished)
    peak = max(rss) / 1024 if rss else 0
    print(f"# daemon RSS: peak {peak:.0f} MiB over {len(rss)} samples", flush=True)
    t.check(f"the daemon stayed under {RSS_BOUND_MIB} MiB (peak {peak:.0f} MiB)",
            0 < peak < RSS_BOUND_MIB, peak)
    rc = stop(d)
    t.check("SIGTERM afterwards: exit 0", rc == 0, (rc, read_log(d)[-2000:]))
    if not no_runc:
        left = (runc_containers_under(bundles), entries(bundles))
        t.check("no container and no bundle left", left == ([], []), left)
    temps = entries(os.path.join(store, "tmp")) + entries(os.path.join(store, "owners"))
    t.check("no blob temp file or owner lock left in the store", not temps, temps)
    r = subprocess.run([OCIBUILD, "store", "verify", "--store", store], capture_output=True,
                       text=True, timeout=600)
    t.check(f"ocibuild store verify: consistent ({r.stderr.strip()})",
            r.returncode == 0 and not r.stdout, r.stdout[-2000:] + r.stderr)
    env.close()
    t.done()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
               sys.argv[6] if len(sys.argv) > 6 else "")
    else:
        main()
