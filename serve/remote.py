"""Serving a repository on S3: Triton's own form of the URL and the environment its S3 client reads.

Triton 2.51 downloads the repository itself (each model into a local temporary folder, again on
every reload) through the AWS SDK for C++. It takes no endpoint setting for S3-compatible stores:
the endpoint goes into the URL, `s3://http://HOST:PORT/BUCKET/PREFIX`. Its credentials come from
the environment, so the ones boto3 resolved here (from variables, a profile, SSO or an instance
role) are handed to it as `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and
`AWS_DEFAULT_REGION`. The bucket is checked first, so a wrong name, missing credentials or an
unreachable endpoint stops `serve` with one line instead of a Triton log.
"""

from __future__ import annotations

from tritonstack.errors import ServeError
from tritonstack.spec import CONFIG_NAME
from tritonstack.storage.location import RepositoryLocation
from tritonstack.storage.s3 import Bucket


class RemoteRepository:
    """`s3://BUCKET/PREFIX` as Triton reads it (`triton_path`, `environment`) and as `serve --watch`
    watches it (`models`)."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.triton_path = bucket.location.triton_path(bucket.endpoint)
        self.environment = bucket.credentials_environment()

    @classmethod
    def open(cls, url: str) -> RemoteRepository:
        remote = cls(Bucket(RepositoryLocation.parse_s3(url)))
        if not remote.models():
            raise ServeError(
                f"{remote.bucket.location} holds no model (no MODEL/config.pbtxt): publish one first "
                f"with tritonstack export CHECKPOINT --repo {remote.bucket.location}"
            )
        return remote

    def models(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Every model with a config (publishing writes a new model's config last) -> its objects'
        keys and ETags: any upload or deletion under it changes that value."""
        objects: dict[str, list[tuple[str, str]]] = {}
        for key, etag in self.bucket.keys().items():
            model, sep, rest = key.partition("/")
            if sep and not model.startswith("."):
                objects.setdefault(model, []).append((rest, etag))
        return {
            model: tuple(sorted(items))
            for model, items in objects.items()
            if any(rest == CONFIG_NAME for rest, _ in items)
        }
