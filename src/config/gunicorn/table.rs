//! The table of gunicorn's settings (`gunicorn.config.KNOWN_SETTINGS`, gunicorn 27):
//! for each, every spelling gunicorn accepts and what rwsgi does with it.
//!
//! This is the one source of truth for gunicorn compatibility: the command line
//! ([`super::command`]), the config-file keys ([`super::setting`]), the validation
//! ([`super::Values`]) and the docs table (`docs/gunicorn-settings.md`, written by
//! `python-tests/gen_gunicorn_settings.py` from `rwsgi --gunicorn-settings` and
//! checked against the installed gunicorn) all read it.

/// How a setting takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Present or absent (`--preload`); `True`/`False` in a config file.
    Flag,
    /// One value, the last occurrence wins.
    Value,
    /// Repeatable (`--bind`, `-e`).
    List,
    /// Config file only: a Python callable (server hooks).
    Hook,
    /// Config file only: any other value (a dict, a string).
    FileOnly,
}

/// What rwsgi does with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treat {
    /// rwsgi's own option `--NAME` (or `app`) has gunicorn's meaning; gunicorn's
    /// spellings are aliases of it. The `&str` notes a difference, if any.
    Same(&'static str, &'static str),
    /// Accepted; it cannot mean anything in rwsgi, and one log line says why.
    Ignored(&'static str),
    /// Implemented with gunicorn's meaning, without an rwsgi option of its own: the
    /// validated value is in [`super::Gunicorn`] (hooks: [`crate::config::pyfile`]).
    Implemented(&'static str),
    /// Parsed, validated and kept in [`super::Gunicorn`] with gunicorn's meaning for
    /// the part of rwsgi that will implement it (it then becomes `Implemented`). Until
    /// then one log line says it has no effect.
    Planned(&'static str),
    /// Refused at start with this message (naming the alternative): accepting it
    /// would silently change how the app behaves.
    Refused(&'static str),
}

/// One gunicorn setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// gunicorn's name: the config-file key (`preload_app`).
    pub name: &'static str,
    /// Every command-line spelling gunicorn accepts (`-k`, `--worker-class`).
    pub flags: &'static [&'static str],
    pub kind: Kind,
    pub treat: Treat,
}

use Kind::*;
use Treat::*;

const FORK: &str = "the app is imported once, in a process the master starts for it (the \
master itself runs no app code), and the workers are forked from that process; HUP imports \
again; with --reload each worker imports the app itself";
const NO_SYSLOG: &str = "rwsgi logs to stderr or --error-log; route to syslog with journald \
or the container runtime";
const PY_LOGGING: &str = "rwsgi's own log lines do not go through Python logging; the app \
configures its own logging (use --log-format json for structured lines)";
const H1: &str = "rwsgi serves HTTP/1.1 (terminate HTTP/2 at the proxy); clients negotiate \
HTTP/1.1";
const STRICT: &str = "rwsgi's HTTP/1.1 parser is strict and has no leniency switches; such \
requests get 400";
const ASGI: &str = "an ASGI setting; rwsgi serves WSGI apps";
const DIRTY: &str = "dirty arbiters only run with dirty_apps, which rwsgi refuses";
const CONTROL: &str = "rwsgi has no gunicornc control socket; use signals (HUP, TERM, INT, \
QUIT) on the master";
const HOOKS: &str =
    "server hooks from the config file, at gunicorn's moments with gunicorn's arguments";
const TLS: &str = "TLS with rustls on both HTTP paths (wsgi.url_scheme https)";
const PROXY: &str = "the PROXY protocol v1 and v2 (off, v1, v2, auto; no value means auto), read before TLS and HTTP from --proxy-allow-from peers: REMOTE_ADDR/REMOTE_PORT become the client it announces, PROXY_ADDR/PROXY_PORT the address it was sent to; a connection from such a peer without a valid header is closed";
const PRIV: &str = "workers switch to this account after the master has bound the sockets";
const RELOAD: &str =
    "workers are replaced when a source file they imported (or an extra file) changes";

/// Every setting of `gunicorn.config.KNOWN_SETTINGS` in gunicorn 27, in its order.
pub const SETTINGS: &[Setting] = &[
    s("config", &["-c", "--config"], Value, Same("config", "a path ending in .toml is rwsgi's TOML; any other path, or python:MODULE, is a Python file as in gunicorn; a `config` variable inside a file names nothing")),
    s("wsgi_app", &[], FileOnly, Same("app", "")),
    s("bind", &["-b", "--bind"], List, Same("bind", "a bare port N binds 0.0.0.0:N")),
    s("backlog", &["--backlog"], Value, Same("backlog", "")),
    s("workers", &["-w", "--workers"], Value, Same("workers", "")),
    s("worker_class", &["-k", "--worker-class"], Value, Same("worker-class", "sync and gthread (any spelling) mean rwsgi's one worker: Python threads fed by tokio; gevent, eventlet, tornado and ASGI classes are refused")),
    s("threads", &["--threads"], Value, Same("threads", "")),
    s("worker_connections", &["--worker-connections"], Value, Same("worker-connections", "")),
    s("max_requests", &["--max-requests"], Value, Same("max-requests", "")),
    s("max_requests_jitter", &["--max-requests-jitter"], Value, Same("max-requests-jitter", "")),
    s("timeout", &["-t", "--timeout"], Value, Same("timeout", "")),
    s("graceful_timeout", &["--graceful-timeout"], Value, Same("graceful-timeout", "")),
    s("keepalive", &["--keep-alive"], Value, Same("keep-alive", "default 75 s, not 2: longer than the 60 s idle timeout of AWS ALB and nginx upstream keep-alive, so the balancer never reuses a connection rwsgi is closing (a 502); an idle connection costs rwsgi no thread")),
    s("limit_request_line", &["--limit-request-line"], Value, Same("limit-request-line", "")),
    s("limit_request_fields", &["--limit-request-fields"], Value, Same("limit-request-fields", "")),
    s("limit_request_field_size", &["--limit-request-field_size"], Value, Same("limit-request-field-size", "")),
    s("reload", &["--reload"], Flag, Implemented(RELOAD)),
    s("reload_engine", &["--reload-engine"], Value, Ignored("rwsgi's --reload uses its own file watcher")),
    s("reload_extra_files", &["--reload-extra-file"], List, Implemented(RELOAD)),
    s("spew", &["--spew"], Flag, Ignored("rwsgi has no line tracer; use sys.settrace in the app")),
    s("check_config", &["--check-config"], Flag, Same("check-config", "")),
    s("print_config", &["--print-config"], Flag, Same("print-config", "prints rwsgi's configuration as TOML, each value with its source; from the command line only")),
    s("preload_app", &["--preload"], Flag, Same("preload", FORK)),
    s("sendfile", &["--no-sendfile"], Flag, Ignored("rwsgi does not use sendfile(); wsgi.file_wrapper streams in blocks")),
    s("reuse_port", &["--reuse-port"], Flag, Same("reuse-port", "")),
    s("chdir", &["--chdir"], Value, Same("chdir", "")),
    s("daemon", &["-D", "--daemon"], Flag, Implemented("the master detaches from the terminal (fork, setsid) once the configuration is valid; stdin, stdout and stderr go to /dev/null unless --enable-stdio-inheritance")),
    s("raw_env", &["-e", "--env"], List, Same("env", "")),
    s("pidfile", &["-p", "--pid"], Value, Same("pid", "")),
    s("worker_tmp_dir", &["--worker-tmp-dir"], Value, Ignored("gunicorn's workers touch a file there as their heartbeat; rwsgi's workers send heartbeats to the master over a socket")),
    s("user", &["-u", "--user"], Value, Implemented(PRIV)),
    s("group", &["-g", "--group"], Value, Implemented(PRIV)),
    s("umask", &["-m", "--umask"], Value, Implemented("the umask of the master and its workers")),
    s("initgroups", &["--initgroups"], Flag, Implemented("workers that switch user take its supplementary groups from the group database; without it only the primary group (gunicorn leaves the master's supplementary groups in place there)")),
    s("tmp_upload_dir", &[], FileOnly, Ignored("gunicorn does not use it either; rwsgi never spools request bodies to disk")),
    s("secure_scheme_headers", &[], FileOnly, Ignored("rwsgi sets wsgi.url_scheme from X-Forwarded-Proto (https or http) sent by --forwarded-allow-ips peers; other scheme headers are not read")),
    s("forwarded_allow_ips", &["--forwarded-allow-ips"], Value, Same("forwarded-allow-ips", "")),
    s("accesslog", &["--access-logfile"], Value, Same("access-log", "")),
    s("disable_redirect_access_to_syslog", &["--disable-redirect-access-to-syslog"], Flag, Ignored(NO_SYSLOG)),
    s("access_log_format", &["--access-logformat"], Value, Same("access-log-format", "")),
    s("errorlog", &["--error-logfile", "--log-file"], Value, Same("error-log", "")),
    s("loglevel", &["--log-level"], Value, Same("log-level", "")),
    s("capture_output", &["--capture-output"], Flag, Same("capture-output", "")),
    s("logger_class", &["--logger-class"], Value, Ignored(PY_LOGGING)),
    s("logconfig", &["--log-config"], Value, Ignored(PY_LOGGING)),
    s("logconfig_dict", &[], FileOnly, Ignored(PY_LOGGING)),
    s("logconfig_json", &["--log-config-json"], Value, Ignored(PY_LOGGING)),
    s("syslog_addr", &["--log-syslog-to"], Value, Ignored(NO_SYSLOG)),
    s("syslog", &["--log-syslog"], Flag, Ignored(NO_SYSLOG)),
    s("syslog_prefix", &["--log-syslog-prefix"], Value, Ignored(NO_SYSLOG)),
    s("syslog_facility", &["--log-syslog-facility"], Value, Ignored(NO_SYSLOG)),
    s("enable_stdio_inheritance", &["-R", "--enable-stdio-inheritance"], Flag, Implemented("with --daemon, keep stdin, stdout and stderr instead of /dev/null")),
    s("statsd_host", &["--statsd-host"], Value, Same("statsd-host", "rwsgi's queue-time metrics, and gunicorn's own under gunicorn's names (requests, request.duration, request.status.CODE, workers, log.*), per --notify-interval")),
    s("dogstatsd_tags", &["--dogstatsd-tags"], Value, Same("statsd-tag", "")),
    s("statsd_prefix", &["--statsd-prefix"], Value, Same("statsd-prefix", "default rwsgi, not empty: rwsgi's metric names are its own")),
    s("enable_backlog_metric", &["--enable-backlog-metric"], Flag, Ignored("rwsgi reports queue_time and server_wait, which measure what the backlog costs requests")),
    s("proc_name", &["-n", "--name"], Value, Implemented("process titles: rwsgi: master [NAME], rwsgi: worker [NAME]")),
    s("default_proc_name", &[], FileOnly, Ignored("without --name the titles use the APP, which is what gunicorn's default_proc_name holds")),
    s("pythonpath", &["--pythonpath"], Value, Same("pythonpath", "")),
    s("paste", &["--paste", "--paster"], Value, Refused("PasteDeploy apps are not supported: give the WSGI app as module:callable")),
    s("on_starting", &[], Hook, Implemented(HOOKS)),
    s("on_reload", &[], Hook, Implemented(HOOKS)),
    s("when_ready", &[], Hook, Implemented(HOOKS)),
    s("pre_fork", &[], Hook, Implemented(HOOKS)),
    s("post_fork", &[], Hook, Implemented(HOOKS)),
    s("post_worker_init", &[], Hook, Implemented(HOOKS)),
    s("worker_int", &[], Hook, Implemented(HOOKS)),
    s("worker_abort", &[], Hook, Implemented(HOOKS)),
    s("pre_exec", &[], Hook, Ignored("rwsgi never re-executes its master (no USR2 binary upgrade), so there is no moment for it")),
    s("pre_request", &[], Hook, Implemented(HOOKS)),
    s("post_request", &[], Hook, Implemented(HOOKS)),
    s("child_exit", &[], Hook, Implemented(HOOKS)),
    s("worker_exit", &[], Hook, Implemented(HOOKS)),
    s("nworkers_changed", &[], Hook, Implemented(HOOKS)),
    s("on_exit", &[], Hook, Implemented(HOOKS)),
    s("ssl_context", &[], Hook, Ignored("rwsgi's TLS is rustls, set by --certfile, --keyfile, --ca-certs, --cert-reqs and --ssl-version; a Python ssl.SSLContext cannot configure it")),
    s("proxy_protocol", &["--proxy-protocol"], Value, Implemented(PROXY)),
    s("proxy_allow_ips", &["--proxy-allow-from"], Value, Implemented("peers allowed to send a PROXY header (default 127.0.0.1,::1, '*' for any); others' headers are refused as bad requests")),
    s("protocol", &["--protocol"], Value, Refused("rwsgi speaks HTTP only (--protocol http is accepted): for nginx, use proxy_pass instead of uwsgi_pass")),
    s("uwsgi_allow_ips", &["--uwsgi-allow-from"], Value, Ignored("only used with --protocol uwsgi, which rwsgi refuses")),
    s("keyfile", &["--keyfile"], Value, Implemented(TLS)),
    s("certfile", &["--certfile"], Value, Implemented(TLS)),
    s("ssl_version", &["--ssl-version"], Value, Implemented("TLS, TLS_SERVER, SSLv23 (TLS 1.2 and 1.3, the default) or TLSv1_2 (1.2 only); TLS 1.0/1.1 are refused at start (rustls does not speak them)")),
    s("cert_reqs", &["--cert-reqs"], Value, Implemented("client certificates checked against --ca-certs: 0 none, 1 optional, 2 required")),
    s("ca_certs", &["--ca-certs"], Value, Implemented("the CA bundle client certificates must chain to (with --cert-reqs 1 or 2)")),
    s("suppress_ragged_eofs", &["--suppress-ragged-eofs"], Flag, Implemented("always on, gunicorn's default: a client that closes without a TLS close_notify ends its connection like a plain close")),
    s("do_handshake_on_connect", &["--do-handshake-on-connect"], Flag, Ignored("the TLS handshake always runs on the connection's own task as soon as it is accepted (no worker thread waits on it), so both values behave alike")),
    s("ciphers", &["--ciphers"], Value, Ignored("an OpenSSL cipher string cannot select rustls suites; rwsgi offers rustls's defaults (TLS 1.3 suites and ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2, nothing weaker)")),
    s("http_protocols", &["--http-protocols"], Value, Ignored(H1)),
    s("http2_cleartext", &["--http2-cleartext"], Value, Ignored(H1)),
    s("http2_max_concurrent_streams", &["--http2-max-concurrent-streams"], Value, Ignored(H1)),
    s("http2_initial_window_size", &["--http2-initial-window-size"], Value, Ignored(H1)),
    s("http2_max_frame_size", &["--http2-max-frame-size"], Value, Ignored(H1)),
    s("http2_max_header_list_size", &["--http2-max-header-list-size"], Value, Ignored(H1)),
    s("raw_paste_global_conf", &["--paste-global"], List, Refused("PasteDeploy apps are not supported: give the WSGI app as module:callable")),
    s("permit_obsolete_folding", &["--permit-obsolete-folding"], Flag, Ignored(STRICT)),
    s("strip_header_spaces", &["--strip-header-spaces"], Flag, Ignored(STRICT)),
    s("permit_unconventional_http_method", &["--permit-unconventional-http-method"], Flag, Ignored(STRICT)),
    s("permit_unconventional_http_version", &["--permit-unconventional-http-version"], Flag, Ignored(STRICT)),
    s("casefold_http_method", &["--casefold-http-method"], Flag, Ignored(STRICT)),
    s("forwarder_headers", &["--forwarder-headers"], Value, Ignored("rwsgi takes SCRIPT_NAME from its environment, never from request headers")),
    s("header_map", &["--header-map"], Value, Same("header-map", "dangerous joins the values of colliding names with ', ', as rwsgi joins a repeated header (gunicorn: ',')")),
    s("asgi_loop", &["--asgi-loop"], Value, Ignored(ASGI)),
    s("asgi_lifespan", &["--asgi-lifespan"], Value, Ignored(ASGI)),
    s("asgi_disconnect_grace_period", &["--asgi-disconnect-grace-period"], Value, Ignored(ASGI)),
    s("websocket_max_message_size", &["--websocket-max-message-size"], Value, Ignored(ASGI)),
    s("http_parser", &["--http-parser"], Value, Ignored("rwsgi parses HTTP in Rust")),
    s("root_path", &["--root-path"], Value, Ignored(ASGI)),
    s("dirty_apps", &["--dirty-app"], List, Refused("gunicorn's dirty arbiters are not available in rwsgi: the app's calls to them would fail; run that work in a task queue")),
    s("dirty_workers", &["--dirty-workers"], Value, Ignored(DIRTY)),
    s("dirty_timeout", &["--dirty-timeout"], Value, Ignored(DIRTY)),
    s("dirty_threads", &["--dirty-threads"], Value, Ignored(DIRTY)),
    s("dirty_graceful_timeout", &["--dirty-graceful-timeout"], Value, Ignored(DIRTY)),
    s("on_dirty_starting", &[], Hook, Ignored(DIRTY)),
    s("dirty_post_fork", &[], Hook, Ignored(DIRTY)),
    s("dirty_worker_init", &[], Hook, Ignored(DIRTY)),
    s("dirty_worker_exit", &[], Hook, Ignored(DIRTY)),
    s("control_socket", &["--control-socket"], Value, Ignored(CONTROL)),
    s("control_socket_mode", &["--control-socket-mode"], Value, Ignored(CONTROL)),
    s("control_socket_disable", &["--no-control-socket"], Flag, Ignored(CONTROL)),
];

const fn s(
    name: &'static str,
    flags: &'static [&'static str],
    kind: Kind,
    treat: Treat,
) -> Setting {
    Setting {
        name,
        flags,
        kind,
        treat,
    }
}
