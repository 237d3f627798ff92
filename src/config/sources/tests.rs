//! Tests of the layered parse: precedence across the four layers for every kind of
//! option, and every kind of error naming its source. Files are real temp files.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::layers::{levenshtein, specs};
use super::*;
use crate::config::Config;
use clap::ArgAction;
use std::ffi::OsStr;

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<(Cli, Sources), ParseError> {
    let args = args.iter().map(OsString::from).collect();
    let env: HashMap<OsString, OsString> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    parse_layered(args, &env)
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> (Cli, Sources) {
    parse(args, env).unwrap_or_else(|e| panic!("{args:?} {env:?}: {e}"))
}

/// The messages of a [`ParseError::Sources`].
fn errors(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    match parse(args, env) {
        Err(ParseError::Sources(errors)) => errors.into_iter().map(|e| e.0).collect(),
        Err(ParseError::Usage(e)) => panic!("usage error instead: {e}"),
        Err(ParseError::ConfigFile(e)) => panic!("config file error instead: {e}"),
        Ok((cli, _)) => panic!("no error: {cli:?}"),
    }
}

fn source(sources: &Sources, name: &str) -> Source {
    sources.get(name).unwrap().source.clone()
}

/// A TOML temp file, removed on drop.
pub(crate) struct TempToml(PathBuf);

impl TempToml {
    pub(crate) fn new(text: &str) -> TempToml {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rwsgi-sources-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempToml(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn source(&self) -> Source {
        Source::File(self.0.clone())
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ===== Precedence =====

#[test]
fn gunicorn_cmd_args_rank_between_the_command_line_and_rwsgi_vars() {
    let env = [
        (
            "GUNICORN_CMD_ARGS",
            "--threads 3 --workers 3 -b ':9000' --preload",
        ),
        ("RWSGI_THREADS", "4"),
        ("RWSGI_WORKERS", "4"),
        ("RWSGI_BACKLOG", "7"),
    ];
    let (cli, s) = ok(&["rwsgi", "--threads", "5", "m"], &env);
    assert_eq!(cli.python.threads, 5);
    assert_eq!(source(&s, "threads"), Source::CommandLine);
    assert_eq!(cli.process.workers, Some(3));
    assert_eq!(
        source(&s, "workers"),
        Source::Env("GUNICORN_CMD_ARGS".into())
    );
    assert_eq!(cli.server.bind, [":9000"]);
    assert_eq!(cli.server.backlog, 7);
    assert!(cli.process.preload);
    let file = TempToml::new("threads = 2\n");
    let cmd_args = format!("-c {} --workers 2", file.path());
    let (cli, s) = ok(&["rwsgi", "m"], &[("GUNICORN_CMD_ARGS", &cmd_args)]);
    assert_eq!(cli.python.threads, 2);
    assert_eq!(
        s.config_file(),
        Some((file.0.as_path(), &Source::Env("GUNICORN_CMD_ARGS".into())))
    );
    let e = errors(&["rwsgi", "m"], &[("GUNICORN_CMD_ARGS", "--threads 'x")]);
    assert!(
        e[0].starts_with("environment GUNICORN_CMD_ARGS: cannot split"),
        "{e:?}"
    );
}

#[test]
fn toml_files_take_gunicorn_names() {
    let file = TempToml::new(
        "keepalive = 5\npreload_app = true\nwsgi_app = 'm:a'\nraw_env = ['A=1']\n\
         forwarded_allow_ips = ['10.0.0.1', '10.0.0.2']\non_starting = 'hooks.start'\n",
    );
    let (cli, _) = ok(&["rwsgi", "-c", file.path()], &[]);
    assert_eq!(cli.server.keep_alive, 5.0);
    assert_eq!(cli.app.as_deref(), Some("m:a"));
    assert_eq!(cli.python.env, ["A=1"]);
    assert_eq!(
        cli.server.forwarded_allow_ips.as_deref(),
        Some("10.0.0.1,10.0.0.2")
    );
    assert!(cli.process.preload);
    assert_eq!(cli.gunicorn["on_starting"], ["\"hooks.start\""]);
    let bad = TempToml::new("post_fork = 3\n");
    let e = errors(&["rwsgi", "-c", bad.path()], &[]);
    assert!(
        e[0].contains("callables need a Python config file"),
        "{e:?}"
    );
}

#[test]
fn every_gunicorn_spelling_parses() {
    use crate::config::gunicorn::{Kind as GKind, SETTINGS};
    for g in SETTINGS {
        for flag in g.flags {
            let toml = TempToml::new("");
            let mut args = vec!["rwsgi", flag];
            if g.kind != GKind::Flag {
                args.push(match g.name {
                    "bind" => ":8000",
                    "config" => toml.path(),
                    _ => "1",
                });
            }
            args.push("m");
            if let Err(e) = parse(&args, &[]) {
                panic!("{args:?}: {e}");
            }
        }
    }
}

#[test]
fn single_valued_option_takes_the_highest_layer() {
    let file = TempToml::new("threads = 2\n");
    let c = file.path();

    let (cli, s) = ok(&["rwsgi"], &[]);
    assert_eq!(
        (cli.python.threads, source(&s, "threads")),
        (1, Source::Default)
    );

    let (cli, s) = ok(&["rwsgi", "-c", c], &[]);
    assert_eq!(
        (cli.python.threads, source(&s, "threads")),
        (2, file.source())
    );

    let (cli, s) = ok(&["rwsgi", "-c", c], &[("RWSGI_THREADS", "3")]);
    assert_eq!(
        (cli.python.threads, source(&s, "threads")),
        (3, Source::Env("RWSGI_THREADS".into()))
    );

    let (cli, s) = ok(
        &["rwsgi", "-c", c, "--threads", "4"],
        &[("RWSGI_THREADS", "3")],
    );
    assert_eq!(
        (cli.python.threads, source(&s, "threads")),
        (4, Source::CommandLine)
    );
    assert_eq!(s.get("threads").unwrap().values, ["4"]);
    // Other options keep their own layers.
    assert_eq!(source(&s, "backlog"), Source::Default);
}

#[test]
fn repeatable_option_takes_one_layer_whole() {
    let file = TempToml::new("bind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n");
    let c = file.path();
    let env = [("RWSGI_BIND", "127.0.0.1:3, 127.0.0.1:4")];

    let (cli, s) = ok(&["rwsgi", "-c", c], &[]);
    assert_eq!(cli.server.bind, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(source(&s, "bind"), file.source());

    let (cli, s) = ok(&["rwsgi", "-c", c], &env);
    assert_eq!(cli.server.bind, ["127.0.0.1:3", "127.0.0.1:4"]);
    assert_eq!(source(&s, "bind"), Source::Env("RWSGI_BIND".into()));

    let (cli, s) = ok(&["rwsgi", "-c", c, "-b", "127.0.0.1:5"], &env);
    assert_eq!(cli.server.bind, ["127.0.0.1:5"]);
    assert_eq!(source(&s, "bind"), Source::CommandLine);

    let (cli, _) = ok(&["rwsgi"], &[]);
    assert!(cli.server.bind.is_empty());
}

#[test]
fn a_scalar_in_the_file_is_a_one_item_list() {
    let file = TempToml::new("bind = \"unix:/tmp/x.sock\"\nstatsd_tag = \"env:prod\"\n");
    let (cli, _) = ok(&["rwsgi", "-c", file.path()], &[]);
    assert_eq!(cli.server.bind, ["unix:/tmp/x.sock"]);
    assert_eq!(cli.notify.statsd_tags, ["env:prod"]);
}

#[test]
fn flag_follows_the_highest_layer_even_when_false() {
    let file = TempToml::new("ignore-django-settings = true\n");
    let c = file.path();
    let flag = |cli: &Cli| cli.python.ignore_django_settings;

    let (cli, s) = ok(&["rwsgi", "-c", c], &[]);
    assert!(flag(&cli));
    assert_eq!(source(&s, "ignore-django-settings"), file.source());

    let (cli, s) = ok(
        &["rwsgi", "-c", c],
        &[("RWSGI_IGNORE_DJANGO_SETTINGS", "off")],
    );
    assert!(!flag(&cli));
    assert_eq!(
        source(&s, "ignore-django-settings"),
        Source::Env("RWSGI_IGNORE_DJANGO_SETTINGS".into())
    );
    assert_eq!(s.get("ignore-django-settings").unwrap().values, ["false"]);

    let (cli, _) = ok(
        &["rwsgi", "-c", c, "--ignore-django-settings"],
        &[("RWSGI_IGNORE_DJANGO_SETTINGS", "0")],
    );
    assert!(flag(&cli));

    let off = TempToml::new("ignore-django-settings = false\n");
    assert!(!flag(&ok(&["rwsgi", "-c", off.path()], &[]).0));
}

#[test]
fn env_flags_take_the_usual_words() {
    for (word, on) in [
        ("1", true),
        ("TRUE", true),
        ("yes", true),
        ("On", true),
        ("0", false),
        ("false", false),
        ("NO", false),
        ("off", false),
    ] {
        let (cli, _) = ok(&["rwsgi"], &[("RWSGI_IGNORE_DJANGO_SETTINGS", word)]);
        assert_eq!(cli.python.ignore_django_settings, on, "{word}");
    }
    let e = errors(&["rwsgi"], &[("RWSGI_IGNORE_DJANGO_SETTINGS", "maybe")]);
    assert_eq!(
        e,
        [
            "environment RWSGI_IGNORE_DJANGO_SETTINGS: invalid value 'maybe' for \
          '--ignore-django-settings': expected 1, true, yes, on, 0, false, no or off"
        ]
    );
}

#[test]
fn app_comes_from_any_layer() {
    let file = TempToml::new("app = \"file:app\"\n");
    let c = file.path();

    let (cli, s) = ok(&["rwsgi", "-c", c], &[]);
    assert_eq!(cli.app.as_deref(), Some("file:app"));
    assert_eq!(source(&s, "app"), file.source());

    let (cli, s) = ok(&["rwsgi", "-c", c], &[("RWSGI_APP", "env:app")]);
    assert_eq!(cli.app.as_deref(), Some("env:app"));
    assert_eq!(source(&s, "app"), Source::Env("RWSGI_APP".into()));

    let (cli, s) = ok(&["rwsgi", "-c", c, "cli:app"], &[("RWSGI_APP", "env:app")]);
    assert_eq!(cli.app.as_deref(), Some("cli:app"));
    assert_eq!(source(&s, "app"), Source::CommandLine);

    // A `--` on the command line does not make the file's app a second positional.
    let (cli, _) = ok(&["rwsgi", "-c", c, "--threads", "2", "--"], &[]);
    assert_eq!(cli.app.as_deref(), Some("file:app"));
    assert_eq!(cli.python.threads, 2);
}

#[test]
fn values_that_look_like_options_stay_values() {
    let file = TempToml::new("access-log-format = \"--%(h)s\"\napp = \"-x\"\n");
    let (cli, _) = ok(
        &["rwsgi", "-c", file.path()],
        &[("RWSGI_QUEUE_HEADER", "-h")],
    );
    assert_eq!(cli.logging.access_log_format, "--%(h)s");
    assert_eq!(cli.tracker.queue_header.as_deref(), Some("-h"));
    assert_eq!(cli.app.as_deref(), Some("-x"));
}

#[test]
fn file_keys_take_underscores_and_aliases() {
    let file = TempToml::new(
        "graceful_timeout = 5\nerror-logfile = \"/tmp/e.log\"\npid = \"/tmp/r.pid\"\n",
    );
    let (cli, s) = ok(&["rwsgi", "-c", file.path()], &[]);
    assert_eq!(cli.process.graceful_timeout, 5.0);
    assert_eq!(cli.logging.error_log, "/tmp/e.log");
    assert_eq!(cli.process.pid_file, Some(PathBuf::from("/tmp/r.pid")));
    assert_eq!(source(&s, "error-log"), file.source());

    let twice = TempToml::new("max_requests = 1\nmax-requests = 2\n");
    let e = errors(&["rwsgi", "-c", twice.path()], &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("already sets --max-requests"), "{e:?}");
}

#[test]
fn config_file_can_be_named_by_the_environment() {
    let file = TempToml::new("threads = 7\n");
    let (cli, s) = ok(&["rwsgi"], &[("RWSGI_CONFIG", file.path())]);
    assert_eq!(cli.python.threads, 7);
    assert_eq!(cli.config.as_deref(), Some(file.0.as_path()));
    assert_eq!(
        s.config_file(),
        Some((file.0.as_path(), &Source::Env("RWSGI_CONFIG".into())))
    );
    // The command line's file wins over the environment's.
    let other = TempToml::new("threads = 8\n");
    let (cli, s) = ok(
        &["rwsgi", "--config", other.path()],
        &[("RWSGI_CONFIG", file.path())],
    );
    assert_eq!(cli.python.threads, 8);
    assert_eq!(s.config_file().unwrap().1, &Source::CommandLine);
}

#[test]
fn clap_env_fallback_ranks_as_environment() {
    let file = TempToml::new("venv = \"/from/file\"\n");
    let c = file.path();
    let (cli, s) = ok(&["rwsgi", "-c", c], &[("VIRTUAL_ENV", "/from/virtual-env")]);
    assert_eq!(cli.python.venv, Some(PathBuf::from("/from/virtual-env")));
    assert_eq!(source(&s, "venv"), Source::Env("VIRTUAL_ENV".into()));

    let (cli, _) = ok(
        &["rwsgi", "-c", c],
        &[
            ("VIRTUAL_ENV", "/from/virtual-env"),
            ("RWSGI_VENV", "/from/rwsgi"),
        ],
    );
    assert_eq!(cli.python.venv, Some(PathBuf::from("/from/rwsgi")));

    // The process's own environment is not read behind the caller's back, and an empty
    // variable is unset rather than an empty path.
    let (cli, _) = ok(&["rwsgi", "-c", c], &[("VIRTUAL_ENV", "")]);
    assert_eq!(cli.python.venv, Some(PathBuf::from("/from/file")));
}

#[test]
fn empty_env_values_count_as_unset() {
    let file = TempToml::new("threads = 2\nbind = [\"127.0.0.1:1\"]\n");
    let (cli, s) = ok(
        &["rwsgi", "-c", file.path()],
        &[("RWSGI_THREADS", ""), ("RWSGI_BIND", "")],
    );
    assert_eq!(cli.python.threads, 2);
    assert_eq!(cli.server.bind, ["127.0.0.1:1"]);
    assert_eq!(source(&s, "threads"), file.source());
}

#[test]
fn print_config_comes_from_the_command_line_only() {
    let (cli, _) = ok(&["rwsgi"], &[("RWSGI_PRINT_CONFIG", "1")]);
    assert!(!cli.print_config);
    let (cli, _) = ok(&["rwsgi", "--print-config"], &[]);
    assert!(cli.print_config);
}

// ===== Errors =====

#[test]
fn unknown_key_names_the_key_the_file_and_the_nearest_option() {
    let file = TempToml::new("thread = 4\nworkers = 2\nfrobnicate = 1\n");
    let mut e = errors(&["rwsgi", "-c", file.path()], &[]);
    e.sort();
    assert_eq!(
        e,
        [
            format!("config file {}: unknown key 'frobnicate'", file.path()),
            format!(
                "config file {}: unknown key 'thread'; did you mean 'threads'?",
                file.path()
            ),
        ]
    );
}

#[test]
fn bad_values_in_the_file_name_the_key_and_the_file() {
    let file = TempToml::new("threads = \"x\"\n");
    let e = errors(&["rwsgi", "-c", file.path()], &[]);
    assert_eq!(
        e,
        [format!(
            "config file {}: key 'threads': invalid value 'x' for '--threads <N>': \
             invalid digit found in string",
            file.path()
        )]
    );

    let cases = [
        (
            "threads = true",
            "expected a number for '--threads', found a boolean",
        ),
        ("threads = 2.0", "invalid value '2.0' for '--threads <N>'"),
        (
            "bind = [\"a\", [1]]",
            "expected an array of strings for '--bind', found an array holding an array",
        ),
        (
            "threads = [1, 2]",
            "expected a number for '--threads', found an array",
        ),
        (
            "ignore-django-settings = \"yes\"",
            "expected true or false for '--ignore-django-settings', found a string",
        ),
        (
            "log-format = \"xml\"",
            "invalid value 'xml' for '--log-format <LOG_FORMAT>' [possible values: human, json]",
        ),
        (
            "config = \"other.toml\"",
            "--config is not allowed in a config file",
        ),
        (
            "print-config = true",
            "--print-config is not allowed in a config file",
        ),
    ];
    for (text, want) in cases {
        let file = TempToml::new(text);
        let e = errors(&["rwsgi", "-c", file.path()], &[]);
        let key = text.split(' ').next().unwrap();
        let prefix = format!("config file {}: key '{key}': ", file.path());
        assert!(
            e.len() == 1 && e[0].starts_with(&prefix) && e[0].contains(want),
            "{text}: {e:?}"
        );
    }
}

#[test]
fn bad_values_in_the_environment_name_the_variable() {
    let e = errors(&["rwsgi"], &[("RWSGI_THREADS", "x")]);
    assert_eq!(
        e,
        [
            "environment RWSGI_THREADS: invalid value 'x' for '--threads <N>': \
          invalid digit found in string"
        ]
    );
    let e = errors(
        &["rwsgi"],
        &[("RWSGI_TIMEOUT", "soon"), ("RWSGI_LOG_FORMAT", "xml")],
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e
        .iter()
        .any(|m| m.starts_with("environment RWSGI_TIMEOUT: invalid value 'soon'")));
    assert!(e
        .iter()
        .any(|m| m.starts_with("environment RWSGI_LOG_FORMAT: invalid value 'xml'")));
}

#[test]
fn a_wrong_value_fails_even_when_a_higher_layer_overrides_it() {
    let file = TempToml::new("backlog = -1\n");
    let e = errors(
        &["rwsgi", "-c", file.path(), "--backlog", "10"],
        &[("RWSGI_WORKERS", "many")],
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("environment RWSGI_WORKERS: invalid value 'many'"));
    assert!(e[1].contains("key 'backlog': invalid value '-1' for '--backlog <N>'"));
}

#[test]
fn unreadable_or_broken_files_name_the_file() {
    let e = errors(&["rwsgi", "-c", "/nonexistent/rwsgi.toml"], &[]);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("--config /nonexistent/rwsgi.toml: cannot read: "),
        "{e:?}"
    );
    let e = errors(&["rwsgi"], &[("RWSGI_CONFIG", "/nonexistent/rwsgi.toml")]);
    assert!(
        e[0].starts_with("--config /nonexistent/rwsgi.toml (from RWSGI_CONFIG): cannot read"),
        "{e:?}"
    );
    let file = TempToml::new("threads = \n");
    let e = errors(&["rwsgi", "-c", file.path()], &[]);
    assert!(
        e[0].starts_with(&format!("config file {}: not valid TOML: ", file.path())),
        "{e:?}"
    );
}

#[test]
fn command_line_errors_are_clap_usage_errors() {
    match parse(
        &["rwsgi", "--threads", "x"],
        &[("RWSGI_THREADS", "also bad")],
    ) {
        Err(ParseError::Usage(e)) => {
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(e.use_stderr());
        }
        other => panic!("{other:?}"),
    }
    match parse(&["rwsgi", "--help"], &[]) {
        Err(ParseError::Usage(e)) => {
            assert!(!e.use_stderr());
            assert!(e.to_string().contains("RWSGI_<OPTION>"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["rwsgi", "--no-such-option"], &[]),
        Err(ParseError::Usage(_))
    ));
}

// ===== Attribution of validation errors =====

#[test]
fn validation_errors_say_where_the_value_came_from() {
    let validate = |args: &[&str], env: &[(&str, &str)]| {
        let (cli, sources) = ok(args, env);
        sources.annotate(&Config::from_cli(&cli).unwrap_err()).0
    };
    assert_eq!(
        validate(&["rwsgi", "a:b"], &[("RWSGI_THREADS", "0")]),
        "--threads 0: must be between 1 and 4096 (from RWSGI_THREADS)"
    );
    assert_eq!(
        validate(&["rwsgi", "a:b", "--threads", "0"], &[]),
        "--threads 0: must be between 1 and 4096"
    );
    let file = TempToml::new("app = \"a:b\"\nbind = [\"unix:\"]\n");
    assert_eq!(
        validate(&["rwsgi", "-c", file.path()], &[]),
        format!(
            "--bind unix:: empty socket path (expected HOST:PORT, [IPV6]:PORT, unix:PATH or \
             fd://N) (from config file {})",
            file.path()
        )
    );
    let msg = validate(&["rwsgi"], &[("RWSGI_APP", "not an app")]);
    assert!(msg.starts_with("APP 'not an app'") && msg.ends_with("(from RWSGI_APP)"));
    // A missing APP has no source to point at.
    assert!(!validate(&["rwsgi"], &[]).contains("(from"));
}

#[test]
fn describe_words_every_source() {
    let file = TempToml::new("backlog = 5\n");
    let (_, s) = ok(
        &["rwsgi", "-c", file.path(), "-t", "3"],
        &[("RWSGI_THREADS", "2")],
    );
    assert_eq!(s.describe("threads"), "from RWSGI_THREADS");
    assert_eq!(s.describe("--timeout"), "from the command line");
    assert_eq!(
        s.describe("backlog"),
        format!("from config file {}", file.path())
    );
    assert_eq!(s.describe("keep-alive"), "default");
}

// ===== The option list =====

#[test]
fn every_cli_argument_is_known_to_the_layers() {
    let mut cmd = Cli::command();
    cmd.build();
    let specs = specs(&cmd, &Cli::command());
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let known = specs.iter().any(|s| s.id == id);
        let meta = matches!(arg.get_action(), ArgAction::Help | ArgAction::Version);
        assert!(known != meta, "{id}: action {:?}", arg.get_action());
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "app",
        "threads",
        "bind",
        "notify",
        "pid",
        "config",
        "print-config",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by("app").kind, Kind::Positional);
    assert_eq!(by("bind").kind, Kind::Multi);
    assert_eq!(by("pythonpath").kind, Kind::Multi);
    assert_eq!(by("threads").kind, Kind::Single);
    assert_eq!(by("ignore-django-settings").kind, Kind::Flag);
    assert!(by("threads").numeric && by("keep-alive").numeric && !by("bind").numeric);
    assert_eq!(by("graceful-timeout").env_var(), "RWSGI_GRACEFUL_TIMEOUT");
    assert_eq!(
        by("venv").clap_env.as_deref(),
        Some(OsStr::new("VIRTUAL_ENV"))
    );
    assert_eq!(by("error-log").aliases, ["error-logfile"]);
}

#[test]
fn levenshtein_counts_edits() {
    assert_eq!(levenshtein("thread", "threads"), 1);
    assert_eq!(levenshtein("", "abc"), 3);
    assert_eq!(levenshtein("kitten", "sitting"), 3);
    assert_eq!(levenshtein("same", "same"), 0);
}
