"""The `fdl` command line."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="FDL Serve: train the book's models and serve them.", no_args_is_help=True)
console = Console()


@app.command()
def up() -> None:
    """Run the whole stack in the foreground: Redis, model server, worker and gateway."""
    from fdl.settings import CommonSettings
    from fdl.stack import plan_stack, run_stack

    settings = CommonSettings()
    stack = plan_stack(settings)
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    console.print(f"[bold]FDL Serve[/bold] starting: gateway {url}  (Ctrl-C stops everything)")
    if stack.api_key_generated:
        console.print(f"Admin API key (new, stored in {settings.var_dir}/api_key): {stack.api_key}")
    elif stack.api_key and not settings.api_keys:
        console.print(f"Admin API key (from {settings.var_dir}/api_key): {stack.api_key}")
    raise typer.Exit(run_stack(stack))


if __name__ == "__main__":
    app()
