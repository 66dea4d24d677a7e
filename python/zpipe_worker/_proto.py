# SPDX-License-Identifier: MIT
"""The wire protocol of docs/protocol.md, a worker's side: pure bytes.

Message bodies are one msgpack array [version, type, field...]. The decoder
checks every field as the C side does (transport/proto.c) and raises
ProtocolError with the same reasons; the encoders build the bodies a worker
sends, with the smallest encodings. Batches of items travel inside ITEM, OUT
and DONE in the framing of transport/batch.h: a uint seq, a uint count, then
count msgpack values back to back.
"""

import msgpack

VERSION = 1
HELLO, READY, STAGE, ITEM, OUT, DONE, FAIL, HEARTBEAT, BYE = range(1, 10)
NAMES = {HELLO: "HELLO", READY: "READY", STAGE: "STAGE", ITEM: "ITEM",
         OUT: "OUT", DONE: "DONE", FAIL: "FAIL", HEARTBEAT: "HEARTBEAT",
         BYE: "BYE"}

MAX_MSG = 64 << 20            # the largest body either side accepts
MAX_BATCH = MAX_MSG - 64      # the largest framed batch a message carries
BATCH_HEADER_MAX = 18         # two msgpack uint64
OUT_CHUNK = 16 << 20          # a worker sends OUT every this many bytes
CREDIT_PER_THREAD = 16384     # HELLO capacity per item run at once
MAX_TASKS = 4096              # task names a HELLO may announce
STAGE_BRANCH, STAGE_SKIP = 1, 2

HEARTBEAT_BODY = b"\x92\x01\x08"


class ProtocolError(ValueError):
    """A body that breaks the protocol; the text says how."""


# ---- Decoding ---------------------------------------------------------------

# Field kinds, as in transport/proto.c.
U32, U32_POS, U64, FLAGS, STR, STR_FULL, BIN, BIN_FULL, TASKS = range(9)

_LAYOUTS = {
    HELLO: ("name", STR, "pid", U32, "capacity", U32_POS, "tasks", TASKS),
    READY: ("credit", U32_POS),
    STAGE: ("run", U64, "stage", U32, "task", STR_FULL, "flags", FLAGS,
            "retries", U32, "bind", BIN),
    ITEM: ("run", U64, "stage", U32, "batch", U64, "items", BIN_FULL),
    OUT: ("run", U64, "stage", U32, "batch", U64, "outputs", BIN,
          "retried", U32, "skipped", U32, "busy", U64),
    DONE: ("run", U64, "stage", U32, "batch", U64, "outputs", BIN,
           "retried", U32, "skipped", U32, "busy", U64),
    FAIL: ("run", U64, "stage", U32, "batch", U64, "seq", U64,
           "message", STR, "busy", U64),
    HEARTBEAT: (),
    BYE: ("reason", STR),
}

# The last fields a body may leave out: a DONE's, OUT's or FAIL's `busy`
# (docs/protocol.md).
_OPTIONAL = {OUT: 1, DONE: 1, FAIL: 1}

_WHAT = {
    U32: "an unsigned 32-bit integer",
    U32_POS: "an unsigned 32-bit integer >= 1",
    U64: "an unsigned integer", FLAGS: "an unsigned integer of known bits",
    STR: "a string", STR_FULL: "a non-empty string", BIN: "a bin",
    BIN_FULL: "a non-empty bin",
    TASKS: f"an array of at most {MAX_TASKS} non-empty strings",
}


def _ok(kind, v):
    t = type(v)
    if kind in (U32, U32_POS, U64, FLAGS):
        if t is not int or v < 0:
            return False
        if kind == U64:
            return v < 1 << 64
        if kind == FLAGS and v & ~(STAGE_BRANCH | STAGE_SKIP):
            return False
        return v < 1 << 32 and (kind != U32_POS or v > 0)
    if kind in (STR, STR_FULL):
        return t is str and (kind == STR or len(v) > 0)
    if kind in (BIN, BIN_FULL):
        return t is bytes and (kind == BIN or len(v) > 0)
    return (t is list and len(v) <= MAX_TASKS
            and all(type(s) is str and s for s in v))


def unpack(data):
    """One msgpack value, strings as str (bytes that are not UTF-8 kept as
    surrogates, so that they pack back as they were), any map key."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False,
                           unicode_errors="surrogateescape")


def decode(body):
    """(type, [fields]) of a message body; ProtocolError says what is wrong."""
    if len(body) > MAX_MSG:
        raise ProtocolError("message larger than 64 MiB")
    try:
        top = unpack(body)
    except msgpack.ExtraData:
        raise ProtocolError("bytes after the message") from None
    except Exception:
        raise ProtocolError("not one msgpack value") from None
    if type(top) is not list:
        raise ProtocolError("message is not a msgpack array")
    if not top or type(top[0]) is not int or top[0] < 0:
        raise ProtocolError("message does not start with a protocol version")
    if top[0] != VERSION:
        v = top[0] if top[0] < 10 else "10 or more"
        raise ProtocolError(f"wrong protocol version {v} "
                            f"(this side speaks {VERSION})")
    if len(top) < 2 or type(top[1]) is not int or top[1] < 0:
        raise ProtocolError("message has no type after its version")
    layout = _LAYOUTS.get(top[1])
    if layout is None:
        raise ProtocolError("unknown message type")
    name, fields = NAMES[top[1]], top[2:]
    least = len(layout) // 2 - _OPTIONAL.get(top[1], 0)
    if not least <= len(fields) <= len(layout) // 2:
        names = layout[::2]
        raise ProtocolError(
            f"{name}: expected {len(names)} field"
            f"{'' if len(names) == 1 else 's'}: {', '.join(names)}"
            if names else f"{name}: expected no fields")
    for i, v in enumerate(fields):
        if not _ok(layout[2 * i + 1], v):
            raise ProtocolError(f"{name}: field '{layout[2 * i]}' must be "
                                f"{_WHAT[layout[2 * i + 1]]}")
    return top[1], fields


def read_uint(data, off):
    """(value, next offset) of the msgpack unsigned integer at data[off]."""
    b = data[off]
    if b < 0x80:
        return b, off + 1
    size = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4,
            0xd3: 8}.get(b)
    if size is None or off + 1 + size > len(data):
        raise ValueError("not an unsigned integer")
    v = int.from_bytes(data[off + 1:off + 1 + size], "big", signed=b >= 0xd0)
    if v < 0:
        raise ValueError("not an unsigned integer")
    return v, off + 1 + size


def batch_seq(data):
    """The index of the first item of a framed batch; 0 if unreadable."""
    try:
        return read_uint(data, 0)[0]
    except (ValueError, IndexError):
        return 0


def open_batch(data):
    """(seq, [items]) of a framed batch; ValueError when it is malformed.
    The items are decoded in one call: the batch's bytes behind an array
    header of its count."""
    try:
        seq, off = read_uint(data, 0)
        count, off = read_uint(data, off)
    except (ValueError, IndexError):
        raise ValueError("malformed batch header") from None
    if count == 0 or count >= 1 << 32:
        raise ValueError(f"a batch of {count} items")
    try:
        items = unpack(b"\xdd" + count.to_bytes(4, "big")
                       + memoryview(data)[off:])
    except msgpack.ExtraData:
        raise ValueError("bytes after its last item") from None
    except Exception as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    return seq, items


# ---- Encoding ---------------------------------------------------------------

_packb = msgpack.packb


def _str(s):
    return _packb(s, unicode_errors="surrogateescape")


def bin_header(n):
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def hello(name, pid, capacity, tasks, pool=None):
    """HELLO; `pool`, when given, is sent as a fifth field after `tasks`."""
    fields = [VERSION, HELLO, name, pid, capacity, list(tasks)]
    if pool is not None:
        fields.append(pool)
    return _packb(fields, unicode_errors="surrogateescape")


def outputs(kind, run, stage, batch, count, parts, nbytes, retried, skipped,
            busy):
    """OUT or DONE carrying `count` outputs whose packed bytes, back to back,
    are the bytes-like `parts` (nbytes in all); `busy`: the nanoseconds the
    task ran on the batch so far."""
    head = b"\x00" + _packb(count)
    return b"".join([
        bytes((0x99, VERSION, kind)), _packb(run), _packb(stage),
        _packb(batch), bin_header(len(head) + nbytes), head, *parts,
        _packb(retried), _packb(skipped), _packb(busy)])


def fail(run, stage, batch, seq, message, busy=0):
    return b"".join([bytes((0x98, VERSION, FAIL)), _packb(run), _packb(stage),
                     _packb(batch), _packb(seq), _str(message),
                     _packb(busy)])


def bye(reason):
    return b"\x93\x01\x09" + _str(reason)
