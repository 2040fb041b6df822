#!/usr/bin/env python3
"""Benchmarks for outbox; driven by scripts/bench (which builds the release binary first).

Every figure is printed as a `name: value` line. Runs are repeated (--runs) and medians printed;
ratios are taken per round from measurements made side by side, then their median is printed.
"""
import json, os, random, re, shutil, signal, ssl, statistics, subprocess, sys, tempfile, time
import urllib.request

BIN = os.environ["OUTBOX_BIN"]
ROOT = os.environ["OUTBOX_ROOT"]
SDK = os.path.join(ROOT, "scripts", "sdk")
MIB = 1024 * 1024
TOKEN = "bench-%d" % random.randrange(10**9)
STARTED = []  # every process we start, stopped at exit even after a failure


def _stop_started():
    for p in STARTED:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


import atexit
atexit.register(_stop_started)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def out(name, value, note=""):
    print(f"{name}: {value}" + (f"  ({note})" if note else ""), flush=True)


def med(xs):
    return round(statistics.median(xs), 3)


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


class Sandbox:
    def __init__(self, work):
        self.data = os.path.join(work, "sb")
        self.proc = subprocess.Popen([BIN, "-q", "sandbox", "--tls", "--data-dir", self.data, "--token", TOKEN],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        STARTED.append(self.proc)
        first = self.proc.stdout.readline().strip()
        m = re.match(r"listening (https://127\.0\.0\.1:\d+)$", first)
        if not m:
            raise SystemExit(f"sandbox said {first!r}")
        self.origin = m.group(1)
        self.ca = os.path.join(self.data, "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)

    def req(self, method, path, body=None, auth=False):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.origin + path, data=data, method=method)
        if data is not None:
            r.add_header("content-type", "application/json")
        if auth:
            r.add_header("authorization", "Bearer " + TOKEN)
        with urllib.request.urlopen(r, context=self.ctx, timeout=60) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def item(self):
        return self.req("POST", "/_admin/items", {"kind": "message"})["id"]

    def attachments(self, item):
        return self.req("GET", f"/_admin/items/{item}/attachments")

    def drop_attachments(self, item):
        for a in self.attachments(item):
            self.req("DELETE", f"/_admin/items/{item}/attachments/{a['id']}")

    def stats(self):
        return self.req("GET", "/_admin/stats")

    def session(self, item, name, size):
        v = self.req("POST", f"/v1.0/me/messages/{item}/attachments/createUploadSession",
                     {"AttachmentItem": {"attachmentType": "file", "name": name, "size": size}}, auth=True)
        return v["uploadUrl"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def config(work, sb, mappings, **agent):
    """Write an agent config; mappings = [(folder, item, extra-dict)]."""
    lines = ["[graph]", f'base_url = "{sb.origin}/v1.0"', f'ca_file = "{sb.ca}"',
             "[auth]", 'method = "token_env"', 'token_env = "BENCH_TOKEN"',
             "[agent]", f'state_dir = "{work}/state"', 'chunk_size = "4MiB"']
    for k, v in agent.items():
        lines.append(f"{k} = {json.dumps(v)}")
    for folder, item, extra in mappings:
        lines += ["[[mapping]]", f'folder = "{folder}"', f'message = "{item}"']
        for k, v in extra.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path = os.path.join(work, "config.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def env():
    e = dict(os.environ)
    e["BENCH_TOKEN"] = TOKEN
    return e


def timed_rss(cmd, **kw):
    """Run cmd under /usr/bin/time -v: (seconds, max RSS KiB, stdout)."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name] + cmd, capture_output=True, text=True, **kw)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(tf.name).read()).group(1))
    os.unlink(tf.name)
    return dt, rss, p.stdout


def make_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n


def curl_put_args(sb, url, parts, size):
    """One curl command sending every chunk PUT of `parts` to `url` (one connection, `--next`)."""
    args = ["curl", "-sf", "--cacert", sb.ca]
    off = 0
    for i, p in enumerate(parts):
        n = os.path.getsize(p)
        if i:
            args += ["--next", "-sf", "--cacert", sb.ca]
        args += ["-X", "PUT", url, "-H", f"content-range: bytes {off}-{off + n - 1}/{size}",
                 "-H", "content-type: application/octet-stream", "--data-binary", "@" + p, "-o", "/dev/null"]
        off += n
    return args


def curl_puts(sb, url, parts, size):
    """All chunk PUTs in one curl process (one connection, as a client library would)."""
    args = curl_put_args(sb, url, parts, size)
    t0 = time.monotonic()
    if subprocess.run(args).returncode != 0:
        raise SystemExit("curl floor upload failed")
    return time.monotonic() - t0


def split(f, work, chunk=4 * MIB):
    d = os.path.join(work, "parts")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["split", "-b", str(chunk), "-d", "-a", "3", f, d + "/part."], check=True)
    return sorted(os.path.join(d, x) for x in os.listdir(d))


def ensure_sdk():
    if not os.path.isdir(os.path.join(SDK, "node_modules", "@microsoft", "microsoft-graph-client")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=SDK, check=True)


# ---------------------------------------------------------------------------------------------

def bench_large(work, runs):
    """150 MiB: outbox send vs curl floor vs the JS SDK's LargeFileUploadTask (all HTTPS, 4 MiB)."""
    ensure_sdk()
    sb = Sandbox(work)
    size = 150 * MIB
    f = os.path.join(work, "big.bin")
    make_file(f, size)
    parts = split(f, work)
    cfg = config(work, sb, [])
    res = {"outbox": [], "curl": [], "js": [], "rss": []}
    ratios_floor, ratios_js = [], []
    for r in range(runs):
        item = sb.item()
        dt, rss, _ = timed_rss([BIN, "-q", "--config", cfg, "send", f, "--message", item], env=env())
        res["outbox"].append(dt); res["rss"].append(rss)
        url = sb.session(item, "curl.bin", size)
        dc = curl_puts(sb, url, parts, size)
        res["curl"].append(dc)
        url = sb.session(item, "js.bin", size)
        e = env(); e["NODE_EXTRA_CA_CERTS"] = sb.ca
        t0 = time.monotonic()
        subprocess.run(["node", "upload.mjs", url, f], cwd=SDK, env=e, check=True, capture_output=True)
        dj = time.monotonic() - t0
        res["js"].append(dj)
        atts = sb.attachments(item)
        assert len(atts) == 3 and all(a["size"] == size for a in atts), atts
        sb.drop_attachments(item)
        ratios_floor.append(dc / dt)  # throughput ratio outbox/curl = time curl / time outbox
        ratios_js.append(dj / dt)
        print(f"  round {r + 1}: outbox {dt:.3f}s  curl {dc:.3f}s  js {dj:.3f}s  outbox max RSS {rss} KiB", flush=True)
    mb = size / 1e6
    out("large_150MiB_outbox_send_s_median", med(res["outbox"]), f"{mb / med(res['outbox']):.0f} MB/s")
    out("large_150MiB_curl_floor_s_median", med(res["curl"]), f"{mb / med(res['curl']):.0f} MB/s")
    out("large_150MiB_js_sdk_s_median", med(res["js"]), f"{mb / med(res['js']):.0f} MB/s")
    out("large_outbox_throughput_vs_curl_median_ratio", med(ratios_floor), "target >= 0.9")
    out("large_outbox_speedup_vs_js_median_ratio", med(ratios_js), "target >= 2")
    out("large_send_peak_rss_kib_median", med(res["rss"]), "outbox send, one 150 MiB file")
    st = sb.stats()
    out("large_chunks_over_4mib", st["chunks_over_4mib"])
    sb.stop()


def bench_memory(work, runs):
    """Peak RSS of the agent (`run --once`) uploading one, then four 150 MiB files at once."""
    sb = Sandbox(work)
    size = 150 * MIB
    src = os.path.join(work, "big.bin")
    make_file(src, size)
    for n in (1, 4):
        rss_all = []
        for r in range(runs):
            folder = os.path.join(work, f"mem{n}-{r}")
            os.makedirs(folder)
            item = sb.item()
            for i in range(n):
                os.link(src, os.path.join(folder, f"big{i}.bin"))
            shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
            cfg = config(work, sb, [(folder, item, {})], settle="200ms", mailbox_upload_bytes="1GB/5m")
            dt, rss, _ = timed_rss([BIN, "-q", "--config", cfg, "run", "--once"], env=env())
            assert len(sb.attachments(item)) == n
            sb.drop_attachments(item)
            rss_all.append(rss)
            print(f"  {n} file(s) round {r + 1}: {dt:.2f}s, max RSS {rss} KiB", flush=True)
        out(f"agent_peak_rss_kib_{n}x150MiB_median", med(rss_all),
            "target <= %d KiB" % (32 * 1024 if n == 1 else 64 * 1024))
    sb.stop()


class Agent:
    def __init__(self, cfg):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([BIN, "--config", cfg, "run"], env=env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        STARTED.append(self.proc)
        self.watching_s = None
        for line in self.proc.stderr:
            if "watching" in line:
                self.watching_s = time.monotonic() - self.t0
                break
        if self.watching_s is None:
            raise SystemExit("agent exited before watching")
        # Keep draining its log so it never blocks (into BENCH_AGENT_LOG when set, for profiling).
        import threading
        keep = open(os.environ["BENCH_AGENT_LOG"], "a") if os.environ.get("BENCH_AGENT_LOG") else None
        threading.Thread(target=lambda: [keep and keep.write(l) for l in self.proc.stderr], daemon=True).start()

    def status(self, key):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])

    def ticks(self):
        f = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


def bench_burst(work, runs, count=10_000, if_exists="skip"):
    """10,000 files of 10 KiB dropped at once: time until every one is done (after = delete, so
    a file is gone only once its `done` record is flushed), files/s, peak RSS, ledger size."""
    sb = Sandbox(work)
    payload = os.urandom(10 * 1024)
    secs, rates, rss_all, ledgers = [], [], [], []
    for r in range(runs):
        folder = os.path.join(work, f"burst-{r}")
        os.makedirs(folder)
        item = sb.item()
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        cfg = config(work, sb, [(folder, item, {"after": "delete", "if_exists": if_exists})],
                     # Room for every request and byte of the burst: it measures the agent, not
                     # a wait for the window (at 10,000 files, the bench's long-standing budgets).
                     mailbox_requests=f"{max(100_000, 2 * count)}/10m",
                     mailbox_upload_bytes=f"{max(1, -(-count * 2 * len(payload) // 10**9))}GB/5m")
        ag = Agent(cfg)
        t0 = time.monotonic()
        for i in range(count):
            with open(os.path.join(folder, f"f{i:05d}.bin"), "wb") as f:
                f.write(payload)
        t_written = time.monotonic() - t0
        deadline = t0 + max(300, count / 100)
        while time.monotonic() < deadline:
            left = sum(1 for e in os.scandir(folder) if e.is_file())
            if left == 0:
                break
            time.sleep(0.05)
        dt = time.monotonic() - t0
        rss = ag.status("VmHWM")
        ag.stop()
        n = len(sb.attachments(item))
        st = sb.stats()
        led = du(os.path.join(work, "state", "ledger"))
        print(f"  round {r + 1}: {dt:.2f}s (files written in {t_written:.2f}s), {n} attached, "
              f"dups {st['duplicate_attachments']}, VmHWM {rss} KiB, ledger {led} bytes", flush=True)
        assert n == count, f"{n} of {count} attached"
        secs.append(dt); rates.append(count / dt); rss_all.append(rss); ledgers.append(led)
        sb.drop_attachments(item)
    tag = f"if_exists_{if_exists}"
    out(f"burst_{count}x10KiB_{tag}_seconds_median", med(secs), "target <= 20")
    out(f"burst_{tag}_files_per_second_median", round(med(rates), 1))
    out(f"burst_{tag}_peak_rss_kib_median", med(rss_all))
    out(f"burst_{tag}_ledger_bytes_on_disk_median", med(ledgers))
    sb.stop()
    return med(rss_all)


def bench_scale(work, counts=(1_000, 10_000, 100_000)):
    """SPEC: memory does not grow with file count. The burst once at each count, peak RSS each."""
    peaks = []
    for c in counts:
        d = os.path.join(work, f"scale-{c}")
        os.makedirs(d)
        peaks.append(bench_burst(d, 1, c))
    for c, p in zip(counts, peaks):
        out(f"scale_{c}_files_peak_rss_kib", p)
    out("scale_peak_rss_growth_largest_over_smallest", round(peaks[-1] / peaks[0], 2))


def bench_latency(work, drops=200, gap=0.05):
    """File closed -> attachment created on the sandbox (the sandbox's `createdMs`), per file."""
    sb = Sandbox(work)
    folder = os.path.join(work, "lat")
    os.makedirs(folder)
    item = sb.item()
    cfg = config(work, sb, [(folder, item, {})])
    ag = Agent(cfg)
    time.sleep(1)
    closed = {}
    payload = os.urandom(10 * 1024)
    for i in range(drops):
        name = f"lat{i:04d}.bin"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(payload)
        closed[name] = time.time() * 1000
        time.sleep(gap)
    deadline = time.time() + 60
    while time.time() < deadline and len(sb.attachments(item)) < drops:
        time.sleep(0.2)
    atts = {a["name"]: a["createdMs"] for a in sb.attachments(item)}
    ag.stop()
    lat = [atts[n] - closed[n] for n in closed if n in atts]
    assert len(lat) == drops, f"{len(lat)} of {drops}"
    out("latency_close_to_attachment_created_ms_p50", round(pct(lat, 50), 1), "settle = 2s; close-after-write is reported by inotify")
    out("latency_close_to_attachment_created_ms_p99", round(pct(lat, 99), 1))
    sb.stop()


def bench_idle(work, runs, secs=60, entries=100_000, folders=10):
    sb = Sandbox(work)
    item = sb.item()
    dirs = [os.path.join(work, f"f{i}") for i in range(folders)]
    for d in dirs:
        os.makedirs(d)
    state = os.path.join(work, "state")
    t0 = time.monotonic()
    subprocess.run([os.environ["BENCH_LEDGER_BIN"], state, str(entries), item] + dirs, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"  ledger of {entries} done entries (and their files) made in {time.monotonic() - t0:.1f}s", flush=True)
    cfg = config(work, sb, [(d, item, {}) for d in dirs])
    starts = []
    for r in range(runs):
        ag = Agent(cfg)
        starts.append(ag.watching_s)
        print(f"  start {r + 1}: watching after {ag.watching_s:.3f}s, {len(sb.attachments(item))} attachments on the item", flush=True)
        if r < runs - 1:
            ag.stop()
    out("startup_to_watching_100k_entries_s_median", med(starts), "target < 1")
    time.sleep(15)  # past one-time wind-down (tokio blocking threads exit after 10 s idle)
    t0 = ag.ticks()
    time.sleep(secs)
    t1 = ag.ticks()
    out(f"idle_cpu_ticks_gained_over_{secs}s", t1 - t0, f"10 folders, {entries} entries; 1 tick = 1/{os.sysconf('SC_CLK_TCK')} s; target 0")
    out("idle_rss_kib", ag.status("VmRSS"))
    ag.stop()
    assert len(sb.attachments(item)) == 0, "a done entry was sent again"
    sb.stop()


def bench_ingest(work):
    """The sandbox alone: 4 curl processes each uploading 150 MiB at once, and 2,000 small POSTs."""
    sb = Sandbox(work)
    size = 150 * MIB
    f = os.path.join(work, "big.bin")
    make_file(f, size)
    parts = split(f, work)
    item = sb.item()
    urls = [sb.session(item, f"c{i}.bin", size) for i in range(4)]
    t0 = time.monotonic()
    procs = []
    for url in urls:
        procs.append(subprocess.Popen(curl_put_args(sb, url, parts, size)))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("curl upload failed")
    dt = time.monotonic() - t0
    out("sandbox_ingest_4x150MiB_curl_MB_per_s", round(4 * size / 1e6 / dt, 1))
    sb.drop_attachments(item)
    import base64
    body = os.path.join(work, "post.json")
    with open(body, "w") as fh:
        json.dump({"@odata.type": "#microsoft.graph.fileAttachment", "name": "p.bin",
                   "contentBytes": base64.b64encode(os.urandom(10 * 1024)).decode()}, fh)
    n = 2000
    cfgf = os.path.join(work, "curl.cfg")
    with open(cfgf, "w") as fh:
        for i in range(n):
            if i:
                fh.write("next\n")
            fh.write(f'url = "{sb.origin}/v1.0/me/messages/{item}/attachments"\nrequest = "POST"\n'
                     f'header = "authorization: Bearer {TOKEN}"\nheader = "content-type: application/json"\n'
                     f'data-binary = "@{body}"\noutput = "/dev/null"\nfail\ncacert = "{sb.ca}"\n')
    t0 = time.monotonic()
    subprocess.run(["curl", "-s", "--cacert", sb.ca, "--parallel", "--parallel-max", "4", "-K", cfgf], check=True)
    dt = time.monotonic() - t0
    got = len(sb.attachments(item))
    out("sandbox_ingest_small_posts_per_s", round(n / dt, 1), f"curl, 4 in parallel, 10 KiB files, {got}/{n} created")
    sb.stop()


def bench_budget(work, total_mb=140):
    """Sandbox and agent both enforce 20 MB / 10 s and 300 requests / 10 s; a backlog of mixed
    files (more than the budget admits in the run): the share of the byte budget used and the
    429s received.

    A sliding window admits at most A bytes in any W seconds, so over n whole windows from the
    first admitted body at most n x A. The share is the bytes the sandbox admitted in the whole
    windows before the backlog ran out (the last admission), over n x A; the tail window, where
    the agent has nothing left to send, is not the pacer's to fill."""
    sb = Sandbox(work)
    A, W = 20_000_000, 10
    sb.req("POST", "/_admin/faults", {"mailbox_upload_bytes": {"amount": A, "window_secs": W},
                                      "mailbox_requests": {"amount": 300, "window_secs": W}})
    folder = os.path.join(work, "budget")
    os.makedirs(folder)
    item = sb.item()
    cfg = config(work, sb, [(folder, item, {"after": "delete"})], settle="300ms",
                 mailbox_upload_bytes="20MB/10s", mailbox_requests="300/10s")
    rnd = random.Random(6)
    sizes, total = [], 0
    while total < total_mb * 1e6:
        s = rnd.choice([10 * 1024, 100 * 1024, 700 * 1024, 2 * MIB, 5 * MIB, 9 * MIB])
        sizes.append(s); total += s
    ag = Agent(cfg)
    sb.req("POST", "/_admin/reset-stats")
    t0 = time.monotonic()
    for i, s in enumerate(sizes):
        with open(os.path.join(folder, f"m{i:03d}.bin"), "wb") as f:
            f.write(os.urandom(s))
    while sum(1 for e in os.scandir(folder) if e.is_file()) and time.monotonic() - t0 < 300:
        time.sleep(0.1)
    dt = time.monotonic() - t0
    ag.stop()
    st = sb.stats()
    got = len(sb.attachments(item))
    adm = st["upload_budget_admissions"]
    first, last = adm[0][0], adm[-1][0]
    n = (last - first) // (W * 1000)
    in_windows = sum(b for t, b in adm if t < first + n * W * 1000)
    out("budget_files", f"{got}/{len(sizes)} attached, {total / 1e6:.1f} MB raw, {st['bytes_received'] / 1e6:.1f} MB of request bodies, {dt:.1f}s")
    out("budget_byte_share_used_pct", round(100 * in_windows / (n * A), 1) if n else "n/a",
        f"bytes admitted in the {n} whole {W}s windows from the first body to the last / ({n} x {A / 1e6:.0f} MB); target >= 95")
    out("budget_429s", st["throttled_429"], "target 0")
    sb.stop()


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    benches = {
        "large": lambda w: bench_large(w, runs),
        "memory": lambda w: bench_memory(w, runs),
        "burst": lambda w: bench_burst(w, runs, int(os.environ.get("BENCH_BURST_FILES", "10000")),
                                       os.environ.get("BENCH_IF_EXISTS", "skip")),
        "latency": lambda w: bench_latency(w),
        "idle": lambda w: bench_idle(w, runs, int(os.environ.get("BENCH_IDLE_SECS", "60"))),
        "ingest": lambda w: bench_ingest(w),
        "budget": lambda w: bench_budget(w),
        "scale": lambda w: bench_scale(w),
    }
    names = list(benches) if what == "all" else [what]
    for n in names:
        if n not in benches:
            raise SystemExit("usage: scripts/bench [all|" + "|".join(benches) + "]")
        work = tempfile.mkdtemp(prefix=f"outbox-bench-{n}-")
        try:
            print(f"== {n}", flush=True)
            benches[n](work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
