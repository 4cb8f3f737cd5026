"""The operator's commands of `twin`: API keys, layer access, backup and restore.

Registered on the main `twin` app by `register(app)`; kept apart from `twin.cli` so that the
reading and analysis commands stay short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from twin.model import InvalidInput
from twin.store import default_data_dir, open_store

console = Console(stderr=True)
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory holding twin.gpkg and the assets [default: $TWIN_DATA or ./twin-data]"),
]
keys_app = typer.Typer(help="API keys for the HTTP API (stored hashed in the data directory).", no_args_is_help=True)


def _data_dir(data: Path | None) -> Path:
    return data if data is not None else default_data_dir()


def _twin_dir(data: Path | None) -> Path:
    directory = _data_dir(data)
    if not directory.is_dir():
        raise InvalidInput(f"no twin at {directory}: run 'twin init {directory} --crs EPSG:xxxx' first")
    return directory


def _echo(value: object) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'gis-team' or 'sensor-gateway'")],
    role: Annotated[str, typer.Option(help="reader, editor (writes) or admin (keys, config)")] = "reader",
    data: DataOption = None,
) -> None:
    """Make a key; prints it once on stdout (only its hash is kept)."""
    from twin.auth import KeyStore

    record, token = KeyStore(_twin_dir(data)).create(name, role)
    console.print(f"key {record.id} ({record.role.value}) for {record.name}: keep it secret, it is not shown again")
    typer.echo(token)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id, as 'twin keys list' shows")], data: DataOption = None
) -> None:
    """Revoke a key; requests that send it are refused at once."""
    from twin.auth import KeyStore

    record = KeyStore(_twin_dir(data)).revoke(key_id)
    console.print(f"key {record.id} ({record.name}) revoked")


@keys_app.command("list")
def keys_list(data: DataOption = None) -> None:
    """List keys (id, name, role, created, revoked); never their secrets."""
    from twin.auth import KeyStore

    table = Table("id", "name", "role", "created", "revoked", box=None)
    for key in KeyStore(_twin_dir(data)).list():
        revoked = key.revoked.isoformat() if key.revoked else ""
        table.add_row(key.id, key.name, key.role.value, key.created.isoformat(), revoked)
    Console(width=None if console.is_terminal else 200).print(table)


def restrict(
    layer_id: Annotated[str, typer.Argument(help="Layer to restrict (e.g. gas_pipes)")],
    off: Annotated[bool, typer.Option("--off", help="Open the layer to everyone who may read again")] = False,
    data: DataOption = None,
) -> None:
    """Make reading a layer need an API key (any role), even when reads are public."""
    from twin.auth import set_restricted

    with open_store(_data_dir(data)) as store:
        set_restricted(store, layer_id, not off)
    console.print(f"layer {layer_id} is {'open' if off else 'restricted to key holders'}")


def backup(
    out: Annotated[Path, typer.Argument(help="New folder to write the backup into")], data: DataOption = None
) -> None:
    """Back up the embedded store, keys, jobs and assets (consistent while a server runs)."""
    from twin.backup import backup as make_backup

    manifest = make_backup(_data_dir(data), out)
    _echo({"backup": str(out), "layers": len(manifest["layers"]), "assets": manifest["assets"]})


def restore(
    source: Annotated[Path, typer.Argument(help="Backup folder made by 'twin backup'")],
    force: Annotated[bool, typer.Option("--force", help="Replace the twin already in --data")] = False,
    data: DataOption = None,
) -> None:
    """Restore a backup into the data directory (refuses to replace a twin without --force)."""
    from twin.backup import restore as put_back
    from twin.integrity import recover

    directory = _data_dir(data)
    manifest = put_back(source, directory, force=force)
    with open_store(directory) as store:
        recover(store)  # assets of the replaced twin that the restored one does not use
    _echo({"restored": str(directory), "layers": len(manifest["layers"]), "assets": manifest["assets"]})


def register(app: typer.Typer) -> None:
    """Add `keys add|revoke|list`, `restrict`, `backup` and `restore` to the `twin` command."""
    app.add_typer(keys_app, name="keys")
    for command in (restrict, backup, restore):
        app.command()(command)
