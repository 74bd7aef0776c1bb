"""The Triton container that both deployments run: its arguments, credentials, writable
directories, resources and security context.

Security: the container runs as the image's non-root user on a read-only root filesystem with
no capabilities; the one writable place is an emptyDir on /tmp, where Triton copies a remote
repository before loading it (its default mount directory for s3://, gs:// and as://). Off
loopback, the admin APIs (loading and unloading models, shared memory, logging and trace
settings) answer only requests with a header whose value comes from a Secret, on HTTP through
`--http-restricted-api` and on gRPC through `--grpc-restricted-protocol`; Kubernetes substitutes
`$(TRITON_ADMIN_KEY)` in the arguments, so the key never appears in a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonstack.serve.admin import ADMIN_HEADER, ADMIN_PROTOCOLS
from tritonstack.serve.deploy.manifest import Manifest
from tritonstack.serve.deploy.options import TRITON_UID, DeployOptions
from tritonstack.storage.location import PVC_MOUNT

ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_KEY_ITEM = "key"  # the admin Secret's key that holds the value
GPU_RESOURCE = "nvidia.com/gpu"
_GCS_KEY_DIR = "/var/run/secrets/gcs"


@dataclass(frozen=True)
class SecretKey:
    """One entry of the credentials Secret and the variable Triton 2.51 reads it from (core r24.10,
    src/filesystem/implementations/{s3,as}.h). Keys are named as KServe's storage initializer
    reads them, so one Secret serves both deployments."""

    key: str
    env: str | None  # None: mounted as a file
    required: bool = True


STORE_KEYS = {
    "s3": (
        SecretKey("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        SecretKey("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        SecretKey("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN", required=False),
        SecretKey("AWS_DEFAULT_REGION", "AWS_DEFAULT_REGION", required=False),
    ),
    "gs": (SecretKey("gcloud-application-credentials.json", None),),
    "as": (SecretKey("AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_KEY"),),
}


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


KUBERNETES_PORTS = Ports(http=8000, grpc=8001, metrics=8002)  # Triton's defaults
KSERVE_PORTS = Ports(http=8080, grpc=9000, metrics=8002)  # KServe's, as its Triton runtime sets them


def triton_args(options: DeployOptions, repository: str, ports: Ports, control: str) -> list[str]:
    """`tritonserver` and its flags (the image's entrypoint runs it)."""
    args = ["tritonserver", f"--model-repository={repository}", f"--model-control-mode={control}"]
    if control == "poll":
        args.append(f"--repository-poll-secs={options.poll_secs}")
    elif control == "explicit":
        args.append("--load-model=*")
    restricted = f"{','.join(ADMIN_PROTOCOLS)}:{ADMIN_HEADER}=$({ADMIN_KEY_ENV})"
    return [
        *args,
        "--strict-readiness=true",
        # Our configs are complete; auto-completion would let a backend change what was verified.
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={options.exit_timeout_secs}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--allow-metrics=true",
        f"--grpc-max-connection-age={options.grpc_max_connection_age_secs * 1000}",
        f"--grpc-max-connection-age-grace={options.exit_timeout_secs * 1000}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]


def admin_env(options: DeployOptions) -> Manifest:
    return _from_secret(ADMIN_KEY_ENV, options.admin_secret, ADMIN_KEY_ITEM, optional=False)


def storage_env(options: DeployOptions) -> list[Manifest]:
    """Triton's credentials for the store, from the credentials Secret."""
    secret = options.storage_secret
    location = options.repository
    if secret is None:
        return []
    env = [
        _from_secret(k.env, secret, k.key, optional=not k.required)
        for k in STORE_KEYS[location.scheme]
        if k.env is not None
    ]
    if location.scheme == "as":
        env.insert(0, {"name": "AZURE_STORAGE_ACCOUNT", "value": location.root.split("/")[0]})
    if location.scheme == "gs":
        [key_file] = STORE_KEYS["gs"]
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{_GCS_KEY_DIR}/{key_file.key}"})
    return env


def volumes(options: DeployOptions, *, storage: bool) -> tuple[list[Manifest], list[Manifest]]:
    """The pod's volumes and the container's mounts: /tmp, and with `storage` (Triton reads the
    repository itself) the repository's claim or the GCS key."""
    vols: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": options.cache_size}}]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]
    location = options.repository
    if not storage:
        return vols, mounts
    if location.scheme == "pvc":
        vols.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": location.root, "readOnly": True}}
        )
        mounts.append({"name": "models", "mountPath": PVC_MOUNT, "readOnly": True})
    if location.scheme == "gs" and options.storage_secret is not None:
        secret = {"secretName": options.storage_secret, "defaultMode": 0o440}
        vols.append({"name": "gcs-key", "secret": secret})
        mounts.append({"name": "gcs-key", "mountPath": _GCS_KEY_DIR, "readOnly": True})
    return vols, mounts


def resources(options: DeployOptions) -> Manifest:
    """CPU and memory requested; memory limited to the request (a replica that outgrows it is
    restarted rather than starving its node); CPU not limited, since CFS throttling shows up as
    latency spikes. GPUs go in limits, which Kubernetes copies to requests."""
    limits: Manifest = {"memory": options.memory}
    if options.gpus:
        limits[GPU_RESOURCE] = options.gpus
    return {"requests": {"cpu": options.cpu, "memory": options.memory}, "limits": limits}


def gpu_tolerations(options: DeployOptions) -> list[Manifest]:
    """GPU node pools are commonly tainted so that only pods asking for GPUs land there."""
    if not options.gpus:
        return []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRITON_UID,
        "runAsGroup": TRITON_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _from_secret(env: str, secret: str, key: str, *, optional: bool) -> Manifest:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
