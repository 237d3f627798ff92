//! `rwsgi-server`: the same entry point as `rwsgi`, packaged in the wheel and started by
//! the `rwsgi` launcher (python/rwsgi/_launch.py) with the interpreter to embed.

fn main() -> std::process::ExitCode {
    rwsgi::start::main()
}
