"""The app's Users tab (admins, multi-user mode): the users file's users with their groups and API key ids; an
admin can give a user a new API key (revoking the older ones), revoke one key, or remove a user. Each change is
written to the users file (serve/users.py) and takes effect at that user's next request, without a restart.
New users are added with `ragtune users add` (it asks for their password). build_app calls `users_tab` inside its
Tabs; the tab shows itself on page load for admins only, and its handlers are `admin_only` (serve/http_guard.py).
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from serve.app_admin import refusal
from serve.http_guard import admin_only
from serve.users import UsersFileError, list_users, remove_user, revoke_keys, rotate_key

USER_HEADERS = ["user", "admin", "groups", "API keys (id, created)"]


class UsersHandlers:
    def __init__(self, service, user_of: Callable, admin_of: Callable) -> None:
        self.service = service
        self.user_of = user_of
        self.admin_of = admin_of

    @property
    def path(self):
        return self.service.config.users_file

    def rows(self) -> list[list]:
        return [[u["name"], "yes" if u["admin"] else "", ", ".join(u["groups"]) or "-",
                 ", ".join(f"{k['id']}… ({k['created']})" for k in u["keys"]) or "none"]
                for u in list_users(self.path)]

    def key_choices(self, name: str | None) -> list[str]:
        return [k["id"] for u in list_users(self.path) if u["name"] == name for k in u["keys"]]

    def view(self, note: str = "", key: str = "", name: str | None = None):
        names = [u["name"] for u in list_users(self.path)]
        name = name if name in names else None
        return (note, gr.update(value=key, visible=bool(key)), self.rows(), gr.update(choices=names, value=name),
                gr.update(choices=self.key_choices(name), value=None))

    def on_load(self, request: gr.Request):
        """Visible with its table for admins in multi-user mode; hidden and empty for everyone else."""
        user = self.user_of(request)
        if self.path is None or not user.admin:
            return gr.update(visible=False), [], gr.update(choices=[])
        return gr.update(visible=True), self.rows(), gr.update(choices=[u["name"] for u in list_users(self.path)])

    def pick(self, name, request: gr.Request):
        if self.path is None or not self.user_of(request).admin:  # fires on page load too: answer quietly
            return gr.update(choices=[], value=None)
        return gr.update(choices=self.key_choices(name), value=None)

    def _change(self, name, action: Callable[[], tuple[str, str]], request: gr.Request):
        """Run action() -> (note, new key or "") on the users file and show the result."""
        self.admin_of(request)
        if self.path is None:
            raise refusal("Single-user mode has no users file.")
        if not name:
            raise refusal("Pick a user first.")
        try:
            note, key = action()
        except UsersFileError as e:
            raise refusal(str(e)) from None
        return self.view(note, key, name)

    @admin_only
    def rotate(self, name, request: gr.Request):
        return self._change(name, lambda: (f"New API key for **{name}** below; their older keys no longer work.",
                                           rotate_key(self.path, name)), request)

    @admin_only
    def revoke(self, name, key_id, request: gr.Request):
        if not key_id:
            raise refusal("Pick one of the user's API keys first.")
        return self._change(name, lambda: (f"Revoked {revoke_keys(self.path, name, key_id)} key of **{name}** "
                                           f"({key_id}…).", ""), request)

    @admin_only
    def remove(self, name, request: gr.Request):
        if name and self.user_of(request).name == str(name).strip().lower():
            raise refusal("You cannot remove yourself here; another admin (or `ragtune users remove`) can.")

        def action() -> tuple[str, str]:
            remove_user(self.path, name)
            return f"Removed **{name}**: their sessions and API keys are refused from now on.", ""

        return self._change(name, action, request)


def users_tab(demo: gr.Blocks, service, user_of: Callable, admin_of: Callable) -> UsersHandlers:
    """The Users tab and its events; call inside build_app's gr.Tabs()."""
    handlers = UsersHandlers(service, user_of, admin_of)
    with gr.Tab("Users", id="users", visible=False) as tab:
        gr.Markdown("Users of this server (from the users file). Add users with `ragtune users add NAME --users "
                    "FILE`; changes here apply to their next request.")
        table = gr.Dataframe(headers=USER_HEADERS, interactive=False, elem_id="users-table", wrap=True)
        with gr.Row():
            name = gr.Dropdown([], label="User", elem_id="users-pick", scale=2)
            key_id = gr.Dropdown([], label="API key", elem_id="users-key", scale=2)
            rotate = gr.Button("New API key (revokes older ones)", elem_id="users-rotate", scale=1)
            revoke = gr.Button("Revoke this key", elem_id="users-revoke", scale=1)
            remove = gr.Button("Remove user", variant="stop", elem_id="users-remove", scale=1)
        status = gr.Markdown(elem_id="users-status")
        new_key = gr.Textbox(label="New API key (copy it now: it is not stored)", visible=False, interactive=False,
                             elem_id="users-new-key", buttons=["copy"])
    outs = [status, new_key, table, name, key_id]
    priv = {"api_visibility": "private"}
    name.change(handlers.pick, inputs=[name], outputs=[key_id], **priv)
    rotate.click(handlers.rotate, inputs=[name], outputs=outs, **priv)
    revoke.click(handlers.revoke, inputs=[name, key_id], outputs=outs, **priv)
    remove.click(handlers.remove, inputs=[name], outputs=outs, **priv)
    demo.load(handlers.on_load, outputs=[tab, table, name], **priv)
    return handlers
