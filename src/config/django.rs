//! request-time-tracker's Django settings (`QUEUE_TIME_TRACKER_*`) as defaults.
//!
//! A Django project migrating from the middleware keeps its settings: the first
//! worker reads them after importing the app, and the master applies each one only
//! where the option was left at its default, so the command line, the environment
//! and the config file all still win. `--ignore-django-settings` turns this off.

use std::collections::BTreeMap;

use super::sources::{Source, Sources};
use crate::cli::Cli;

/// AWS keys from `QUEUE_TIME_TRACKER_CLOUDWATCH_ACCESS_KEY`/`_SECRET_KEY`. They are
/// never options (a flag would show in `ps`); the CloudWatch sink uses them instead
/// of the AWS chain only when the settings carry them.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsKeys(****)")
    }
}

/// What the settings changed, for one log line each.
pub struct Applied {
    pub cli: Cli,
    pub aws_keys: Option<AwsKeys>,
    /// `option ← SETTING` pairs, for the log.
    pub used: Vec<String>,
}

/// Fills options left at their default from settings, noting each one used.
struct Filler<'a> {
    sources: &'a Sources,
    settings: &'a BTreeMap<String, String>,
    used: Vec<String>,
}

impl Filler<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.settings
            .get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn fill(&mut self, option: &str, key: &str, slot: &mut Option<String>) {
        if let Some(v) = self.get(key) {
            if is_default(self.sources, option) {
                *slot = Some(v);
                self.used
                    .push(format!("--{option} from QUEUE_TIME_TRACKER_{key}"));
            }
        }
    }
}

fn is_default(sources: &Sources, option: &str) -> bool {
    sources
        .get(option)
        .is_none_or(|o| o.source == Source::Default)
}

/// Applies `settings` (keys without the `QUEUE_TIME_TRACKER_` prefix) to `cli`
/// wherever `sources` says the option was not set.
pub fn apply(cli: &Cli, sources: &Sources, settings: &BTreeMap<String, String>) -> Applied {
    let mut cli = cli.clone();
    let mut f = Filler {
        sources,
        settings,
        used: Vec::new(),
    };
    if let Some(key) = f.get("HEADER") {
        if is_default(sources, "queue-header") {
            cli.tracker.queue_header = header_from_environ_key(&key);
            f.used
                .push("--queue-header from QUEUE_TIME_TRACKER_HEADER".into());
        }
    }
    let n = &mut cli.notify;
    f.fill(
        "cloudwatch-namespace",
        "CLOUDWATCH_NAMESPACE",
        &mut n.cloudwatch_namespace,
    );
    f.fill(
        "cloudwatch-region",
        "CLOUDWATCH_REGION",
        &mut n.cloudwatch_region,
    );
    f.fill("azure-region", "AZURE_REGION", &mut n.azure_region);
    f.fill(
        "azure-subscription-id",
        "AZURE_SUBSCRIPTION_ID",
        &mut n.azure_subscription_id,
    );
    f.fill(
        "azure-resource-group",
        "AZURE_RESOURCE_GROUP_NAME",
        &mut n.azure_resource_group,
    );
    f.fill(
        "azure-provider",
        "AZURE_PROVIDER_NAME",
        &mut n.azure_provider,
    );
    f.fill(
        "azure-resource-type",
        "AZURE_RESOURCE_TYPE",
        &mut n.azure_resource_type,
    );
    // request-time-tracker's AZURE_RESOURCE_ID is the last part of the resource path
    // next to the other parts; a full `/subscriptions/...` id is taken as one.
    if let Some(id) = f.get("AZURE_RESOURCE_ID") {
        if id.starts_with('/') {
            f.fill(
                "azure-resource-id",
                "AZURE_RESOURCE_ID",
                &mut n.azure_resource_id,
            );
        } else {
            f.fill(
                "azure-resource-name",
                "AZURE_RESOURCE_ID",
                &mut n.azure_resource_name,
            );
        }
    }
    let mut namespace = Some(n.azure_namespace.clone());
    f.fill("azure-namespace", "AZURE_NAMESPACE", &mut namespace);
    n.azure_namespace = namespace.unwrap_or_default();
    let mut prefix = Some(n.redis_key_prefix.clone());
    f.fill("redis-key-prefix", "CACHE_KEY_PREFIX", &mut prefix);
    n.redis_key_prefix = prefix.unwrap_or_default();
    let mut every = None;
    f.fill("notify-interval", "NOTIFY_EVERY_SECONDS", &mut every);
    if let Some(secs) = every {
        match secs.parse::<f64>() {
            Ok(v) => n.notify_interval = v,
            Err(_) => tracing::warn!(
                value = %secs,
                "ignoring QUEUE_TIME_TRACKER_NOTIFY_EVERY_SECONDS: not a number"
            ),
        }
    }
    let mut used = f.used;
    let get = |k: &str| {
        settings
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // The middleware's wrapper class chose the backend; here the settings that
    // exist do, unless --notify was given.
    if is_default(sources, "notify") && cli.notify.sinks.is_empty() {
        if get("CLOUDWATCH_NAMESPACE").is_some() {
            cli.notify.sinks.push("cloudwatch".into());
            used.push("--notify cloudwatch from QUEUE_TIME_TRACKER_CLOUDWATCH_NAMESPACE".into());
        }
        if get("AZURE_REGION").is_some() {
            cli.notify.sinks.push("azure".into());
            used.push("--notify azure from QUEUE_TIME_TRACKER_AZURE_REGION".into());
        }
    }
    let aws_keys = match (get("CLOUDWATCH_ACCESS_KEY"), get("CLOUDWATCH_SECRET_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            used.push("AWS keys from QUEUE_TIME_TRACKER_CLOUDWATCH_ACCESS_KEY/SECRET_KEY".into());
            Some(AwsKeys {
                access_key_id,
                secret_access_key,
            })
        }
        _ => None,
    };
    Applied {
        cli,
        aws_keys,
        used,
    }
}

/// request-time-tracker named the header as an environ key (`HTTP_X_REQUESTTIME`);
/// rwsgi wants the header name (`X-REQUESTTIME`).
pub fn header_from_environ_key(key: &str) -> Option<String> {
    let name = key.trim().strip_prefix("HTTP_").unwrap_or(key.trim());
    if name.is_empty() {
        return None;
    }
    Some(name.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> (Cli, Sources) {
        let args = args.iter().map(OsString::from).collect();
        let env: HashMap<OsString, OsString> = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        super::super::sources::parse_layered(args, &env).expect("parses")
    }

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_fill_defaults_and_pick_sinks() {
        let (cli, sources) = parse(&["rwsgi", "mysite.wsgi"], &[]);
        let s = settings(&[
            ("HEADER", "HTTP_X_REQUESTTIME"),
            ("NOTIFY_EVERY_SECONDS", "5"),
            ("CLOUDWATCH_NAMESPACE", "MyApp"),
            ("CLOUDWATCH_REGION", "eu-west-1"),
            ("CLOUDWATCH_ACCESS_KEY", "AKIAEXAMPLE"),
            ("CLOUDWATCH_SECRET_KEY", "s3cr3t"),
            ("CACHE_KEY_PREFIX", "qt"),
        ]);
        let a = apply(&cli, &sources, &s);
        assert_eq!(a.cli.tracker.queue_header.as_deref(), Some("X-REQUESTTIME"));
        assert_eq!(a.cli.notify.notify_interval, 5.0);
        assert_eq!(a.cli.notify.cloudwatch_namespace.as_deref(), Some("MyApp"));
        assert_eq!(a.cli.notify.cloudwatch_region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.cli.notify.sinks, ["cloudwatch"]);
        assert_eq!(a.cli.notify.redis_key_prefix, "qt");
        let keys = a.aws_keys.expect("keys");
        assert_eq!(keys.access_key_id, "AKIAEXAMPLE");
        assert!(!format!("{keys:?}").contains("s3cr3t"));
        assert!(a.used.iter().all(|u| !u.contains("s3cr3t")));
    }

    #[test]
    fn command_line_environment_and_file_win() {
        let (cli, sources) = parse(
            &["rwsgi", "--queue-header", "X-Start", "--notify", "log", "m"],
            &[("RWSGI_NOTIFY_INTERVAL", "7")],
        );
        let s = settings(&[
            ("HEADER", "HTTP_X_REQUESTTIME"),
            ("NOTIFY_EVERY_SECONDS", "5"),
            ("CLOUDWATCH_NAMESPACE", "MyApp"),
        ]);
        let a = apply(&cli, &sources, &s);
        assert_eq!(a.cli.tracker.queue_header.as_deref(), Some("X-Start"));
        assert_eq!(a.cli.notify.notify_interval, 7.0);
        assert_eq!(a.cli.notify.sinks, ["log"]);
        assert_eq!(a.cli.notify.cloudwatch_namespace.as_deref(), Some("MyApp"));
    }

    #[test]
    fn azure_parts_and_full_ids() {
        let (cli, sources) = parse(&["rwsgi", "m"], &[]);
        let a = apply(
            &cli,
            &sources,
            &settings(&[
                ("AZURE_REGION", "westeurope"),
                ("AZURE_SUBSCRIPTION_ID", "sub"),
                ("AZURE_RESOURCE_GROUP_NAME", "rg"),
                ("AZURE_PROVIDER_NAME", "Microsoft.Web"),
                ("AZURE_RESOURCE_TYPE", "sites"),
                ("AZURE_RESOURCE_ID", "myapp"),
                ("AZURE_NAMESPACE", "queue"),
            ]),
        );
        assert_eq!(a.cli.notify.sinks, ["azure"]);
        assert_eq!(a.cli.notify.azure_resource_name.as_deref(), Some("myapp"));
        assert_eq!(a.cli.notify.azure_namespace, "queue");
        let full = apply(
            &cli,
            &sources,
            &settings(&[(
                "AZURE_RESOURCE_ID",
                "/subscriptions/s/resourceGroups/r/providers/p/t/n",
            )]),
        );
        assert!(full.cli.notify.azure_resource_id.is_some());
    }

    #[test]
    fn environ_key_becomes_header_name() {
        assert_eq!(
            header_from_environ_key("HTTP_X_REQUESTTIME").as_deref(),
            Some("X-REQUESTTIME")
        );
        assert_eq!(
            header_from_environ_key("X-Request-Start").as_deref(),
            Some("X-Request-Start")
        );
        assert_eq!(header_from_environ_key("HTTP_"), None);
    }
}
