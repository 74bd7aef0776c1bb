"""An S3-compatible store on 127.0.0.1 for the tests: moto's standalone server, as a subprocess on
a free port, reached through the standard variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...)
that boto3 and Triton's S3 client read. A subprocess, not a thread: Triton and the clients under
test must not wait on this interpreter's GIL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3

from tritonstack.serve import free_port

BUCKET = "models"  # the bucket the `s3_store` fixture (tests/conftest.py) creates
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def moto_store(log: Path) -> Iterator[str]:
    """Runs the store and sets the variables (restored after); yields its endpoint URL."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in (*env, "AWS_PROFILE")}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _DIRECT.open(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"moto_server did not start; see {log}") from exc
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}
