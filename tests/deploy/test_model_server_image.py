"""The `model-server` image target and deploy/compose.model-server.yaml, which swaps it in.

The image runs our fdl-model-server under TF Serving's name, so compose and Kubernetes start it
with tensorflow/serving's entrypoint and flags; the override changes nothing else.
"""

from __future__ import annotations

from pathlib import Path

from deploy.lint.common import load_compose, merge_compose
from harness import containers as c
from harness.procs import REPO_ROOT, VENV_BIN, free_port
from harness.procs import run_command as run
from serving.flags import parse_flags

DEPLOY = REPO_ROOT / "deploy"


def swapped_serving() -> dict:
    merged = merge_compose(
        merge_compose(c.compose(), load_compose(DEPLOY / "compose.cpu.yaml")),
        load_compose(DEPLOY / "compose.model-server.yaml"),
    )
    return merged["services"]["serving"]


def test_override_changes_only_the_image() -> None:
    base, swapped = c.service("serving"), swapped_serving()
    assert swapped["image"].startswith("fdl-serve/model-server:")
    assert swapped["build"]["target"] == "model-server"
    assert c.stages()["model-server"].name == "model-server"
    rest = {k: v for k, v in swapped.items() if k not in ("image", "build")}
    assert rest == {k: v for k, v in base.items() if k != "image"}


def test_image_runs_tf_serving_entrypoint_and_flags() -> None:
    stage = c.stages()["model-server"]
    entrypoint = stage.last("ENTRYPOINT")
    assert entrypoint is not None
    # tini as PID 1, then TF Serving's name; compose runs that name under the engine's init.
    assert entrypoint.argv() == ["/usr/bin/tini", "-s", "--", "tensorflow_model_server"]
    assert c.service("serving")["entrypoint"] == ["tensorflow_model_server"]
    assert c.service("serving")["init"] is True
    runs = " ".join(i.args for i in stage.instructions if i.keyword == "RUN")
    assert "ln -s /opt/venv/bin/fdl-model-server /opt/venv/bin/tensorflow_model_server" in runs
    ports = stage.last("EXPOSE")
    assert ports is not None and ports.args.split() == ["8500", "8501"]
    # Our server's flag parser accepts the image's defaults and every flag compose passes.
    image_flags = parse_flags(c.image_cmd("model-server"))
    assert (image_flags.port, image_flags.rest_api_port) == (8500, 8501)
    compose_flags = parse_flags(c.command("serving")[1:])
    assert compose_flags.model_config_file == image_flags.model_config_file


def test_image_command_serves_its_healthcheck(tmp_path: Path, logs_dir: Path) -> None:
    """ENTRYPOINT + CMD, run as the image runs them, answer the image's HEALTHCHECK."""
    models = tmp_path / "models"
    assert run(["python", "-m", "fdl.repository"], {"FDL_MODEL_DIR": str(models)}).returncode == 0
    # The image's symlink, made here: TF Serving's name for our server.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tensorflow_model_server").symlink_to(VENV_BIN / "fdl-model-server")
    grpc_port, rest_port = free_port(), free_port()
    argv = [str(bin_dir / "tensorflow_model_server"), *c.image_cmd("model-server")]
    argv = c.swap(c.swap(argv, "8500", str(grpc_port)), "8501", str(rest_port))
    argv = [a.replace("=/models/", f"={models}/") for a in argv]
    # The REST port: the image's CMD has no --monitoring_config_file, so its answer is a 404.
    health = c.swap(c.image_healthcheck("model-server"), "8501", str(rest_port))
    assert health != c.image_healthcheck("model-server")
    c.check_serves_healthcheck("deploy-model-server-image", argv, health, logs_dir, 180)
