//! `--reload` (development): a worker watches the source files of every module it
//! has imported, plus `--reload-extra-file`s, and asks the master to replace it when
//! one changes. The master starts the replacement first and drains this worker once
//! it serves, so no request is refused; a replacement that fails to import (a typo
//! being fixed) leaves this worker serving the old code.
//!
//! Files are found in `sys.modules` once a second, as gunicorn's reloader does (apps
//! import lazily); their directories are watched with inotify (the `notify` crate),
//! not the files, so an editor that saves by renaming a new file over the old one is
//! seen too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use pyo3::prelude::*;

/// How often new modules are looked for.
const RESCAN: Duration = Duration::from_secs(1);

/// Starts the watcher thread; the flag turns true once a watched file changed.
pub fn start(extra: &[PathBuf]) -> Arc<AtomicBool> {
    let changed = Arc::new(AtomicBool::new(false));
    let flag = changed.clone();
    let extra = extra.to_vec();
    let span = tracing::Span::current();
    let started = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let _enter = span.enter();
            if let Err(e) = watch(extra, &flag) {
                tracing::error!(error = %e, "--reload: cannot watch files");
            }
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "--reload: cannot start the watcher");
    }
    changed
}

fn watch(extra: Vec<PathBuf>, changed: &AtomicBool) -> notify::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)?;
    let mut watched = Watched::default();
    for f in extra {
        watched.add(&mut watcher, f);
    }
    loop {
        for f in module_files() {
            watched.add(&mut watcher, f);
        }
        let deadline = std::time::Instant::now() + RESCAN;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let event = match rx.recv_timeout(left) {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "--reload: watch error");
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            };
            if !writes(&event.kind) {
                continue;
            }
            if let Some(path) = event.paths.iter().find(|p| watched.files.contains(*p)) {
                tracing::info!("Worker reloading: {} modified", path.display());
                changed.store(true, Ordering::Release);
                return Ok(());
            }
        }
    }
}

/// The files that matter and the directories watched for them.
#[derive(Default)]
struct Watched {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Watched {
    fn add(&mut self, watcher: &mut notify::RecommendedWatcher, file: PathBuf) {
        let Some(dir) = file.parent().map(Path::to_path_buf) else {
            return;
        };
        if self.dirs.insert(dir.clone()) {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %dir.display(), error = %e, "--reload: not watched");
            }
        }
        self.files.insert(file);
    }
}

/// Whether an event changed a file's content (reads, which imports cause, do not).
fn writes(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Other => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Source files of the modules imported so far (absolute, as Python recorded them).
fn module_files() -> Vec<PathBuf> {
    Python::attach(|py| -> PyResult<Vec<PathBuf>> {
        let modules = py.import("sys")?.getattr("modules")?.call_method0("copy")?;
        let mut out = Vec::new();
        for m in modules.call_method0("values")?.try_iter()? {
            let Ok(m) = m else { continue };
            let Ok(file) = m.getattr("__file__") else {
                continue;
            };
            let Ok(file) = file.extract::<String>() else {
                continue;
            };
            if file.ends_with(".py") {
                out.push(PathBuf::from(file));
            }
        }
        Ok(out)
    })
    .unwrap_or_default()
}
