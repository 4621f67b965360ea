"""Every value `fdl up` writes into supervisord's configuration reaches supervisord as written:
supervisord expands %(name)s in each (paths, commands), so a var folder whose path holds % (or
what reads as a supervisord expansion) used to stop it ("Format string ... for
'supervisord.logfile' is badly formatted"). Read here by supervisord's own configuration parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from supervisor import supervisord
from supervisor.options import ServerOptions

from fdl.settings import CommonSettings
from fdl.stack import plan_stack
from fdl.stack_supervisor import SUPERVISOR_CONF, supervisor_config


@pytest.mark.parametrize("folder", ["100%done", "%(here)s", "%(ENV_HOME)s and 5%s"])
def test_paths_with_percent_reach_supervisord_as_written(folder: str, tmp_path: Path) -> None:
    root = tmp_path / folder
    var_dir = root / "var"
    stack = plan_stack(
        CommonSettings(
            model_dir=var_dir / "models",
            var_dir=var_dir,
            data_dir=var_dir / "data",
            redis_url=None,
            api_keys="admin-key-for-stack-tests",
        )
    )
    conf = var_dir / SUPERVISOR_CONF
    conf.write_text(supervisor_config(stack))

    options = ServerOptions()
    options.realize(["--configuration", str(conf)], doc=supervisord.__doc__)

    assert options.logfile == str(var_dir / "supervisord.log")
    assert options.pidfile == str(var_dir / "supervisord.pid")
    commands = {
        group.name: group.process_configs[0].command for group in options.process_group_configs
    }
    assert set(commands) == {"redis", "serving", "worker", "gateway"}
    # The model server's config file and Redis's folder are under the var folder.
    assert f"--model_config_file={var_dir / 'models'}" in commands["serving"]
    assert str(var_dir / "redis") in commands["redis"]
    assert all(
        config.stdout_logfile == "/dev/stdout"
        for group in options.process_group_configs
        for config in group.process_configs
    )
