"""Publishing to a model repository on S3 (or an S3-compatible store) that replicas poll.

Every command that changes the repository works on a local mirror through the same writer and
registry as a local repository, then publishes the difference in an order a polling Triton can
never catch half-done:

1. a lock object (`.tritonstack-lock`, created with S3's conditional write `If-None-Match: *`)
   makes publishers of one repository take turns, so each new version gets its own number and no
   two publishers interleave their objects; a publisher that cannot take it within `LOCK_WAIT_S`
   stops with one line naming the holder, and one that ends releases only its own lock (the
   owner token it wrote);
2. a model that gains a version and serves "the latest" gets a config pinning what it serves now
   (`version_policy: specific`), so the new version's directory is ignored while it fills;
3. the version's objects (and changed metadata) are uploaded;
4. `config.pbtxt` is written last: a new model appears, a pinned one gets its policy back and
   loads the new version, a promotion takes effect;
5. pruned versions' objects are deleted.

A publisher (`export`, `export-all`, `models promote`, `models prune --yes`) ended by SIGTERM or
SIGINT before step 4 takes back what it wrote (the objects it added are deleted, those it replaced
put back); from step 4 on it finishes instead (the configs written, the pruned versions' objects
deleted): either way the store holds the change whole or not at all. Then it releases its lock, if
the lock is still its own, so the next publisher goes on at once (`export.temporaries`: the signal
handler does it before the process ends).

The mirror holds the repository's top-level files (`tritonstack.json`, the registry's state),
each model's `config.pbtxt` and files beside it, and every version's JSON files (an older
export's `metadata.json`), never the artifacts: the registry reads sizes and statuses from them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import RepositoryError
from tritonstack.export.state import check_writable, read_metadata, update_metadata
from tritonstack.export.temporaries import temporary_directory, undone_on_signal
from tritonstack.spec import CONFIG_NAME
from tritonstack.storage.location import RepositoryLocation
from tritonstack.storage.s3 import Bucket, iter_files

LOCK_KEY = ".tritonstack-lock"
LOCK_WAIT_S = 120.0
_LOCK_POLL_S = 0.5


def is_remote(repo: str | Path) -> bool:
    return "://" in str(repo)


@contextlib.contextmanager
def open_repository(repo: str | Path, *, write: bool) -> Iterator[Path]:
    """The repository at `repo` as a local folder: itself, or for `s3://BUCKET/PREFIX` a mirror
    that is published when the block ends (`write=True`; the lock is held throughout)."""
    if not is_remote(repo):
        if write:
            check_writable(Path(repo))
        yield Path(repo)
        return
    bucket = Bucket(RepositoryLocation.parse_s3(str(repo)))
    lock: contextlib.AbstractContextManager[_TakeBack | None] = (
        _locked(bucket) if write else contextlib.nullcontext()
    )
    with lock as take_back, temporary_directory(prefix="tritonstack-s3-") as tmp:
        mirror = tmp / "repo"
        before = _fetch(bucket, mirror)
        if write:
            check_writable(mirror, shown_as=str(repo).rstrip("/"))
        try:
            yield mirror
        except Exception:
            # What the writer finished is whole (a failed format leaves the earlier ones), as in a
            # local repository: publish it too.
            if take_back is not None:
                _publish(bucket, mirror, before, take_back)
            raise
        if take_back is not None:
            _publish(bucket, mirror, before, take_back)


class _Fetched:
    """What the mirror started from: its files' contents, and every remote version with its keys."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.versions: dict[tuple[str, int], list[str]] = {}


def _fetch(bucket: Bucket, mirror: Path) -> _Fetched:
    fetched = _Fetched()
    mirror.mkdir()
    for key in bucket.keys():
        parts = key.split("/")
        if any(p.startswith(".") for p in parts):
            continue  # the lock and hidden objects are no part of the repository
        if len(parts) > 2 and parts[1].isdigit():
            fetched.versions.setdefault((parts[0], int(parts[1])), []).append(key)
            (mirror / parts[0] / parts[1]).mkdir(parents=True, exist_ok=True)
            if not (len(parts) == 3 and key.endswith(".json")):
                continue  # artifacts stay in the store
        fetched.files[key] = bucket.read(key)
        (mirror / key).parent.mkdir(parents=True, exist_ok=True)
        (mirror / key).write_bytes(fetched.files[key])
    return fetched


class _TakeBack:
    """What a publisher interrupted by a signal does before it ends. Before its configs go out, it
    takes back what it wrote: the objects it added are deleted, those it replaced put back (new
    version objects go before the configs that would serve them). From then on it finishes: the
    configs are written (again) and the pruned versions' objects deleted, so the change is whole.
    Then its lock is released if it is still its own. A client of its own: the signal may come
    while the publisher's is in the middle of a request. (An upload that boto3's threads finish
    between the delete and the exit stays: the window is that short.)"""

    def __init__(self, bucket: Bucket, owner: bytes) -> None:
        self._bucket = Bucket(bucket.location)
        self._owner = owner
        self._added: list[str] = []
        self._replaced: dict[str, bytes] = {}
        self._configs: dict[str, bytes] = {}
        self._removed: list[str] = []

    def writing(self, key: str, before: _Fetched) -> None:
        """Note, before the write starts, that `key` is about to be written."""
        if key in before.files:
            self._replaced.setdefault(key, before.files[key])
        else:
            self._added.append(key)

    def published(self, configs: dict[str, bytes], removed: list[str]) -> None:
        """The configs that serve what was written go out next, then `removed` is deleted: from here
        on it stays, and a signal finishes the change instead."""
        self._added, self._replaced = [], {}
        self._configs, self._removed = configs, removed

    def __call__(self) -> None:
        self._bucket.delete(self._added)
        for key, data in self._replaced.items():
            self._bucket.put(key, data)
        for key, data in self._configs.items():
            self._bucket.put(key, data)
        self._bucket.delete(self._removed)
        _release(self._bucket, self._owner)


def _publish(bucket: Bucket, mirror: Path, before: _Fetched, take_back: _TakeBack) -> None:
    new_versions = {
        (parts[0], int(parts[1]))
        for parts in (key.split("/") for key, path in iter_files(mirror))
        if len(parts) > 2 and parts[1].isdigit() and (parts[0], int(parts[1])) not in before.versions
    }
    for model, version in new_versions:
        _name_repository(mirror / model / str(version), mirror, str(bucket.location))
    after = dict(iter_files(mirror))
    changed = {key: path for key, path in after.items() if before.files.get(key) != path.read_bytes()}
    # A pinned config is written back even when the export left it unchanged.
    pinned = [
        f"{m}/{CONFIG_NAME}"
        for m in sorted({m for m, _ in new_versions})
        if _pin_served(bucket, m, before, take_back)
    ]
    configs = sorted({*pinned, *(key for key in changed if key.endswith(f"/{CONFIG_NAME}"))})
    for key, path in changed.items():
        if key not in configs:
            take_back.writing(key, before)
            bucket.upload(path, key)
    removed = sorted(
        key
        for (model, v), keys in before.versions.items()
        if not (mirror / model / str(v)).is_dir()
        for key in keys
    )
    take_back.published({key: after[key].read_bytes() for key in configs}, removed)
    for key in configs:
        bucket.upload(after[key], key)
    bucket.delete(removed)


def _name_repository(version_dir: Path, mirror: Path, url: str) -> None:
    """The reproducing command exports into the store, not into this temporary mirror."""
    command = (read_metadata(version_dir) or {}).get("command")
    if isinstance(command, str):
        mirror_flag = f"--repo {shlex.quote(str(mirror.absolute()))}"
        update_metadata(version_dir, command=command.replace(mirror_flag, f"--repo {shlex.quote(url)}"))


def _pin_served(bucket: Bucket, model: str, before: _Fetched, take_back: _TakeBack) -> bool:
    """Rewrite the model's remote config to serve exactly what it serves now, by number, so a
    version directory that is still filling is not picked as the latest; True if rewritten."""
    old = before.files.get(f"{model}/{CONFIG_NAME}")
    if old is None:
        return False  # a new model: nothing loads it before its config.pbtxt, which is written last
    config = text_format.Parse(old.decode(), pb.ModelConfig())
    policy = config.version_policy
    existing = sorted(v for m, v in before.versions if m == model)
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return False  # new versions load only once promoted
    served = existing if kind == "all" else existing[-(policy.latest.num_versions or 1) :]
    config.ClearField("version_policy")
    config.version_policy.specific.versions.extend(served)
    take_back.writing(f"{model}/{CONFIG_NAME}", before)
    bucket.put(f"{model}/{CONFIG_NAME}", text_format.MessageToString(config).encode())
    return True


@contextlib.contextmanager
def _locked(bucket: Bucket) -> Iterator[_TakeBack]:
    """Hold the repository's lock; yields what a signal takes back, registered from before the
    lock is asked for (the token tells whether the lock it finds is its own)."""
    owner = json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,
        }
    ).encode()
    take_back = _TakeBack(bucket, owner)
    with undone_on_signal(take_back):
        deadline = time.monotonic() + LOCK_WAIT_S
        while not bucket.create(LOCK_KEY, owner):
            if time.monotonic() > deadline:
                holder = bucket.find(LOCK_KEY) or b"since released"
                raise RepositoryError(
                    f"another publisher has held {bucket.location}/{LOCK_KEY} for over {LOCK_WAIT_S:.0f} s "
                    f"({holder.decode(errors='replace')}): retry when it is done, or delete that object "
                    "if that publisher died"
                )
            time.sleep(_LOCK_POLL_S)
        try:
            yield take_back
        finally:
            _release(bucket, owner)


def _release(bucket: Bucket, owner: bytes) -> None:
    """Delete the lock if it is still `owner`'s: one who judged this publisher dead may have
    deleted it and taken the lock since."""
    if bucket.find(LOCK_KEY) == owner:
        bucket.delete([LOCK_KEY])
