# SPDX-License-Identifier: MIT
"""`python3 -m zpipe_worker`: the command line, as `zpipe worker` has it
(cli/worker.c): the same options, the same environment variables, the
same exit statuses (0 after a clean end, 2 a usage or configuration error).
"""

import argparse
import importlib
import importlib.util
import os
import sys
import traceback

import zmq

from . import _keys
from ._proto import MAX_TASKS
from ._serve import Worker
from ._tasks import registry

PROG = "python3 -m zpipe_worker"

HELP = f"""\
usage: {PROG} --connect ENDPOINT --module FILE.py [OPTION]...

Serves the tasks of Python modules (functions decorated with
@zpipe_worker.task) to the mode=remote stages of the coordinator at
ENDPOINT, a `zpipe run --listen`, as `zpipe worker` serves those of
plugins. It waits for the coordinator to come, stays for its next runs,
and ends on SIGINT or SIGTERM (telling the coordinator, which sends its
items elsewhere at once; the calls running may end first, unless a second
signal comes), or when the coordinator tells it to.

options:
  --connect ENDPOINT    the coordinator, such as tcp://host:5555
                        (default: $ZPIPE_WORKER)
  --module FILE.py      load the tasks of this Python file, or of this
                        importable module (a dotted name); repeatable
  --threads N           items run at once, 1 to 4096: threads for plain
                        and generator tasks, calls in flight on the
                        asyncio loop for async ones
                        (default: $ZPIPE_THREADS, or 1)
  --pool NAME           join the worker pool NAME, whose workers alone
                        serve the stages with pool=NAME; needs a
                        coordinator with worker pools
                        (default: $ZPIPE_POOL, or none)
  --curve-server FILE   CURVE: the coordinator's public key file, from
                        zpipe keygen (default: $ZPIPE_CURVE_SERVER)
  --curve-secret FILE   CURVE: this worker's secret key file, mode 0600 or
                        stricter (default: $ZPIPE_CURVE_SECRET)
  -h, --help            show this help

A task's exception fails its item with the text `TypeName: message`;
retries=N and on_error=skip of its stage apply as for C tasks.
docs/python.md has the details.

exit status: 0 after a clean end, 2 a usage or configuration error,
128+N when a second signal N ended it before its running calls returned.
"""


class UsageError(Exception):
    """A mistake on the command line or in what it names."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser():
    p = _Parser(prog=PROG, add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--connect")
    p.add_argument("--module", action="append", default=[])
    p.add_argument("--threads")
    p.add_argument("--pool")
    p.add_argument("--curve-server")
    p.add_argument("--curve-secret")
    return p


def _or_env(value, name):
    """A flag's value, or the environment variable's when the flag is
    absent (an empty variable counts as absent)."""
    return value if value is not None else os.environ.get(name) or None


def _threads(text):
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 4096):
        raise UsageError(f"bad value '{text}' for --threads: expected a "
                         f"whole number from 1 to 4096")
    return int(text)


def _load(name, loaded):
    """Imports a module file (a path ending in .py, or with a /) or an
    importable module, once; its @task functions register themselves."""
    if name.endswith(".py") or os.sep in name:
        path = os.path.realpath(name)
        if not os.path.isfile(path):
            raise UsageError(f"--module {name}: no such file")
        if path in loaded:
            return
        loaded.add(path)
        # Its neighbours are importable, as when it is run as a script.
        sys.path.insert(0, os.path.dirname(path))
        mod_name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(mod_name, module)
        spec.loader.exec_module(module)
    else:
        importlib.import_module(name)


def _load_all(names):
    loaded = set()
    for name in names:
        try:
            _load(name, loaded)
        except UsageError:
            raise
        except SystemExit as e:  # sys.exit() or exit() in its top level
            raise UsageError(f"cannot load module {name}: it exited at "
                             f"import (status {e.code!r})") from None
        except Exception:
            raise UsageError(f"cannot load module {name}:\n"
                             + traceback.format_exc().rstrip()) from None
    if not registry:
        raise UsageError("no tasks to serve: give --module FILE.py, a file "
                         "with functions decorated with @zpipe_worker.task")
    if len(registry) > MAX_TASKS:
        raise UsageError(f"{len(registry)} tasks, more than a worker may "
                         f"announce ({MAX_TASKS})")


def _config(argv):
    a = _parser().parse_args(argv)
    if a.help:
        return None
    a.connect = _or_env(a.connect, "ZPIPE_WORKER")
    a.threads = _or_env(a.threads, "ZPIPE_THREADS")
    a.pool = _or_env(a.pool, "ZPIPE_POOL")
    a.curve_server = _or_env(a.curve_server, "ZPIPE_CURVE_SERVER")
    a.curve_secret = _or_env(a.curve_secret, "ZPIPE_CURVE_SECRET")
    if a.connect is None:
        raise UsageError("--connect ENDPOINT is needed (or $ZPIPE_WORKER), "
                         "such as tcp://coordinator:5555")
    a.threads = _threads(a.threads) if a.threads is not None else 1
    if a.pool == "":
        raise UsageError("--pool needs a name")
    if (a.curve_server is None) != (a.curve_secret is None):
        has, lacks = (("--curve-server", "--curve-secret") if a.curve_server
                      else ("--curve-secret", "--curve-server"))
        raise UsageError(f"{has} needs {lacks} too")
    a.curve = None
    if a.curve_server is not None:
        try:
            a.curve = (_keys.read_key(a.curve_server, False),
                       _keys.read_key(a.curve_secret, True))
        except _keys.KeyFileError as e:
            raise UsageError(str(e)) from None
    _load_all(a.module)
    return a


def main(argv=None):
    """Runs the worker as `python3 -m zpipe_worker` does, with argv (default
    sys.argv[1:]); returns the exit status. Called from a script of tasks,
    it also serves those the script registered, so --module is optional."""
    try:
        a = _config(sys.argv[1:] if argv is None else argv)
        if a is None:
            sys.stdout.write(HELP)
            return 0
        worker = Worker(a.connect, dict(registry), a.threads, a.pool, a.curve)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except zmq.ZMQError as e:
        print(f"{PROG}: cannot serve {a.connect}: {e}", file=sys.stderr)
        return 2
    return worker.serve()
