#!/usr/bin/env python3
"""Page benchmark of pivault's web page (issue 14): time to first byte,
full page load and page weight of the customer page (a clerk's search and
its masked results) and the disposal preview, in a real headless Chromium,
against the real pivault-server over TLS, with N records in the vault.

Every figure is taken from the browser's own Navigation Timing
(`performance.getEntriesByType('navigation')`) and Resource Timing entries:
  ttfb  = responseStart - requestStart   (the server's work for the page)
  load  = loadEventEnd - startTime       (everything, to the load event)
  bytes = the HTML (decoded) + the style sheet, the one sub-resource
The baseline, measured in the same run and the same browser, is the
sign-in page (a page that reads no record), so the ratios say what the
record work costs on top of a page.

Usage:  python3 benches/web-pages.py                 (N=100000, ROUNDS=15)
        N=1000 ROUNDS=5 python3 benches/web-pages.py  (a quick look)
        BIN_DIR=target/release python3 benches/web-pages.py
Needs:  the binaries built (cargo build --workspace --all-targets), and
        chromium + chromedriver (scripts/setup.sh). Python standard library only.
"""

import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN_DIR = os.path.join(ROOT, os.environ.get("BIN_DIR", "target/debug"))
N = int(os.environ.get("N", "100000"))
ROUNDS = int(os.environ.get("ROUNDS", "15"))
P = os.path.join(BIN_DIR, "pivault")
SERVER = os.path.join(BIN_DIR, "pivault-server")

GIVEN = ["Ada", "Brendan", "Chiara", "Dmitri", "Esther", "Farid", "Greta", "Hiroshi",
         "Ines", "Jonas", "Kalinda", "Luis", "Maren", "Nkechi", "Oskar", "Priya"]
FAMILY = ["Quimby", "Ramsey", "Sorensen", "Tanaka", "Umber", "Valdez", "Whitlock",
          "Xiong", "Yilmaz", "Zabala", "Abernathy", "Castellano", "Dunleavy"]
# 15 customers share this family name: the "many results" search (the vault
# answers at most 20 matches and asks for a narrower search beyond).
RARE = "Brightwater"
RARE_EVERY = max(1, N // 15)


def ssn(i):
    """A valid, distinct SSN for customer i (area 101-600, group and serial never 0)."""
    return "%03d-%02d-%04d" % (101 + (i // 9999) % 500, 1 + (i // 9999 // 500) % 99, 1 + i % 9999)


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Fixture:
    """A throw-away vault (admin, clerk, officer; the customers collection),
    N records imported through `pivault record import`, and the server."""

    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ)
        self.env["PIVAULT_DIR"] = os.path.join(work, "vault")
        self.env["PIVAULT_PASSPHRASE_FILE"] = self.secret("pass", "bench-vault-passphrase-9Tq!")
        self.passwords = {}
        for u in ["admin", "clerk", "officer"]:
            self.passwords[u] = "Bench-%s-Granite-Otter-64" % u[::-1]
            self.secret(u + ".pw", self.passwords[u])

    def secret(self, name, value):
        path = os.path.join(self.work, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def cli(self, user, *args, extra=None):
        env = dict(self.env)
        env["PIVAULT_PASSWORD_FILE"] = os.path.join(self.work, user + ".pw")
        env.update(extra or {})
        r = subprocess.run([P, "--user", user, *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("pivault %s: exit %d: %s %s" % (" ".join(args), r.returncode, r.stdout[-1000:], r.stderr[-2000:]))
        return r.stdout

    def create(self, n):
        # Two-factor off for the benchmark's users: sign-in is not measured.
        self.cli("admin", "init", "--admin", "admin", "--two-factor", "none")
        for u in ["clerk", "officer"]:
            self.cli("admin", "user", "add", u, "--role", u,
                     extra={"PIVAULT_NEW_PASSWORD_FILE": os.path.join(self.work, u + ".pw")})
        # The example schema, with blind indexes on the fields a clerk searches by.
        schema = json.load(open(os.path.join(ROOT, "examples/customers.schema.json")))
        for f in schema["fields"]:
            if f["name"] in ("given_name", "family_name", "ssn", "email"):
                f["searchable"] = True
        with open(os.path.join(self.work, "customers.schema.json"), "w") as f:
            json.dump(schema, f)
        self.cli("admin", "collection", "create", "customers", "--schema",
                 os.path.join(self.work, "customers.schema.json"))
        rng = random.Random(7)
        path = os.path.join(self.work, "customers.jsonl")
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({
                    "subject": "bench-%07d" % i,
                    "given_name": rng.choice(GIVEN),
                    "family_name": RARE if i % RARE_EVERY == 0 else rng.choice(FAMILY),
                    "ssn": ssn(i),
                    "email": "customer%d@example.com" % i,
                }) + "\n")
        t = time.monotonic()
        self.cli("clerk", "record", "import", "customers", path)
        say("imported %d records in %.1f s" % (n, time.monotonic() - t))
        os.remove(path)
        # The customer searched for below: record 4242's SSN.
        i = 4242 % n
        self.ssn = ssn(i)
        self.subject = "bench-%07d" % i

    def start(self):
        log = open(os.path.join(self.work, "server.log"), "w")
        self.server = subprocess.Popen(
            [SERVER, "--bind", "127.0.0.1:0", "--self-signed",
             "--tls-cert", os.path.join(self.work, "server.crt"),
             "--tls-key", os.path.join(self.work, "server.key"),
             "--socket", os.path.join(self.work, "pivault.sock"),
             "--logins-per-minute", "100000"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = re.search(r"listening on https://127\.0\.0\.1(:\d+)",
                          open(os.path.join(self.work, "server.log")).read())
            if m:
                self.url = "https://localhost" + m.group(1)
                return
            time.sleep(0.1)
        raise SystemExit("server did not start: " + open(os.path.join(self.work, "server.log")).read())

    def stop(self):
        self.server.terminate()
        self.server.wait(30)


class Browser:
    """Headless Chromium under chromedriver, over the W3C WebDriver protocol."""
    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, work):
        port = free_port()
        self.driver = subprocess.Popen(["chromedriver", "--port=%d" % port],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "acceptInsecureCerts": True,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1000,1200",
                "--user-data-dir=" + tempfile.mkdtemp(dir=work)]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError("WebDriver %s %s: %s" % (method, path, e.read()[:300]))

    def s(self, path):
        return "/session/%s%s" % (self.session, path)

    def goto(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def find(self, css):
        return self.call("POST", self.s("/element"), {"using": "css selector", "value": css})[self.ELEMENT]

    def type_into(self, css, text):
        self.call("POST", self.s("/element/%s/value" % self.find(css)), {"text": text})

    def click(self, css):
        self.call("POST", self.s("/element/%s/click" % self.find(css)), {})

    def submit(self, css):
        """Clicks a form's button and waits for the new page's load event
        (a click can return before a slow POST's page arrives)."""
        self.run("window.__pivault_old_page = true;")
        self.click(css)
        deadline = time.monotonic() + 600
        while not self.run("""return window.__pivault_old_page === undefined
                   && document.readyState === 'complete'
                   && performance.getEntriesByType('navigation')[0].loadEventEnd > 0;"""):
            if time.monotonic() > deadline:
                raise RuntimeError("no new page after clicking " + css)
            time.sleep(0.02)

    def run(self, script):
        return self.call("POST", self.s("/execute/sync"), {"script": script, "args": []})

    def title(self):
        return self.call("GET", self.s("/title"))

    def timing(self):
        """The last navigation's timing and weight, read after its load event."""
        return self.run("""
            const n = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            return { ttfb: n.responseStart - n.requestStart, load: n.loadEventEnd - n.startTime,
                     html: n.decodedBodySize,
                     sub: res.reduce((a, r) => a + r.decodedBodySize, 0),
                     subs: res.map(r => r.name.replace(location.origin, '')),
                     title: document.title,
                     alert: (document.querySelector('[role=alert]') || {}).textContent || '',
                     status: Array.from(document.querySelectorAll('[role=status], dl dd[id^=count]'))
                                  .map(e => (e.id ? e.id + '=' : '') + e.textContent).join(' | ') };""")

    def quit(self):
        try:
            self.call("DELETE", self.s(""))
        finally:
            self.driver.terminate()


def css_bytes(fx):
    """The size of the pages' one sub-resource, the style sheet."""
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(fx.work, "server.crt"))
    with urllib.request.urlopen(fx.url + "/ui/style.css", context=ctx, timeout=30) as r:
        return len(r.read())


def sign_in(b, fx, user):
    b.goto(fx.url + "/ui/")
    b.type_into("#username", user)
    b.type_into("#password", fx.passwords[user])
    b.submit("button[type=submit]")
    assert b.title() == "Home · pivault", "%s did not sign in: %s" % (user, b.title())


def measure(label, rounds, step, expect_title):
    """Runs `step` (which ends on the measured page) `rounds` times."""
    samples = []
    for _ in range(rounds):
        t = step()
        if t["title"] != expect_title:
            raise SystemExit("%s: landed on %r, not %r: %s" % (label, t["title"], expect_title, t["alert"]))
        if t["alert"]:
            raise SystemExit("%s: the page says %r" % (label, t["alert"]))
        samples.append(t)
    return label, samples


def median(samples, key):
    return statistics.median(s[key] for s in samples)


def p95(samples, key):
    xs = sorted(s[key] for s in samples)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main():
    for tool in ["chromedriver", "/usr/bin/chromium"]:
        if not shutil.which(tool):
            raise SystemExit("%s is missing: run scripts/setup.sh" % tool)
    if not (os.access(P, os.X_OK) and os.access(SERVER, os.X_OK)):
        raise SystemExit("build first: cargo build --workspace --all-targets (looked in %s)" % BIN_DIR)
    work = tempfile.mkdtemp(prefix="pivault-web-bench-")
    fx = Fixture(work)
    b = None
    try:
        fx.create(N)
        fx.start()
        b = Browser(work)
        results = []

        # Baseline: the sign-in page, signed out (reads no record).
        def sign_in_page():
            b.goto(fx.url + "/ui/")
            return b.timing()
        results.append(measure("sign-in page (baseline)", ROUNDS, sign_in_page, "Sign in · pivault"))

        sign_in(b, fx, "clerk")

        def customer_page():
            b.goto(fx.url + "/ui/find")
            b.click("option[value=ssn]")
            b.type_into("#value", fx.ssn)
            b.submit("main form button[type=submit]")
            return b.timing()
        results.append(measure("customer page (find by SSN, 1 record)", ROUNDS, customer_page,
                               "Find a customer · pivault"))

        def customer_page_many():
            b.goto(fx.url + "/ui/find")
            b.click("option[value=name]")
            b.type_into("#value", RARE)
            b.submit("main form button[type=submit]")
            return b.timing()
        results.append(measure("customer page (find by name, ~%d records)" % len(range(0, N, RARE_EVERY)),
                               ROUNDS, customer_page_many, "Find a customer · pivault"))

        # The officer's disposal preview: one customer, and the whole collection.
        b.quit()
        b = Browser(work)
        sign_in(b, fx, "officer")

        def preview(scope, target):
            def step():
                b.goto(fx.url + "/ui/disposals")
                b.click("option[value=%s]" % scope)
                b.type_into("#target", target)
                b.type_into("#data_owner", "Bench Hardware LLC")
                b.submit("main form button[type=submit]")
                return b.timing()
            return step
        results.append(measure("disposal preview (one customer)", ROUNDS,
                               preview("subject", fx.subject), "Dispose: preview · pivault"))
        results.append(measure("disposal preview (whole collection, %d records)" % N,
                               max(3, ROUNDS // 3), preview("collection", "customers"),
                               "Dispose: preview · pivault"))

        css = css_bytes(fx)
        base_ttfb = median(results[0][1], "ttfb")
        base_load = median(results[0][1], "load")
        print("# pivault web pages, %s, %d cores, %d records, binaries from %s, %d rounds" % (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.cpu_count(), N,
            os.path.relpath(BIN_DIR, ROOT), ROUNDS))
        print("%-50s %10s %10s %10s %10s %9s %9s %8s %8s" % (
            "page", "ttfb p50", "ttfb p95", "load p50", "load p95", "html", "total", "ttfb ×", "load ×"))
        for label, s in results:
            html = max(x["html"] for x in s)
            total = html + css
            print("%-50s %8.1fms %8.1fms %8.1fms %8.1fms %7.1fKB %7.1fKB %8.2f %8.2f" % (
                label, median(s, "ttfb"), p95(s, "ttfb"), median(s, "load"), p95(s, "load"),
                html / 1000, total / 1000, median(s, "ttfb") / base_ttfb, median(s, "load") / base_load))
        for label, s in results:
            print("  %s: %s" % (label, s[-1]["status"] or "(no status line)"))
        print("(× = the page's median over the sign-in page's median, same run; total = HTML + every "
              "sub-resource (the style sheet, %d bytes; QR images are inline), decoded; sub-resources the "
              "browser loaded: %s)" % (css, sorted({r for _, s in results for x in s for r in x["subs"]})))
    finally:
        if b is not None:
            b.quit()
        if getattr(fx, "server", None) is not None:
            fx.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
