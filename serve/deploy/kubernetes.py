"""Plain Kubernetes: a Deployment of NVIDIA's Triton container, Services, an autoscaler on
Triton's queue time, a disruption budget, and the metrics adapter's rules that the autoscaler needs.

- Deployment: Triton on the repository URL, poll or explicit model control, strict readiness;
  startup, liveness and readiness probes on `/v2/health/{live,ready}`; GPUs per replica; the
  metrics port annotated for Prometheus; a drain before SIGTERM, then Triton's exit timeout, inside
  the termination grace period; replicas spread over nodes. No `replicas` field: the autoscaler
  owns the count, and `kubectl apply` would otherwise reset it.
- Services: `NAME` (ClusterIP) for HTTP, gRPC and metrics; `NAME-headless` for clients that
  balance gRPC themselves over every replica's address. A ClusterIP balances connections, not
  requests, and gRPC keeps one connection open: without client-side balancing or an L7 proxy
  (a gRPC-aware ingress or mesh), only Triton's connection age spreads the load.
- HorizontalPodAutoscaler (autoscaling/v2): Triton's average queue time per request, a Pods metric
  that a metrics adapter computes from `nv_inference_queue_duration_us`; CPU utilisation (or
  Triton's `nv_gpu_utilization` on GPU replicas) as the second metric, which scales up on its own
  when the adapter's metric is missing.
- PodDisruptionBudget: voluntary evictions (node drains, upgrades) take one replica at a time.
"""

from __future__ import annotations

from tritonstack.serve.deploy import container
from tritonstack.serve.deploy.container import KUBERNETES_PORTS
from tritonstack.serve.deploy.manifest import Manifest, object_meta
from tritonstack.serve.deploy.options import TRITON_UID, DeployOptions

# The custom metrics the autoscaler reads, as the adapter rules below name them.
QUEUE_METRIC = "avg_time_queue_us"
GPU_METRIC = "triton_gpu_utilization"
_PROBE_PERIOD_SECS = 10
_RATE_WINDOW = "1m"  # needs a Prometheus scrape interval of 30 s or less


def manifests(options: DeployOptions) -> dict[str, list[Manifest]]:
    """Every file `deploy kubernetes` writes: file name -> its documents."""
    return {
        "deployment.yaml": [deployment(options)],
        "service.yaml": services(options),
        "hpa.yaml": [autoscaler(options)],
        "pdb.yaml": [disruption_budget(options)],
        "prometheus-adapter-values.yaml": [adapter_rules(options)],
    }


def deployment(options: DeployOptions) -> Manifest:
    ports = KUBERNETES_PORTS
    vols, mounts = container.volumes(options, storage=True)
    triton: Manifest = {
        "name": "triton",
        "image": options.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "args": container.triton_args(
            options,
            options.repository.triton_path(options.s3_endpoint),
            ports,
            options.model_control.value,
        ),
        "env": [container.admin_env(options), *container.storage_env(options)],
        "ports": [
            {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
            {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
        ],
        "startupProbe": _probe(
            "/v2/health/live", failure_threshold=-(-options.startup_secs // _PROBE_PERIOD_SECS)
        ),
        "livenessProbe": _probe("/v2/health/live", failure_threshold=3),
        "readinessProbe": _probe("/v2/health/ready", failure_threshold=2),
        "resources": container.resources(options),
        "securityContext": container.security_context(),
        "volumeMounts": mounts,
    }
    if options.drain_secs:
        triton["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(options.drain_secs)]}}}
    pod: Manifest = {
        "terminationGracePeriodSeconds": options.grace_secs,
        "automountServiceAccountToken": False,  # Triton never calls the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": TRITON_UID,  # group-readable Secret files for the non-root user
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [triton],
        "volumes": vols,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": options.selector},
            }
        ],
    }
    if options.service_account:
        pod["serviceAccountName"] = options.service_account
    if options.gpus:
        pod["tolerations"] = container.gpu_tolerations(options)
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports.metrics),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(options, options.name),
        "spec": {
            "selector": {"matchLabels": options.selector},
            # A new replica serves before an old one stops: rollouts never lower capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": options.labels, "annotations": annotations}, "spec": pod},
        },
    }


def services(options: DeployOptions) -> list[Manifest]:
    ports = KUBERNETES_PORTS
    service_ports = [
        {"name": "http", "port": ports.http, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": ports.grpc,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",  # plaintext HTTP/2, for L7 proxies that read it
        },
        {"name": "metrics", "port": ports.metrics, "targetPort": "metrics", "protocol": "TCP"},
    ]
    cluster_ip = {"type": "ClusterIP", "selector": options.selector, "ports": service_ports}
    headless = {
        **cluster_ip,
        "clusterIP": "None",
        "ports": [p for p in service_ports if p["name"] == "grpc"],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(options, options.name),
            "spec": cluster_ip,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(options, f"{options.name}-headless"),
            "spec": headless,
        },
    ]


def autoscaler(options: DeployOptions) -> Manifest:
    queue = _pods_metric(QUEUE_METRIC, str(options.target_queue_us))
    if options.gpus:
        fallback = _pods_metric(GPU_METRIC, f"{options.target_utilization * 10}m")  # a 0-1 ratio
    else:
        fallback = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": options.target_utilization},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(options, options.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [queue, fallback],
        },
    }


def disruption_budget(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(options, options.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": options.selector}},
    }


def adapter_rules(options: DeployOptions) -> Manifest:
    """Rules for prometheus-adapter (its Helm chart's `rules.custom`) that publish the
    autoscaler's custom metrics per pod. Queue time is weighted by requests: the queue microseconds
    all models accumulated over the window divided by the requests they completed."""
    resources = {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}

    def rate(metric: str) -> str:
        return f"sum(rate({metric}{{<<.LabelMatchers>>}}[{_RATE_WINDOW}])) by (<<.GroupBy>>)"

    rules = [
        {
            "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
            "resources": resources,
            "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
            "metricsQuery": (
                f"{rate('nv_inference_queue_duration_us')} / "
                f"clamp_min({rate('nv_inference_request_success')}, 0.001)"
            ),
        }
    ]
    if options.gpus:
        rules.append(
            {
                "seriesQuery": 'nv_gpu_utilization{namespace!="",pod!=""}',
                "resources": resources,
                "name": {"matches": "^nv_gpu_utilization$", "as": GPU_METRIC},
                "metricsQuery": "avg(nv_gpu_utilization{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            }
        )
    return {"rules": {"custom": rules}}


def _probe(path: str, failure_threshold: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": _PROBE_PERIOD_SECS,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _pods_metric(name: str, average: str) -> Manifest:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average}},
    }
