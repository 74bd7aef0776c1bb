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

from dataclasses import dataclass, field

from tritonstack.errors import ServeError
from tritonstack.storage.location import RepositoryLocation
from tritonstack.storage.s3 import Bucket


@dataclass(frozen=True)
class RemoteRepository:
    triton_path: str
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, url: str) -> RemoteRepository:
        bucket = Bucket(RepositoryLocation.parse_s3(url))
        models = {key.split("/")[0] for key in bucket.keys() if key.endswith("/config.pbtxt")}
        if not models:
            raise ServeError(
                f"{bucket.location} holds no model (no MODEL/config.pbtxt): publish one first with "
                f"tritonstack export CHECKPOINT --repo {bucket.location}"
            )
        return cls(bucket.location.triton_path(bucket.endpoint), bucket.credentials_environment())
