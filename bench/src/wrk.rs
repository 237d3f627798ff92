//! Running wrk, the reference load generator, and reading its req/s.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// What wrk reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// `Requests/sec:` (wrk counts every answer, 2xx or not).
    pub rps: f64,
    /// Non-2xx/3xx answers plus socket errors.
    pub errors: u64,
    /// Requests completed (`N requests in …`).
    pub requests: u64,
    /// CPU seconds (user + system) wrk itself used.
    pub cpu_s: f64,
}

/// Runs `wrk -t threads -c connections -d secs url`.
pub fn run(url: &str, threads: usize, connections: usize, secs: u64) -> Result<WrkResult> {
    run_with(url, threads, connections, secs, &Extra::default())
}

/// What a run adds to wrk's plain GET.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// `Name: value` headers (`-H`).
    pub headers: Vec<String>,
    /// A Lua script (`-s`), e.g. one that makes every request a POST with a body.
    pub script: Option<std::path::PathBuf>,
}

/// Writes a wrk script that sends `method` with a body of `size` bytes to `path`.
pub fn body_script(path: &std::path::Path, method: &str, size: usize) -> Result<()> {
    let lua = format!("wrk.method = \"{method}\"\nwrk.body = string.rep(\"x\", {size})\n");
    std::fs::write(path, lua).with_context(|| format!("writing {}", path.display()))
}

/// Runs wrk with extra headers or a script.
pub fn run_with(
    url: &str,
    threads: usize,
    connections: usize,
    secs: u64,
    extra: &Extra,
) -> Result<WrkResult> {
    let before = crate::cpu::children_cpu_s();
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{secs}s"),
    ]);
    for h in &extra.headers {
        cmd.args(["-H", h]);
    }
    if let Some(script) = &extra.script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse(&text)?;
    r.cpu_s = crate::cpu::children_cpu_s() - before;
    Ok(r)
}

/// Reads wrk's summary.
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut rps = None;
    let mut errors = 0u64;
    let mut requests = 0u64;
    for line in text.lines() {
        let line = line.trim();
        if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    match rps {
        Some(rps) => Ok(WrkResult {
            rps,
            errors,
            requests,
            cpu_s: 0.0,
        }),
        None => bail!("no Requests/sec in wrk output:\n{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  \
                    385620 requests in 5.05s, 42.29MB read\n  \
                    Socket errors: connect 0, read 3, write 0, timeout 2\n  \
                    Non-2xx or 3xx responses: 7\nRequests/sec:  76388.35\nTransfer/sec:      8.38MB\n";
        let r = parse(text).unwrap();
        assert_eq!(r.rps, 76388.35);
        assert_eq!(r.errors, 12);
        assert_eq!(r.requests, 385620);
        assert!(parse("garbage").is_err());
    }
}
