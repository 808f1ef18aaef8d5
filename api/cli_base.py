"""What every `studio` command shares: the Typer app and its command groups, the consoles, the --config option, and
the settings and runtime a command runs with. The commands register on `app` in api.cli (config, keys, db,
avatar, up, demo, verify, audit, eval), api.cli_catalog (creator, agency, product, script, channel, show, account,
consent) and api.cli_roles (api, worker, scheduler, streamer); none of them imports another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from studio.config import ConfigError, load_settings
from workers.renderers import backend_names

# A crash's traceback names the frames and lines, never their local variables: those hold the runtime with the
# policy key, keys and passwords read from files, which would otherwise go to the terminal and the journal.
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ethical Clone Studio",
                  pretty_exceptions_show_locals=False)
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys.")
avatar_app = typer.Typer(no_args_is_help=True, help="Avatars (digital clones).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
eval_app = typer.Typer(no_args_is_help=True, help="Quality measurements.")
consent_app = typer.Typer(no_args_is_help=True, help="Creators' consents.")
audit_app = typer.Typer(no_args_is_help=True, help="The append-only audit log.")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(avatar_app, name="avatar")
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")
app.add_typer(consent_app, name="consent")
app.add_typer(audit_app, name="audit")
console = Console()
# Messages on stderr are never wrapped: a long path or URL stays one piece for whoever greps the output.
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default configs/default.yaml).")]


def _settings(config: Path | None):
    """The command's settings. With --config, that file becomes the whole process's config (STUDIO_CONFIG), as
    for a role: what loads the settings on its own in this process reads it too, above all the Celery app that
    queues an ingest (`studio demo`) or revokes queued renders (`studio consent revoke`), which would otherwise
    reach the default config's broker."""
    if config is not None:
        os.environ["STUDIO_CONFIG"] = str(config.resolve())
    try:
        return load_settings(config, renderers=backend_names())
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version as dist_version

        console.print(f"studio {dist_version('ethical-clone-studio')}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                help="Print the version and exit.")] = False) -> None:
    """Ethical Clone Studio"""


def _runtime(config: Path | None, *, embedded: bool = False):
    """Settings, schema and runtime for a command. Only the embedded `studio up` / `studio demo` make missing
    keys (first run); every other command stops (exit 2) naming the key and `studio keys init`. Both hold every
    audit key: the embedded stack is one host, and admin commands are the control host's, which verifies the log
    and may run any role's step in process (`studio avatar create`: ingest; `studio record`: archive)."""
    from studio.audit_keys import ROLES
    from studio.db import upgrade
    from studio.keys import PolicyKeyError, embedded_redis_password, init_all_keys, require_keys
    from studio.runtime import build_runtime

    settings = _settings(config)
    if embedded:
        init_all_keys(settings)
        if not settings.services.redis_url:
            embedded_redis_password(settings)  # made before any client reads it (settings.broker_url)
        console.print(f"data directory: {escape(str(settings.data_path))}")
    else:
        try:
            require_keys(settings)
        except PolicyKeyError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    if embedded or not settings.db_url.startswith("postgresql"):
        upgrade(settings.db_url, data_dir=settings.data_path)
    else:
        # A shared server is a fleet's: its schema moves only by `studio db upgrade`, run once, never as a side
        # effect of an admin command run from a host with a newer (or older) release. SQLite is one host's.
        from studio.db import SchemaBehind, make_engine, require_current_schema

        engine = make_engine(settings.db_url)
        try:
            require_current_schema(engine)
        except SchemaBehind as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        finally:
            engine.dispose()
    return build_runtime(settings, audit_roles=ROLES)
