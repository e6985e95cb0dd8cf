"""One Settings object: environment variables over config files over defaults.

Every setting has exactly one name (its environment variable) and a default. A config file
(``GOFANNON_CONFIG_FILE``, default ``config/gofannon.yaml`` or ``.toml`` when present) may set the same
names; the environment wins. ``python -m gofannon.settings`` prints the table that docs/configuration.md
holds, and a test keeps the two in sync.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

DEV_ENVS = frozenset({"local", "dev", "test"})
PROJECT_ROOT = Path(__file__).resolve().parent.parent
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {raw!r} (use 1/true/yes/on or 0/false/no/off)")


def parse_list(raw: Any) -> list[str]:
    if isinstance(raw, (list, tuple)):
        return [str(x).strip() for x in raw if str(x).strip()]
    return [part.strip() for part in str(raw).split(",") if part.strip()]


def _setting(env: str, default: Any, doc: str, kind: str = "str") -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "kind": kind})


@dataclass
class Settings:
    # -- service ------------------------------------------------------------------------------------
    app_env: str = _setting("APP_ENV", "local", "Deployment flavour: `local`, `dev` and `test` enable the dev login, loopback outbound access and self-service budgets; `firebase` enables Firebase bearer tokens; anything else is production.")
    host: str = _setting("GOFANNON_HOST", "127.0.0.1", "Address `gofannon serve` binds when `--host` is not given.")
    port: int = _setting("GOFANNON_PORT", 8000, "Port `gofannon serve` binds when `--port` is not given.", "int")
    data_dir: str = _setting("GOFANNON_DATA_DIR", "./data", "Where the embedded default keeps its files (SQLite database, generated secrets).")
    config_dir: str = _setting("GOFANNON_CONFIG_DIR", str(PROJECT_ROOT / "config"), "Directory of data files: provider catalogs (`catalog/`), example auth config.")
    frontend_url: str = _setting("FRONTEND_URL", "http://localhost:3000", "The web UI's origin: the only CORS origin (with credentials) and the base of relative post-login redirects.")
    max_body_bytes: int = _setting("GOFANNON_MAX_BODY_BYTES", 10 * 1024 * 1024, "Largest request body; a larger one answers 413.", "int")
    ui_dir: str | None = _setting("GOFANNON_UI_DIR", None, "A built web UI (single-page app) the kernel serves on the API's origin.")
    public_url: str | None = _setting("GOFANNON_PUBLIC_URL", None, "The kernel's origin as clients reach it (e.g. `https://agents.example.org` behind a TLS-terminating proxy): login callback URLs, the OAuth issuer and the `/mcp` resource are built on it. Unset: each request's own scheme and `Host`.")
    mcp_allowed_origins: str | None = _setting("GOFANNON_MCP_ALLOWED_ORIGINS", None, "Comma-separated origins of browser-based MCP clients (e.g. `https://inspector.example.org`) that may call `/mcp` across origins with a bearer token; the kernel's own origin, `FRONTEND_URL`'s and, in local/dev/test, loopback origins always may. `*` allows any site (it disables the DNS-rebinding guard).")
    event_loop: str = _setting("GOFANNON_EVENT_LOOP", "auto", "The event loop of `gofannon serve`: `auto` (uvloop when installed, as it is by default on Linux and macOS), `uvloop` or `asyncio`.")
    log_level: str = _setting("GOFANNON_LOG_LEVEL", "INFO", "Python logging level of the service.")
    log_format: str = _setting("GOFANNON_LOG_FORMAT", "text", "`text` (readable lines) or `json` (one object per line: time, level, logger, message, request_id, user_id, route). Secrets are redacted either way.")
    workers: str = _setting("GOFANNON_WORKERS", "1", "API processes `gofannon serve` runs on one port (`--workers`; `auto` = one per core); above 1 a supervisor restarts any that dies.")
    metrics: bool = _setting("GOFANNON_METRICS", True, "Collect Prometheus metrics and serve `GET /metrics` (site admins, admin tokens, or `GOFANNON_METRICS_TOKEN`).", "bool")
    metrics_token: str | None = _setting("GOFANNON_METRICS_TOKEN", None, "A bearer token that may read `/metrics` besides site admins.")
    # -- storage and jobs ---------------------------------------------------------------------------
    storage: str = _setting("GOFANNON_STORAGE", "sqlite", "Document store plugin: `sqlite`, `redis`, `postgres`, `memory`, or a third-party plugin's name.")
    database_url: str | None = _setting("DATABASE_URL", None, "PostgreSQL connection URL for `GOFANNON_STORAGE=postgres`.")
    database_pool_size: int = _setting("GOFANNON_DATABASE_POOL_SIZE", 10, "Connections in the PostgreSQL pool.", "int")
    redis_url: str | None = _setting("REDIS_URL", None, "Redis for the RQ job queue (and for `GOFANNON_STORAGE=redis`); unset = in-process jobs.")
    redis_prefix: str = _setting("GOFANNON_REDIS_PREFIX", "gofannon:", "Prefix of the Redis keys of the redis storage plugin and of job results, so several deployments can share one Redis (RQ's own keys are set apart by `GOFANNON_QUEUE`).")
    job_concurrency: int = _setting("GOFANNON_JOB_CONCURRENCY", 32, "Jobs one process runs at once: the in-process queue of `gofannon serve`, or one `gofannon worker` (`--concurrency` overrides).", "int")
    job_queue_name: str = _setting("GOFANNON_QUEUE", "gofannon", "Name of the RQ queue API processes enqueue to and workers serve.")
    ticket_retention_hours: float = _setting("GOFANNON_TICKET_RETENTION_HOURS", 168.0, "Chat tickets older than this are deleted.", "float")
    ticket_lease_s: float = _setting("GOFANNON_TICKET_LEASE_S", 60.0, "A chat ticket whose worker has not renewed its heartbeat for this long is marked failed (the worker died).", "float")
    ticket_pending_s: float = _setting("GOFANNON_TICKET_PENDING_S", 3600.0, "A chat ticket no worker picked up for this long is marked failed.", "float")
    ticket_sweep_s: float = _setting("GOFANNON_TICKET_SWEEP_S", 15.0, "How often a process looks for abandoned and expired chat tickets.", "float")
    run_retention_hours: float = _setting("GOFANNON_RUN_RETENTION_HOURS", 168.0, "Run records older than this are deleted.", "float")
    # -- auth, users, budgets -----------------------------------------------------------------------
    auth_config_path: str | None = _setting("AUTH_CONFIG_PATH", None, "YAML auth config in the reference's format (`auth: providers, site_admins, session_ttl_hours`). With APP_ENV local/dev/test and none set, a built-in dev config is used.")
    firebase_project_id: str | None = _setting("FIREBASE_PROJECT_ID", None, "Firebase project whose ID tokens `Authorization: Bearer` accepts when APP_ENV=firebase (the tokens' `aud`; issuer `https://securetoken.google.com/<project>`).")
    firebase_keys_url: str = _setting("GOFANNON_FIREBASE_KEYS_URL", "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com", "Where Firebase ID-token signing keys are fetched (Google's x509 certificate map or a JWKS).")
    secret_key: str | None = _setting("GOFANNON_SECRET_KEY", None, "Key that encrypts stored provider keys (and signs what needs signing); generated once into the store when unset.")
    self_service_budget: bool | None = _setting("GOFANNON_SELF_SERVICE_BUDGET", None, "Users may edit their own allowance through /users/me/*. Default: on for APP_ENV local/dev/test, else off.", "bool")
    admin_panel_enabled: bool = _setting("ADMIN_PANEL_ENABLED", False, "Accept `X-Admin-Password` on admin routes (reference admin panel).", "bool")
    admin_panel_password: str | None = _setting("ADMIN_PANEL_PASSWORD", None, "Password for `X-Admin-Password`; no default, so the header path is off until set.")
    default_monthly_allowance: float = _setting("GOFANNON_DEFAULT_ALLOWANCE", 100.0, "Monthly allowance (USD) of a new user.", "float")
    log_client_max_bytes: int = _setting("GOFANNON_LOG_CLIENT_MAX_BYTES", 16384, "Largest body `POST /log/client` accepts (413 beyond).", "int")
    log_client_per_minute: int = _setting("GOFANNON_LOG_CLIENT_PER_MINUTE", 600, "Client log entries admitted per client address per minute (429 beyond).", "int")
    data_store_max_value_bytes: int = _setting("GOFANNON_DATA_STORE_MAX_VALUE_BYTES", 1024 * 1024, "Largest value (its JSON, in bytes) one data-store record may hold; a larger one answers 413.", "int")
    # -- outbound -----------------------------------------------------------------------------------
    outbound_allow: str | None = _setting("GOFANNON_OUTBOUND_ALLOW", None, "Comma-separated hosts and CIDRs outbound fetches may reach although the SSRF guard would refuse them; `none` admits nothing extra. Default `127.0.0.0/8,::1,localhost` for APP_ENV local/dev/test, else `none`.")
    outbound_timeout_s: float = _setting("GOFANNON_OUTBOUND_TIMEOUT_S", 30.0, "Timeout of one outbound fetch (specs, MCP, agents' http_client).", "float")
    outbound_max_bytes: int = _setting("GOFANNON_OUTBOUND_MAX_BYTES", 10 * 1024 * 1024, "Largest response body an outbound fetch reads.", "int")
    llm_timeout_seconds: float = _setting("LLM_TIMEOUT_SECONDS", 600.0, "Default timeout of one LLM call.", "float")
    llm_retries: int = _setting("LLM_RATE_LIMIT_RETRIES", 5, "Retries of an LLM call on 429/5xx, with exponential backoff. A provider no connection can be made to (nothing listens, the name does not resolve) is tried once more after 0.25 s, then answers 502 `<provider> could not be reached (...)`.", "int")
    llm_backoff_cap: float = _setting("LLM_RATE_LIMIT_BACKOFF_CAP", 60.0, "Longest wait between LLM retries, seconds.", "float")
    # -- sandbox ------------------------------------------------------------------------------------
    sandbox_tier: str = _setting("GOFANNON_SANDBOX_TIER", "auto", "Confinement of agent code: `bwrap` (namespaces), `landlock`, `rlimit` (limits only), or `auto` (the strongest available). A configured tier that is unavailable stops start-up.")
    sandbox_timeout_s: float = _setting("GOFANNON_SANDBOX_TIMEOUT_S", 60.0, "Wall-clock limit of one agent run.", "float")
    sandbox_memory_mb: int = _setting("GOFANNON_SANDBOX_MEMORY_MB", 512, "Address-space limit of the sandbox child.", "int")
    sandbox_file_mb: int = _setting("GOFANNON_SANDBOX_FILE_MB", 64, "Largest file the child may write.", "int")
    sandbox_open_files: int = _setting("GOFANNON_SANDBOX_OPEN_FILES", 256, "Open-file limit of the child.", "int")
    sandbox_cpu_s: int = _setting("GOFANNON_SANDBOX_CPU_S", 60, "CPU-time limit of the child, seconds.", "int")
    sandbox_pool_size: int = _setting("GOFANNON_SANDBOX_POOL_SIZE", 4, "Warm, single-use sandbox children kept ready.", "int")
    sandbox_max_depth: int = _setting("GOFANNON_SANDBOX_MAX_DEPTH", 5, "Deepest chain of agents calling agents.", "int")
    disable_user_trace: bool = _setting("GOFANNON_DISABLE_USER_TRACE", False, "Leave agents' prints and log records (`stdout`/`log` events) out of run traces.", "bool")
    # -- plugins ------------------------------------------------------------------------------------
    strict_plugins: bool = _setting("GOFANNON_STRICT_PLUGINS", False, "A plugin that fails to load stops start-up instead of being skipped.", "bool")
    load_plugins: list[str] | None = _setting("GOFANNON_LOAD_PLUGINS", None, "Comma-separated allow-list of plugin names to load (unset = all installed).", "list")
    disable_plugins: list[str] = _setting("GOFANNON_DISABLE_PLUGINS", (), "Comma-separated plugin names not to load.", "list")
    trace_plugins: bool = _setting("GOFANNON_TRACE_PLUGINS", False, "Log every hook call.", "bool")

    # Environment seen at load time: provider key variables (`OPENAI_API_KEY`, ...) and base URLs
    # (`OPENAI_BASE_URL`, ...) are named by the catalog and plugins, so they are looked up here.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, metadata={"internal": True})

    # -- derived ------------------------------------------------------------------------------------
    @property
    def is_dev(self) -> bool:
        return self.app_env.lower() in DEV_ENVS

    @property
    def self_service_budget_on(self) -> bool:
        return self.is_dev if self.self_service_budget is None else self.self_service_budget

    @property
    def outbound_allow_list(self) -> list[str]:
        raw = self.outbound_allow
        if raw is None:
            return ["127.0.0.0/8", "::1", "localhost"] if self.is_dev else []
        if raw.strip().lower() == "none":
            return []
        return parse_list(raw)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def env(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(name)
        return value if value not in (None, "") else default

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        file_values = _read_config_file(env)
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            name = f.metadata["env"]
            if name in env:
                values[f.name] = _convert(f.metadata["kind"], env[name], name)
            elif name in file_values:
                values[f.name] = _convert(f.metadata["kind"], file_values[name], name)
        values.update(overrides)
        return cls(environ=env, **values)

    def __post_init__(self) -> None:
        if isinstance(self.disable_plugins, tuple):
            self.disable_plugins = list(self.disable_plugins)


def _convert(kind: str, raw: Any, name: str) -> Any:
    converters: dict[str, Callable[[Any], Any]] = {
        "str": lambda v: None if v is None else str(v),
        "int": int,
        "float": float,
        "bool": parse_bool,
        "list": parse_list,
    }
    try:
        return converters[kind](raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: {exc}") from None


def _read_config_file(env: Mapping[str, str]) -> dict[str, Any]:
    explicit = env.get("GOFANNON_CONFIG_FILE")
    if explicit:
        candidates = [Path(explicit)]
    else:
        base = Path(env.get("GOFANNON_CONFIG_DIR") or PROJECT_ROOT / "config")
        candidates = [base / "gofannon.yaml", base / "gofannon.yml", base / "gofannon.toml"]
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of setting names to values")
        return {str(k): v for k, v in data.items()}
    if explicit:
        raise FileNotFoundError(f"GOFANNON_CONFIG_FILE={explicit} does not exist")
    return {}


def settings_table() -> str:
    """The markdown table of every setting (docs/configuration.md embeds it)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        if f.metadata.get("internal"):
            continue
        default = f.default
        if f.name == "config_dir":
            default = "`config/` of the installation"
        elif default is None or default == ():
            default = "unset"
        else:
            default = f"`{default}`"
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(settings_table(), end="")
