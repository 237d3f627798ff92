//! Entry point: run, and turn the error that stopped rwsgi (if any) into its exit
//! code (see `rwsgi::error`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match rwsgi::start::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => fatal.report(),
    }
}
