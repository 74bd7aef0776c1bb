"""What to run before `kubectl apply`: the Secrets the manifests name are never written to files
(a key in a manifest ends up in version control), so they are created from the command line."""

from __future__ import annotations

import shlex
from pathlib import Path

from tritonstack.serve.deploy.container import ADMIN_KEY_ITEM, STORE_KEYS
from tritonstack.serve.deploy.options import DeployOptions

_KSERVE_S3_ANNOTATION = "serving.kserve.io/s3-"


def next_steps(options: DeployOptions, out: Path, *, kserve: bool) -> list[str]:
    """Shell commands, in order: the admin key, the store's credentials, then the manifests."""
    ns = f" -n {shlex.quote(options.namespace)}" if options.namespace else ""
    key = "\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')\""
    steps = [
        f"kubectl{ns} create secret generic {options.admin_secret} --from-literal={ADMIN_KEY_ITEM}={key}"
    ]
    secret = options.storage_secret
    if secret is not None:
        scheme = options.repository.scheme
        sources = " ".join(
            f"--from-file={k.key}=KEY.json" if k.env is None else f"--from-literal={k.key}=..."
            for k in STORE_KEYS[scheme]
            if k.required
        )
        steps.append(f"kubectl{ns} create secret generic {secret} {sources}")
        endpoint = options.s3_endpoint
        if kserve and endpoint is not None:
            steps.append(
                f"kubectl{ns} annotate secret {secret} {_KSERVE_S3_ANNOTATION}endpoint={endpoint.address} "
                f"{_KSERVE_S3_ANNOTATION}usehttps={int(endpoint.https)}"
            )
    steps.append(f"kubectl{ns} apply -f {shlex.quote(str(out))}")
    return steps
