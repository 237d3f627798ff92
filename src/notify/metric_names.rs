//! The metric names that CloudWatch and Azure Monitor both receive.
//!
//! One list, so that a dashboard or alarm built for one cloud reads the same on the
//! other. `TimeInQueue` is request-time-tracker's name, kept so its alarms keep working.

/// `queue_time`: dispatch − proxy stamp. The autoscaling signal.
pub(crate) const TIME_IN_QUEUE: &str = "TimeInQueue";
/// `server_wait`: dispatch − arrival of the request's bytes, the wait inside rwsgi.
pub(crate) const SERVER_WAIT: &str = "ServerWait";
/// `app_time`: response finished − dispatch.
pub(crate) const APP_TIME: &str = "AppTime";
/// Requests answered in the interval, shed ones included.
pub(crate) const REQUEST_COUNT: &str = "RequestCount";
/// Requests answered 503 by `--max-queue-time` without calling the app.
pub(crate) const SHED_COUNT: &str = "ShedCount";
/// Busy Python-thread time as a percentage (request-time-tracker's RequestPressure).
pub(crate) const UTILIZATION: &str = "Utilization";
