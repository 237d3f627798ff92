//! Command-line surface: every option rwsgi takes, as raw values (clap derive).
//!
//! Nothing here is validated beyond its type: [`crate::config`] turns a [`Cli`] into a
//! checked [`crate::config::Config`]. Every long option `--foo-bar` can also come from
//! the environment as `RWSGI_FOO_BAR` or from the `--config` TOML file as `foo-bar`;
//! [`crate::config::sources`] merges those layers before clap sees them, so the
//! precedence is command line, then environment, then file, then the default below.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// A WSGI server that embeds CPython and measures request queue time.
#[derive(Debug, Clone, Parser)]
#[command(name = "rwsgi", version, about, args_override_self = true)]
pub struct Cli {
    /// The WSGI application, `module:callable` (callable defaults to `application`).
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub python: PythonArgs,

    #[command(flatten)]
    pub process: ProcessArgs,

    #[command(flatten)]
    pub logging: LogArgs,

    #[command(flatten)]
    pub tracker: TrackerArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub hooks: HookArgs,

    /// Read options from this TOML file (keys are long option names).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Sockets and HTTP/1.1 limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Where to listen: HOST:PORT, [V6]:PORT, unix:PATH or fd://N. Repeatable.
    /// Without it, `$PORT` gives 0.0.0.0:$PORT, else 127.0.0.1:8000.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// Listen backlog of each socket.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub backlog: u32,

    /// Octal permissions of `unix:` sockets.
    #[arg(long, default_value = "660", value_name = "MODE")]
    pub unix_socket_mode: String,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub keep_alive: f64,

    /// Seconds a client may take to send a complete request head (slowloris guard).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub header_timeout: f64,

    /// Serve every request through hyper's HTTP/1.1, without rwsgi's own path for
    /// keep-alive requests without a body. For comparison and diagnosis.
    #[arg(long)]
    pub hyper_only: bool,

    /// Maximum size of the request line in bytes (0 = unlimited). Over it: 400.
    #[arg(long, default_value_t = 4094, value_name = "BYTES")]
    pub limit_request_line: usize,

    /// Maximum number of request header fields (0 = 32768). Over it: 431.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit_request_fields: usize,

    /// Maximum size of one request header field in bytes (0 = unlimited). Over it: 431.
    #[arg(long, default_value_t = 8190, value_name = "BYTES")]
    pub limit_request_field_size: usize,

    /// Maximum simultaneous client connections per worker.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub worker_connections: usize,

    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma list of
    /// IPs or CIDRs, `*` for all).
    #[arg(long, default_value = "127.0.0.1,::1", value_name = "IPS")]
    pub forwarded_allow_ips: String,
}

/// The embedded interpreter and the application.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Python")]
pub struct PythonArgs {
    /// Python threads per worker: requests that run in Python at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// Change to this directory before loading the app; it comes first on sys.path.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Extra directories for sys.path, comma separated. Repeatable.
    #[arg(long, value_name = "DIR[,DIR]", value_delimiter = ',')]
    pub pythonpath: Vec<PathBuf>,

    /// Use this virtualenv's packages (default: `$VIRTUAL_ENV`).
    #[arg(long, value_name = "DIR", env = "VIRTUAL_ENV")]
    pub venv: Option<PathBuf>,

    /// Do not read QUEUE_TIME_TRACKER_* defaults from a Django project's settings.
    #[arg(long)]
    pub ignore_django_settings: bool,

    /// With --threads 1, never run a request on the IO thread: hand every request to
    /// the Python thread (as with more threads).
    #[arg(long)]
    pub no_inline: bool,
}

/// Master and worker processes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Processes")]
pub struct ProcessArgs {
    /// Worker processes (default: `$WEB_CONCURRENCY`, else 1).
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,

    /// Seconds a worker may spend in one request before it is killed and replaced.
    #[arg(short = 't', long, default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,

    /// Seconds workers get to finish in-flight requests on TERM or HUP.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub graceful_timeout: f64,

    /// Recycle a worker after this many requests (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_requests: u64,

    /// Add up to this many requests, at random, to each worker's --max-requests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_requests_jitter: u64,

    /// Write the master's PID to this file.
    #[arg(long = "pid", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// Server log and access log.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// debug, info, warning, error or critical.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Server log destination: a file path, or `-` for stderr.
    #[arg(
        long,
        alias = "error-logfile",
        default_value = "-",
        value_name = "PATH|-"
    )]
    pub error_log: String,

    /// Write an access log line per request to this file, or `-` for stdout.
    #[arg(long, alias = "access-logfile", value_name = "PATH|-")]
    pub access_log: Option<String>,

    /// Access log format, with gunicorn's atoms.
    #[arg(
        long,
        default_value = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#,
        value_name = "FORMAT"
    )]
    pub access_log_format: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Queue-time measurement.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Queue time")]
pub struct TrackerArgs {
    /// Request header with the proxy's stamp (e.g. X-RequestTime from nginx `$msec`).
    #[arg(long, value_name = "NAME")]
    pub queue_header: Option<String>,

    /// Seconds; an older stamp is counted as invalid.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    pub queue_max_age: f64,

    /// Peers (comma list of IPs or CIDRs) whose stamps are used
    /// (default: the --forwarded-allow-ips set).
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub queue_header_trusted_from: Option<String>,

    /// Answer 503 with Retry-After, without calling the app, once a request has
    /// waited longer than this many seconds. Off by default.
    #[arg(long, value_name = "SECS")]
    pub max_queue_time: Option<f64>,
}

/// Reporting: the timer and every sink's options.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Notifiers")]
pub struct NotifyArgs {
    /// Seconds between reports.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub notify_interval: f64,

    /// Where reports go: log, prometheus, statsd, cloudwatch, azure, redis. Repeatable.
    /// Default: log, when --queue-header is given.
    #[arg(long = "notify", value_name = "SINK")]
    pub sinks: Vec<String>,

    /// prometheus: serve /metrics here.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_bind: Option<String>,

    /// statsd: where to send packets.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd_host: Option<String>,

    /// statsd: metric name prefix.
    #[arg(long, default_value = "rwsgi", value_name = "PREFIX")]
    pub statsd_prefix: String,

    /// statsd: DogStatsD tag `key:value`. Repeatable.
    #[arg(long = "statsd-tag", value_name = "K:V")]
    pub statsd_tags: Vec<String>,

    /// cloudwatch: metric namespace (required for the cloudwatch sink).
    #[arg(long, value_name = "NAMESPACE")]
    pub cloudwatch_namespace: Option<String>,

    /// cloudwatch: region (default: the AWS chain's region).
    #[arg(long, value_name = "REGION")]
    pub cloudwatch_region: Option<String>,

    /// cloudwatch: endpoint URL override (AWS_ENDPOINT_URL works too).
    #[arg(long, value_name = "URL")]
    pub cloudwatch_endpoint: Option<String>,

    /// cloudwatch: dimension `NAME=VALUE`. Repeatable.
    #[arg(long = "cloudwatch-dimension", value_name = "NAME=VALUE")]
    pub cloudwatch_dimensions: Vec<String>,

    /// cloudwatch: unit of the time metrics, seconds or milliseconds.
    #[arg(long, default_value = "seconds", value_name = "UNIT")]
    pub cloudwatch_unit: String,

    /// azure: full resource id `/subscriptions/…/resourceGroups/…/providers/…/…`.
    #[arg(long, value_name = "ID")]
    pub azure_resource_id: Option<String>,

    /// azure: subscription id (with the other parts, instead of --azure-resource-id).
    #[arg(long, value_name = "ID")]
    pub azure_subscription_id: Option<String>,

    /// azure: resource group.
    #[arg(long, value_name = "NAME")]
    pub azure_resource_group: Option<String>,

    /// azure: resource provider, e.g. Microsoft.Web.
    #[arg(long, value_name = "NAME")]
    pub azure_provider: Option<String>,

    /// azure: resource type, e.g. sites.
    #[arg(long, value_name = "NAME")]
    pub azure_resource_type: Option<String>,

    /// azure: resource name.
    #[arg(long, value_name = "NAME")]
    pub azure_resource_name: Option<String>,

    /// azure: region of the resource (required for the azure sink).
    #[arg(long, value_name = "REGION")]
    pub azure_region: Option<String>,

    /// azure: ingestion URL override (tests).
    #[arg(long, value_name = "URL")]
    pub azure_endpoint: Option<String>,

    /// azure: metric namespace.
    #[arg(long, default_value = "rwsgi", value_name = "NAMESPACE")]
    pub azure_namespace: String,

    /// azure: dimension `NAME=VALUE`. Repeatable.
    #[arg(long = "azure-dimension", value_name = "NAME=VALUE")]
    pub azure_dimensions: Vec<String>,

    /// redis: `redis://` or `rediss://` URL (a password in it is never logged).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,

    /// redis: key prefix.
    #[arg(long, default_value = "queue-time", value_name = "PREFIX")]
    pub redis_key_prefix: String,

    /// redis: seconds of history kept in `{prefix}:{hostname}:history`.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub redis_history: f64,
}

/// gunicorn's process settings implemented on the hooks side (temporary home: the
/// gunicorn-compatible CLI replaces this group, with the same names, at merge).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Processes (gunicorn)")]
pub struct HookArgs {
    /// Restart workers when a source file changes (development).
    #[arg(long)]
    pub reload: bool,

    /// With --reload, also watch this file. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub reload_extra_file: Vec<PathBuf>,

    /// Run workers as this user (name or uid), after the master bound the sockets.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Run workers as this group (name or gid); default: the user's group.
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,

    /// File mode mask of the files rwsgi and its workers create (0o22, 022, 18).
    #[arg(short = 'm', long, value_name = "MASK")]
    pub umask: Option<String>,

    /// Process title: `rwsgi: master [NAME]`, `rwsgi: worker [NAME]` in ps/top.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,
}
