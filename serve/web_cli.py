"""`ragtune serve` and `ragtune users add`, registered in ragtune_cli/main.py. Only typer and the standard library are
imported here; the server (gradio, fastapi, torch) is imported when `serve` runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from serve import answer_options

users_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="Manage the users file of `ragtune serve` (logins, groups, admins, API keys).")


@users_app.callback()
def _users() -> None:
    """Manage the users file of `ragtune serve` (logins, groups, admins, API keys)."""


def serve_command(
    ctx: typer.Context,
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                                   help="Workspace with the index, models and adapters (default $RAGTUNE_WORKSPACE, "
                                        "else ./workspace)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Without --users only a loopback "
                             "address is allowed."),
    port: int = typer.Option(7860, "--port", help="Port to listen on (0 picks a free one)."),
    users: Optional[Path] = typer.Option(None, "--users", help="Users file (from `ragtune users add`): enables "
                                         "logins, per-user groups and API keys. Without it: single-user mode on "
                                         "127.0.0.1."),
    docs: Optional[Path] = typer.Option(None, "--docs", help="Documents folder that uploads go to and re-indexing "
                                        "reads (default: the folder the index was built from, else WS/docs)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest answer in tokens."),
    max_batch: int = typer.Option(16, "--max-batch", help="Answers the local model decodes at once (continuous "
                                  "batching: a question asked meanwhile joins the running batch); 1 answers one "
                                  "at a time. Requests beyond it wait in line."),
    model: Optional[str] = answer_options.MODEL,
    dtype: str = answer_options.DTYPE,
    backend_url: Optional[str] = answer_options.BACKEND_URL,
    api_key: Optional[str] = answer_options.API_KEY,
) -> None:
    """Run the intranet app (chat, compare, documents, tune, evaluate) and the OpenAI-compatible API."""
    from serve.server import ServeConfig, check_host, is_loopback

    check_host(host, users)  # before anything heavy is imported
    if users is not None and not users.is_file():
        raise FileNotFoundError(f"users file not found: {users} (create it with `ragtune users add NAME --users "
                                f"{users}`)")
    if port < 0 or port > 65535:
        raise ValueError(f"--port must be 0-65535, not {port}")
    if max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, not {max_batch}")
    config = ServeConfig(workspace=workspace, docs_dir=docs, users_file=users, host=host, port=port,
                         max_new_tokens=max_new_tokens, model=model, backend_url=backend_url, api_key=api_key,
                         max_batch=max_batch, dtype=dtype)
    sys.stderr.write("ragtune serve: loading the model and the app ...\n")
    sys.stderr.flush()

    def ready(service, bound_port: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        if users is None:
            print("single-user mode: no --users file, so there is no login and the server listens on this machine "
                  "only; every request acts as the local admin.")
        else:
            where = "this machine only" if is_loopback(host) else f"{host} (other machines can connect)"
            print(f"multi-user mode: logins and API keys from {users}; listening on {where}.")
        if not service.docs.has_index():
            print(f"no index in {workspace} yet: upload documents in the Documents tab (they go to "
                  f"{service.docs.docs_dir}).")
        print(f"answers come from {service.model_label}; retrieval, citations, refusals and groups are ragtune's.")
        print(f"OpenAI-compatible API: http://{shown}:{bound_port}/v1  (models: {', '.join(service.answers.model_ids())})")
        print(f"ragtune is running at http://{shown}:{bound_port}/", flush=True)

    from serve.web import run

    # admin jobs of layers above serve (the Evaluate tab's): the CLI root passes them in the typer context
    run(config, on_ready=ready, job_runners=(ctx.obj or {}).get("job_runners"))


@users_app.command("add")
def users_add_command(
    name: str = typer.Argument(..., help="User name (lowercase letters, digits, '_', '.', '@', '-')."),
    users: Path = typer.Option(..., "--users", help="The users file (YAML if it ends in .yaml/.yml, else JSON); "
                               "created if missing."),
    groups: Optional[str] = typer.Option(None, "--groups", help="Comma-separated access groups, e.g. hr,finance."),
    admin: bool = typer.Option(False, "--admin", help="May manage documents, tune and evaluate in the app."),
    password: Optional[str] = typer.Option(None, "--password", help="The login password (asked for when absent; "
                                           "passing it here leaves it in your shell history)."),
) -> None:
    """Add a user and print their new API key (the last line of the output; shown only once)."""
    from serve.users import MIN_PASSWORD, add_user

    if password is None:
        password = typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    key = add_user(users, name, password, groups or "", admin)
    print(f"added user {name.strip().lower()} to {users}" + (" (admin)" if admin else "")
          + (f", groups: {groups}" if groups else ", no groups (unrestricted documents only)"), flush=True)
    print("API key (shown once; use it as `Authorization: Bearer KEY`):", file=sys.stderr)
    print(key, flush=True)


users_add = users_add_command  # the name the brief uses


_USERS_FILE = typer.Option(..., "--users", help="The users file (see `ragtune users add`).")


@users_app.command("list")
def users_list_command(users: Path = _USERS_FILE) -> None:
    """List users: admin flag, groups, and their API keys' ids and dates (never the keys)."""
    from serve.users import list_users

    if not users.is_file():
        raise FileNotFoundError(f"users file not found: {users}")
    rows = list_users(users)
    if not rows:
        print(f"no users in {users}")
    for u in rows:
        keys = ", ".join(f"{k['id']}… ({k['created'] or 'date unknown'})" for k in u["keys"]) or "no API keys"
        print(f"{u['name']}{' (admin)' if u['admin'] else ''}  groups: {', '.join(u['groups']) or '-'}  "
              f"keys: {keys}")


@users_app.command("remove")
def users_remove_command(name: str = typer.Argument(..., help="The user to remove."),
                         users: Path = _USERS_FILE) -> None:
    """Remove a user: their logins and API keys are refused from their next request on (no restart)."""
    from serve.users import remove_user

    remove_user(users, name)
    print(f"removed user {name.strip().lower()} from {users}")


@users_app.command("rotate-key")
def users_rotate_key_command(name: str = typer.Argument(..., help="Whose key to replace."),
                             users: Path = _USERS_FILE) -> None:
    """Give a user a new API key and revoke all their older ones; prints the new key (last line, shown once)."""
    from serve.users import rotate_key

    key = rotate_key(users, name)
    print(f"new API key for {name.strip().lower()}; their older keys are revoked", file=sys.stderr)
    print(key, flush=True)


@users_app.command("revoke-key")
def users_revoke_key_command(
    name: str = typer.Argument(..., help="Whose key to revoke."),
    key_id: Optional[str] = typer.Argument(None, help="The key's id as `ragtune users list` shows it (rt-XXXX)."),
    all_keys: bool = typer.Option(False, "--all", help="Revoke every key of the user."),
    users: Path = _USERS_FILE,
) -> None:
    """Revoke one API key of a user (by its id) or all of them; refused from the next request on."""
    from serve.users import revoke_keys

    if (key_id is None) == (not all_keys):
        raise ValueError("name one key id (see `ragtune users list`) or pass --all, not both")
    n = revoke_keys(users, name, None if all_keys else key_id.rstrip("…"))
    print(f"revoked {n} API key{'s' if n != 1 else ''} of {name.strip().lower()}")
