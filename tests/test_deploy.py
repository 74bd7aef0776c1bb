"""Cluster manifests without a cluster: repository URLs, GPUs per replica against the configs, and
every manifest validated against the Kubernetes and KServe schemas (tests/manifest_schemas.py)."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as pb

from tests.manifest_schemas import SchemaError, validate
from tritonstack.cli import main
from tritonstack.errors import UsageError
from tritonstack.export.deployment import DeploymentOptions, Device
from tritonstack.export.repository import build_config, write_config
from tritonstack.formats import Format
from tritonstack.serve.admin import ADMIN_HEADER
from tritonstack.serve.deploy import gpus, kserve, kubernetes
from tritonstack.serve.deploy.container import ADMIN_KEY_ENV
from tritonstack.serve.deploy.options import DeployOptions, ModelControl
from tritonstack.spec import CONFIG_NAME, ModelSpec, TensorSpec
from tritonstack.storage.location import RepositoryLocation, S3Endpoint

SPEC = ModelSpec(
    "m",
    (TensorSpec("dense", "float32", (13,)), TensorSpec("ids", "int64", (26,), high=1000)),
    (TensorSpec("p", "float32", (1,)),),
    max_batch_size=64,
)
# Triton 2.51's pattern for S3 URLs with an endpoint (core r24.10, src/filesystem/implementations/s3.h).
TRITON_S3_ENDPOINT_URL = re.compile(
    r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)"
)
# Triton 2.51's restricted API categories (server r24.10, src/restricted_features.h).
TRITON_RESTRICTABLE = {
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
}


def _options(repo: str = "s3://models/prod", gpus: int = 1, **kwargs: Any) -> DeployOptions:
    return DeployOptions(repository=RepositoryLocation.parse(repo), gpus=gpus, **kwargs)


# --- where the repository is ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "endpoint", "triton", "kserve_uri"),
    [
        ("s3://models/prod", None, "s3://models/prod", "s3://models/prod"),
        ("s3://models//prod/", "http://minio.minio:9000", "s3://http://minio.minio:9000/models/prod", None),
        ("s3://models/prod", "https://r2.example.com", "s3://https://r2.example.com:443/models/prod", None),
        ("gs://models/a/b", None, "gs://models/a/b", "gs://models/a/b"),
        (
            "as://acct01/models/prod",
            None,
            "as://acct01/models/prod",
            "https://acct01.blob.core.windows.net/models/prod",
        ),
        ("pvc://model-store/repo", None, "/models/repo", "pvc://model-store/repo"),
        ("pvc://model-store", None, "/models", "pvc://model-store"),
    ],
)
def test_repository_urls_for_triton_and_kserve(
    repo: str, endpoint: str | None, triton: str, kserve_uri: str | None
) -> None:
    location = RepositoryLocation.parse(repo)
    assert location.triton_path(S3Endpoint.parse(endpoint) if endpoint else None) == triton
    if kserve_uri is not None:
        assert location.kserve_uri() == kserve_uri
    if endpoint:
        assert TRITON_S3_ENDPOINT_URL.fullmatch(triton)


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        ("triton_repo", "cannot read this machine's folders"),
        ("/srv/models", "cannot read this machine's folders"),
        ("http://models/prod", "cannot read this machine's folders"),
        ("s3://Models/prod", "'Models' is not a valid bucket name"),
        ("s3://minio:9000/models/prod", "--s3-endpoint"),
        ("s3://models/my models", "path segment 'my models'"),
        ("s3://models/../etc", "path segment '..'"),
        ("as://acct01", "expected"),
        ("as://acct01/Bad_Container", "not a valid Azure container name"),
        ("pvc://Claim/x", "not a valid claim name"),
    ],
)
def test_bad_repository_urls_are_one_line_errors(repo: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        RepositoryLocation.parse(repo)


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [("minio:9000", "http(s)://HOST"), ("http://minio:99999", "port"), ("http://minio:9000/x", "http(s)://")],
)
def test_bad_endpoints_are_one_line_errors(endpoint: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        S3Endpoint.parse(endpoint)


def test_an_endpoint_is_only_for_s3() -> None:
    with pytest.raises(UsageError, match="--s3-endpoint applies to s3://"):
        _options("gs://models/prod", s3_endpoint=S3Endpoint.parse("http://minio:9000"))


_segment = st.text("abcXYZ019._-", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(
    bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True),
    path=st.lists(_segment, max_size=4),
    host=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    port=st.integers(1, 65535),
    https=st.booleans(),
)
def test_every_accepted_s3_location_matches_tritons_pattern(
    bucket: str, path: list[str], host: str, port: int, https: bool
) -> None:
    location = RepositoryLocation.parse(f"s3://{bucket}/{'/'.join(path)}")
    url = location.triton_path(S3Endpoint.parse(f"{'https' if https else 'http'}://{host}:{port}"))
    match = TRITON_S3_ENDPOINT_URL.fullmatch(url)
    assert match is not None, url
    assert (match.group(2), int(match.group(3)), match.group(4)) == (host, port, bucket)
    assert match.group(5) == "".join(f"/{p}" for p in path)


# --- GPUs per replica ----------------------------------------------------------------------------


def _config(
    kind: str = "KIND_GPU", count: int = 1, ids: tuple[int, ...] = (), fmt: Format = Format.ONNX
) -> pb.ModelConfig:
    """A config whose one instance group is `count` of `kind` on GPUs `ids`, as anyone may write it."""
    config = build_config(SPEC, fmt, DeploymentOptions(device=Device.GPU))  # plans: GPU instances only
    del config.instance_group[:]
    config.instance_group.add(count=count, kind=pb.ModelInstanceGroup.Kind.Value(kind), gpus=ids)
    return config


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("fmt", [Format.ONNX, Format.TORCHSCRIPT])
def test_exported_gpu_configs_put_their_instances_on_every_gpu(tmp_path: Path, n: int, fmt: Format) -> None:
    """What `export --device gpu --instances 2` writes serves any GPU count: 2 on each GPU."""
    config = build_config(SPEC, fmt, DeploymentOptions(device=Device.GPU, instances=2))
    (tmp_path / "m").mkdir()
    write_config(tmp_path / "m" / CONFIG_NAME, config)
    [placement] = gpus.plan(gpus.read_configs(tmp_path), n)
    assert placement.instances == dict.fromkeys(range(n), 2)
    assert placement.describe().endswith(f"({2 * n} instances)")


def test_placements_follow_the_instance_groups() -> None:
    config = _config(count=1, ids=(0,))
    config.instance_group.add(count=3, kind=pb.ModelInstanceGroup.Kind.Value("KIND_GPU"), gpus=[2])
    [placement] = gpus.plan({"m": config}, 4)
    assert placement.instances == {0: 1, 2: 3}
    assert placement.describe() == "m: 1 on GPU 0, 3 on GPU 2 (4 instances)"
    assert gpus.plan({"m": _config(count=2)}, 4)[0].describe() == "m: 2 on each of GPUs 0-3 (8 instances)"
    auto = _config("KIND_AUTO")
    assert gpus.plan({"m": auto}, 0)[0].instances == {gpus.CPU: 1}
    assert gpus.plan({"m": auto}, 2)[0].instances == {0: 1, 1: 1}
    bare = _config()
    del bare.instance_group[:]  # Triton's default group: one instance per GPU, else on the CPU
    assert gpus.plan({"m": bare}, 2)[0].instances == {0: 1, 1: 1}
    assert gpus.plan({"m": _config("KIND_CPU", count=2)}, 0)[0].describe() == "m: 2 on the CPU (2 instances)"
    assert gpus.plan({"m": _config("KIND_MODEL")}, 1)[0].instances == {gpus.MODEL: 1}


@pytest.mark.parametrize(
    ("config", "n", "fragment"),
    [
        (_config(ids=(0, 1)), 1, "places instances on GPU 1 but a replica with --gpus 1 has GPUs 0"),
        (_config(ids=(3, 4)), 3, "GPU 3, 4"),
        (_config("KIND_CPU"), 1, "runs on the CPU (KIND_CPU) but --gpus 1"),
        (_config("KIND_GPU"), 0, "asks for GPU instances (KIND_GPU) but --gpus is 0"),
        (_config("KIND_AUTO", fmt=Format.TENSORRT), 0, "TensorRT plan"),
    ],
)
def test_configs_that_disagree_with_the_gpu_count_are_refused(
    config: pb.ModelConfig, n: int, fragment: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)) as info:
        gpus.plan({"dlrm_onnx": config}, n)
    assert "dlrm_onnx" in str(info.value) and "\n" not in str(info.value)


# --- the manifests against the published schemas ------------------------------------------------

KUBE_CASES = {
    "s3 endpoint, 1 GPU, poll": _options(s3_endpoint=S3Endpoint.parse("http://minio.minio:9000")),
    "gcs, CPU, explicit": _options(
        "gs://models/prod", 0, model_control=ModelControl.EXPLICIT, namespace="ml"
    ),
    "azure, 4 GPUs": _options("as://acct01/models/prod", 4),
    "claim, 2 GPUs, own account": _options("pvc://model-store/repo", 2, service_account="triton-sa"),
}
KSERVE_CASES = {
    "s3, grpc, 1 GPU": (_options(), kserve.Protocol.GRPC_V2),
    "azure, rest, CPU": (_options("as://acct01/models/prod", 0), kserve.Protocol.V2),
    "claim, rest, 2 GPUs": (_options("pvc://model-store/repo", 2), kserve.Protocol.V2),
}


def _documents(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for name, docs in files.items() if name != "prometheus-adapter-values.yaml" for doc in docs]


@pytest.mark.parametrize("case", KUBE_CASES)
def test_kubernetes_manifests_validate(case: str) -> None:
    docs = _documents(kubernetes.manifests(KUBE_CASES[case]))
    assert sorted(d["kind"] for d in docs) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("case", KSERVE_CASES)
def test_kserve_manifests_validate(case: str) -> None:
    options, protocol = KSERVE_CASES[case]
    docs = _documents(kserve.manifests(options, protocol))
    assert {"InferenceService", "ServingRuntime"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate(doc)


def test_the_validators_refuse_what_a_cluster_would() -> None:
    """Not vacuous: a misspelt field, a wrong type and a missing required field are caught."""
    deployment = kubernetes.deployment(_options())
    edits: tuple[Callable[[dict[str, Any]], object], ...] = (
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="45"),
        lambda d: d["spec"].pop("selector"),
    )
    for edit in edits:
        broken = copy.deepcopy(deployment)
        edit(broken)
        with pytest.raises(SchemaError):
            validate(broken)
    service = kserve.inference_service(_options(), kserve.Protocol.V2)
    edits = (
        lambda d: d["spec"]["predictor"]["model"].update(storageURI="s3://x"),
        lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"),
        lambda d: d["spec"]["predictor"]["model"]["resources"].update(limit={}),
        lambda d: d["spec"]["predictor"].update(minReplicas="2"),
    )
    for edit in edits:
        broken = copy.deepcopy(service)
        edit(broken)
        with pytest.raises(SchemaError):
            validate(broken)


# --- what the manifests say ----------------------------------------------------------------------


def _container(options: DeployOptions) -> dict[str, Any]:
    containers: list[dict[str, Any]] = kubernetes.deployment(options)["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").partition("=")[::2] for a in args[1:])


def test_deployment_runs_triton_on_the_repository_with_strict_readiness() -> None:
    options = _options(s3_endpoint=S3Endpoint.parse("http://minio.minio:9000"), gpus=4)
    triton = _container(options)
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert triton["args"][0] == "tritonserver"
    flags = _flags(triton["args"])
    assert flags["model-repository"] == "s3://http://minio.minio:9000/models/prod"
    assert (flags["model-control-mode"], flags["repository-poll-secs"]) == ("poll", "15")
    assert flags["strict-readiness"] == "true"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= options.startup_secs
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 4
    explicit = _flags(_container(_options(model_control=ModelControl.EXPLICIT))["args"])
    assert (explicit["model-control-mode"], explicit["load-model"]) == ("explicit", "*")
    assert "repository-poll-secs" not in explicit
    assert "nvidia.com/gpu" not in _container(_options(gpus=0))["resources"]["limits"]


def test_admin_apis_need_the_key_from_a_secret_and_probes_stay_open() -> None:
    options = _options(admin_key_secret="ops-key")
    triton = _container(options)
    flags = _flags(triton["args"])
    for flag in ("http-restricted-api", "grpc-restricted-protocol"):
        apis, _, header = flags[flag].partition(":")
        assert set(apis.split(",")) == {"model-repository", "shared-memory", "logging", "trace"}
        assert set(apis.split(",")) <= TRITON_RESTRICTABLE
        assert header == f"{ADMIN_HEADER}=$({ADMIN_KEY_ENV})"
    [key] = [e for e in triton["env"] if e["name"] == ADMIN_KEY_ENV]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "ops-key", "key": "key", "optional": False}


def test_credentials_come_from_the_secret_by_store() -> None:
    def env(options: DeployOptions) -> dict[str, Any]:
        return {e["name"]: e.get("valueFrom", e.get("value")) for e in _container(options)["env"]}

    s3 = env(_options(credentials_secret="s3-creds"))
    assert s3["AWS_ACCESS_KEY_ID"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "AWS_ACCESS_KEY_ID",
        "optional": False,
    }
    assert s3["AWS_SESSION_TOKEN"]["secretKeyRef"]["optional"] is True
    azure = env(_options("as://acct01/models/prod"))
    assert azure["AZURE_STORAGE_ACCOUNT"] == "acct01"
    assert azure["AZURE_STORAGE_KEY"]["secretKeyRef"]["name"] == "triton-storage"
    gcs_options = _options("gs://models/prod")
    assert env(gcs_options)["GOOGLE_APPLICATION_CREDENTIALS"].startswith("/var/run/secrets/gcs/")
    gcs_volumes = kubernetes.deployment(gcs_options)["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": "triton-storage", "defaultMode": 0o440} in [v.get("secret") for v in gcs_volumes]
    assert set(env(_options(use_credentials=False))) == {ADMIN_KEY_ENV}
    assert set(env(_options("pvc://model-store/repo"))) == {ADMIN_KEY_ENV}


def test_non_root_read_only_with_a_writable_tmp() -> None:
    options = _options(cache_size="50Gi")
    pod = kubernetes.deployment(options)["spec"]["template"]["spec"]
    [triton] = pod["containers"]
    security = triton["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["runAsUser"] != 0 and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in triton["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False


def test_a_claim_is_mounted_read_only_where_triton_reads_it() -> None:
    pod = kubernetes.deployment(_options("pvc://model-store/repo"))["spec"]["template"]["spec"]
    [triton] = pod["containers"]
    assert _flags(triton["args"])["model-repository"] == "/models/repo"
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pod[
        "volumes"
    ]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in triton["volumeMounts"]


def test_termination_drains_then_lets_triton_finish_within_the_grace_period() -> None:
    options = _options(drain_secs=15, exit_timeout_secs=40)
    pod = kubernetes.deployment(options)["spec"]["template"]["spec"]
    [triton] = pod["containers"]
    assert triton["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert _flags(triton["args"])["exit-timeout-secs"] == "40"
    assert pod["terminationGracePeriodSeconds"] > 15 + 40
    assert "lifecycle" not in _container(_options(drain_secs=0))


def test_services_autoscaler_and_budget_select_the_deployment() -> None:
    options = _options(name="ranker", gpus=0)
    deployment = kubernetes.deployment(options)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    metrics_port = next(p for p in _container(options)["ports"] if p["name"] == "metrics")
    assert annotations["prometheus.io/port"] == str(metrics_port["containerPort"])
    assert _flags(_container(options)["args"])["metrics-port"] == annotations["prometheus.io/port"]
    service, headless = kubernetes.services(options)
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert headless["metadata"]["name"] == "ranker-headless" and headless["spec"]["clusterIP"] == "None"
    for selector in (
        service["spec"]["selector"],
        headless["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        kubernetes.disruption_budget(options)["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    hpa = kubernetes.autoscaler(options)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (options.min_replicas, options.max_replicas)
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count


@pytest.mark.parametrize("n", [0, 2])
def test_the_autoscaler_reads_the_metrics_the_adapter_publishes(n: int) -> None:
    options = _options(gpus=n, target_queue_us=2500, target_utilization=70)
    queue, fallback = kubernetes.autoscaler(options)["spec"]["metrics"]
    published = {r["name"]["as"] for r in kubernetes.adapter_rules(options)["rules"]["custom"]}
    assert queue["pods"]["metric"]["name"] in published
    assert queue["pods"]["target"] == {"type": "AverageValue", "averageValue": "2500"}
    if n:
        assert fallback["pods"]["metric"]["name"] in published
        assert fallback["pods"]["target"]["averageValue"] == "700m"  # nv_gpu_utilization is 0-1
    else:
        assert fallback["resource"] == {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 70},
        }
        assert len(published) == 1


def test_kserve_serves_the_same_bucket_through_its_runtime() -> None:
    options = _options("as://acct01/models/prod", gpus=2, credentials_secret="blob-creds")
    files = kserve.manifests(options, kserve.Protocol.GRPC_V2)
    [runtime], [service], [account] = (
        files[n] for n in ("servingruntime.yaml", "inferenceservice.yaml", "serviceaccount.yaml")
    )
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["storageUri"] == "https://acct01.blob.core.windows.net/models/prod"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 2
    [triton] = runtime["spec"]["containers"]
    flags = _flags(triton["args"])
    assert model["ports"] == [{"name": "h2c", "containerPort": int(flags["grpc-port"]), "protocol": "TCP"}]
    assert (flags["model-repository"], flags["model-control-mode"]) == (kserve.KSERVE_MODEL_DIR, "none")
    assert triton["securityContext"]["readOnlyRootFilesystem"]
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": "blob-creds"}]
    own = kserve.manifests(_options(service_account="mine"), kserve.Protocol.V2)
    assert "serviceaccount.yaml" not in own
    assert own["inferenceservice.yaml"][0]["spec"]["predictor"]["serviceAccountName"] == "mine"
    assert "ports" not in own["inferenceservice.yaml"][0]["spec"]["predictor"]["model"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "Triton"}, "--name 'Triton'"),
        ({"name": "t" * 55}, "at most 54"),
        ({"namespace": "ML"}, "--namespace 'ML'"),
        ({"min_replicas": 3, "max_replicas": 2}, "--min-replicas (3) <= --max-replicas (2)"),
        ({"memory": "8 GB"}, "--memory '8 GB' is not a Kubernetes quantity"),
        ({"target_utilization": 120}, "percentage"),
        ({"gpus": -1}, "--gpus must be 0 or more"),
        ({"release": "24.10; rm"}, "--release"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        _options(**kwargs)


def test_the_docs_list_the_defaults_in_force() -> None:
    """docs/deploy.md's table of defaults against DeployOptions, the one place they live."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    table = text.split("## Defaults", 1)[1]
    rows = dict(re.findall(r"^\| `--([a-z-]+)` \| ([^|]+?) \|", table, flags=re.MULTILINE))
    defaults = {f.name: f.default for f in dataclasses.fields(DeployOptions)}
    assert len(rows) > 10
    for flag, documented in rows.items():
        value = defaults[flag.replace("-", "_")]
        assert str(getattr(value, "value", value)) == documented, flag


# --- the command ---------------------------------------------------------------------------------


def _repo_with(tmp_path: Path, config: pb.ModelConfig) -> Path:
    repo = tmp_path / "triton_repo"
    (repo / "dlrm_onnx").mkdir(parents=True)
    write_config(repo / "dlrm_onnx" / CONFIG_NAME, config)
    return repo


def test_deploy_kubernetes_writes_valid_manifests_and_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo_with(tmp_path, _config(count=2))
    out = tmp_path / "k8s"
    argv = ["deploy", "kubernetes", "--repo", "s3://models/prod", "--s3-endpoint", "http://minio:9000"]
    assert main([*argv, "--gpus", "2", "--configs", str(repo), "--out", str(out), "--namespace", "ml"]) == 0
    printed = capsys.readouterr().out
    assert "dlrm_onnx: 2 on each of GPUs 0, 1 (4 instances)" in printed
    assert "kubectl -n ml create secret generic triton-admin" in printed
    assert f"kubectl -n ml apply -f {out}" in printed
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "deployment.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "prometheus-adapter-values.yaml",
        "service.yaml",
    ]
    for path in out.glob("*.yaml"):
        text = path.read_text()
        assert "&id" not in text  # no YAML anchors: every object reads on its own
        if path.name != "prometheus-adapter-values.yaml":
            for doc in yaml.safe_load_all(text):
                validate(doc)
                assert doc["metadata"]["namespace"] == "ml"


def test_deploy_kserve_writes_valid_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kserve"
    argv = ["deploy", "kserve", "--repo", "s3://models/prod", "--s3-endpoint", "https://minio:9000"]
    assert main([*argv, "--gpus", "0", "--out", str(out), "--protocol", "grpc-v2"]) == 0
    printed = capsys.readouterr().out
    assert "Not checked" in printed
    assert "serving.kserve.io/s3-endpoint=minio:9000 serving.kserve.io/s3-usehttps=1" in printed
    for path in out.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            validate(doc)


def test_deploy_leaves_no_stale_manifests_beside_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-running replaces its own files; a directory with other manifests is refused."""
    out = tmp_path / "k8s"
    argv = ["deploy", "kubernetes", "--repo", "s3://models/prod", "--gpus", "0", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0
    kserve_argv = ["deploy", "kserve", "--repo", "s3://models/prod", "--gpus", "0", "--out", str(out)]
    assert main(kserve_argv) == 2
    assert "holds other manifests (deployment.yaml, hpa.yaml" in capsys.readouterr().err
    assert not (out / "inferenceservice.yaml").exists()


@pytest.mark.parametrize(
    ("args", "config", "fragment"),
    [
        (["--repo", "triton_repo", "--gpus", "1"], None, "cannot read this machine's folders"),
        (["--repo", "s3://models/p", "--gpus", "1"], _config("KIND_CPU"), "dlrm_onnx runs on the CPU"),
        (
            ["--repo", "s3://models/p", "--gpus", "1"],
            _config(ids=(0, 1)),
            "dlrm_onnx places instances on GPU 1",
        ),
        (["--repo", "gs://models/p", "--gpus", "1", "--s3-endpoint", "http://m:9000"], None, "--s3-endpoint"),
    ],
)
def test_deploy_refuses_before_writing_anything(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    config: pb.ModelConfig | None,
    fragment: str,
) -> None:
    out = tmp_path / "k8s"
    configs = ["--configs", str(_repo_with(tmp_path, config))] if config is not None else []
    assert main(["deploy", "kubernetes", *args, *configs, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()
