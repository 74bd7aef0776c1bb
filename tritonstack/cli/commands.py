"""Subcommands of the CLI: their arguments and handlers. Heavy imports stay inside handlers so
`tritonstack --help` is instant."""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tritonstack.cli import bench as bench_cli
from tritonstack.cli import check as check_cli
from tritonstack.cli import manage as manage_commands
from tritonstack.cli import options as cli_options
from tritonstack.cli.interrupt import ending_on_signal
from tritonstack.errors import UsageError
from tritonstack.export.flags import flags_of, read_options
from tritonstack.spec import Array, TensorSpec

if TYPE_CHECKING:
    from tritonstack.export.pipeline import ExportResult
    from tritonstack.serve.tls import Tls

DEFAULT_URL = "127.0.0.1:8001"
DRAIN_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="two_tower, dlrm or dcn_v2")
    p.add_argument("--preset", default="default", help="default (seed registry sizes) or tiny")
    p.add_argument("--config", help="config fields as inline JSON or a JSON file (overrides --preset)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="checkpoint path (default: checkpoints/<arch>.pt)")


def _train(args: argparse.Namespace) -> int:
    from tritonstack import recsys
    from tritonstack.cli.config_option import parse_config
    from tritonstack.recsys.train import train

    arch = recsys.get_architecture(args.arch)
    config = arch.config(parse_config(args.config), args.preset)
    out = args.out or Path("checkpoints") / f"{args.arch}.pt"
    result = train(
        args.arch,
        config,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_path=out,
        progress=True,
    )
    print(f"{args.arch}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, checkpoint {out}")
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help=".pt/.pth/.bin, .safetensors, or a training output folder")
    cli_options.add_repo_flag(p)
    p.add_argument("--name", help="model name (default: the architecture's); each format adds _<format>")
    p.add_argument("--version", type=int, help="version to write (default: the next free one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument(
        "--export-embeddings",
        action="store_true",
        help="two-tower: write user/item embedding tables into each version directory",
    )
    cli_options.add_source_flags(p)
    cli_options.add_flags(p, cli_options.export_flags())


def _export(args: argparse.Namespace) -> int:
    from tritonstack.export.checkpoint import load_model
    from tritonstack.export.object_store import is_remote, open_repository
    from tritonstack.export.pipeline import export_to_repository

    group = cli_options.read_export_group(args)
    source = cli_options.read_model_source(args)
    if args.overwrite and is_remote(args.repo):
        raise UsageError(f"--overwrite: replicas may be serving {args.repo}'s versions; export a new version")
    with open_repository(args.repo, write=True) as repo:
        loaded = load_model(args.checkpoint, source, name=args.name, max_batch_size=group.max_batch_size)
        # Each published format is reported as it lands: a later format's failure (TensorRT missing,
        # say) still leaves the earlier ones exported, and the user sees which.
        export_to_repository(
            loaded,
            group.formats,
            repo,
            options=group.options,
            version=args.version,
            overwrite=args.overwrite,
            embeddings=args.export_embeddings,
            deployment=group.deployment,
            on_done=lambda r: _print_exported(r, args.repo, repo),
        )
    return 0


def _print_exported(r: ExportResult, repo_given: str, repo: Path) -> None:
    where = f"{repo_given.rstrip('/')}/{r.version_dir.relative_to(repo).as_posix()}"
    remote = " (uploaded when the command ends)" if repo != Path(repo_given) else ""
    print(
        f"{r.model_name} v{r.version}: {r.artifact_bytes / 1e6:.1f} MB, max abs diff "
        f"{r.report.max_abs:.2e} vs PyTorch -> {where}{remote}",
        flush=True,
    )
    for warning in r.warnings:  # check-repo's, on what was just published
        print(warning, flush=True)


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo",
        default="triton_repo",
        help="Triton model repository: a folder, or s3://BUCKET/PREFIX (endpoint and credentials from "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... or AWS_PROFILE)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--grpc-port", type=int, help="default: a free port")
    p.add_argument("--http-port", type=int, help="default: a free port")
    p.add_argument("--metrics-port", type=int, help="default: a free port")
    p.add_argument("--log-file", type=Path, help="Triton's log (default: a temporary file)")
    p.add_argument("--watch", action="store_true", help="load new versions as they are exported (polls 1/s)")
    p.add_argument(
        "--grpc-use-ssl", action="store_true", help="serve gRPC over TLS (needs --grpc-cert, --grpc-key)"
    )
    p.add_argument("--grpc-cert", type=Path, help="PEM server certificate for --grpc-use-ssl")
    p.add_argument("--grpc-key", type=Path, help="PEM server private key for --grpc-use-ssl")
    p.add_argument("--grpc-root-cert", type=Path, help="PEM root certificate (for clients' certificates)")
    p.add_argument(
        "--grpc-use-ssl-mutual",
        action="store_true",
        help="mutual TLS: serve only clients with a certificate chaining to --grpc-root-cert",
    )
    p.add_argument(
        "--open-admin-apis",
        action="store_true",
        help="bound beyond loopback, open gRPC's admin APIs (model repository, shared memory, trace, "
        "logging) to anyone who can reach the port (default: closed there)",
    )
    p.add_argument(
        "--drain-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, report not ready (HTTP /v2/health/ready) but keep serving this long, so load "
        "balancers move away; then finish the requests in flight and exit (default: 5; Ctrl-C: none)",
    )


def _serve(args: argparse.Namespace) -> int:
    from tritonstack.serve import TritonServer
    from tritonstack.serve.remote import RemoteRepository
    from tritonstack.serve.server import LOAD_ALL
    from tritonstack.serve.supervise import Supervisor

    if not 0 <= args.drain_grace <= 3600:
        raise UsageError(f"--drain-grace {args.drain_grace:g}: give seconds from 0 to 3600")
    remote = RemoteRepository.open(args.repo) if "://" in args.repo else None
    server = TritonServer(
        remote.triton_path if remote else Path(args.repo),
        env=remote.environment if remote else None,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file,
        # Explicit: the only mode in which Triton reloads a model on request (serve/supervise.py);
        # with --watch the supervisor loads the repository's models and rescans it.
        model_control_mode="explicit",
        extra_args=() if args.watch else (LOAD_ALL,),
        tls=_tls(args),
        open_admin_apis=args.open_admin_apis,
        drain_grace=args.drain_grace,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # while starting
    with server:
        # From here signals are taken by sigtimedwait (the supervisor between its checks, then the
        # grace), so a second one only cuts the grace short.
        signal.pthread_sigmask(signal.SIG_BLOCK, DRAIN_SIGNALS)
        supervisor = Supervisor(
            server,
            watch=args.watch,
            report=lambda line: print(line, flush=True),
            listing=remote.models if remote else None,
        )
        if args.watch:
            supervisor.check()  # loads the models, naming those that fail
        print(f"Triton ready: gRPC {server.grpc_url}, HTTP {server.http_url}, log {server.log_path}")
        if server.admin_closed:
            print(
                "Admin APIs (model repository, shared memory, trace, logging) are closed beyond loopback; "
                f"HTTP there answers health probes only, at {server.health_url}"
            )
        print("Ctrl-C stops it; SIGTERM drains it first (--drain-grace).", flush=True)
        grace = args.drain_grace if supervisor.run_until(DRAIN_SIGNALS) == signal.SIGTERM else 0.0
        started = time.monotonic()
        print(
            f"Draining: not ready, serving {grace:g} s more, then finishing the requests in flight"
            if grace
            else "Draining: finishing the requests in flight",
            flush=True,
        )
        server.begin_drain()
        if grace:
            signal.sigtimedwait(DRAIN_SIGNALS, grace)  # a second signal ends the grace
    print(f"Stopped after {time.monotonic() - started:.1f} s", flush=True)
    return 0


def _tls(args: argparse.Namespace) -> Tls | None:
    from tritonstack.serve.tls import Tls as TlsFiles  # not at module level: `serve` imports tritonclient

    if not (args.grpc_use_ssl or args.grpc_use_ssl_mutual):
        return None
    if args.grpc_cert is None or args.grpc_key is None:
        raise UsageError("--grpc-use-ssl needs --grpc-cert and --grpc-key (PEM files)")
    return TlsFiles(args.grpc_cert, args.grpc_key, args.grpc_root_cert, mutual=args.grpc_use_ssl_mutual)


def _add_infer(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name in the repository, e.g. dlrm_onnx")
    p.add_argument("--url", default=DEFAULT_URL, help="Triton's gRPC address HOST:PORT")
    p.add_argument("--version", type=int)
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy|JSON",
        help="an input as a .npy file or a JSON list (repeatable)",
    )
    p.add_argument("--random", type=int, metavar="BATCH", help="send valid random inputs of this batch size")
    p.add_argument("--save-dir", type=Path, help="write each output as NAME.npy here instead of printing")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    # Two flags, not `--shm [KIND]`: an optional value would take the model's name in `--shm MODEL`.
    shm = p.add_mutually_exclusive_group()
    shm.add_argument(
        "--shm",
        action="store_const",
        const="system",
        help="send tensors through system shared memory (same host)",
    )
    shm.add_argument(
        "--cuda-shm",
        action="store_const",
        const="cuda",
        dest="shm",
        help="send tensors through CUDA shared memory (same host, GPU memory; needs tritonstack[cuda])",
    )
    p.add_argument("--cuda-device", type=int, default=0, metavar="N", help="the GPU for --cuda-shm")
    p.add_argument("--ssl", action="store_true", help="connect over TLS")
    p.add_argument("--root-certificates", metavar="PEM", help="CA certificate to verify the server with")
    p.add_argument(
        "--private-key", metavar="PEM", help="client key, for a server that requires client certificates"
    )
    p.add_argument(
        "--certificate-chain", metavar="PEM", help="client certificate that goes with --private-key"
    )


def _infer(args: argparse.Namespace) -> int:
    from tritonstack.client import TritonClient

    if args.random is not None and args.random < 1:
        raise UsageError(f"--random {args.random}: the batch size must be at least 1")
    given = dict(_read_input(text) for text in args.input or ())  # refused before connecting

    with TritonClient(
        args.url,
        timeout=args.timeout,
        ssl=args.ssl,
        root_certificates=args.root_certificates,
        private_key=args.private_key,
        certificate_chain=args.certificate_chain,
        use_shared_memory=args.shm or False,
        cuda_device=args.cuda_device,
    ) as triton:
        spec = triton.model_spec(args.model, args.version)
        if args.random:
            inputs = spec.random_inputs(args.random)
        elif args.input:
            inputs = {name: _as_input(name, value, spec.inputs) for name, value in given.items()}
        else:
            raise UsageError("give --input NAME=FILE.npy|JSON for each input, or --random BATCH")
        outputs = triton.infer(args.model, inputs, version=args.version)
    for name, value in outputs.items():
        if args.save_dir:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            np.save(args.save_dir / f"{name}.npy", value)
            print(f"{name}: {value.dtype} {list(value.shape)} -> {args.save_dir / name}.npy")
        else:
            print(f"{name}: {value.dtype} {list(value.shape)}\n{np.array2string(value, threshold=50)}")
    return 0


def _read_input(text: str) -> tuple[str, Array]:
    """`NAME=FILE.npy` or `NAME=JSON` as an array of numbers (never of Python objects)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"--input {text!r}: expected NAME=FILE.npy or NAME=JSON")
    if value.endswith(".npy"):
        if not Path(value).is_file():
            raise UsageError(f"--input {name}: no such file {value}")
        try:
            array = np.load(value, allow_pickle=False)
        except ValueError as exc:  # object arrays need unpickling: never done
            raise UsageError(
                f"--input {name}: {value} holds Python objects, not numbers: save numbers"
            ) from exc
    else:
        try:
            array = np.asarray(json.loads(value))
        except (json.JSONDecodeError, ValueError) as exc:
            raise UsageError(f"--input {name}: not a .npy file or a JSON array ({exc})") from exc
    if array.dtype.kind not in "biuf":
        raise UsageError(
            f"--input {name}: not an array of numbers (dtype {array.dtype}; an integer beyond 64 bits?)"
        )
    return name, array


def _as_input(name: str, array: Array, specs: tuple[TensorSpec, ...]) -> Array:
    """The array in the model's dtype: ids are refused unless whole numbers in range (a cast
    would truncate 0.7 to 0)."""
    dtype = {s.name: np.dtype(s.dtype) for s in specs}.get(name)
    if dtype is None:
        return array
    if dtype.kind in "iu":
        if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
            raise UsageError(f"--input {name}: {dtype} ids must be whole numbers, got fractions")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise UsageError(f"--input {name}: values beyond {dtype}'s range")
    return array.astype(dtype)


def _add_demo(p: argparse.ArgumentParser) -> None:
    cli_options.add_flags(p, flags_of(cli_options.DemoOptions))


def _demo(args: argparse.Namespace) -> int:
    from tritonstack.cli.demo import run_demo

    return run_demo(read_options(cli_options.DemoOptions, vars(args)))


def _add_deploy(p: argparse.ArgumentParser) -> None:
    # Defaults live in DeployOptions alone (docs/deploy.md lists them): options not given stay unset.
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    kube = targets.add_parser(
        "kubernetes",
        help="Deployment, Services, autoscaler and disruption budget for NVIDIA's Triton container",
        description="Write a Deployment, Services, a HorizontalPodAutoscaler and a PodDisruptionBudget.",
        argument_default=argparse.SUPPRESS,
    )
    kserve = targets.add_parser(
        "kserve",
        help="KServe InferenceService and ServingRuntime for NVIDIA's Triton container",
        description="Write a KServe InferenceService on the repository and its Triton ServingRuntime.",
        argument_default=argparse.SUPPRESS,
    )
    for target in (kube, kserve):
        _add_deploy_common(target)
    kube.add_argument(
        "--model-control",
        choices=["poll", "explicit"],
        help="poll (default): replicas load versions published to the repository by themselves; "
        "explicit: every model loads at start, later loads go through the admin API",
    )
    kube.add_argument("--poll-secs", type=int, help="seconds between polls of the repository")
    kube.add_argument("--startup-secs", type=int, help="time allowed to download and load every model")
    kube.add_argument(
        "--target-queue-us", type=int, help="average queue time per request (us) that adds replicas"
    )
    kube.add_argument("--target-utilization", type=int, help="CPU (or GPU) percent for the second metric")
    kserve.add_argument(
        "--protocol", choices=["v2", "grpc-v2"], default="v2", help="the endpoint KServe routes to"
    )


def _add_deploy_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo",
        required=True,
        help="the repository as the cluster reads it: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, "
        "as://ACCOUNT/CONTAINER/PREFIX or pvc://CLAIM/PATH",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the manifests")
    p.add_argument("--gpus", type=int, required=True, help="GPUs per replica (0: CPU only)")
    p.add_argument(
        "--configs",
        type=Path,
        default=None,
        help="the local repository you publish (e.g. triton_repo): its instance groups are checked "
        "against --gpus",
    )
    p.add_argument("--name", help="name of every object (default: triton)")
    p.add_argument("--namespace", help="namespace (default: kubectl's)")
    p.add_argument("--image", help="Triton container image (default: NVIDIA's on nvcr.io)")
    p.add_argument(
        "--release", help="NGC release, the image tag's RELEASE-py3 (default: the one tested here)"
    )
    p.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible store, e.g. http://minio.minio:9000")
    p.add_argument("--credentials-secret", help="Secret with the store's credentials (default: NAME-storage)")
    p.add_argument(
        "--no-credentials",
        action="store_true",
        default=False,
        help="read the store with the pod's own identity (IRSA, Workload Identity) or anonymously",
    )
    p.add_argument(
        "--admin-key-secret", help="Secret whose `key` unlocks the admin APIs (default: NAME-admin)"
    )
    p.add_argument("--service-account", help="run the pods under this ServiceAccount")
    p.add_argument("--cpu", help="CPU request per replica")
    p.add_argument("--memory", help="memory request and limit per replica")
    p.add_argument("--cache-size", help="size of /tmp, which holds Triton's copy of the repository")
    p.add_argument("--min-replicas", type=int)
    p.add_argument("--max-replicas", type=int)
    p.add_argument("--exit-timeout-secs", type=int, help="Triton's wait for in-flight requests on SIGTERM")
    p.add_argument("--drain-secs", type=int, help="wait before SIGTERM while endpoints are updated")
    p.add_argument(
        "--grpc-max-connection-age-secs",
        type=int,
        help="Triton closes older gRPC connections, so clients reconnect to new replicas",
    )


def _deploy(args: argparse.Namespace) -> int:
    import dataclasses

    from tritonstack.serve.deploy import gpus, kserve, kubernetes
    from tritonstack.serve.deploy.manifest import write_manifests
    from tritonstack.serve.deploy.options import DeployOptions, ModelControl
    from tritonstack.serve.deploy.steps import next_steps
    from tritonstack.storage.location import RepositoryLocation, S3Endpoint

    given = {f.name: vars(args)[f.name] for f in dataclasses.fields(DeployOptions) if f.name in vars(args)}
    if "s3_endpoint" in given:
        given["s3_endpoint"] = S3Endpoint.parse(given["s3_endpoint"])
    if "model_control" in given:
        given["model_control"] = ModelControl(given["model_control"])
    options = DeployOptions(
        **given, repository=RepositoryLocation.parse(args.repo), use_credentials=not args.no_credentials
    )
    if args.configs is not None:
        placements = gpus.plan(gpus.read_configs(args.configs), options.gpus)
        print(f"Instances per replica ({options.gpus} GPUs), from {args.configs}:")
        for placement in placements:
            print(f"  {placement.describe()}")
    else:
        print(f"Not checked: the repository's instance groups against --gpus {options.gpus} (--configs DIR)")
    if args.target == "kubernetes":
        files = kubernetes.manifests(options)
    else:
        files = kserve.manifests(options, kserve.Protocol(args.protocol))
    for path in write_manifests(args.out, files):
        print(f"wrote {path}")
    print("Then:")
    for step in next_steps(options, args.out, kserve=args.target == "kserve"):
        print(f"  {step}")
    return 0


Handler = Callable[[argparse.Namespace], int]
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {
    "train": (_add_train, _train, "train a reference model on synthetic data and save a checkpoint"),
    "export": (
        _add_export,
        ending_on_signal(_export),
        "export a checkpoint to verified ONNX/TorchScript in a Triton repository",
    ),
    "export-all": (
        manage_commands.add_export_all,
        ending_on_signal(manage_commands.export_all),
        "export every checkpoint under a folder as the next version of its model",
    ),
    "models": (
        manage_commands.add_models,
        ending_on_signal(manage_commands.models),
        "list a repository's versions with their status; promote or prune versions",
    ),
    "check-repo": (
        check_cli.add_arguments,
        check_cli.handler,
        "check a model repository against what a Triton release's native backends load",
    ),
    "serve": (_add_serve, _serve, "serve a model repository with the embedded Triton"),
    "infer": (_add_infer, _infer, "send one request to a served model over gRPC"),
    "demo": (_add_demo, _demo, "train, export, serve and check the three reference models end to end"),
    "deploy": (_add_deploy, _deploy, "write Kubernetes or KServe manifests serving a published repository"),
    "bench": (
        bench_cli.add_arguments,
        bench_cli.handler,
        "measure served latency and throughput against in-process runs",
    ),
}
