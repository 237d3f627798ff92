//! Command-line surface: every option rwsgi takes, as raw values (clap derive).
//!
//! Nothing here is validated beyond its type: [`crate::config`] turns a [`Cli`] into a
//! checked [`crate::config::Config`]. gunicorn's spellings of these options, and
//! gunicorn's settings rwsgi has no option for, are added to the command by
//! [`crate::config::gunicorn::command`] from its table. Every long option `--foo-bar`
//! can also come from `GUNICORN_CMD_ARGS`, from the environment as `RWSGI_FOO_BAR`, or
//! from the `--config` file as `foo-bar` / `foo_bar`; [`crate::config::sources`]
//! merges those layers before clap sees them.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// A WSGI server that embeds CPython and measures request queue time.
#[derive(Debug, Clone, Parser)]
#[command(name = "rwsgi", version = crate::wsgi::interpreter::version_line(), about, args_override_self = true)]
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
    pub lifecycle: LifecycleArgs,

    #[command(flatten)]
    pub scaling: ScalingArgs,

    #[command(flatten)]
    pub apm: ApmArgs,

    /// Read options from this TOML file (keys are long option names).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Validate the configuration and import the app, then exit: 0 when it would
    /// start, 1 with the reason when not (gunicorn's `--check-config`).
    #[arg(long)]
    pub check_config: bool,

    /// gunicorn settings that have no rwsgi option of their own (see
    /// [`crate::config::gunicorn`]): raw values by gunicorn setting name, filled by
    /// [`crate::config::sources`] from the same layers as every other option.
    #[arg(skip)]
    pub gunicorn: crate::config::gunicorn::Values,
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

    /// Seconds an idle keep-alive connection is kept open (0 = no keep-alive). Longer
    /// than gunicorn's 2 so that a load balancer with a 60 s idle timeout (AWS ALB,
    /// nginx upstream keepalive) never reuses a connection rwsgi is closing (a 502).
    #[arg(long, default_value_t = 75.0, value_name = "SECS")]
    pub keep_alive: f64,

    /// Seconds a client may take to send a complete request head (slowloris guard).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub header_timeout: f64,

    /// Seconds a request body may go without a byte arriving while the app reads it
    /// (nginx's client_body_timeout); past it wsgi.input raises rwsgi.ClientTimeout.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub client_body_timeout: f64,

    /// Seconds a response may wait for a client that stopped reading (nginx's
    /// send_timeout); past it the connection is aborted.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub send_timeout: f64,

    /// Serve every request through hyper's HTTP/1.1, without rwsgi's own path for
    /// keep-alive requests without a body. For comparison and diagnosis.
    #[arg(long)]
    pub hyper_only: bool,

    /// Maximum size of the request line in bytes (0 = unlimited). Over it: 414.
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
    /// IPs or CIDRs, `*` for all). Default: `$FORWARDED_ALLOW_IPS`, else
    /// 127.0.0.1,::1 (as in gunicorn, the variable ranks below the config file).
    #[arg(long, value_name = "IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Set REMOTE_ADDR to the client address from a trusted X-Forwarded-For. Off by
    /// default: REMOTE_ADDR is the peer's address, as in gunicorn.
    #[arg(long)]
    pub remote_addr_from_forwarded: bool,

    /// Set SO_REUSEPORT on TCP sockets, so that several servers may bind one port.
    #[arg(long)]
    pub reuse_port: bool,

    /// Header names with `_` (`X_Foo` would map to the same environ key as `X-Foo`):
    /// drop (left out of the environ, gunicorn's default), refuse (the request gets
    /// 400), dangerous (mapped, colliding values joined).
    #[arg(long, default_value = "drop", value_name = "drop|refuse|dangerous")]
    pub header_map: String,
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

    /// With --threads 1, a route runs on the IO thread only while its recent runs
    /// took under this many milliseconds (a slow one there holds up the worker's other
    /// connections).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "MS",
        allow_negative_numbers = true
    )]
    pub inline_max_ms: f64,

    /// Set an environment variable for the app, `KEY=VALUE`. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// gunicorn's worker class. rwsgi has one worker (threads on tokio): sync and
    /// gthread are accepted and mean it; gevent, eventlet, tornado and ASGI classes
    /// are refused, since the app would behave differently.
    #[arg(short = 'k', long, value_name = "CLASS")]
    pub worker_class: Option<String>,
}

/// Master and worker processes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Processes")]
pub struct ProcessArgs {
    /// Worker processes (default: `$WEB_CONCURRENCY`, else 1).
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,

    /// Seconds a worker may spend in one request before it is killed and replaced
    /// (0 = no limit).
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

    /// Import the app once, in a process of its own, and fork the workers from it
    /// (gunicorn's --preload): workers start without importing and share its memory.
    /// HUP imports again. Off with --reload.
    #[arg(long)]
    pub preload: bool,
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

    /// Redirect the app's stdout and stderr to the --error-log file.
    #[arg(long)]
    pub capture_output: bool,

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

    /// statsd: where to send packets; turns the statsd sink on, as in gunicorn.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd_host: Option<String>,

    /// statsd: metric name prefix.
    #[arg(long, default_value = "rwsgi", value_name = "PREFIX")]
    pub statsd_prefix: String,

    /// statsd: DogStatsD tag `key:value`. Repeatable, or comma separated.
    #[arg(long = "statsd-tag", value_name = "K:V", value_delimiter = ',')]
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

// ---------------------------------------------------------------------------------
// Lifecycle (Kubernetes probes, shutdown delay)
// ---------------------------------------------------------------------------------

/// Health endpoints and the shutdown delay an orchestrator needs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Lifecycle")]
pub struct LifecycleArgs {
    /// Serve GET /healthz (master and a worker alive) and /readyz (serving, not
    /// draining) on HOST:PORT, from the master.
    #[arg(long, value_name = "HOST:PORT")]
    pub health_bind: Option<String>,

    /// On TERM, fail /readyz at once but keep serving for SECS before draining, so an
    /// orchestrator removes the instance from its endpoints before it stops accepting.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub shutdown_delay: f64,

    /// /readyz also fails while the last report's p90 server_wait is above SECS (needs
    /// --health-bind).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub ready_max_server_wait: Option<f64>,
}

/// rwsgi adding and retiring its own workers from the queue signal.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Worker scaling")]
pub struct ScalingArgs {
    /// Scale workers between --min-workers and --max-workers from p90 server_wait /
    /// queue time and utilization (both needed; --workers is where it starts).
    #[arg(long, value_name = "N")]
    pub min_workers: Option<usize>,

    /// Upper bound for worker scaling (also bounded by available memory).
    #[arg(long, value_name = "N")]
    pub max_workers: Option<usize>,

    /// Add a worker when the last report's p90 wait (the larger of server_wait and
    /// queue_time) is above SECS.
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub scale_up_wait: f64,

    /// Retire a worker when the others would stay below this utilization (0..1) and
    /// the p90 wait is under a quarter of --scale-up-wait, for 3 reports in a row.
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "RATIO",
        allow_negative_numbers = true
    )]
    pub scale_down_utilization: f64,

    /// Seconds after a scaling step before the next one.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub scale_cooldown: f64,
}

/// What APM agents (New Relic, Scout, Datadog) read.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "APM")]
pub struct ApmArgs {
    /// Give the app `HTTP_X_REQUEST_START: t=<µs since the epoch>` when the request has
    /// no X-Request-Start: the trusted proxy stamp if there was one, else the kernel's
    /// arrival time, so APM queue panels show the wait before the app ran.
    #[arg(long)]
    pub set_request_start: bool,
}
