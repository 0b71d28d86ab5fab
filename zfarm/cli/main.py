"""The `zfarm` command. Client commands need httpx only; the farm's own parts load their modules when run.

`pip install zfarm` gives the client commands; `zfarm[server]` and `zfarm[worker]` add what `up`, `api`,
`worker` and the rest need. The group names every command without importing it (click's lazy loading), so
`zfarm --help` and the client commands work without the server's packages.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import click

from zfarm.cli.unreachable import UNREACHABLE_EXIT, explain

# command name -> "module:attribute", imported only when that command runs (or its help is shown)
COMMANDS = {
    "submit": "zfarm.cli.client_commands:submit",
    "status": "zfarm.cli.list_commands:status",
    "jobs": "zfarm.cli.list_commands:jobs",
    "batches": "zfarm.cli.list_commands:batches",
    "cancel": "zfarm.cli.list_commands:cancel",
    "fetch": "zfarm.cli.client_commands:fetch",
    "workers": "zfarm.cli.client_commands:workers",
    "batch": "zfarm.cli.batch_commands:batch",
    "presets": "zfarm.cli.batch_commands:presets",
    "retry-failed": "zfarm.cli.batch_commands:retry_failed",
    "up": "zfarm.cli.server_commands:up",
    "api": "zfarm.cli.server_commands:api",
    "worker": "zfarm.cli.server_commands:worker",
    "webhooks": "zfarm.cli.server_commands:webhooks",
    "flower": "zfarm.cli.server_commands:flower",
    "migrate": "zfarm.cli.server_commands:migrate",
    "demo": "zfarm.cli.server_commands:demo",
    "keys": "zfarm.cli.keys_commands:keys",
    "loras": "zfarm.cli.lora_commands:loras",
}
SERVER_MODULES = ("zfarm.cli.server_commands", "zfarm.cli.keys_commands")


def _version() -> str:
    try:
        return version("zfarm")
    except PackageNotFoundError:
        return "unknown (not installed)"


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            line = explain(exc)
            if line is None:
                raise
            click.echo(f"zfarm: {line}", err=True)
            ctx.exit(UNREACHABLE_EXIT)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if module_name not in SERVER_MODULES:
                raise
            return _needs_server(cmd_name, str(exc.name))
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


def _needs_server(name: str, missing: str) -> click.Command:
    """Stands in for a server command on a client-only install: listed in the help, says what to install."""
    message = (
        f"`zfarm {name}` runs part of the farm and needs its packages ({missing} is missing): "
        "pip install 'zfarm[server]' (and 'zfarm[worker]' on GPU hosts)"
    )

    def refuse(**_: object) -> None:
        raise click.ClickException(message)

    return click.Command(
        name,
        callback=refuse,
        help=f"(needs zfarm[server]) {message}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="zfarm")
def main() -> None:
    """zfarm: a render farm for Z-Image-Turbo."""


if __name__ == "__main__":
    main()
