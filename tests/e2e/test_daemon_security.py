#!/usr/bin/python3
# `ocibuild daemon` under attack (docs/security.md "The daemon"), each attack of issue 11 as a
# test that failed before the fix: plain TCP beyond loopback, a socket that follows the umask,
# stalled Put streams and silent DoBuilds that took every worker, abandoned builds that kept their
# slot (client cancel, disconnect, deadline), SIGTERM that did not end the daemon, and a 196 MB
# Directory Put that took ~9x its size. Then what keeps strangers out: mutual TLS (certificates
# made here with openssl), the CLI and a second daemon as TLS clients, socket groups and systemd
# socket activation. Real daemons, real gRPC (python3-grpcio), real runc builds when root.
# Bounded: every call has a deadline, every daemon is killed at the end. Prints TAP lines.
import grp
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_e2e import (OCIBUILD, Env, Tap, build_request, can_build_with_runc,  # noqa: E402
                      entries, import_busybox, make_pki, memory_kib, read_log,
                      runc_containers_under, stop, wait_for_port, wait_for_socket)

t = Tap()
env = Env("obi-e2e-daemon-security.")
why = env.load_stubs()
if why:
    t.skip("daemon security end-to-end", why)
    env.close()
    t.done()
grpc = env.grpc
from tvix.build.v1 import build_pb2, rpc_build_pb2_grpc  # noqa: E402
from tvix.castore.v1 import castore_pb2 as cpb  # noqa: E402
from tvix.castore.v1 import rpc_blobstore_pb2 as bpb, rpc_blobstore_pb2_grpc as bgrpc  # noqa: E402
from tvix.castore.v1 import rpc_directory_pb2 as dpb  # noqa: E402

tmp = env.tmp
BIG_OPTS = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def unix_daemon(name, *args, store="memory://", build="dummy://", **kw):
    sock = os.path.join(tmp, f"{name}.sock")
    d = env.start_daemon(name, "--listen", f"unix:{sock}", "--store", store,
                         "--build-service", build, *args, **kw)
    if not wait_for_socket(sock, d):
        return None, sock
    return d, sock


def refused(*args):
    """Runs `ocibuild daemon ARGS`, which should refuse to start: (refused, stderr)."""
    try:
        r = subprocess.run([OCIBUILD, "daemon", *args], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired as e:
        return False, f"still serving after 10 s: {e.stderr}"
    return r.returncode != 0, r.stderr


def attack_plain_tcp():
    no, stderr = refused("--listen", "0.0.0.0:0", "--store", "memory://", "--build-service",
                         "dummy://")
    t.check("plain TCP on 0.0.0.0 is refused, naming the ways out",
            no and "--insecure-tcp" in stderr and "--tls-client-ca" in stderr, stderr)
    d = env.start_daemon("insecure", "--listen", "0.0.0.0:0", "--store", "memory://",
                         "--build-service", "dummy://", "--insecure-tcp")
    port = wait_for_port(d)
    log = read_log(d)
    served = False
    if port:
        chan = grpc.insecure_channel(f"127.0.0.1:{port}")
        code, _ = code_of(lambda: bgrpc.BlobServiceStub(chan).Stat(
            bpb.StatBlobRequest(digest=b"\x01" * 32), timeout=10))
        served = code == grpc.StatusCode.NOT_FOUND
        chan.close()
    t.check("--insecure-tcp serves 0.0.0.0 and warns at start",
            served and "warn --insecure-tcp" in log, log)
    stop(d)


def attack_socket_mode():
    d, sock = unix_daemon("umask", preexec_fn=lambda: os.umask(0))
    mode = stat.S_IMODE(os.lstat(sock).st_mode) if d else None
    t.check("the unix socket is 0600 even under umask 000", mode == 0o600,
            oct(mode) if mode is not None else (d and read_log(d)))
    leftovers = [x for x in os.listdir(tmp) if x.startswith(".ocibuild-sock")]
    t.check("no temporary directory is left beside the socket", not leftovers, leftovers)
    if d:
        stop(d)
    try:
        group = next(g for g in ("nogroup", "daemon", "users") if _has_group(g))
    except StopIteration:
        t.skip("--socket-group: 0660 and that group", "no nogroup/daemon/users group here")
        return
    d, sock = unix_daemon("group", "--socket-group", group, preexec_fn=lambda: os.umask(0))
    st = os.lstat(sock) if d else None
    t.check(f"--socket-group {group}: the socket is 0660 and belongs to {group}",
            st is not None and stat.S_IMODE(st.st_mode) == 0o660
            and st.st_gid == grp.getgrnam(group).gr_gid, st)
    if d:
        stop(d)


def _has_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def attack_stalled_streams():
    d, sock = unix_daemon("stall")
    if not d:
        t.not_ok("a daemon for the stall attacks starts", read_log(d) if d else "")
        return
    release = threading.Event()
    errors = []

    def one_chunk_then_nothing():
        yield bpb.BlobChunk(data=b"first and last chunk")
        release.wait(60)

    def stalled_put():
        ch = grpc.insecure_channel(f"unix:{sock}")
        try:
            bgrpc.BlobServiceStub(ch).Put(one_chunk_then_nothing(), timeout=60)
        except grpc.RpcError as e:
            errors.append(e.code())
        ch.close()

    def silent_requests():
        release.wait(60)
        yield from ()

    def silent_do_build():
        ch = grpc.insecure_channel(f"unix:{sock}")
        call = ch.stream_unary("/tvix.build.v1.BuildService/DoBuild",
                               request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        try:
            call(silent_requests(), timeout=60)
        except grpc.RpcError as e:
            errors.append(e.code())
        ch.close()

    threads = [threading.Thread(target=stalled_put) for _ in range(16)]
    threads += [threading.Thread(target=silent_do_build) for _ in range(4)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    chan = grpc.insecure_channel(f"unix:{sock}")
    t0 = time.time()
    code, details = code_of(lambda: bgrpc.BlobServiceStub(chan).Stat(
        bpb.StatBlobRequest(digest=b"\x02" * 32), timeout=5))
    took = time.time() - t0
    t.check("16 Put streams that sent one chunk and wait do not starve a Stat",
            code == grpc.StatusCode.NOT_FOUND and took < 2, (code, details, f"{took:.2f}s"))
    valid = build_pb2.BuildRequest(command_args=["/bin/sh", "-c", "true"], scratch_paths=["out"],
                                   outputs=["out"], inputs_dir="nix/store")
    t0 = time.time()
    code, details = code_of(lambda: rpc_build_pb2_grpc.BuildServiceStub(chan).DoBuild(
        valid, timeout=5))
    took = time.time() - t0
    t.check("4 DoBuilds that never send their request do not block a fifth",
            code == grpc.StatusCode.UNIMPLEMENTED and took < 2, (code, details, f"{took:.2f}s"))
    chan.close()
    release.set()
    for th in threads:
        th.join(70)
    stop(d)


def attack_idle_stream():
    d, sock = unix_daemon("idle", "--idle-timeout", "1")
    if not d:
        t.not_ok("a stream silent for --idle-timeout is cancelled", "daemon did not start")
        return

    def nothing_for_a_while():
        time.sleep(20)
        yield bpb.BlobChunk(data=b"too late")

    chan = grpc.insecure_channel(f"unix:{sock}")
    t0 = time.time()
    code, details = code_of(lambda: bgrpc.BlobServiceStub(chan).Put(nothing_for_a_while(),
                                                                     timeout=30))
    took = time.time() - t0
    t.check("a stream silent for --idle-timeout 1 is cancelled within 2.5 s",
            code == grpc.StatusCode.DEADLINE_EXCEEDED and "idle" in details and took < 2.5,
            (code, details, f"{took:.2f}s"))
    chan.close()
    stop(d)


def wide_directory_bytes(entries_wanted):
    """A canonical Directory of file entries f000000000, f000000001, ... (50 bytes each)."""
    digest = bytes(range(32))
    return b"".join(b"\x12\x30\x0a\x0af%09d\x12\x20%s\x18\x01" % (i, digest)
                    for i in range(entries_wanted))


def put_raw_directory(sock, data, timeout=180):
    ch = grpc.insecure_channel(f"unix:{sock}", options=BIG_OPTS)
    put = ch.stream_unary("/tvix.castore.v1.DirectoryService/Put",
                          request_serializer=lambda b: b,
                          response_deserializer=dpb.PutDirectoryResponse.FromString)
    try:
        code, details = code_of(lambda: put(iter([data]), timeout=timeout))
    finally:
        ch.close()
    return code, details


def attack_big_directory():
    data = wide_directory_bytes(3_932_000)  # 196.6 MB
    size_mb = len(data) / 1e6
    # Refused with the default limit.
    d, sock = unix_daemon("big-refused", store=os.path.join(tmp, "store-big"))
    if not d:
        t.not_ok(f"a {size_mb:.0f} MB Directory Put is refused with RESOURCE_EXHAUSTED", "no daemon")
        return
    base = memory_kib(d.pid, "VmHWM")
    code, details = put_raw_directory(sock, data)
    peak_mb = (memory_kib(d.pid, "VmHWM") - base) / 1024
    t.check(f"a {size_mb:.0f} MB Directory Put is refused with RESOURCE_EXHAUSTED "
            f"(daemon grew {peak_mb:.0f} MB)",
            code == grpc.StatusCode.RESOURCE_EXHAUSTED and peak_mb < 1.3 * size_mb,
            (code, details[:200], f"{peak_mb:.0f} MB"))
    stop(d)
    # Accepted under a raised limit: the daemon holds the message about twice at most.
    d, sock = unix_daemon("big-accepted", "--max-message-bytes", "256Mi",
                          "--max-inflight-bytes", "600Mi", store=os.path.join(tmp, "store-big"))
    base = memory_kib(d.pid, "VmHWM")
    code, details = put_raw_directory(sock, data)
    peak_mb = (memory_kib(d.pid, "VmHWM") - base) / 1024
    after_mb = memory_kib(d.pid, "VmRSS") / 1024
    t.check(f"with --max-message-bytes 256Mi it is stored, peaking at {peak_mb / size_mb:.2f}x "
            f"its size (at most 2.3x), {after_mb:.0f} MB resident afterwards",
            code == grpc.StatusCode.OK and peak_mb < 2.3 * size_mb and after_mb < 100,
            (code, details[:200], f"peak +{peak_mb:.0f} MB, after {after_mb:.0f} MB"))
    # Three at once share one budget: some are refused, memory stays bounded.
    results = []
    threads = [threading.Thread(target=lambda: results.append(put_raw_directory(sock, data)[0]))
               for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    peak_mb = memory_kib(d.pid, "VmHWM") / 1024
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    t.check(f"three at once share --max-inflight-bytes 600Mi: daemon peak {peak_mb:.0f} MB "
            f"(at most 1100)", len(results) == 3 and set(results) <= allowed and peak_mb < 1100,
            (results, f"{peak_mb:.0f} MB"))
    stop(d)


# ---- builds: cancellation, deadlines, disconnects, SIGTERM (root + runc) ----

def build_daemon(name, *args):
    store = os.path.join(tmp, f"store-{name}")
    bundles = os.path.join(tmp, f"bundles-{name}")
    d, sock = unix_daemon(name, *args, store=store, build=f"oci://{bundles}?runtime=runc&max_builds=1")
    return d, sock, store, bundles


def wait_gone(bundles, limit):
    """Seconds until no container of this daemon is left (None if still there after limit)."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if not runc_containers_under(bundles):
            return time.time() - t0
        time.sleep(0.05)
    return None


def wait_running(bundles, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit:
        if runc_containers_under(bundles):
            return True
        time.sleep(0.1)
    return False


def attack_abandoned_builds():
    names = ["a DoBuild past its deadline: container killed and deleted within 1 s",
             "its slot is free again at once: the next build runs",
             "a DoBuild whose client cancels: container gone within 1 s",
             "a DoBuild whose client vanishes (SIGKILL): container gone within 1 s",
             "no bundle is left behind by the abandoned builds"]
    why_not = can_build_with_runc()
    if why_not:
        for n in names:
            t.skip(n, why_not)
        return
    d, sock, store, bundles = build_daemon("abandon")
    if not d:
        t.not_ok(names[0], "daemon did not start")
        return
    busybox = import_busybox(f"grpc+unix://{sock}")
    endless = build_request(build_pb2, cpb, busybox, "sleep 120")
    quick = build_request(build_pb2, cpb, busybox, "mkdir -p /nix/store/out && echo q > /nix/store/out/f")
    chan = grpc.insecure_channel(f"unix:{sock}")
    stub = rpc_build_pb2_grpc.BuildServiceStub(chan)

    # Deadline.
    result = {}
    th = threading.Thread(target=lambda: result.update(
        code=code_of(lambda: stub.DoBuild(endless, timeout=4))[0]))
    th.start()
    running = wait_running(bundles)
    deadline = time.time() + 4 - 0.1
    later = {}
    th2 = threading.Thread(target=lambda: later.update(
        code=code_of(lambda: stub.DoBuild(quick, timeout=60))[0], at=time.time()))
    th2.start()
    while time.time() < deadline:
        time.sleep(0.02)
    gone = None
    if running:
        t0 = time.time()
        while not result and time.time() - t0 < 10:
            time.sleep(0.02)
        # the first container is the one to disappear; the next build then starts its own
        gone = wait_gone(bundles, 1.5)
    th.join(30)
    th2.join(60)
    t.check(names[0], running and result.get("code") == grpc.StatusCode.DEADLINE_EXCEEDED
            and gone is not None and gone < 1.0, (running, result, gone, read_log(d)[-1500:]))
    t.check(names[1], later.get("code") == grpc.StatusCode.OK
            and later.get("at", 1e9) - deadline < 8, (later, deadline))

    # The client cancels.
    future = stub.DoBuild.future(endless, timeout=60)
    running = wait_running(bundles)
    future.cancel()
    gone = wait_gone(bundles, 3) if running else None
    t.check(names[2], running and gone is not None and gone < 1.0, (running, gone))

    # The client vanishes.
    client = subprocess.Popen([sys.executable, "-c", f"""
import sys, grpc
sys.path.insert(0, {os.path.join(tmp, 'gen')!r})
from tvix.build.v1 import build_pb2, rpc_build_pb2_grpc
req = build_pb2.BuildRequest.FromString(bytes.fromhex({endless.SerializeToString().hex()!r}))
rpc_build_pb2_grpc.BuildServiceStub(grpc.insecure_channel('unix:{sock}')).DoBuild(req, timeout=60)
"""])
    running = wait_running(bundles)
    client.kill()
    client.wait()
    gone = wait_gone(bundles, 3) if running else None
    t.check(names[3], running and gone is not None and gone < 1.0, (running, gone))
    chan.close()
    time.sleep(0.5)
    t.check(names[4], not entries(bundles), entries(bundles))
    stop(d)


def attack_sigterm():
    names = ["SIGTERM with --grace 2, a running build and idle streams: exit 0 within 12 s",
             "after it, no container and no bundle are left"]
    why_not = can_build_with_runc()
    if why_not:
        for n in names:
            t.skip(n, why_not)
        return
    d, sock, store, bundles = build_daemon("sigterm", "--grace", "2")
    if not d:
        t.not_ok(names[0], "daemon did not start")
        return
    busybox = import_busybox(f"grpc+unix://{sock}")
    endless = build_request(build_pb2, cpb, busybox, "sleep 120")
    chan = grpc.insecure_channel(f"unix:{sock}")
    stub = rpc_build_pb2_grpc.BuildServiceStub(chan)
    futures = [stub.DoBuild.future(endless, timeout=120) for _ in range(3)]  # one runs, two wait
    release = threading.Event()

    def idle():
        release.wait(60)
        yield from ()

    idle_calls = [bgrpc.BlobServiceStub(chan).Put.future(idle(), timeout=60) for _ in range(4)]
    running = wait_running(bundles)
    t0 = time.time()
    d.send_signal(signal.SIGTERM)
    try:
        rc = d.wait(20)
    except subprocess.TimeoutExpired:
        rc = "still running after 20 s"
    took = time.time() - t0
    release.set()
    for f in futures + idle_calls:
        f.cancel()
    chan.close()
    t.check(names[0], running and rc == 0 and took < 12, (running, rc, f"{took:.1f}s",
                                                           read_log(d)[-1500:]))
    time.sleep(0.5)
    left = (runc_containers_under(bundles), entries(bundles))
    t.check(names[1], left == ([], []), left)


# ---- TLS ----

def tls_channel(port, p, client):
    read = lambda name: open(p(name), "rb").read()  # noqa: E731
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read(f"{client}.key") if client else None,
        certificate_chain=read(f"{client}.pem") if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def tls_tests():
    names = ["mutual TLS on 0.0.0.0: a client holding a certificate of the CA gets in",
             "a TLS client without a certificate is refused",
             "a client certificate from another CA is refused",
             "plain TCP to the TLS port is refused",
             "TLS without --tls-client-ca on 0.0.0.0 is refused",
             "the CLI stores and reads through grpc+https://...?ca=&cert=&key=",
             "the CLI takes the TLS files from $OCIBUILD_GRPC_CA/CERT/KEY",
             "a grpc+https:// URL without a client certificate is refused by the daemon",
             "a second daemon uses the TLS daemon as its store"]
    import shutil
    if not shutil.which("openssl"):
        for n in names:
            t.skip(n, "openssl missing (apt-get install openssl)")
        return
    p = make_pki(os.path.join(tmp, "pki"))
    d = env.start_daemon("tls", "--listen", "0.0.0.0:0", "--store", os.path.join(tmp, "store-tls"),
                         "--build-service", "dummy://", "--tls-cert", p("server.pem"),
                         "--tls-key", p("server.key"), "--tls-client-ca", p("ca.pem"))
    port = wait_for_port(d)
    if not port:
        t.not_ok(names[0], read_log(d))
        return
    stat_req = bpb.StatBlobRequest(digest=b"\x03" * 32)

    def stat_with(chan):
        try:
            return code_of(lambda: bgrpc.BlobServiceStub(chan).Stat(stat_req, timeout=10))[0]
        finally:
            chan.close()

    t.check(names[0], stat_with(tls_channel(port, p, "client")) == grpc.StatusCode.NOT_FOUND)
    t.check(names[1], stat_with(tls_channel(port, p, None)) == grpc.StatusCode.UNAVAILABLE)
    t.check(names[2], stat_with(tls_channel(port, p, "stranger")) == grpc.StatusCode.UNAVAILABLE)
    t.check(names[3], stat_with(grpc.insecure_channel(f"127.0.0.1:{port}"))
            == grpc.StatusCode.UNAVAILABLE)
    no, stderr = refused("--listen", "0.0.0.0:0", "--store", "memory://", "--build-service",
                         "dummy://", "--tls-cert", p("server.pem"), "--tls-key", p("server.key"))
    t.check(names[4], no and "without client certificates" in stderr, stderr)

    url = f"grpc+https://127.0.0.1:{port}?ca={p('ca.pem')}&cert={p('client.pem')}&key={p('client.key')}"
    blob = os.path.join(tmp, "tls-blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(300_000))
    r = subprocess.run([OCIBUILD, "store", "import", "--store", url, blob], capture_output=True,
                       text=True, timeout=60)
    h = subprocess.run([OCIBUILD, "hash", blob], capture_output=True, text=True).stdout.split()[0]
    back = subprocess.run([OCIBUILD, "store", "cat", "--store", url, h], capture_output=True,
                          timeout=60)
    t.check(names[5], r.returncode == 0 and back.returncode == 0
            and back.stdout == open(blob, "rb").read(), (r.stderr, back.stderr[-300:]))
    envvars = dict(os.environ, OCIBUILD_GRPC_CA=p("ca.pem"), OCIBUILD_GRPC_CERT=p("client.pem"),
                   OCIBUILD_GRPC_KEY=p("client.key"))
    back = subprocess.run([OCIBUILD, "store", "cat", "--store", f"grpc+https://127.0.0.1:{port}", h],
                          capture_output=True, timeout=60, env=envvars)
    t.check(names[6], back.returncode == 0 and back.stdout == open(blob, "rb").read(),
            back.stderr[-300:])
    back = subprocess.run([OCIBUILD, "store", "cat", "--store",
                           f"grpc+https://127.0.0.1:{port}?ca={p('ca.pem')}", h],
                          capture_output=True, timeout=60)
    t.check(names[7], back.returncode != 0, back.stderr[-300:])

    proxy, proxy_sock = unix_daemon("tls-proxy", store=url)
    ok = False
    if proxy:
        chan = grpc.insecure_channel(f"unix:{proxy_sock}")
        data = b"through the proxy over TLS"
        resp = bgrpc.BlobServiceStub(chan).Put(iter([bpb.BlobChunk(data=data)]), timeout=30)
        chan.close()
        back = subprocess.run([OCIBUILD, "store", "cat", "--store", url, resp.digest.hex()],
                              capture_output=True, timeout=60)
        ok = back.stdout == data
        stop(proxy)
    t.check(names[8], ok, read_log(proxy) if proxy else "")
    stop(d)


def socket_activation():
    name = "a socket passed by systemd (LISTEN_FDS) is served and left in place"
    path = os.path.join(tmp, "activated.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o640)
    s.listen(16)
    fd = s.fileno()

    def as_fd_3():
        os.dup2(fd, 3)

    # sh's $$ is the pid exec keeps: LISTEN_PID names the daemon itself.
    d = env.start_daemon("activated", argv=[
        "/bin/sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "{OCIBUILD}" daemon '
        '--store memory:// --build-service dummy://'], preexec_fn=as_fd_3, pass_fds=(fd, 3))
    s.close()
    time.sleep(0.5)
    chan = grpc.insecure_channel(f"unix:{path}")
    code, details = code_of(lambda: bgrpc.BlobServiceStub(chan).Stat(
        bpb.StatBlobRequest(digest=b"\x04" * 32), timeout=10))
    chan.close()
    rc = stop(d)
    t.check(name, code == grpc.StatusCode.NOT_FOUND and rc == 0 and os.path.exists(path)
            and stat.S_IMODE(os.lstat(path).st_mode) == 0o640,
            (code, details, rc, read_log(d)[-800:]))


SECTIONS = [attack_plain_tcp, attack_socket_mode, attack_stalled_streams, attack_idle_stream,
            attack_abandoned_builds, attack_sigterm, attack_big_directory, tls_tests,
            socket_activation]
# OBI_TEST_ONLY=attack_sigterm,tls_tests runs some sections (for working on one).
only = [x for x in os.environ.get("OBI_TEST_ONLY", "").split(",") if x]
try:
    for section in SECTIONS:
        if only and section.__name__ not in only:
            continue
        try:
            section()
        except Exception:  # noqa: BLE001
            import traceback
            t.not_ok(f"{section.__name__}: unexpected exception", traceback.format_exc())
finally:
    env.close()
t.done()
