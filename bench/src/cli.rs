//! Command-line surface of `rwsgi-bench`: one subcommand per mode (clap derive).
//!
//! Values here are raw; each mode turns them into its validated config, so that a
//! mistyped flag is reported before any server starts or any load is sent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::load::request::StampAt;

/// Load generator and comparison runner for rwsgi.
#[derive(Debug, Parser)]
#[command(name = "rwsgi-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send load to one URL (closed loop, or open model with --rate) and report.
    Load(LoadArgs),
    /// Serve "Hello, World!" with plain hyper (the reference for vs-wrk).
    ServeHello(ServeHelloArgs),
    /// Run wrk and this generator against the same server, alternating, and report the
    /// ratio: the generator must reach ≥ 90% of wrk's req/s.
    VsWrk(VsWrkArgs),
    /// Start each server on each app, run the same load, alternate over rounds, write
    /// results/latest.{md,png,json}.
    Compare(CompareArgs),
    /// Cold start: exec → first 200, → every worker serving, a burst during start-up,
    /// master and total RSS; writes results/coldstart.{md,json}.
    Coldstart(ColdstartArgs),
    /// Autoscaling scenario: ramp open-model load past capacity and back, record
    /// client-side and server-reported queue time per second, plot them.
    Scenario(ScenarioArgs),
    /// The closed loop: the HPA rule scaling rwsgi's workers on queue time, then on CPU.
    Autoscale(AutoscaleArgs),
    /// Re-render latest.md and latest.png from a compare JSON file.
    Render(RenderArgs),
}

/// `load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Target URL on this machine, e.g. http://127.0.0.1:8000/
    pub url: String,
    #[command(flatten)]
    pub shape: LoadShape,
    /// Print the report as JSON (with the per-second series).
    #[arg(long)]
    pub json: bool,
}

/// The load itself: shared by `load` and the runners.
#[derive(Debug, Clone, Args)]
pub struct LoadShape {
    /// Connections in total.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Generator threads (each runs its own single-threaded runtime).
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds of measured load (after the warm-up).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests instead (closed loop only).
    #[arg(short = 'n', long, conflicts_with = "rate")]
    pub requests: Option<u64>,
    /// Open model: requests per second, on a fixed schedule independent of answers.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Seconds a request (connect included) may take before it counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Open a new connection for every request (sends `Connection: close`).
    #[arg(long)]
    pub no_keep_alive: bool,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Send a body of this many bytes (e.g. 1048576 for the upload test).
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,
    /// Extra header `Name: value`. Repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Add this header with the wall-clock time in nginx `$msec` format
    /// (`1700000000.123`), standing in for `proxy_set_header NAME $msec`.
    #[arg(long, value_name = "NAME")]
    pub stamp_header: Option<String>,
    /// Which instant the stamp carries: the scheduled due time (what a proxy would
    /// stamp on arrival) or the actual send time. Same thing in the closed loop.
    #[arg(long, value_enum, default_value_t = StampAt::Due)]
    pub stamp_at: StampAt,
}

/// `serve-hello`.
#[derive(Debug, Clone, Args)]
pub struct ServeHelloArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Where the runner finds things.
#[derive(Debug, Clone, Args)]
pub struct Paths {
    /// Repository root (default: the nearest parent of the current directory that has
    /// bench/apps).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The bench venv with the peers (default: ROOT/bench/.venv).
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// The rwsgi binary (default: ROOT/target/release/rwsgi).
    #[arg(long)]
    pub rwsgi: Option<PathBuf>,
    /// Output folder (default: ROOT/bench/results).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `vs-wrk`.
#[derive(Debug, Clone, Args)]
pub struct VsWrkArgs {
    /// Servers to compare against: `hello` (built-in hyper), or a runner server name
    /// (granian, bjoern, gunicorn-sync, gunicorn-gthread, rwsgi) on the hello app.
    /// Repeatable.
    #[arg(long = "server", default_values_t = vec!["hello".to_string(), "granian".to_string()])]
    pub servers: Vec<String>,
    /// Connections (wrk -c).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Client threads (wrk -t).
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds per measurement.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    pub duration: f64,
    /// Alternations of wrk and the generator; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Worker processes for the Python servers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Threads of the hello server.
    #[arg(long, default_value_t = 2)]
    pub hello_threads: usize,
    #[command(flatten)]
    pub paths: Paths,
}

/// `compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Short run (1 round, 2 s per load): checks that everything works, ≤ 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Rounds; servers are alternated and medians taken (default 3, quick 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds of measured load per run (default 8, quick 2).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up load before each measurement (default 1, quick 0.5).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Worker processes of every server.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Apps to run (default: all). Repeatable or comma separated.
    #[arg(long = "app", value_delimiter = ',')]
    pub apps: Vec<String>,
    /// Servers to run (default: all). Repeatable or comma separated.
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Measure a run again (once) when other processes used more than this share of
    /// the machine's CPU during it, and keep the quieter attempt (1 = never).
    #[arg(long, default_value_t = 0.25)]
    pub retry_above: f64,
    /// Skip the wrk run that follows every generator run (by default each server is
    /// measured with both, and a target counts only when it holds under both).
    #[arg(long)]
    pub no_wrk: bool,
    #[command(flatten)]
    pub paths: Paths,
}

/// `coldstart`.
#[derive(Debug, Clone, Args)]
pub struct ColdstartArgs {
    /// Runs; each starts every server twice (quiet, then burst), servers alternating.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Worker processes of every server.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The app (it must answer `GET /pid` with the worker's pid).
    #[arg(long, default_value = "django")]
    pub app: String,
    /// Servers (default: rwsgi, rwsgi-preload, gunicorn-sync, granian, uwsgi, bjoern).
    #[arg(long = "server", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Requests fired at exec time.
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// How long each request of the burst waits before it retries a refused connect
    /// (ms). At 1 ms, 100 requests make 100,000 refused connects a second, which
    /// takes the 2 cores from whichever server keeps its port closed longest.
    #[arg(long, default_value_t = 10)]
    pub retry_ms: u64,
    /// Start nothing: rewrite the coldstart.md beside this coldstart.json.
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
    #[command(flatten)]
    pub paths: Paths,
}

/// `scenario`.
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// Server to run (rwsgi reports queue time; the others give the client curve only).
    #[arg(long, default_value = "rwsgi")]
    pub server: String,
    /// App (default: sleep, whose service time is known: 10 ms).
    #[arg(long, default_value = "sleep")]
    pub app: String,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Python threads per worker (sets capacity for the sleep app: workers×threads/10 ms).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Capacity in req/s; measured with a short closed-loop run when not given.
    #[arg(long)]
    pub capacity: Option<f64>,
    /// Load levels as fractions of capacity, played in order, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.2,0.4,0.6,0.8,1.0,1.2,1.5,1.2,1.0,0.8,0.6,0.4,0.2"
    )]
    pub levels: Vec<f64>,
    /// Seconds per level.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// Connections (bounded; requests beyond them wait in the generator, stamped at
    /// their due time, exactly as if queued in front of the server).
    #[arg(short = 'c', long, default_value_t = 512)]
    pub connections: usize,
    /// Generator threads.
    #[arg(short = 't', long, default_value_t = 1)]
    pub client_threads: usize,
    /// The app's own service time in ms, subtracted from latency to get queue time
    /// (default: measured as the mean latency of the first level).
    #[arg(long)]
    pub service_ms: Option<f64>,
    /// Stamp header sent with every request and given to rwsgi's --queue-header.
    #[arg(long, default_value = "X-RequestTime")]
    pub queue_header: String,
    /// Prometheus metric family with the queue time (`_sum` and `_count` are read).
    #[arg(long, default_value = "rwsgi_queue_time_seconds")]
    pub metric: String,
    /// Scrape an already running server's metrics at this URL instead of starting
    /// one (use with --url).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Load an already running server at this URL instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub paths: Paths,
}

/// `autoscale`.
#[derive(Debug, Clone, Args)]
pub struct AutoscaleArgs {
    /// App (default: sleep, I/O-bound with a known service time).
    #[arg(long, default_value = "sleep")]
    pub app: String,
    /// The app's service time, ms (sleep: 10).
    #[arg(long, default_value_t = 10.0)]
    pub service_ms: f64,
    /// Python threads per worker: one worker serves threads ÷ service time req/s.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Upper bound for the controller.
    #[arg(long, default_value_t = 6)]
    pub max_workers: usize,
    /// Load levels in multiples of one worker's capacity, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,1,2,3,4,5,4,3,2,1,0.5"
    )]
    pub levels: Vec<f64>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Seconds between controller decisions.
    #[arg(long, default_value_t = 2.0)]
    pub period: f64,
    /// Queue-time target, seconds (the shipped KEDA prometheus trigger's threshold).
    #[arg(long, default_value_t = 0.05)]
    pub queue_target: f64,
    /// CPU utilization target per worker (0..1), as an HPA's averageUtilization.
    #[arg(long, default_value_t = 0.6)]
    pub cpu_target: f64,
    /// Client connections (requests beyond them wait in the generator, stamped).
    #[arg(short = 'c', long, default_value_t = 256)]
    pub connections: usize,
    #[command(flatten)]
    pub paths: Paths,
}

/// `render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// The compare JSON (default: ROOT/bench/results/latest.json).
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub paths: Paths,
}
