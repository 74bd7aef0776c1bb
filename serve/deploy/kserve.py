"""KServe: an InferenceService on the same bucket, served by a ServingRuntime of NVIDIA's
Triton container at the release this project targets (KServe's own `kserve-tritonserver` runtime
pins whichever release the cluster's KServe install chose).

KServe's storage initializer copies `storageUri` into `/mnt/models` before Triton starts, with the
credentials of the predictor's ServiceAccount (for S3: the Secret that account lists, annotated
with the endpoint); Triton then serves that local copy. So Triton runs with model control `none`:
a version published later reaches the replicas when KServe rolls out new pods, not by polling.
Scaling is KServe's (Knative's request-based autoscaler, or an HPA in RawDeployment mode).
"""

from __future__ import annotations

from enum import Enum

from tritonstack.serve.deploy import container
from tritonstack.serve.deploy.container import KSERVE_PORTS
from tritonstack.serve.deploy.manifest import Manifest, object_meta
from tritonstack.serve.deploy.options import DeployOptions

KSERVE_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri's objects
MODEL_FORMAT = "triton"


class Protocol(str, Enum):
    """The one port KServe routes to: Triton's HTTP/REST v2 endpoint, or its gRPC one."""

    V2 = "v2"
    GRPC_V2 = "grpc-v2"


def manifests(options: DeployOptions, protocol: Protocol) -> dict[str, list[Manifest]]:
    """Every file `deploy kserve` writes: file name -> its documents."""
    files = {
        "servingruntime.yaml": [serving_runtime(options)],
        "inferenceservice.yaml": [inference_service(options, protocol)],
    }
    if options.service_account is None and options.storage_secret is not None:
        files["serviceaccount.yaml"] = [service_account(options, options.storage_secret)]
    return files


def runtime_name(options: DeployOptions) -> str:
    return f"{options.name}-runtime"


def service_account_name(options: DeployOptions) -> str | None:
    """The predictor's account: the one given, else ours when the bucket needs credentials."""
    if options.service_account:
        return options.service_account
    return _reader_name(options) if options.storage_secret is not None else None


def _reader_name(options: DeployOptions) -> str:
    return f"{options.name}-storage-reader"


def serving_runtime(options: DeployOptions) -> Manifest:
    vols, mounts = container.volumes(options, storage=False)
    triton: Manifest = {
        "name": "kserve-container",  # the name KServe looks for
        "image": options.image_ref,
        "args": container.triton_args(options, KSERVE_MODEL_DIR, KSERVE_PORTS, "none"),
        "env": [container.admin_env(options)],
        "resources": container.resources(options),
        "securityContext": container.security_context(),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": object_meta(options, runtime_name(options)),
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(KSERVE_PORTS.metrics),
                "prometheus.kserve.io/path": "/metrics",
            },
            # Chosen by name from the InferenceService, never picked for other models.
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "2", "autoSelect": False}],
            "protocolVersions": [p.value for p in Protocol],
            "containers": [triton],
            "volumes": vols,
        },
    }


def inference_service(options: DeployOptions, protocol: Protocol) -> Manifest:
    model: Manifest = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": runtime_name(options),
        "protocolVersion": protocol.value,
        "storageUri": options.repository.kserve_uri(),
        "resources": container.resources(options),
    }
    if protocol is Protocol.GRPC_V2:
        model["ports"] = [{"name": "h2c", "containerPort": KSERVE_PORTS.grpc, "protocol": "TCP"}]
    predictor: Manifest = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "terminationGracePeriodSeconds": options.grace_secs,
        "model": model,
    }
    account = service_account_name(options)
    if account is not None:
        predictor["serviceAccountName"] = account
    if options.gpus:
        predictor["tolerations"] = container.gpu_tolerations(options)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": object_meta(options, options.name),
        "spec": {"predictor": predictor},
    }


def service_account(options: DeployOptions, secret: str) -> Manifest:
    """The account KServe's storage initializer reads the bucket as: it lists the credentials Secret."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(options, _reader_name(options)),
        "secrets": [{"name": secret}],
    }
