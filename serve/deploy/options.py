"""What a cluster deployment of Triton is made of: one set of options for every manifest.

Defaults are starting points, each named here once: Triton's own where it has one (exit timeout,
poll interval), otherwise a value chosen for the reason given beside it. None of them was measured
on a cluster (there is none here); docs/deploy.md says what each one trades.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from tritonstack.errors import UsageError
from tritonstack.storage.location import RepositoryLocation, S3Endpoint

# The NGC release whose Triton (2.51) is the one nvidia-pytriton 0.7.0 embeds, which every test
# and benchmark here runs: the configs this project writes are checked against that version.
TRITON_RELEASE = "24.10"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
# The image's non-root user (`triton-server`, uid and gid 1000 by the server's build.py).
TRITON_UID = 1000

# Object names get suffixes (the longest: "-headless") and must stay DNS-1035 labels of <= 63.
_NAME = re.compile(r"[a-z]([a-z0-9-]{0,52}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_EXIT_SLACK_SECS = 5
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


class ModelControl(str, Enum):
    POLL = "poll"  # new versions published to the repository load on every replica by themselves
    EXPLICIT = "explicit"  # every model loads at start; later loads go through the admin API


@dataclass(frozen=True)
class DeployOptions:
    repository: RepositoryLocation
    gpus: int
    name: str = "triton"
    namespace: str | None = None
    image: str = TRITON_IMAGE
    release: str = TRITON_RELEASE
    s3_endpoint: S3Endpoint | None = None
    # Read the store's credentials from a Secret (keys per store in docs/deploy.md); without, the
    # pod's own identity (IAM roles for service accounts, Workload Identity) or a public bucket.
    use_credentials: bool = True
    credentials_secret: str = ""  # default: <name>-storage
    admin_key_secret: str = ""  # default: <name>-admin
    service_account: str | None = None
    model_control: ModelControl = ModelControl.POLL
    poll_secs: int = 15  # Triton's default: one listing of the repository per replica every 15 s
    # Triton's default: in-flight requests get this long to finish after SIGTERM.
    exit_timeout_secs: int = 30
    # Before SIGTERM: time for the endpoint removal to reach every proxy and client, so no new
    # request arrives at a replica that has started to exit.
    drain_secs: int = 10
    # Downloading and loading every model before the first health answer: a startup probe waits
    # this long before the liveness probe may restart the container.
    startup_secs: int = 600
    cpu: str = "2"
    memory: str = "8Gi"
    cache_size: str = "20Gi"  # the emptyDir /tmp that holds Triton's copy of a remote repository
    min_replicas: int = 2  # a second replica keeps serving through a node drain or a crash
    max_replicas: int = 8
    # Average queue time per request that asks for more replicas: with the batcher's delay at 0 a
    # request queues only while every instance is busy, so a sustained millisecond means saturation.
    target_queue_us: int = 1000
    target_utilization: int = 80  # percent of requested CPU, or of GPU time, for the fallback metric
    # Long-lived gRPC connections pin clients to the replicas that existed when they connected:
    # Triton closes each after this age (clients reconnect transparently), so an L4 Service
    # spreads them over new replicas within about this long.
    grpc_max_connection_age_secs: int = 60

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise UsageError(
                f"--name {self.name!r}: use lower-case letters, digits and '-', starting with a letter, "
                "at most 54 characters"
            )
        for flag, value in (
            ("--namespace", self.namespace),
            ("--credentials-secret", self.credentials_secret or None),
            ("--admin-key-secret", self.admin_key_secret or None),
            ("--service-account", self.service_account),
        ):
            if value is not None and not _DNS_SUBDOMAIN.fullmatch(value):
                raise UsageError(
                    f"{flag} {value!r} is not a valid Kubernetes name: use a-z, 0-9, '-' and '.'"
                )
        if self.gpus < 0:
            raise UsageError(f"--gpus must be 0 or more, got {self.gpus}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise UsageError(
                f"replicas: need 1 <= --min-replicas ({self.min_replicas}) <= --max-replicas "
                f"({self.max_replicas})"
            )
        for flag, number in (
            ("--poll-secs", self.poll_secs),
            ("--exit-timeout-secs", self.exit_timeout_secs),
            ("--startup-secs", self.startup_secs),
            ("--target-queue-us", self.target_queue_us),
            ("--grpc-max-connection-age-secs", self.grpc_max_connection_age_secs),
        ):
            if number < 1:
                raise UsageError(f"{flag} must be at least 1, got {number}")
        if self.drain_secs < 0:
            raise UsageError(f"--drain-secs must be 0 or more, got {self.drain_secs}")
        if not 1 <= self.target_utilization <= 100:
            raise UsageError(f"--target-utilization is a percentage (1-100), got {self.target_utilization}")
        for flag, quantity in (
            ("--cpu", self.cpu),
            ("--memory", self.memory),
            ("--cache-size", self.cache_size),
        ):
            if not _QUANTITY.fullmatch(quantity):
                raise UsageError(f"{flag} {quantity!r} is not a Kubernetes quantity, e.g. 2, 500m, 8Gi")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.release):
            raise UsageError(f"--release {self.release!r}: give an NGC release such as {TRITON_RELEASE}")
        # Fails early on an endpoint given for a store that has none.
        self.repository.triton_path(self.s3_endpoint)

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.release}-py3"

    @property
    def admin_secret(self) -> str:
        return self.admin_key_secret or f"{self.name}-admin"

    @property
    def storage_secret(self) -> str | None:
        """The Secret with the store's credentials, if the pod reads any (a volume claim needs none)."""
        if not (self.use_credentials and self.repository.remote):
            return None
        return self.credentials_secret or f"{self.name}-storage"

    @property
    def grace_secs(self) -> int:
        """The pod's termination grace period: the drain, then Triton's exit timeout, plus slack
        for the process to exit; past it the kubelet kills the container."""
        return self.drain_secs + self.exit_timeout_secs + _EXIT_SLACK_SECS

    @property
    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": self.name}

    @property
    def labels(self) -> dict[str, str]:
        return {**self.selector, "app.kubernetes.io/managed-by": "tritonstack"}
