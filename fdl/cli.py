"""The `fdl` command line.

Exit codes: 0 ok, 1 the gateway answered with an error, 2 usage, 3 gateway unreachable,
4 API key missing or refused, 5 the followed training job failed or was cancelled, 6 the version
it published was not served within --serve-timeout, 141 the output's reader went away.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from fdl import cli_jobs, cli_models, cli_train
from fdl.cli_client import quiet_broken_pipe


class Commands(TyperGroup):
    """fdl's commands; output to a closed pipe ends any of them quietly, help included."""

    # Contexts are typed Any: typer's click Context is a private module's class.
    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        with quiet_broken_pipe():  # `fdl --help | true`: help is printed while parsing
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with quiet_broken_pipe():
            return super().invoke(ctx)


app = typer.Typer(
    cls=Commands,
    help="FDL Serve: train the book's models and serve them.\n\n"
    "Talks to the gateway at --url / FDL_URL (default http://$FDL_GATEWAY_HOST:$FDL_GATEWAY_PORT, "
    "127.0.0.1 for a wildcard or unset host and 8000 unless set: the gateway of `fdl up` on this "
    "machine) with the admin key "
    "from --api-key / FDL_API_KEY. Exit codes: 0 ok, 1 API error, 2 usage, 3 gateway "
    "unreachable, 4 key missing or refused, 5 the followed job failed or was cancelled, 6 the "
    "version it published was not served within --serve-timeout, 141 the output's reader went "
    "away (`fdl jobs | true`).",
    no_args_is_help=True,
)
console = Console()


def say(line: str, style: str | None = None) -> None:
    """One line of `fdl up`'s own, never read as markup. In a pipe or a log it is never wrapped
    at 80 columns, so a long path in it stays whole (a terminal wraps it as it shows it)."""
    console.print(line, style=style, markup=False, soft_wrap=not console.is_terminal)


@app.command()
def up() -> None:
    """Run the whole stack in the foreground: Redis, model server, worker and gateway."""
    from fdl.cli_up import (
        StackError,
        check_child_settings,
        check_folder,
        check_ports,
        claim_var_dir,
        leftovers,
        stop_leftovers,
    )
    from fdl.settings import SETTINGS_ERRORS, CommonSettings, WeakKeyError, settings_problem
    from fdl.stack import gateway_url, plan_stack, redis_banner
    from fdl.stack_supervisor import run_stack

    try:
        settings = CommonSettings()
    except SETTINGS_ERRORS as error:  # a usage error: one line naming the setting, exit 2
        say(f"fdl up: {settings_problem(error)}", style="red")
        raise typer.Exit(2) from error
    var_dir = settings.var_dir.resolve()
    try:
        check_folder("FDL_VAR_DIR", var_dir)
        claim_var_dir(var_dir)  # held until the stack stops
        # Made by plan_stack below, in their parent folder when FDL_MODEL_DIR is set: one that
        # is missing is a volume not mounted, and the models would go to the disk underneath.
        check_folder("FDL_MODEL_DIR", settings.model_dir, "model_dir" in settings.model_fields_set)
        check_folder("FDL_DATA_DIR", settings.data_dir)
        left = leftovers(var_dir)
        if left:
            say(
                f"fdl up: stopping what a killed `fdl up` left running over {var_dir}: "
                f"{', '.join(map(str, left))}",
                style="yellow",
            )
            stop_leftovers(left)
        check_ports(settings)
        stack = plan_stack(settings)
        check_child_settings(stack)
    except (WeakKeyError, StackError) as error:
        say(f"fdl up: {error}", style="red")
        raise typer.Exit(2) from error
    url = gateway_url(settings.gateway_host, settings.gateway_port)
    console.print(
        f"[bold]FDL Serve[/bold] starting: gateway {escape(url)}  (Ctrl-C stops everything)",
        soft_wrap=not console.is_terminal,
    )
    if stack.api_key_generated:
        say(f"Admin API key (new, stored in {settings.var_dir}/api_key): {stack.api_key}")
    elif stack.api_key and not settings.api_keys:
        say(f"Admin API key (from {settings.var_dir}/api_key): {stack.api_key}")
    console.print(redis_banner(stack), soft_wrap=True, markup=False)
    raise typer.Exit(run_stack(stack))


app.command()(cli_train.train)
app.command("jobs")(cli_jobs.jobs)
app.command("job")(cli_jobs.job)
app.command()(cli_jobs.cancel)
app.command("models")(cli_models.models)
app.command()(cli_models.classify)
app.command()(cli_models.promote)


if __name__ == "__main__":
    app()
