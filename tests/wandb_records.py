"""Read a wandb offline run file (run-ID.wandb) back: the history rows it holds, and the run record.

The file is a LevelDB-style log (wandb's own "datastore" format): a 7-byte file header (":W&B", magic 0xBEE1,
version 0), then 32 KiB blocks of chunks, each with a 7-byte header (masked CRC-32C: 4 bytes, length: 2, type: 1 =
FULL, 2 = FIRST, 3 = MIDDLE, 4 = LAST); reassembled chunks are protobuf `wandb.proto.wandb_internal_pb2.Record`s.
wandb 0.31 writes it from its Go core and ships no Python reader, so the tests parse the framing here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb datastore file (header {data[:7]!r})"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # preallocated zeros at the end of a file still being written
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def history(path: Path) -> list[dict]:
    """Every history row as {key: value} (values decoded from their JSON)."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def run_record(path: Path):
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            return record.run
    return None


def run_files(run_dir: Path) -> list[Path]:
    """The run's offline files, oldest first (a resumed run adds one offline-run-* folder per attempt)."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
