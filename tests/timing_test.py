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


def mismatches(where, copy, header, needed):
    """How `copy` ({name: ms}, read from `where`) differs from the header:
    a number that is not the header's, a name the header lacks, a name of
    `needed` the copy lacks."""
    out = []
    for name, ms in sorted(copy.items()):
        if name not in header:
            out.append(f"{where} names {name} ({ms} ms), which "
                       f"transport/timing.h does not define")
        elif header[name] != ms:
            out.append(f"{where} says {ms} ms for {name}, "
                       f"transport/timing.h {header[name]} ms")
    out += [f"{where} lacks {name} ({header[name]} ms in transport/timing.h)"
            for name in sorted(needed) if name not in copy]
    return out


def differences(header, python, doc):
    """What disagrees, one sentence each: the table must have every timing
    of the header, the Python worker those a worker keeps."""
    out = [] if header else ["transport/timing.h defines no ZP__*_MS timing"]
    out += mismatches("docs/protocol.md's table", doc, header, header)
    out += mismatches("python/zpipe_worker/_timing.py", python, header,
                      {"HEARTBEAT", "SILENCE"})
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
