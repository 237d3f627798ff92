//! Reads request-time-tracker's `QUEUE_TIME_TRACKER_*` keys from a Django project's
//! settings, so a project migrating from that middleware keeps its configuration.
//!
//! Only looked at after the app imported (Django's settings are configured by then)
//! and only when `DJANGO_SETTINGS_MODULE` names the project; values become defaults
//! below the command line, the environment and the config file.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

const PREFIX: &str = "QUEUE_TIME_TRACKER_";

const READER: &std::ffi::CStr = c"
import os, sys
out = {}
if 'django' in sys.modules and os.environ.get('DJANGO_SETTINGS_MODULE'):
    try:
        from django.conf import settings
        if settings.configured:
            for name in dir(settings):
                if name.startswith('QUEUE_TIME_TRACKER_'):
                    value = getattr(settings, name)
                    if value is not None:
                        out[name] = str(value)
    except Exception as e:
        out['__error__'] = repr(e)
";

/// The `QUEUE_TIME_TRACKER_*` settings, keyed without the prefix (`HEADER`, …).
pub fn read(py: Python<'_>) -> BTreeMap<String, String> {
    let globals = PyDict::new(py);
    if let Err(e) = py.run(READER, Some(&globals), None) {
        tracing::warn!(error = %e, "could not read Django settings");
        return BTreeMap::new();
    }
    let Ok(Some(out)) = globals.get_item("out") else {
        return BTreeMap::new();
    };
    let Ok(map) = out.extract::<BTreeMap<String, String>>() else {
        return BTreeMap::new();
    };
    if let Some(e) = map.get("__error__") {
        tracing::warn!(error = %e, "could not read Django settings");
        return BTreeMap::new();
    }
    map.into_iter()
        .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|k| (k.to_string(), v)))
        .collect()
}
