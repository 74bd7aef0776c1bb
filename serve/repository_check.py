"""What Triton cannot load in a model repository, found before Triton looks.

Triton treats every directory at the repository's top level as a model. Two mistakes it handles
badly: an invalid `config.pbtxt` leaves the model out of its index without a state (the server
reports ready, the model is simply absent), and a config whose version policy selects no version
directory keeps the server unready without saying why. Both, and a model directory without a
config, are named here, one reason per model.
"""

from __future__ import annotations

from pathlib import Path

from tritonstack.errors import RepositoryError
from tritonstack.spec import CONFIG_NAME, read_config


def repository_problems(repo: Path) -> dict[str, str]:
    """Model name -> why Triton cannot load it, for every model directory of `repo`."""
    problems = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        problem = model_problem(model_dir)
        if problem is not None:
            problems[model_dir.name] = problem
    return problems


def being_written(model_dir: Path) -> bool:
    """A new model an export is still writing: no config yet, its staging directory present."""
    try:
        return not (model_dir / CONFIG_NAME).exists() and any(
            p.name.startswith(".") for p in model_dir.iterdir()
        )
    except OSError:
        return False


def model_problem(model_dir: Path) -> str | None:
    """Why Triton cannot load the model in `model_dir`, or None when its layout is sound."""
    config_path = model_dir / CONFIG_NAME
    try:
        versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError as exc:
        return f"cannot read {model_dir}: {exc.strerror}"
    if not config_path.is_file():
        interrupted = " (an interrupted export?)" if versions or being_written(model_dir) else ""
        return f"no {CONFIG_NAME}{interrupted}: re-export the model or remove {model_dir}"
    try:
        config = read_config(config_path)
    except RepositoryError as exc:
        return str(exc)
    except UnicodeDecodeError as exc:
        return f"{config_path} is not text: {exc}"
    policy = config.version_policy
    if policy.WhichOneof("policy_choice") == "specific":
        wanted = sorted(set(policy.specific.versions))
        if not set(wanted) & set(versions):
            have = ", ".join(map(str, versions)) or "none"
            return (
                f"{config_path} serves versions {', '.join(map(str, wanted))} (version_policy) but the "
                f"version directories are {have}: promote an existing version or re-export"
            )
    elif not versions:
        return (
            f"{CONFIG_NAME} but no version directory (an interrupted export?): re-export the model "
            f"or remove {model_dir}"
        )
    return None
