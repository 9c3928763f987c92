#!/usr/bin/env python3
"""Starts each `bootstrap` that `sam build` made and gives it one invocation, as Lambda would.

The artifacts are aarch64 executables; on another host they run under qemu-user with the aarch64 glibc of
Debian's cross packages (scripts/sam-build installs both). Each function is run against a stand-in Lambda
Runtime API on loopback:

1. with a required setting missing, it must exit non-zero and name the setting (never start half-configured);
2. with its settings (test keys from shared/3-adapters/alipay/tests/fixtures; AWS endpoint a closed port, so any AWS call
   would fail the case), it must reach GET /runtime/invocation/next, take one event from events/ and post the
   answer the function owes for it -- each one decided before any AWS call:
   - alipay-notify: the fixture notification with its amount changed after signing -> 400 "fail"
     (RSA2 verification by aws-lc on arm64);
   - device-api: the fixture purchase with its old timestamp -> 401 stale_timestamp;
   - qr-provision: an admin request without API Gateway's IAM identity -> 401 unauthorized;
   - deadline, refund-executor: an SQS record whose body is not a message -> acknowledged (no batch item
     failure; a poison record must not loop);
   - analytics-export: a DynamoDB stream INSERT of a facts item whose facts are not JSON -> acknowledged, with
     the unreadable_fact log line (no Firehose call: nothing readable to send).

Prints the time from spawn to the first GET /next per function (under emulation: not Lambda's cold start).
"""
import base64
import copy
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from check_build import rust_functions, load, TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
KEYS = ROOT / "shared" / "3-adapters" / "alipay" / "tests" / "fixtures"
TIMEOUT = 120  # seconds per step; qemu is slow to start a 5 MB binary on a loaded 2-core machine


def runner(native):
    """How to run an aarch64 executable here (`--native`: the build dir holds host binaries)."""
    if native or platform.machine() in ("aarch64", "arm64"):
        return []
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    sysroot = "/usr/aarch64-linux-gnu"
    if not qemu or not os.path.exists(os.path.join(sysroot, "lib", "ld-linux-aarch64.so.1")):
        sys.exit("smoke_bootstrap: needs qemu-aarch64 and the aarch64 glibc in /usr/aarch64-linux-gnu "
                 "(Debian: qemu-user libc6-arm64-cross)")
    return [qemu, "-L", sysroot]


def settings(binary):
    """Valid values for every setting the function reads (infra/function-env.json)."""
    names = json.loads((ROOT / "infra" / "function-env.json").read_text())["functions"][binary]
    closed = "http://127.0.0.1:9"
    values = {
        "TABLE_NAME": "vendpay-smoke",
        "PAY_FIRST_WINDOW_SECS": "300",
        "PURCHASE_FIRST_WINDOW_SECS": "25",
        "ORDER_PAYMENT_WINDOW_SECS": "120",
        "RUST_LOG": "info",
        "DEADLINE_QUEUE_URL": f"{closed}/123456789012/vendpay-deadlines",
        "REFUND_QUEUE_URL": f"{closed}/123456789012/vendpay-refunds",
        "DEVICE_EVENTS_QUEUE_URL": f"{closed}/123456789012/vendpay-device-events",
        # All three or none: with none, long windows are refused rather than scheduled.
        "DEADLINE_QUEUE_ARN": "",
        "SCHEDULER_ROLE_ARN": "",
        "SCHEDULE_GROUP_NAME": "",
        "DEVICE_KEY": "11" * 32,
        "ANALYTICS_KEY": "22" * 32,
        "PUBLIC_BASE_URL": "https://abc123.execute-api.us-east-1.amazonaws.com",
        "ALIPAY_GATEWAY_URL": f"{closed}/gateway.do",
        "ALIPAY_PARTNER_ID": "2088101122136241",
        "ALIPAY_SIGN_TYPE": "RSA2",
        "ALIPAY_PRIVATE_KEY": (KEYS / "test-merchant-private-key.pem").read_text(),
        "ALIPAY_PUBLIC_KEY": (KEYS / "test-alipay-public-key.pem").read_text(),
        "ALIPAY_MD5_KEY": "",
        "ALIPAY_NOTIFY_VERIFY": "false",
        "ALIPAY_SECONDARY_MERCHANT_ID": "vendpay_smoke",
        "ALIPAY_SECONDARY_MERCHANT_NAME": "vendpay smoke",
        "ALIPAY_MERCHANT_INDUSTRY": "5499",
        "ALIPAY_SETTLEMENT_CURRENCY": "CNY",
        "ALIPAY_COUNTRY_CODE": "CN",
        "FIREHOSE_STREAM_NAME": "vendpay-smoke-facts",
    }
    return {name: values[name] for name in names if values.get(name)}


def tampered_notification():
    event = json.loads((EVENTS / "alipay-notify.json").read_text())
    form = base64.b64decode(event["body"]).decode()
    assert "total_fee=10.00&" in form, "the fixture notification changed; update the smoke case"
    event["body"] = base64.b64encode(form.replace("total_fee=10.00&", "total_fee=1000.00&").encode()).decode()
    return event


def without_iam(name):
    event = json.loads((EVENTS / name).read_text())
    event["requestContext"].pop("authorizer", None)
    return event


def poison_record(name):
    event = json.loads((EVENTS / name).read_text())
    event["Records"] = [copy.deepcopy(event["Records"][0])]
    event["Records"][0]["body"] = "this is not a message"
    return event


def unreadable_facts():
    event = json.loads((EVENTS / "analytics-export-stream.json").read_text())
    record = copy.deepcopy(event["Records"][0])
    assert record["eventName"] == "INSERT", "the fixture's first record changed; update the smoke case"
    record["dynamodb"]["NewImage"]["facts"] = {"S": "these are not facts"}
    event["Records"] = [record]
    return event


def http_answer(status, code):
    def check(answer):
        got = (answer.get("statusCode"), answer.get("body"))
        body = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        if answer.get("statusCode") != status or code not in body:
            return f"wanted {status} with {code!r}, got {got}"
        return None
    return check


def acknowledged(answer):
    if answer.get("batchItemFailures") != []:
        return f"wanted the poison record acknowledged (no batchItemFailures), got {answer}"
    return None


# binary -> ([(event, the answer it owes)], a setting it cannot start without, the alert filter its log must hit)
CASES = {
    "alipay-notify": ([(tampered_notification, http_answer(400, "fail"))], "TABLE_NAME", None),
    "device-api": (
        [
            (lambda: json.loads((EVENTS / "device-purchase.json").read_text()), http_answer(401, "stale_timestamp")),
            (lambda: poison_record("device-events-sqs.json"), acknowledged),
        ],
        "DEVICE_KEY",
        "DeviceEventRefusedFilter",
    ),
    "qr-provision": ([(lambda: without_iam("admin-get-device.json"), http_answer(401, "unauthorized"))], "ALIPAY_PRIVATE_KEY", None),
    "deadline": ([(lambda: poison_record("deadline-sqs.json"), acknowledged)], "TABLE_NAME", "DeadlineMessageRefusedFilter"),
    "refund-executor": ([(lambda: poison_record("refund-sqs.json"), acknowledged)], "REFUND_QUEUE_URL", "RefundMessageRefusedFilter"),
    "analytics-export": ([(unreadable_facts, acknowledged)], "FIREHOSE_STREAM_NAME", "UnreadableFactFilter"),
}

def metric_filter_matches(pattern, output):
    """Whether a JSON log line of `output` matches a CloudWatch pattern of the form { $.a.b = "value" }."""
    m = re.fullmatch(r'\{\s*\$((?:\.\w+)+)\s*=\s*"([^"]*)"\s*\}', pattern.strip())
    if not m:
        raise ValueError(f"cannot evaluate the metric filter pattern {pattern!r}")
    path, value = m.group(1).split(".")[1:], m.group(2)
    for line in output.splitlines():
        try:
            node = json.loads(line)
        except ValueError:
            continue
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node == value:
            return True
    return False


# The errorType an event of the wrong kind gets: deadline and device-api classify events themselves
# (vendpay_lambda::InvocationError); the others are typed (API Gateway request, SQS batch) and the
# runtime refuses the payload before the handler, with its own type name.
UNEXPECTED = {
    "alipay-notify": "&lambda_runtime::deserializer::DeserializeError",
    "qr-provision": "&lambda_runtime::deserializer::DeserializeError",
    "refund-executor": "&lambda_runtime::deserializer::DeserializeError",
    "analytics-export": "&lambda_runtime::deserializer::DeserializeError",
    "deadline": "UnrecognisedEvent",
    "device-api": "UnrecognisedEvent",
}


class RuntimeApi:
    """The Lambda Runtime API, enough of it for one invocation."""

    def __init__(self, *events):
        self.events = [json.dumps(event).encode() for event in events]
        self.first_next = None
        self.outcomes = []  # ("response" | "error", decoded JSON body), one per invocation
        self.done = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                if api.first_next is None:
                    api.first_next = time.monotonic()
                served = len(api.outcomes)
                if served < len(api.events) and not api.done.is_set():
                    event = api.events[served]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Lambda-Runtime-Aws-Request-Id", f"smoke-{served + 1}")
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:smoke")
                    self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                    self.send_header("Content-Length", str(len(event)))
                    self.end_headers()
                    self.wfile.write(event)
                else:  # the next invocation never comes; the test kills the process
                    api.done.wait(TIMEOUT)
                    try:
                        self.send_error(503)
                    except OSError:  # the process is gone already
                        pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = "response" if self.path.endswith("/response") else "error"
                try:
                    decoded = json.loads(body or b"null")
                except ValueError:
                    decoded = body.decode("utf-8", "replace")
                api.outcomes.append((kind, decoded))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if len(api.outcomes) >= len(api.events):
                    api.done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.done.set()
        self.server.shutdown()


def base_env(api_address, binary):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "AWS_LAMBDA_FUNCTION_NAME": binary,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "smoke",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{binary}",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIASMOKE",
        "AWS_SECRET_ACCESS_KEY": "smoke",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run_case(run, path, binary):
    owed, required, alert_filter = CASES[binary]
    unexpected = UNEXPECTED[binary]
    problems = []

    # 1. A required setting missing: refuse to start, naming it.
    api = RuntimeApi({})
    env = base_env(api.address, binary) | settings(binary)
    env.pop(required, None)
    try:
        done = subprocess.run(run + [path], env=env, capture_output=True, text=True, timeout=TIMEOUT)
        output = done.stdout + done.stderr
        if done.returncode == 0 or required not in output:
            problems.append(f"without {required}: exit {done.returncode}, output {output[-400:]!r}")
        if api.first_next is not None:
            problems.append(f"without {required}: it asked for an invocation anyway")
    except subprocess.TimeoutExpired:
        problems.append(f"without {required}: still running after {TIMEOUT} s")
    finally:
        api.close()

    # 2. Configured: ready, one invocation, the owed answer; then an event it is not wired to, which must
    #    fail the invocation with the named errorType (never a crash, never a silent success).
    api = RuntimeApi(*[make() for make, _ in owed], {"unexpected": "event"})
    env = base_env(api.address, binary) | settings(binary)
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        proc = subprocess.Popen(run + [path], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not api.done.wait(TIMEOUT):
                problems.append(f"{len(api.outcomes)} of {len(owed) + 1} answers within {TIMEOUT} s (exit code {proc.poll()})")
            for (kind, body), (_, check) in zip(api.outcomes, owed):
                wrong = f"reported an error: {body}" if kind != "response" else check(body)
                if wrong:
                    problems.append(wrong)
            if len(api.outcomes) > len(owed):
                kind, body = api.outcomes[len(owed)]
                if kind != "error" or not isinstance(body, dict) or body.get("errorType") != unexpected:
                    problems.append(f"an unexpected event: wanted an invocation error {unexpected}, got {kind} {body}")
        finally:
            proc.kill()
            proc.wait()
            api.close()
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    # The alarm sees what the template's metric filter sees in the function's JSON log lines.
    if alert_filter:
        pattern = load(TEMPLATE)["Resources"][alert_filter]["Properties"]["FilterPattern"]
        if not metric_filter_matches(pattern, output):
            problems.append(f"no log line matches {alert_filter}'s pattern {pattern}")
    ready = None if api.first_next is None else (api.first_next - started) * 1000
    if problems:
        problems.append(f"its output: {output[-1500:]}")
    return ready, problems


def main():
    args = [a for a in sys.argv[1:] if a != "--native"]
    if len(args) != 1:
        sys.exit(f"usage: {sys.argv[0]} [--native] BUILD_DIR")
    build_dir = args[0]
    run = runner("--native" in sys.argv[1:])
    functions = rust_functions(load(TEMPLATE))
    if sorted(functions.values()) != sorted(CASES):
        sys.exit(f"smoke_bootstrap: the template's functions {sorted(functions.values())} are not the cases {sorted(CASES)}")
    failed = 0
    for logical_id, binary in sorted(functions.items(), key=lambda kv: kv[1]):
        ready, problems = run_case(run, os.path.join(build_dir, logical_id, "bootstrap"), binary)
        shown = "not ready" if ready is None else f"ready in {ready:6.0f} ms"
        print(f"  {binary:16} {shown}{' (qemu)' if run else ''}  {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"    {problem}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
