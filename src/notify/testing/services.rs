//! The real servers the sinks' tests talk to (`redis-server`, moto, the Python fakes
//! of `python-tests/fakes/`), started on free loopback ports and killed when dropped.
//!
//! Nothing is skipped silently: a missing `redis-server` or Python fails the test
//! with a message saying what to install.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Compile-time check: the notifier framework runs each sink in its own tokio task,
/// so a sink and its `send` future must be `Send`.
pub(crate) fn assert_send<T: Send>(_: T) {}

/// A loopback port that was free a moment ago (for servers that cannot bind port 0
/// and report it back).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A loopback port with nothing listening on it.
pub(crate) fn dead_port() -> u16 {
    free_port()
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process killed (by its own pid) and reaped when dropped.
pub(crate) struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------

/// A throw-away `redis-server` (no persistence) that can be stopped and started
/// again on the same port, to test outages.
pub(crate) struct RedisServer {
    pub port: u16,
    password: Option<String>,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts one on a free port; `password` sets `requirepass`.
    pub fn start(password: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            password: password.map(String::from),
            process: None,
        };
        server.restart();
        server
    }

    /// `redis://[:password@]127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kills the server; its port refuses connections afterwards.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// (Re)starts the server on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        if let Some(p) = &self.password {
            args.extend(["--requirepass", p.as_str()]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
            });
        self.process = Some(Process(child));
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "redis-server did not listen on {}",
            self.port
        );
    }

    /// A plain connection for checking what the sink wrote.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }
}

// ---------------------------------------------------------------------------------
// Python fakes
// ---------------------------------------------------------------------------------

/// `$RWSGI_TEST_PYTHON`, else the repo's `.venv`, else `python3` from `PATH`.
pub(crate) fn python() -> String {
    if let Ok(p) = std::env::var("RWSGI_TEST_PYTHON") {
        return p;
    }
    // scripts/test.sh creates this venv (with moto and cbor2) before `cargo test`.
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.into();
    }
    "python3".into()
}

/// `python-tests/fakes/NAME` of this repository.
pub(crate) fn fake_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python-tests/fakes")
        .join(name)
}

/// A fake started with `--listen 127.0.0.1:0` that prints `READY <port>` once it
/// listens.
pub(crate) struct PythonFake {
    pub port: u16,
    _process: Process,
}

impl PythonFake {
    pub fn start(script: &str, args: &[&str]) -> PythonFake {
        let mut child = Command::new(python())
            .arg("-u")
            .arg(fake_script(script))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); set RWSGI_TEST_PYTHON", python()));
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Process(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .strip_prefix("READY ")
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("{script} did not print READY <port> (python: {})", python())
            });
        PythonFake {
            port,
            _process: process,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `moto_server` on a free port, for the CBOR adapter to forward to.
pub(crate) fn start_moto() -> (Process, u16) {
    let port = free_port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} -m moto.server ({e})", python()));
    let process = Process(child);
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "moto_server did not start: RWSGI_TEST_PYTHON must have moto[server] and cbor2"
    );
    (process, port)
}
