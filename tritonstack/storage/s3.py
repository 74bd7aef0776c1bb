"""An S3 bucket (AWS or an S3-compatible store) through boto3, configured the standard way.

boto3 reads the endpoint (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or a profile's `endpoint_url`),
the credentials (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE`,
instance roles) and the region itself; the store's failures become one-line `RepositoryError`s
naming the fix. Needs the `s3` extra: `pip install 'tritonstack[s3]'`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.errors import RepositoryError, UsageError
from tritonstack.extras import require
from tritonstack.storage.location import RepositoryLocation, S3Endpoint

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

# Fail fast on an endpoint that does not answer: a user error, not a reason to retry for minutes.
_TIMEOUT_S = 10
_ATTEMPTS = 3


class Bucket:
    """The objects under one `s3://BUCKET/PREFIX`; keys given to its methods are relative to PREFIX."""

    def __init__(self, location: RepositoryLocation) -> None:
        if location.scheme != "s3":
            raise UsageError(f"--repo {location}: only s3:// repositories can be published to or served here")
        require(f"--repo {location}", "s3")
        import boto3
        from botocore.config import Config

        self.location = location
        self.name = location.root
        self._prefix = f"{location.path}/" if location.path else ""
        config = Config(
            connect_timeout=_TIMEOUT_S,
            read_timeout=_TIMEOUT_S * 6,
            retries={"max_attempts": _ATTEMPTS, "mode": "standard"},
        )
        self._session = boto3.session.Session()
        self._client: Any = self._session.client("s3", config=config)
        self._call("check", self._client.head_bucket, Bucket=self.name)

    @property
    def endpoint(self) -> S3Endpoint | None:
        """The S3-compatible store boto3 talks to, or None for AWS itself (Triton finds AWS alone)."""
        url: str = self._client.meta.endpoint_url
        host = urllib.parse.urlsplit(url).hostname or ""
        if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
            return None
        return S3Endpoint.parse(url)

    def credentials_environment(self) -> dict[str, str]:
        """The credentials and region boto3 resolved, as the variables the AWS SDKs read."""
        credentials = self._session.get_credentials()
        if credentials is None:
            return {}
        frozen = credentials.get_frozen_credentials()
        env = {
            "AWS_ACCESS_KEY_ID": frozen.access_key,
            "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
            "AWS_DEFAULT_REGION": self._client.meta.region_name,
        }
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
        return env

    def keys(self, under: str = "") -> dict[str, str]:
        """Every key below `under` (relative to PREFIX), with its ETag (it changes with the content)."""
        found: dict[str, str] = {}

        def walk() -> None:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=self._prefix + under
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    found[item["Key"][len(self._prefix) :]] = item["ETag"]

        self._call("list", walk)
        return found

    def read(self, key: str) -> bytes:
        body = self.find(key)
        if body is None:
            raise RepositoryError(f"cannot read {key} from {self.location}: there is no such object")
        return body

    def find(self, key: str) -> bytes | None:
        """The object's content, or None if there is no object `key`."""
        from botocore.exceptions import ClientError

        try:
            body: bytes = self._client.get_object(Bucket=self.name, Key=self._prefix + key)["Body"].read()
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error(f"read {key} from", exc) from exc
        except Exception as exc:
            raise self._error(f"read {key} from", exc) from exc
        return body

    def upload(self, path: Path, key: str) -> None:
        self._call(f"upload {key} to", self._client.upload_file, str(path), self.name, self._prefix + key)

    def put(self, key: str, data: bytes) -> None:
        self._call(
            f"write {key} to", self._client.put_object, Bucket=self.name, Key=self._prefix + key, Body=data
        )

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if no object has that key (S3's conditional write, `If-None-Match: *`):
        True if written, False if it already existed. Atomic in the store, so of two writers
        exactly one gets True."""
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.name, Key=self._prefix + key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if _status(exc) in (409, 412):  # 409: a concurrent conditional write is still in progress
                return False
            raise self._error(f"write {key} to", exc) from exc
        except Exception as exc:
            raise self._error(f"write {key} to", exc) from exc
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._prefix + k} for k in keys[start : start + 1000]]
            self._call(
                "delete from", self._client.delete_objects, Bucket=self.name, Delete={"Objects": batch}
            )

    def _call(self, what: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> Exception:
        """The store's failure as one line naming the fix; anything unexpected goes up as it is."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"{self.location} (endpoint {self._client.meta.endpoint_url})"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return RepositoryError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, EndpointConnectionError):
            return RepositoryError(
                f"cannot reach {where}: check AWS_ENDPOINT_URL (S3-compatible stores) and the network"
            )
        if isinstance(exc, ClientError):
            status = _status(exc)
            if status == 404 and what == "check":
                return RepositoryError(f"no bucket {self.name!r} at {where}: create it first")
            if status in (401, 403):
                return RepositoryError(
                    f"access to {where} denied ({exc.response['Error'].get('Code', status)}): check the "
                    "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and bucket policy"
                )
            verb = "reach" if what == "check" else what
            return RepositoryError(f"cannot {verb} {where}: {exc}")
        return exc


def _status(exc: ClientError) -> int:
    status: int = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(key relative to `root`, path) for every file under `root`, hidden staging files excluded."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield relative.as_posix(), path
