# SPDX-License-Identifier: MIT
"""The protocol's timings agree wherever they are written.

transport/timing.h holds them (ZP__NAME_MS, in milliseconds) for the C
coordinator and worker; python/zpipe_worker/_timing.py holds the Python
worker's copy of those a worker needs (NAME_MS); docs/protocol.md states
them all in its table of timings (a row naming `ZP__NAME_MS`, its value in
ms or s). This fails, naming each difference, when a number in one of them
is not the header's, when the header has a timing the table lacks, when
the Python worker keeps a timing the header does not have, or when another
module of the Python worker writes a timing as a number of its own.

Usage: timing_test.py [SOURCE_DIR]   (default: the checkout holding it)
"""

import importlib.util
import os
import re
import sys


def header_timings(path):
    """{'HEARTBEAT': 1000, ...} from the header's #define lines."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"^#define ZP__(\w+)_MS (\d+)\s*$", text, re.M)
    return {name: int(ms) for name, ms in found}


def python_timings(path):
    """The NAME_MS constants of the Python worker's module, imported from
    its file alone (the package's __init__ needs zmq; this does not)."""
    sys.dont_write_bytecode = True  # nothing written into the sources
    spec = importlib.util.spec_from_file_location("zp_timing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name[:-3]: value for name, value in vars(module).items()
            if name.endswith("_MS") and isinstance(value, int)}


def doc_timings(path):
    """{'HEARTBEAT': 1000, ...} from the rows of the docs' table that name
    a `ZP__NAME_MS` constant, with a value such as `1 s` or `50 ms`."""
    unit = {"ms": 1, "s": 1000}
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            names = [re.fullmatch(r"`ZP__(\w+)_MS`", c) for c in cells]
            names = [m.group(1) for m in names if m]
            values = [re.fullmatch(r"(\d+(?:\.\d+)?) (ms|s)", c)
                      for c in cells]
            values = [m for m in values if m]
            if line.startswith("|") and names and values:
                v = values[0]
                found[names[0]] = round(float(v.group(1)) * unit[v.group(2)])
    return found


def python_literals(package):
    """Timings written as numbers elsewhere in the Python package than
    _timing.py, such as `SILENCE_S = 10.0`: each is a second copy."""
    out = []
    for name in sorted(os.listdir(package)):
        if not name.endswith(".py") or name == "_timing.py":
            continue
        with open(os.path.join(package, name), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if re.match(r"(HEARTBEAT|SILENCE|DEAD)\w* = [\d.]+\s*(#|$)",
                            line):
                    out.append(f"{name}:{n} writes a timing of its own: "
                               f"{line.strip()} (take it from _timing.py)")
    return out


def differences(header, python, doc):
    """What disagrees, one sentence each."""
    out = []
    if not header:
        out.append("transport/timing.h defines no ZP__*_MS timing")
    for name, ms in sorted(header.items()):
        if name not in doc:
            out.append(f"docs/protocol.md has no row for ZP__{name}_MS")
        elif doc[name] != ms:
            out.append(f"docs/protocol.md says {doc[name]} ms for "
                       f"ZP__{name}_MS, transport/timing.h {ms} ms")
    for name in sorted(set(doc) - set(header)):
        out.append(f"docs/protocol.md names ZP__{name}_MS, which "
                   f"transport/timing.h does not define")
    for name, ms in sorted(python.items()):
        if name not in header:
            out.append(f"_timing.py's {name}_MS is not in transport/timing.h")
        elif header[name] != ms:
            out.append(f"_timing.py says {name}_MS = {ms}, "
                       f"transport/timing.h {header[name]}")
    for name in ("HEARTBEAT", "SILENCE"):  # the rules a worker keeps
        if name not in python:
            out.append(f"_timing.py lacks {name}_MS")
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(here)
    header = header_timings(os.path.join(root, "transport", "timing.h"))
    python = python_timings(
        os.path.join(root, "python", "zpipe_worker", "_timing.py"))
    doc = doc_timings(os.path.join(root, "docs", "protocol.md"))
    wrong = differences(header, python, doc) + python_literals(
        os.path.join(root, "python", "zpipe_worker"))
    for sentence in wrong:
        print(f"timing_test: {sentence}", file=sys.stderr)
    if wrong:
        return 1
    print(f"timing_test: {len(header)} timings agree: "
          + ", ".join(f"{n} {ms} ms" for n, ms in sorted(header.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
