"""The Datasette side of ccany: plain modules under the thin hook files in datasette/plugins/ (ccany.py for the
flow log, ccany_admin.py for accounts and the config DB).

- flow_queries: the flow log's stored queries and dashboard charts; pages: /-/dashboard and /-/flow/{id};
  cells: how flow and secret cells render.
- config_db: which database is the config DB, secret reads, writes (through config/store.py only);
  guard: the secret-column authorizer and the permission rules; accounts: the actor, sessions, setup, login and
  password pages; admin_pages: /-/admin and its pages; provider_probe: the "test provider" button; audit: the
  audit of Datasette's own events; forms: rendering.

Datasette runs in its own process: nothing here imports mitmproxy or ccany_addon.proxy (a test holds that).
"""
