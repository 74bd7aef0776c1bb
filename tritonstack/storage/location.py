"""Where a cluster's Triton finds the model repository: an object-store URL or a volume claim.

`--repo` takes Triton's own forms `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` and
`as://ACCOUNT/CONTAINER/PREFIX`, or `pvc://CLAIM/PATH` for a PersistentVolumeClaim that holds it.
Triton 2.51 (NGC 24.10) has no endpoint setting for S3-compatible stores: the endpoint goes into
the URL as `s3://[http://|https://]HOST:PORT/BUCKET/PREFIX`, and that form is matched by a pattern
(core r24.10, src/filesystem/implementations/s3.h) that admits only lower-case bucket names and
path segments of letters, digits, '.', '-' and '_'. So names are checked here, before any manifest
is written, against the narrowest rule that applies.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from tritonstack.errors import UsageError

# Where a claim's volume is mounted in the Triton container.
PVC_MOUNT = "/models"

_SEGMENT = re.compile(r"[0-9A-Za-z._-]+")
_ROOTS = {
    # S3 (AWS's rule, inside Triton's [0-9a-z.-]+) and GCS bucket names.
    "s3": (re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"), "bucket"),
    "gs": (re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]"), "bucket"),
    "as": (re.compile(r"[a-z0-9]{3,24}"), "storage account"),
    "pvc": (re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?"), "claim"),
}
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_FORMS = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, as://ACCOUNT/CONTAINER/PREFIX or pvc://CLAIM/PATH"


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible store's address (MinIO, Ceph, R2, ...), as the cluster reaches it."""

    host: str
    port: int
    https: bool

    @classmethod
    def parse(cls, text: str) -> S3Endpoint:
        url = urllib.parse.urlsplit(text)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
            raise UsageError(
                f"--s3-endpoint {text!r}: give http(s)://HOST[:PORT], e.g. http://minio.minio:9000"
            )
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"--s3-endpoint {text!r}: the port is not a number in 1-65535") from exc
        if not re.fullmatch(r"[0-9A-Za-z.-]+", url.hostname):
            raise UsageError(f"--s3-endpoint {text!r}: Triton takes a host name or IPv4 address here")
        return cls(url.hostname, port, url.scheme == "https")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RepositoryLocation:
    """`scheme://root/path`: root is the bucket, `ACCOUNT/CONTAINER` or the claim."""

    scheme: str
    root: str
    path: str

    @classmethod
    def parse(cls, text: str) -> RepositoryLocation:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in _ROOTS:
            raise UsageError(
                f"--repo {text!r}: a cluster cannot read this machine's folders; give {_FORMS} "
                "(publish the repository there first)"
            )
        parts = [p for p in rest.split("/") if p]
        if scheme == "s3" and parts and ":" in parts[0]:
            raise UsageError(
                f"--repo {text!r}: give the store's address as --s3-endpoint http(s)://HOST:PORT and "
                "the repository as s3://BUCKET/PREFIX"
            )
        root_parts = 2 if scheme == "as" else 1
        if len(parts) < root_parts:
            raise UsageError(f"--repo {text!r}: expected {_FORMS}")
        pattern, what = _ROOTS[scheme]
        if not pattern.fullmatch(parts[0]):
            raise UsageError(f"--repo {text!r}: {parts[0]!r} is not a valid {what} name")
        if scheme == "as" and not _AZURE_CONTAINER.fullmatch(parts[1]):
            raise UsageError(f"--repo {text!r}: {parts[1]!r} is not a valid Azure container name")
        path = parts[root_parts:]
        bad = [p for p in path if not _SEGMENT.fullmatch(p) or p in (".", "..")]
        if bad:
            raise UsageError(
                f"--repo {text!r}: path segment {bad[0]!r} is not allowed; Triton's S3 pattern takes "
                "letters, digits, '.', '-' and '_' (and no '.' or '..' segments)"
            )
        return cls(scheme, "/".join(parts[:root_parts]), "/".join(path))

    @classmethod
    def parse_s3(cls, text: str) -> RepositoryLocation:
        """A repository this machine publishes to or serves from: `s3://BUCKET/PREFIX`, its store's
        endpoint set the standard way (AWS_ENDPOINT_URL)."""
        scheme, _, rest = text.partition("://")
        if scheme != "s3":
            raise UsageError(f"--repo {text}: only s3:// repositories (S3 or S3-compatible stores) work here")
        if ":" in rest.split("/")[0]:
            raise UsageError(
                f"--repo {text}: give the store's address as AWS_ENDPOINT_URL=http(s)://HOST:PORT and the "
                "repository as s3://BUCKET/PREFIX"
            )
        return cls.parse(text)

    def __str__(self) -> str:
        return f"{self.scheme}://{'/'.join(filter(None, (self.root, self.path)))}"

    @property
    def remote(self) -> bool:
        """Whether Triton downloads the repository itself (object storage) rather than reading a volume."""
        return self.scheme != "pvc"

    def triton_path(self, s3_endpoint: S3Endpoint | None = None) -> str:
        """The `--model-repository` value for Triton 2.51 running with this location."""
        if s3_endpoint is not None and self.scheme != "s3":
            raise UsageError(f"--s3-endpoint applies to s3:// repositories, not {self.scheme}://")
        if self.scheme == "pvc":
            return "/".join(filter(None, (PVC_MOUNT, self.path)))
        if s3_endpoint is not None:
            protocol = "https://" if s3_endpoint.https else "http://"
            return f"s3://{protocol}{s3_endpoint.address}/{'/'.join(filter(None, (self.root, self.path)))}"
        return str(self)

    def kserve_uri(self) -> str:
        """KServe's `storageUri` for the same objects: KServe names Azure blobs by their https URL."""
        if self.scheme == "as":
            account, container = self.root.split("/")
            return "/".join(filter(None, (f"https://{account}.blob.core.windows.net", container, self.path)))
        return str(self)
