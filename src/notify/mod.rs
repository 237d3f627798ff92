//! The notifier: a timer that hands each interval's merged report to every sink.
