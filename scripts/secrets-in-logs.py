#!/usr/bin/env python3
"""Finds secrets in the logs of a test run: Weft tokens and private keys.

Usage: scripts/secrets-in-logs.py [--max-mb N] PATH [PATH ...]
       (files, or directories read recursively; scripts/test.sh passes the run's
       WEFT_TEST_LOG_DIR and nextest's JUnit report; with --max-mb, more than N MB in all
       fails too: logs that grew without bound)
       scripts/secrets-in-logs.py --self-test   (checks the patterns and the masking)

What counts as a secret (one pattern per kind, matched on the format, never on a fixed value):
  token        a bearer token as `new_token` makes it (services/runtime/src/access.rs):
               `weft_` and 64 lower-case hex digits.
  join token   a one-time join token as `new_join_token` makes it: `weftjoin_`, 64 lower-case
               hex digits (the secret), `.` and the CA's fingerprint (public).
  private key  `PRIVATE KEY`, as in a PEM block's `-----BEGIN ... PRIVATE KEY-----` line.

Prints `file:line: kind: context` for every line holding one, with the secret masked (a token
keeps its first four hex digits; a line is cut right after `PRIVATE KEY`, so no key material
is printed), and exits 1; exits 0 when there is none, 2 on bad usage, a missing path or a
directory holding no file (logs that were not kept would pass unread). Python 3 standard library
only.
"""

from __future__ import annotations

import os
import re
import sys

TOKEN = re.compile(rb"weft_[0-9a-f]{64}")
JOIN_TOKEN = re.compile(rb"weftjoin_[0-9a-f]{64}")
PRIVATE_KEY = re.compile(rb"PRIVATE KEY")
PATTERNS: list[tuple[str, re.Pattern[bytes]]] = [
    ("token", TOKEN),
    ("join token", JOIN_TOKEN),
    ("private key", PRIVATE_KEY),
]
# Cheap test before the regular expressions: a line without these bytes holds no secret.
NEEDLES = (b"weft_", b"weftjoin_", b"PRIVATE KEY")
# Lines shown per file; the rest are counted.
SHOWN_PER_FILE = 20
# Characters of context shown before a hit.
CONTEXT = 80


def mask_tokens(line: bytes) -> bytes:
    line = TOKEN.sub(lambda m: m.group(0)[:9] + b"...(masked)", line)
    return JOIN_TOKEN.sub(lambda m: m.group(0)[:13] + b"...(masked)", line)


def shown(line: bytes, start: int) -> str:
    """The line around a hit at `start`, every token masked and nothing after a private key's
    marker."""
    key = PRIVATE_KEY.search(line)
    if key:
        line = line[: key.end()] + b"...(cut)"
    before = line[:start]
    line = mask_tokens(before[-CONTEXT:]) + mask_tokens(line[start:])
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return text[: CONTEXT + 120]


def scan_file(path: str) -> list[str]:
    """Every secret in the file at `path`, one report line each."""
    found: list[str] = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not any(n in line for n in NEEDLES):
                continue
            for kind, pattern in PATTERNS:
                m = pattern.search(line)
                if m:
                    found.append(f"{path}:{number}: {kind}: {shown(line, m.start())}")
    return found


def files_under(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    out = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def check(paths: list[str], out=sys.stdout, err=sys.stderr, max_mb: float | None = None) -> int:
    files: list[str] = []
    for p in paths:
        if not os.path.exists(p):
            print(f"{p}: no such file or directory", file=err)
            return 2
        under = files_under(p)
        if not under:
            print(f"{p}: holds no file (were the logs kept?)", file=err)
            return 2
        files.extend(under)
    hits = 0
    size = 0
    in_files = 0
    for path in files:
        size += os.path.getsize(path)
        found = scan_file(path)
        if not found:
            continue
        hits += len(found)
        in_files += 1
        for line in found[:SHOWN_PER_FILE]:
            print(line, file=out)
        if len(found) > SHOWN_PER_FILE:
            print(f"{path}: ... and {len(found) - SHOWN_PER_FILE} more lines", file=out)
    summary = f"{len(files)} files, {size / 1e6:.1f} MB"
    too_big = max_mb is not None and size > max_mb * 1e6
    if too_big:
        print(f"secrets-in-logs: {summary}: more than the {max_mb:g} MB allowed", file=err)
    if hits:
        print(f"secrets-in-logs: {hits} lines with a secret in {in_files} of {summary}", file=err)
        return 1
    print(f"secrets-in-logs: no secret in {summary}", file=err)
    return 1 if too_big else 0


def self_test() -> int:
    """Checks the patterns and the masking on files of its own; 0 when it passes."""
    import io
    import secrets
    import tempfile

    token = "weft_" + secrets.token_hex(32)
    join = "weftjoin_" + secrets.token_hex(32) + "." + secrets.token_hex(32)
    material = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg" + secrets.token_hex(8)
    cases = {
        # (text, lines that must be reported)
        "svc/a.log": (f"INFO start\nWARN call with authorization: Bearer {token} refused\n", [2]),
        "svc/pem.log": (f"x\n-----BEGIN PRIVATE KEY-----\n{material}\n-----END PRIVATE KEY-----\n", [2, 4]),
        "json.log": ('{"message":"key","k":"-----BEGIN EC PRIVATE KEY-----\\n' + material + '"}\n', [1]),
        "junit.xml": (f"<system-out>token={token}&amp;x</system-out>\n", [1]),
        "join.log": (f"a\nb\nweft up --join-token {join}\n", [3]),
        "near-misses.log": (
            "\n".join(
                [
                    "weft_" + "a" * 63 + " (too short)",
                    "weft_" + "A" * 64 + " (upper case)",
                    secrets.token_hex(32) + " (a token hash)",
                    "weft_t_" + secrets.token_hex(16) + " (a test database)",
                    "no private key here",
                ]
            )
            + "\n",
            [],
        ),
    }
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (text, _) in cases.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        report = io.StringIO()
        code = check([tmp], out=report, err=io.StringIO())
        got = report.getvalue()
        if code != 1:
            problems.append(f"exit {code}, expected 1")
        for name, (_, lines) in cases.items():
            path = os.path.join(tmp, name)
            reported = sorted(
                int(r[len(path) + 1 :].split(":", 1)[0]) for r in got.splitlines() if r.startswith(path + ":")
            )
            if reported != lines:
                problems.append(f"{name}: reported lines {reported}, expected {lines}")
        if token in got or token[5:] in got or material in got or join[9:73] in got:
            problems.append("a secret was printed unmasked")
        if "weft_" + token[5:9] + "...(masked)" not in got:
            problems.append("no masked token in the report")
        os.makedirs(os.path.join(tmp, "empty"))
        if check([os.path.join(tmp, "empty")], out=io.StringIO(), err=io.StringIO()) != 2:
            problems.append("an empty directory passed")
        if check([os.path.join(tmp, "near-misses.log")], out=io.StringIO(), err=io.StringIO()) != 0:
            problems.append("the near misses failed")
        near = [os.path.join(tmp, "near-misses.log")]
        if check(near, out=io.StringIO(), err=io.StringIO(), max_mb=0.0001) != 1:
            problems.append("logs over --max-mb passed")
    if problems:
        print("self-test failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("self-test passed")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        return self_test()
    max_mb = None
    if argv[:1] == ["--max-mb"] and len(argv) > 1:
        try:
            max_mb = float(argv[1])
        except ValueError:
            argv = ["-"]
        else:
            argv = argv[2:]
    if not argv or any(a.startswith("-") for a in argv):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    return check(argv, max_mb=max_mb)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
