//! Entry point: parse the command line, build the config, run; errors become exit codes.

fn main() {
    std::process::exit(rwsgi::master::main());
}
