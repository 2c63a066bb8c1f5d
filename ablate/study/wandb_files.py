"""Read W&B offline run folders (`run-*.wandb`: LevelDB-log framing of protobuf `Record`s), no network needed."""

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7


def records(path: Path) -> list:
    """Every complete `Record` in a `.wandb` file, in order. W&B's service writes the file as the run goes, so a
    reader may find it ending inside a record: the records before it are returned, and a later read gets the rest.
    A chunk whose checksum (CRC-32 of its type byte and data) fails is damage, not a write under way: ValueError."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    out, chunks, pos = [], [], HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        if len(chunk) < length:  # the file ends inside this chunk: W&B has not written the rest yet
            break
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: the chunk at byte {pos} fails its checksum; the file is damaged")
        chunks.append(chunk)
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            out.append(record)
            chunks = []
    return out


def run_info(run_dir: Path) -> dict:
    """Name, group, job type, tags, config, summary, history and exit code of one offline run folder."""
    info = {"config": {}, "summary": {}, "history": [], "kinds": set()}
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise ValueError(f"{run_dir} holds no run-*.wandb file")
    for r in records(files[0]):
        kind = r.WhichOneof("record_type")
        info["kinds"].add(kind)
        if kind == "run":
            info.update(name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type, tags=list(r.run.tags))
            info["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            info["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            info["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update}
            )
        elif kind == "history":
            info["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "exit":
            info["exit_code"] = r.exit.exit_code
    return info
