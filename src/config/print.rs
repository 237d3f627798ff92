//! `rwsgi --print-config`: the effective configuration as TOML, one line per option with
//! its source in a trailing comment, secrets masked.
//!
//! The output is a valid `--config` file: fed back with `rwsgi -c FILE` it gives the same
//! effective configuration (masked secrets aside). It is validated exactly as a start
//! would be, so a wrong value fails here too, but Python is never started, and a
//! missing APP is shown as unset rather than refused.

use super::sources::{Effective, Kind, Source, Sources};
use super::{BindSpec, Config, ConfigError};
use crate::cli::Cli;

/// Words that make a whole option value secret. Not `key`: `--redis-key-prefix` is not.
const SECRET_WORDS: [&str; 3] = ["password", "secret", "token"];
const MASK: &str = "****";

/// Validates `cli` as a start would and renders the configuration as TOML.
///
/// Errors carry the value's source, as [`Sources::annotate`] words it.
pub fn render(cli: &Cli, sources: &Sources) -> Result<String, ConfigError> {
    let mut probe = cli.clone();
    // Printing needs no APP; everything else is checked as at start.
    probe.app.get_or_insert_with(|| "app".to_string());
    let config = Config::from_cli(&probe).map_err(|e| sources.annotate(&e))?;
    Ok(to_toml(sources, &config))
}

fn to_toml(sources: &Sources, config: &Config) -> String {
    let mut out = String::from(
        "# rwsgi --print-config: the effective configuration, each value's source in its\n\
         # comment, secrets masked. Feed it back with `rwsgi -c FILE`.\n",
    );
    match sources.config_file() {
        Some((path, named_by)) => out.push_str(&format!(
            "# config file: {} ({named_by})\n\n",
            path.display()
        )),
        None => out.push_str("# config file: none\n\n"),
    }
    // gunicorn's settings that are not rwsgi options show only when given.
    let gunicorn_only = |o: &Effective| {
        super::gunicorn::SETTINGS.iter().any(|g| {
            !matches!(g.treat, super::gunicorn::Treat::Same(..))
                && super::gunicorn::own_long(g) == Some(o.name.as_str())
        })
    };
    let mut lines: Vec<(String, String)> = sources
        .options()
        .iter()
        .filter(|o| o.in_file && !(o.source == Source::Default && gunicorn_only(o)))
        .map(|o| line(o, config))
        .collect();
    // Hooks and dicts of a Python file: shown as comments, since TOML cannot hold them.
    if let Some((path, _)) = sources.config_file() {
        for (name, value) in sources.file_only() {
            let value: String = value.chars().take(60).collect();
            lines.push((
                format!("# {name} = {value}"),
                format!(
                    "config file {} (a gunicorn setting, not an option)",
                    path.display()
                ),
            ));
        }
    }
    let width = lines
        .iter()
        .map(|(body, _)| body.len())
        .filter(|n| *n <= 56)
        .max()
        .unwrap_or(0);
    for (body, comment) in lines {
        out.push_str(&format!("{body:<width$}  # {comment}\n"));
    }
    out
}

/// One option as `name = value` and its comment.
fn line(opt: &Effective, config: &Config) -> (String, String) {
    let (values, source) =
        derived(opt, config).unwrap_or_else(|| (opt.values.clone(), opt.source.to_string()));
    let values: Vec<String> = values.iter().map(|v| mask(&opt.name, v)).collect();
    let name = &opt.name;
    match (opt.kind, values.last()) {
        (Kind::Flag, v) => (
            format!("{name} = {}", v.map_or("false", String::as_str)),
            source,
        ),
        (Kind::Multi, _) => {
            let items: Vec<String> = values.iter().map(|v| scalar(opt, v)).collect();
            (format!("{name} = [{}]", items.join(", ")), source)
        }
        (Kind::Single | Kind::Positional, Some(v)) => {
            (format!("{name} = {}", scalar(opt, v)), source)
        }
        (Kind::Positional, None) => (
            format!("# {name} = \"\""),
            format!(
                "unset: give it on the command line, as RWSGI_{}, or here",
                name.to_ascii_uppercase()
            ),
        ),
        (Kind::Single, None) => (format!("# {name} ="), "unset".to_string()),
    }
}

/// Options whose default is not clap's but computed at validation (gunicorn's
/// `$WEB_CONCURRENCY`, `$PORT` and `$FORWARDED_ALLOW_IPS`): show the value the server
/// will use.
fn derived(opt: &Effective, config: &Config) -> Option<(Vec<String>, String)> {
    if opt.source != Source::Default || !opt.values.is_empty() {
        return None;
    }
    let from = |var: &str| match std::env::var_os(var) {
        Some(_) => format!("default, from ${var}"),
        None => "default".to_string(),
    };
    match opt.name.as_str() {
        "workers" => Some((
            vec![config.process.workers.to_string()],
            from("WEB_CONCURRENCY"),
        )),
        "bind" => Some((
            config.server.binds.iter().map(bind_value).collect(),
            from("PORT"),
        )),
        "forwarded-allow-ips" => Some((
            vec![std::env::var("FORWARDED_ALLOW_IPS")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| super::FORWARDED_ALLOW_IPS_DEFAULT.to_string())],
            from("FORWARDED_ALLOW_IPS"),
        )),
        _ => None,
    }
}

/// A bind as `--bind` takes it (the Display form has an `http://` for humans).
fn bind_value(bind: &BindSpec) -> String {
    match bind {
        BindSpec::Tcp(addr) => addr.to_string(),
        BindSpec::Unix(path) => format!("unix:{}", path.display()),
        BindSpec::Fd(fd) => format!("fd://{fd}"),
    }
}

/// A value as TOML: bare when the option is numeric and the value is a TOML number,
/// quoted otherwise.
fn scalar(opt: &Effective, value: &str) -> String {
    if opt.numeric {
        if let Ok(t) = format!("v = {value}").parse::<toml::Table>() {
            if matches!(
                t.get("v"),
                Some(toml::Value::Integer(_) | toml::Value::Float(_))
            ) {
                return value.to_string();
            }
        }
    }
    toml::Value::String(value.to_string()).to_string()
}

/// Masks a secret: the whole value of an option named like one, else the password of a
/// URL's userinfo (`redis://user:****@host`).
pub fn mask(option: &str, value: &str) -> String {
    if SECRET_WORDS.iter().any(|w| option.contains(w)) {
        return MASK.to_string();
    }
    mask_url_password(value)
}

/// `scheme://user:password@host…` → `scheme://user:****@host…`.
///
/// The userinfo ends at the *last* `@`, so an unencoded `@`, `/` or `?` in a password is
/// masked too; at worst something that is not a password is masked.
pub fn mask_url_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_string();
    };
    let start = scheme_end + 3;
    let rest = &value[start..];
    let Some(at) = rest.rfind('@') else {
        return value.to_string();
    };
    let Some(colon) = rest[..at].find(':') else {
        return value.to_string();
    };
    format!(
        "{}{}:{MASK}{}",
        &value[..start],
        &rest[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;
    use crate::config::sources::parse_layered;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> (Cli, Sources) {
        let args = args.iter().map(OsString::from).collect();
        let env: HashMap<OsString, OsString> =
            env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        parse_layered(args, &env).unwrap()
    }

    fn print(args: &[&str], env: &[(&str, &str)]) -> String {
        let (cli, sources) = parse(args, env);
        render(&cli, &sources).unwrap()
    }

    /// The `key = value` line of `name`.
    fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} =")))
            .unwrap_or_else(|| panic!("no line for {name} in\n{out}"))
    }

    use crate::config::sources::tests::TempToml;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("redis://:s3cret@cache:6379/0"),
            "redis://:****@cache:6379/0"
        );
        assert_eq!(
            mask_url_password("rediss://user:s3cret@cache/1"),
            "rediss://user:****@cache/1"
        );
        assert_eq!(
            mask_url_password("redis://:p@ss/w?rd@cache"),
            "redis://:****@cache"
        );
        for plain in [
            "redis://cache:6379/0",
            "redis://user@cache",
            "queue-time",
            "",
        ] {
            assert_eq!(mask_url_password(plain), plain);
        }
        assert_eq!(mask("db-password", "hunter2"), MASK);
        assert_eq!(mask("api-token", "abc"), MASK);
    }

    #[test]
    fn print_masks_the_redis_password_but_not_the_key_prefix() {
        let out = print(
            &["rwsgi", "app:application", "--redis-key-prefix", "svc-key"],
            &[("RWSGI_REDIS_URL", "redis://admin:s3cret@cache:6379/0")],
        );
        assert!(!out.contains("s3cret"), "{out}");
        assert!(line_of(&out, "redis-url")
            .starts_with("redis-url = \"redis://admin:****@cache:6379/0\""));
        assert!(line_of(&out, "redis-url").ends_with("# environment RWSGI_REDIS_URL"));
        assert!(line_of(&out, "redis-key-prefix").contains("\"svc-key\""));
    }

    #[test]
    fn print_shows_values_and_sources_of_every_option() {
        let file = TempToml::new("threads = 3\nbacklog = 64\nnotify = [\"log\"]\n");
        let out = print(
            &[
                "rwsgi",
                "-c",
                file.path(),
                "--threads",
                "5",
                "app:application",
            ],
            &[("RWSGI_BACKLOG", "128"), ("RWSGI_KEEP_ALIVE", "1.5")],
        );
        let expect = [
            ("threads", "threads = 5", "# command line"),
            ("backlog", "backlog = 128", "# environment RWSGI_BACKLOG"),
            (
                "keep-alive",
                "keep-alive = 1.5",
                "# environment RWSGI_KEEP_ALIVE",
            ),
            (
                "notify",
                "notify = [\"log\"]",
                &format!("# config file {}", file.path()),
            ),
            ("timeout", "timeout = 30", "# default"),
            ("app", "app = \"app:application\"", "# command line"),
            (
                "ignore-django-settings",
                "ignore-django-settings = false",
                "# default",
            ),
            ("bind", "bind = [\"", "# default"),
            ("workers", "workers = ", "# default"),
        ];
        for (name, start, end) in expect {
            let l = line_of(&out, name);
            assert!(l.starts_with(start) && l.ends_with(end), "{name}: {l}");
        }
        assert!(out.contains(&format!("# config file: {} (command line)", file.path())));
        // Every option but --config and --print-config has a line, set or not;
        // gunicorn's settings that are not options only when given.
        let (_, sources) = parse(&["rwsgi"], &[]);
        let gunicorn_only = |name: &str| {
            crate::config::gunicorn::SETTINGS.iter().any(|g| {
                crate::config::gunicorn::own_long(g) == Some(name)
                    && !matches!(g.treat, crate::config::gunicorn::Treat::Same(..))
            })
        };
        for o in sources
            .options()
            .iter()
            .filter(|o| o.in_file && !gunicorn_only(&o.name))
        {
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{} =", o.name))
                    || l.starts_with(&format!("# {} =", o.name))),
                "{} missing from\n{out}",
                o.name
            );
        }
        assert!(!out
            .lines()
            .any(|l| l.starts_with("config =") || l.starts_with("print-config")));
    }

    #[test]
    fn print_without_app_shows_it_unset() {
        let out = print(&["rwsgi", "--print-config"], &[]);
        let app = out.lines().find(|l| l.starts_with("# app = \"\"")).unwrap();
        assert!(app.contains("RWSGI_APP"), "{app}");
        assert!(out.parse::<toml::Table>().unwrap().get("app").is_none());
    }

    #[test]
    fn print_fails_on_invalid_values_naming_the_source() {
        let (cli, sources) = parse(&["rwsgi"], &[("RWSGI_THREADS", "0")]);
        let e = render(&cli, &sources).unwrap_err();
        assert_eq!(
            e.0,
            "--threads 0: must be between 1 and 4096 (from RWSGI_THREADS)"
        );
        let (cli, sources) = parse(&["rwsgi", "--print-config", "notapp:"], &[]);
        assert!(render(&cli, &sources).unwrap_err().0.starts_with("APP"));
    }

    #[test]
    fn print_output_is_toml_that_gives_back_the_same_config() {
        let file = TempToml::new(
            "unix-socket-mode = \"0600\"\nstatsd-tag = [\"env:prod\", \"team:web\"]\n\
             log-format = \"json\"\nforwarded-allow-ips = \"10.0.0.0/8,::1\"\n\
             access-log = \"-\"\nmax-queue-time = 2.5\n",
        );
        let args = [
            "rwsgi",
            "-c",
            file.path(),
            "-b",
            "127.0.0.1:9001",
            "--bind=[::1]:9002",
            "--pythonpath",
            "a,b",
            "--ignore-django-settings",
            "mod.wsgi:app",
        ];
        let env = [
            ("RWSGI_WORKERS", "3"),
            ("RWSGI_NOTIFY", "log,statsd"),
            ("RWSGI_STATSD_HOST", "127.0.0.1:8125"),
            ("RWSGI_ACCESS_LOG_FORMAT", "%(h)s \"%(r)s\" \\ %(s)s"),
            ("RWSGI_REDIS_URL", "redis://cache:6379/2"),
        ];
        let (cli1, sources1) = parse(&args, &env);
        let out1 = render(&cli1, &sources1).unwrap();
        let table1 = out1.parse::<toml::Table>().unwrap();

        let again = TempToml::new(&out1);
        let (cli2, sources2) = parse(&["rwsgi", "-c", again.path()], &[]);
        let out2 = render(&cli2, &sources2).unwrap();
        assert_eq!(table1, out2.parse::<toml::Table>().unwrap());
        // Everything but the config file itself now comes from the file.
        assert!(sources2
            .options()
            .iter()
            .filter(|o| o.in_file)
            .all(|o| matches!(o.source, Source::File(_) | Source::Default)));
        assert_eq!(
            format!("{:?}", Config::from_cli(&cli1).unwrap()),
            format!("{:?}", Config::from_cli(&cli2).unwrap())
        );
        assert_eq!(table1["pythonpath"].as_array().unwrap().len(), 2);
        assert_eq!(table1["workers"].as_integer(), Some(3));
    }
}
