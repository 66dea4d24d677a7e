#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A real Prometheus scrapes a real `zpipe run --metrics`.

Starts Debian's `prometheus` on a free port of 127.0.0.1 (a 1 s scrape
interval, its data in a temporary directory) with a file of targets, then a
run of `zpipe run --input - 'sleep workers=4 bind=20 | identity'` serving
its metrics on a port the system picks, names that port in the file of
targets, and feeds the run an item every 10 ms until Prometheus has seen
its outputs grow (a new target takes Prometheus up to 5 s to take up).
Then it closes the run's input. It checks that:

- while the run goes, a page of its endpoint passes `promtool check
  metrics` and holds every metric of docs/cli.md for every stage, and
  Prometheus sees the rate of zpipe_stage_items_out_total above zero;
- once the run is over, Prometheus's last value of that counter for the
  last stage is the number of lines the run wrote: the run lingers
  (--metrics-linger) until one scrape of its final figures, so that they
  reach Prometheus;
- zpipe_run_up went from 1 to 0, the histogram of the sleep stage counted
  every item, none under 10 ms, and every metric of every stage is in
  Prometheus.

Every process it starts is stopped on the way out, whatever happens. Exits
77 (ctest's skip) when the prometheus or promtool binary is missing.

usage: metrics_prometheus_test.py ZPIPE_BINARY
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
DEADLINE = 90.0  # seconds any one wait may take before the test fails
STAGES = {"1": "<input>", "2": "sleep", "3": "identity"}
METRICS = [
    "zpipe_stage_items_in_total", "zpipe_stage_items_out_total",
    "zpipe_stage_failed_total", "zpipe_stage_retried_total",
    "zpipe_stage_skipped_total", "zpipe_stage_restarts_total",
    "zpipe_stage_busy_seconds_total", "zpipe_stage_in_flight",
    "zpipe_stage_workers_alive", "zpipe_stage_queue_items",
    "zpipe_stage_item_seconds_bucket", "zpipe_stage_item_seconds_sum",
    "zpipe_stage_item_seconds_count",
]


class Failure(Exception):
    pass


def wait_for(what, check, deadline=DEADLINE, every=0.2):
    """Calls check() until it returns something true; returns that."""
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise Failure("timed out waiting for " + what)
        time.sleep(every)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    """(status, body) of a GET, or (None, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Prometheus:
    def __init__(self, tmp, procs):
        self.targets = os.path.join(tmp, "targets.json")
        self.write_targets([])
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: zpipe\n"
                    "    file_sd_configs:\n"
                    "      - files: [%s]\n        refresh_interval: 1s\n"
                    % json.dumps(self.targets))
        for attempt in range(3):  # the free port may be taken meanwhile
            self.url = "http://127.0.0.1:%d" % free_port()
            self.log = open(os.path.join(tmp, "prometheus.log"), "w")
            self.proc = subprocess.Popen(
                ["prometheus", "--config.file=" + config,
                 "--storage.tsdb.path=" + os.path.join(tmp, "data%d" % attempt),
                 "--web.listen-address=" + self.url[len("http://"):],
                 "--log.level=warn"],
                stdout=self.log, stderr=subprocess.STDOUT)
            procs.append(self.proc)
            ready = wait_for("prometheus to be ready or to exit", lambda: (
                "exited" if self.proc.poll() is not None else
                http_get(self.url + "/-/ready")[0] == 200 and "ready"))
            if ready == "ready":
                return
        raise Failure("prometheus does not start; see " + self.log.name)

    def write_targets(self, targets):
        tmp = self.targets + ".new"
        with open(tmp, "w") as f:
            json.dump([{"targets": targets}] if targets else [], f)
        os.rename(tmp, self.targets)  # whole, for its file watcher

    def query(self, expr):
        """The values of an instant query, as a list of floats."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})
        status, body = http_get(url)
        if status != 200:
            raise Failure("query %s: %s %s" % (expr, status, body))
        data = json.loads(body)["data"]
        return [float(r["value"][1]) for r in data["result"]]


def check_page(page, promtool):
    """The page passes promtool and has every metric of every stage."""
    lint = subprocess.run([promtool, "check", "metrics"], input=page,
                          capture_output=True, text=True)
    if lint.returncode != 0:
        raise Failure("promtool check metrics: %s%s" % (lint.stdout,
                                                        lint.stderr))
    for name in METRICS + ["zpipe_run_info", "zpipe_run_up"]:
        base = name.rsplit("_", 1)[0] if "item_seconds_" in name else name
        if "# TYPE %s " % base not in page or "# HELP %s " % base not in page:
            raise Failure("no HELP or TYPE of %s in the page" % base)
    for name in METRICS:
        for stage, task in STAGES.items():
            labels = '{stage="%s",task="%s"' % (stage, task)
            if "\n%s%s" % (name, labels) not in page:
                raise Failure("no %s%s} in the page:\n%s" % (name, labels,
                                                              page))


class Feeder(threading.Thread):
    """Writes an item to the run's stdin every 10 ms until told to stop,
    then closes it: the run goes on, items flowing, as long as the test
    needs it to."""

    def __init__(self, stdin):
        super().__init__(daemon=True)
        self.stdin, self.sent, self.stop = stdin, 0, threading.Event()

    def run(self):
        try:
            while not self.stop.wait(0.01):
                self.stdin.write(b"%d\n" % self.sent)
                self.stdin.flush()
                self.sent += 1
            self.stdin.close()
        except BrokenPipeError:  # the run ended early: the test says why
            pass


def run(zpipe, tmp, procs):
    promtool = shutil.which("promtool")
    prom = Prometheus(tmp, procs)
    out = open(os.path.join(tmp, "out.jsonl"), "w")
    err_path = os.path.join(tmp, "zpipe.err")
    err = open(err_path, "w")
    z = subprocess.Popen(
        [zpipe, "run", "--metrics", "127.0.0.1:0", "--metrics-linger", "60s",
         "--input", "-", "sleep workers=4 bind=20 | identity"],
        stdin=subprocess.PIPE, stdout=out, stderr=err)
    procs.append(z)
    feeder = Feeder(z.stdin)
    feeder.start()

    def said_where():
        with open(err_path) as f:
            for line in f:
                if "metrics at http://" in line:
                    return line.split("http://", 1)[1].split("/", 1)[0]
        if z.poll() is not None:
            raise Failure("zpipe ended first: " + open(err_path).read())
        return None
    try:
        where = wait_for("zpipe to say where its metrics are", said_where)
        prom.write_targets([where])
        status, page = http_get("http://%s/metrics" % where)
        if status != 200:
            raise Failure("GET /metrics: %s %s" % (status, page))
        check_page(page, promtool)
        # Items keep coming until Prometheus has seen the outputs grow.
        wait_for("prometheus to see the outputs grow", lambda: prom.query(
            'max_over_time(rate(zpipe_stage_items_out_total'
            '{job="zpipe",stage="3"}[3s])[10m:1s]) > 0'))
    finally:
        feeder.stop.set()
        feeder.join()
    rc = z.wait(DEADLINE)
    if rc != 0:
        raise Failure("zpipe run exit %d: %s" % (rc, open(err_path).read()))
    with open(out.name) as f:
        written = sum(1 for _ in f)
    if written != feeder.sent:
        raise Failure("zpipe wrote %d lines of %d" % (written, feeder.sent))

    # The final scrape is stored by the time the run has ended; a range
    # selector skips the staleness marker that follows it.
    last = 'max_over_time(%s{job="zpipe",stage="%s"}[10m])'
    wait_for("the last outputs to reach prometheus", lambda: (
        prom.query(last % ("zpipe_stage_items_out_total", "3")) ==
        [float(written)]), deadline=30)
    up = (prom.query('max_over_time(zpipe_run_up{job="zpipe"}[10m])'),
          prom.query('min_over_time(zpipe_run_up{job="zpipe"}[10m])'))
    if up != ([1.0], [0.0]):
        raise Failure("zpipe_run_up went %s, not from 1 to 0" % (up,))
    count = prom.query(last % ("zpipe_stage_item_seconds_count", "2"))
    fast = prom.query('max_over_time(zpipe_stage_item_seconds_bucket'
                      '{job="zpipe",stage="2",le="0.01"}[10m])')
    if count != [float(written)] or fast != [0.0]:
        raise Failure("sleep's histogram: %s items, %s under 10 ms"
                      % (count, fast))
    for name in METRICS:
        n = prom.query('count(max_over_time(%s{job="zpipe"}[10m]))' % name)
        want = 3 * 9 if name.endswith("_bucket") else 3
        if n != [float(want)]:
            raise Failure("%s: %s series in prometheus, not %d"
                          % (name, n, want))
    print("ok: prometheus at %s scraped zpipe at %s: %d outputs"
          % (prom.url, where, written))


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        print("SKIP: no prometheus or promtool binary (Debian package "
              "'prometheus'; scripts/deps.sh installs it)")
        return SKIP
    procs = []
    with tempfile.TemporaryDirectory(prefix="zp-prometheus-") as tmp:
        try:
            run(os.path.abspath(sys.argv[1]), tmp, procs)
        except Failure as e:
            print("FAIL:", e, file=sys.stderr)
            log = os.path.join(tmp, "prometheus.log")
            if os.path.exists(log):
                print(open(log).read()[-4000:], file=sys.stderr)
            return 1
        finally:
            for p in reversed(procs):
                stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
