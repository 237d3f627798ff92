//! Entry point: run rwsgi, and turn the error that stopped it (if any) into its exit
//! code (see `rwsgi::error`).

fn main() -> std::process::ExitCode {
    rwsgi::start::main()
}
