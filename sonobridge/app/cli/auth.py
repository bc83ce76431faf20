"""``sonobridge user|client|keys|launch|dev-setup``: the people and applications allowed in."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sonobridge.app.cli.options import DatabaseUrl, DataDir
from sonobridge.app.compose import Gateway, open_gateway
from sonobridge.core.roles import ROLES

users_app = typer.Typer(help="Local users: add, change password, enrol TOTP, disable, list.",
                        no_args_is_help=True)
clients_app = typer.Typer(help="Client applications (SMART apps and backend services).",
                          no_args_is_help=True)
keys_app = typer.Typer(help="The keys that sign access and ID tokens.", no_args_is_help=True)



def _gateway(data_dir: Path | None, database_url: str | None) -> Gateway:
    from sonobridge.app.cli.main import _settings

    return open_gateway(_settings(data_dir=data_dir, database_url=database_url))


def _console() -> Any:
    from sonobridge.app.cli.main import console

    return console


def _fail(message: str) -> typer.Exit:
    _console().print(f"[red]{message}[/red]")
    return typer.Exit(1)


def _read_password(stdin: bool, prompt: str = "Password") -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


# ---------------------------------------------------------------------------------- users

@users_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . - _ @).")],
    role: Annotated[str, typer.Option("--role", help="One of: " + ", ".join(ROLES))],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin.")] = False,
    fhir_user: Annotated[str | None, typer.Option(
        "--fhir-user", help="Practitioner/ID or PractitionerRole/ID this user is (fhirUser).")
    ] = None,
    totp: Annotated[bool, typer.Option("--totp", help="Enrol a TOTP second factor now "
                                                      "(required for experts and admins).")
                    ] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Add a user. The password needs 10+ characters of three kinds and not the user name."""
    from sonobridge.auth.accounts import AccountError
    from sonobridge.auth.passwords import PasswordPolicyError

    password = _read_password(password_stdin)
    gw = _gateway(data_dir, database_url)
    try:
        user = gw.auth.accounts.add_user(name, role, password, fhir_user)
    except (AccountError, PasswordPolicyError) as exc:
        raise _fail(str(exc)) from None
    _console().print(f"added user [bold]{user.username}[/bold] ({user.role})")
    if totp or user.needs_totp:
        _enrol(gw, name)
    gw.close()


def _enrol(gw: Gateway, name: str) -> None:
    from sonobridge.auth.passwords import new_totp_secret, totp_uri

    secret = new_totp_secret()
    gw.auth.accounts.set_totp(name, secret)
    _console().print(f"TOTP enrolled for {name}: add this to the authenticator app\n"
                     f"  secret: {secret}\n  uri:    {totp_uri(secret, name)}")


@users_app.command("passwd")
def user_passwd(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Set a user's password (also clears a lockout)."""
    from sonobridge.auth.accounts import AccountError
    from sonobridge.auth.passwords import PasswordPolicyError

    password = _read_password(password_stdin, "New password")
    gw = _gateway(data_dir, database_url)
    try:
        gw.auth.accounts.set_password(name, password)
    except (AccountError, PasswordPolicyError) as exc:
        raise _fail(str(exc)) from None
    _console().print(f"password changed for {name}")
    gw.close()


@users_app.command("totp")
def user_totp(
    name: str,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the second factor.")] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Enrol (or re-enrol) a user's TOTP authenticator, or remove it."""
    from sonobridge.auth.accounts import AccountError

    gw = _gateway(data_dir, database_url)
    try:
        if remove:
            gw.auth.accounts.set_totp(name, None)
            _console().print(f"TOTP removed for {name}")
        else:
            _enrol(gw, name)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    gw.close()


@users_app.command("disable")
def user_disable(
    name: str,
    enable: Annotated[bool, typer.Option("--enable", help="Re-enable instead.")] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Disable a user: their sessions end and their tokens are revoked at once."""
    from sonobridge.auth.accounts import AccountError

    gw = _gateway(data_dir, database_url)
    try:
        gw.auth.accounts.set_disabled(name, not enable)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    _console().print(f"{'enabled' if enable else 'disabled'} {name}")
    gw.close()


@users_app.command("list")
def user_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List users with role, fhirUser, second factor and state."""
    gw = _gateway(data_dir, database_url)
    table = Table("user", "role", "fhirUser", "TOTP", "state")
    for user in gw.auth.accounts.users():
        table.add_row(user.username, user.role, user.fhir_user or "",
                      "yes" if user.totp else "no", "disabled" if user.disabled else "active")
    from rich.console import Console

    Console().print(table)
    gw.close()


# ---------------------------------------------------------------------------------- clients

@clients_app.command("add")
def client_add(
    name: Annotated[str, typer.Option("--name", help="Shown to users on the consent page.")],
    client_type: Annotated[str, typer.Option(
        "--type", help="public | confidential-symmetric | confidential-asymmetric")],
    scope: Annotated[str, typer.Option("--scope", help="Scopes the client may ask for, e.g. "
                                                       "'launch/patient patient/*.rs openid'")],
    redirect_uri: Annotated[list[str] | None, typer.Option(
        "--redirect-uri", help="Exact redirect URI (repeatable).")] = None,
    jwks_file: Annotated[Path | None, typer.Option(
        "--jwks-file", exists=True, help="The client's public keys (JWKS JSON).")] = None,
    jwks_url: Annotated[str | None, typer.Option(
        "--jwks-url", help="Where the client publishes its JWKS.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """Register a client; prints its client_id (and, for symmetric clients, its secret: it is
    not stored in the clear and cannot be shown again)."""
    from sonobridge.auth.accounts import AccountError

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read {jwks_file}: {exc}") from None
    gw = _gateway(data_dir, database_url)
    try:
        client, secret = gw.auth.accounts.add_client(
            name, client_type, scope, redirect_uris=redirect_uri or [], jwks=jwks,
            jwks_url=jwks_url)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    gw.close()
    out = {"client_id": client.client_id, "name": client.name, "type": client.client_type,
           "scope": client.scope, "redirect_uris": list(client.redirect_uris)}
    if secret:
        out["client_secret"] = secret
    if as_json:
        print(json.dumps(out, indent=2))
        return
    print(f"client_id: {client.client_id}")
    if secret:
        print(f"client_secret: {secret}")


@clients_app.command("list")
def client_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List clients with type, scopes and state."""
    from rich.console import Console

    gw = _gateway(data_dir, database_url)
    table = Table("client_id", "name", "type", "scope", "state")
    for client in gw.auth.accounts.clients():
        state = "revoked" if client.revoked else ("active" if client.approved
                                                  else "awaiting approval")
        table.add_row(client.client_id, client.name, client.client_type, client.scope, state)
    Console().print(table)
    gw.close()


@clients_app.command("revoke")
def client_revoke(client_id: str, data_dir: DataDir = None,
                  database_url: DatabaseUrl = None) -> None:
    """Revoke a client: it gets no more tokens and its current tokens stop working."""
    from sonobridge.auth.accounts import AccountError

    gw = _gateway(data_dir, database_url)
    try:
        gw.auth.accounts.set_client(client_id, revoked=True)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    _console().print(f"revoked {client_id}")
    gw.close()


@clients_app.command("approve")
def client_approve(client_id: str, data_dir: DataDir = None,
                   database_url: DatabaseUrl = None) -> None:
    """Approve a dynamically registered client (RFC 7591) so it can get tokens."""
    from sonobridge.auth.accounts import AccountError

    gw = _gateway(data_dir, database_url)
    try:
        gw.auth.accounts.set_client(client_id, approved=True)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    _console().print(f"approved {client_id}")
    gw.close()


# ---------------------------------------------------------------------------------- keys

@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Start signing with a new key. The old one stays published (and accepted) until the
    tokens it signed have expired; running servers pick the new key up within 30 seconds."""
    gw = _gateway(data_dir, database_url)
    key = gw.auth.keys.rotate()
    _console().print(f"new signing key {key.kid}; published keys: "
                     f"{', '.join(k.kid for k in gw.auth.keys.all())}")
    gw.close()


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List signing keys (current and retired-but-published)."""
    import time

    gw = _gateway(data_dir, database_url)
    for key in gw.auth.keys.all():
        state = "current" if key.retired is None else \
            f"retired {time.strftime('%Y-%m-%d %H:%M', time.gmtime(key.retired))} UTC"
        print(f"{key.kid}  {state}")
    gw.close()


# ---------------------------------------------------------------------------------- launch

def launch_command(
    user: Annotated[str, typer.Option("--user", help="The user the launch is for.")],
    patient: Annotated[str, typer.Option("--patient", help="Patient id in context.")],
    app_url: Annotated[str, typer.Option("--app", help="The app's launch URL.")],
    encounter: Annotated[str | None, typer.Option("--encounter")] = None,
    study: Annotated[str | None, typer.Option("--study",
                                              help="ImagingStudy id for fhirContext.")] = None,
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
) -> None:
    """EHR launch: make a launch handle bound to a user and patient, print the launch URL."""
    from urllib.parse import urlencode

    from sonobridge.app.cli.main import _settings

    settings = _settings(data_dir=data_dir, database_url=database_url)
    gw = _gateway(data_dir, database_url)
    found = gw.auth.accounts.user(user)
    if found is None:
        gw.close()
        raise _fail(f"no user {user!r}")
    if not gw.core.resources.exists("Patient", patient):
        gw.close()
        raise _fail(f"no Patient/{patient} here: a launch names a patient that exists")
    if study and not gw.core.resources.exists("ImagingStudy", study):
        gw.close()
        raise _fail(f"no ImagingStudy/{study} here")
    context: dict[str, Any] = {"patient": patient}
    if encounter:
        context["encounter"] = encounter
    if study:
        context["fhirContext"] = [{"reference": f"ImagingStudy/{study}"}]
    handle = gw.auth.accounts.create_launch(context, found)
    sep = "&" if "?" in app_url else "?"
    print(f"{app_url}{sep}{urlencode({'iss': settings.public_base, 'launch': handle})}")
    gw.close()


# ---------------------------------------------------------------------------------- dev

def dev_setup(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """For local development: create (once) an administrator and a sample backend client,
    and print how to get a token with one curl command."""
    import secrets

    from sonobridge.app.cli.main import _settings

    settings = _settings(data_dir=data_dir, database_url=database_url)
    gw = _gateway(data_dir, database_url)
    path = settings.data_dir / "dev-credentials.json"
    saved: dict[str, Any] = {}
    if path.exists():
        saved = json.loads(path.read_text("utf-8"))
    accounts = gw.auth.accounts
    if saved.get("client_id") and accounts.client(saved["client_id"]) is None:
        saved = {}  # a different database: start over
    if not saved:
        password = secrets.token_urlsafe(12) + "a1!"
        if accounts.user("admin") is None:
            accounts.add_user("admin", "system-admin", password)
            from sonobridge.auth.passwords import new_totp_secret

            totp = new_totp_secret()
            accounts.set_totp("admin", totp)
        else:
            password, totp = "(unchanged)", "(unchanged)"
        client, secret = accounts.add_client(
            "SonoBridge sample backend", "confidential-symmetric",
            "system/*.cruds system/*.rs")
        saved = {"admin_password": password, "admin_totp_secret": totp,
                 "client_id": client.client_id, "client_secret": secret}
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(saved, f, indent=2)
    gw.close()
    root = settings.public_root
    console = _console()
    console.print(f"[bold]development credentials[/bold] (kept in {path}):")
    console.print(f"  administrator: admin / {saved['admin_password']}  "
                  f"(TOTP secret {saved['admin_totp_secret']})")
    console.print(f"  sample backend client: {saved['client_id']}")
    console.print("get a token and read the sample patient:")
    console.print(
        f"  TOKEN=$(curl -s -u '{saved['client_id']}:{saved['client_secret']}' "
        f"-d grant_type=client_credentials -d 'scope=system/*.rs' {root}/auth/token "
        "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        soft_wrap=True, highlight=False)
    console.print(f"  curl -H \"Authorization: Bearer $TOKEN\" {root}/fhir/Patient/sample-patient",
                  soft_wrap=True, highlight=False)


# ---------------------------------------------------------------------------------- audit

audit_app = typer.Typer(help="The audit trail (append-only, hash-chained).",
                        no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Check the whole chain: every event still stored exactly as recorded, no event removed
    or edited. Exit status 1 when anything is wrong."""
    from sonobridge.app.cli.main import _progress
    from sonobridge.core.audit import count, verify

    gw = _gateway(data_dir, database_url)
    with _progress() as progress:
        task = progress.add_task("audit events", total=count(gw.core.store))
        result = verify(gw.core.store, lambda n: progress.advance(task, n))
    gw.close()
    console = _console()
    for problem in result.problems[:50]:
        console.print(f"[red]{problem}[/red]")
    if result.problems:
        console.print(f"[red]audit trail damaged:[/red] {len(result.problems)} problems in "
                      f"{result.events} events")
        raise typer.Exit(1)
    console.print(f"audit trail intact: {result.events} events, head {result.head}")
