"""One guest boot: start QEMU, read its serial console line by line (timestamped into the log),
answer the guest's hot-plug cues over QMP, collect CHECK lines, exported files and the verdict,
and stop the guest on its verdict, a kernel panic or the timeout.

Guest -> host protocol (one line each, on the serial console):
  VMTEST-INIT ...                       /init started (its time is the boot time)
  CHECK NAME PASS|FAIL [detail]         one check
  VMTEST-CUE COMMAND [JSON-ARGS]        run a QMP command; the host answers on the guest's
                                        serial input with `VMTEST-ACK ok|error MESSAGE`
  VMTEST-FILE NAME / base64 lines / VMTEST-FILE-END NAME SHA256   a file for the host
  VMTEST-VERDICT PASS|FAIL [detail]     the guest's own verdict, right before poweroff
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHECK_RE = re.compile(r"^CHECK (\S+) (PASS|FAIL)(?: (.*))?$")
B64_RE = re.compile(r"^[A-Za-z0-9+/=]+$")
PANIC_MARKERS = ("Kernel panic", "---[ end Kernel panic")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class BootResult:
    checks: list[Check] = field(default_factory=list)
    verdict: str | None = None
    verdict_detail: str = ""
    problem: str | None = None  # timeout, panic, qemu died, protocol error
    seconds: float = 0.0
    init_seconds: float | None = None
    kernel_line: str = ""
    exit_code: int | None = None


class Qmp:
    """A minimal QMP client on a unix socket."""

    def __init__(self, path: Path, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, arguments: dict | None = None) -> dict:
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply or "error" in reply:
                return reply

    def close(self) -> None:
        self.sock.close()


def boot(cmd: list[str], qmp_path: Path, log_path: Path, artifacts: Path,
         timeout: float) -> BootResult:
    res = BootResult()
    start = time.monotonic()
    log = open(log_path, "w", buffering=1)
    log.write(f"# {' '.join(cmd)}\n")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines: queue.Queue = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    qmp: Qmp | None = None
    export: tuple[str, list[str]] | None = None
    panic_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now - start > timeout:
                res.problem = f"timeout after {timeout:.0f} s"
                break
            if panic_at is not None and now - panic_at > 1.0:
                break
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            t = time.monotonic() - start
            log.write(f"[{t:8.3f}] {line}\n")
            if any(m in line for m in PANIC_MARKERS) and panic_at is None:
                res.problem = "kernel panic"
                panic_at = time.monotonic()
                continue
            if export is not None:
                if line.startswith("VMTEST-FILE-END "):
                    name, data_lines = export
                    export = None
                    parts = line.split()
                    try:
                        data = base64.b64decode("".join(data_lines))
                    except binascii.Error as e:
                        res.checks.append(Check(f"export-{name}", False, f"bad base64: {e}"))
                        continue
                    digest = hashlib.sha256(data).hexdigest()
                    if len(parts) < 3 or parts[2] != digest:
                        res.checks.append(Check(f"export-{name}", False,
                                                "sha256 mismatch (console noise inside the block?)"))
                        continue
                    (artifacts / name).write_bytes(data)
                elif B64_RE.match(line):
                    export[1].append(line)
                continue
            if line.startswith("VMTEST-INIT"):
                res.init_seconds = t
                res.kernel_line = line
            elif m := CHECK_RE.match(line):
                res.checks.append(Check(m.group(1), m.group(2) == "PASS", m.group(3) or ""))
            elif line.startswith("VMTEST-FILE "):
                name = os.path.basename(line.split(maxsplit=1)[1].strip())
                export = (name, [])
            elif line.startswith("VMTEST-CUE "):
                parts = line.split(maxsplit=2)
                args = {}
                try:
                    if len(parts) > 2:
                        args = json.loads(parts[2])
                    if qmp is None:
                        qmp = Qmp(qmp_path)
                    reply = qmp.execute(parts[1], args)
                    if "error" in reply:
                        ack = f"VMTEST-ACK error {reply['error'].get('desc', reply['error'])}"
                    else:
                        ack = "VMTEST-ACK ok"
                except (OSError, ValueError) as e:
                    ack = f"VMTEST-ACK error {e}"
                log.write(f"[{time.monotonic() - start:8.3f}] (host) {ack}\n")
                assert proc.stdin is not None
                try:
                    proc.stdin.write(ack.encode() + b"\n")
                    proc.stdin.flush()
                except OSError:
                    pass
            elif line.startswith("VMTEST-VERDICT "):
                parts = line.split(maxsplit=2)
                res.verdict = parts[1]
                res.verdict_detail = parts[2] if len(parts) > 2 else ""
    finally:
        if qmp is not None:
            qmp.close()
        if proc.poll() is None:
            # the guest powers off right after its verdict; give it a moment, then kill it
            try:
                proc.wait(timeout=3 if res.problem is None else 0.1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        res.exit_code = proc.returncode
        res.seconds = time.monotonic() - start
        log.write(f"# qemu exit {proc.returncode} after {res.seconds:.2f} s\n")
        log.close()
    if res.problem is None and res.verdict is None:
        res.problem = f"qemu exited ({res.exit_code}) without a verdict"
    return res
